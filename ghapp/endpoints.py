"""The public services' API addresses, written once: adapters default to them, Settings too."""

GITHUB_API_URL = "https://api.github.com"
TELEGRAM_API_URL = "https://api.telegram.org/bot"
SLACK_API_URL = "https://slack.com/api/"
