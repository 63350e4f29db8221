#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the suite needs, then lint, types, tests.
# Extra arguments go to pytest, e.g. `tests/run.sh tests/unit -x`; then the core's branch
# coverage must reach CORE_COVERAGE (only when the whole suite ran, so a subset is not refused).
set -euo pipefail
cd "$(dirname "$0")/.."
CLAUDE_VERSION=2.1.197
WORKER_USER=${MC_TEST_WORKER_USER:-mc-worker}
CORE_COVERAGE=90

step() { printf '\n== %s\n' "$*"; }

if [ "$(id -u)" = 0 ]; then
  missing=()
  for tool in git:git npm:npm setpriv:util-linux chromium:chromium bwrap:bubblewrap curl:curl; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
  done
  # PostgreSQL's server binaries (tests start their own cluster on loopback; see tests/fakes/postgres.py)
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
  if [ ${#missing[@]} -gt 0 ]; then
    step "installing Debian packages: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
  if ! id "$WORKER_USER" >/dev/null 2>&1; then
    step "creating sandbox user $WORKER_USER"
    useradd --system --create-home --home-dir "/var/lib/$WORKER_USER" --shell /usr/sbin/nologin "$WORKER_USER"
  fi
fi

step "python environment (.venv)"
# As the README's run command makes it: no python3-venv needed, pip from the system's.
[ -x .venv/bin/python ] || python3 -m venv --without-pip .venv
.venv/bin/python -m pip --version >/dev/null 2>&1 || python3 -m pip --python .venv/bin/python install -q pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
# Wheels of ghapp's dependencies, so tests/e2e/test_readme_install.py installs offline.
stamp=".venv/wheelhouse/.for-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  rm -rf .venv/wheelhouse
  .venv/bin/python -m pip wheel -q --disable-pip-version-check -w .venv/wheelhouse . pip setuptools
  rm -f .venv/wheelhouse/ghapp-*.whl
  touch "$stamp"
fi

step "Claude Code CLI $CLAUDE_VERSION (.tools)"
if [ "$(.tools/node_modules/.bin/claude --version 2>/dev/null | cut -d' ' -f1)" != "$CLAUDE_VERSION" ]; then
  npm install --prefix .tools --no-audit --no-fund --loglevel=error "@anthropic-ai/claude-code@$CLAUDE_VERSION"
fi
.tools/node_modules/.bin/claude --version

step "lint and types"
.venv/bin/ruff check ghapp tests bench
.venv/bin/ruff format --check ghapp tests bench
.venv/bin/mypy

step "tests"
set +e
# -rs lists every skip and its reason; a skip of a prerequisite only happens with
# MC_TEST_ALLOW_SKIPS=1 (tests/fakes/sandbox.py), otherwise it is a failure.
.venv/bin/python -m pytest -q -rs -p no:cacheprovider --cov --cov-report= "$@"
status=$?
set -e
if [ $status -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi

step "branch coverage (ghapp in this process; ghapp/core must reach $CORE_COVERAGE %)"
.venv/bin/python -m coverage report --skip-covered --sort=cover
core=$(.venv/bin/python -m coverage report --include='ghapp/core/*' --format=total)
echo "ghapp/core: $core %"
if [ $# -eq 0 ] && ! .venv/bin/python -m coverage report --include='ghapp/core/*' \
  --fail-under="$CORE_COVERAGE" >/dev/null; then
  echo "ghapp/core's branch coverage, $core %, is under $CORE_COVERAGE %" >&2
  exit 1
fi
exit $status
