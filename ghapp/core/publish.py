"""Makes text that the agent or users wrote safe to publish in ghapp's name.

Such text may not notify anyone (@-mentions), close issues (closing keywords: ghapp
writes its own `Closes #n`), escape the code block or quote it is shown in, or hide
anything (invisible characters). Secrets are scrubbed from everything published.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

REDACTED = "[redacted]"
# Token shapes that must never be published even when ghapp does not know the value.
_TOKENS = re.compile(
    r"sk-ant-[A-Za-z0-9_\-]{6,}|gh[pousr]_[A-Za-z0-9_]{8,}|github_pat_[A-Za-z0-9_]{8,}"
)
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Co", "Cs", "Cc"})
# Variation selectors (and their supplement) and fillers that render as nothing.
_INVISIBLE_RANGES = ((0xFE00, 0xFE0F), (0xE0100, 0xE01EF), (0x115F, 0x1160), (0x3164, 0x3164))
_KEEP = frozenset("\n\t")
_EMOJI_SELECTORS = frozenset("\ufe0e\ufe0f")
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# `@login` or `@org/team` where GitHub (and Telegram) would notify; an e-mail is left be.
_MENTION = re.compile(r"(?<![A-Za-z0-9])@(?=[A-Za-z0-9])")
# Slash-separated parts, so no two quantifiers compete for the same text (linear time).
_REF = r"(?:[\w.-]+/[\w.-]+)?#\d+|GH-\d+|https?://[^\s/]+/[^\s/]+/[^\s/]+/(?:issues|pull)/\d+"
_CLOSING = re.compile(
    rf"\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)\b:?\s*(?:{_REF})(?:\s*(?:,|and)\s*(?:{_REF}))*",
    re.IGNORECASE,
)
_ONE_REF = re.compile(_REF)


def _visible(ch: str, previous: str) -> bool:
    """Whether a character shows (or is a line break or tab).

    An emoji presentation selector stays after one non-ASCII character (the icons of
    ghapp's own notices); anywhere else, and in runs, selectors only carry hidden data.
    """
    if ch in _KEEP:
        return True
    if ch in _EMOJI_SELECTORS:
        return previous > "\x7f" and previous not in _EMOJI_SELECTORS
    if unicodedata.category(ch) in _INVISIBLE_CATEGORIES:
        return False
    code = ord(ch)
    return not any(low <= code <= high for low, high in _INVISIBLE_RANGES)


def visible(text: str) -> str:
    """Text without zero-width, bidi, tag, variation-selector and control characters."""
    if text.isascii():  # the common case, and the only one without hidden code points
        return _ASCII_CONTROL.sub("", text)
    kept: list[str] = []
    for ch in text:
        if _visible(ch, kept[-1] if kept else " "):
            kept.append(ch)
    return "".join(kept)


def _disarm_ref(ref: str) -> str:
    """An issue reference GitHub will not link: a full-width #, or a URL in a code span."""
    if ref.startswith("http"):
        return f"`{ref}`"
    return ref.replace("#", "\uff03").replace("GH-", "GH\u2010")


def inert(text: str) -> str:
    """Untrusted text that can neither notify, close an issue, nor hide characters."""
    text = _MENTION.sub("\uff20", visible(text))
    return _CLOSING.sub(lambda m: _ONE_REF.sub(lambda r: _disarm_ref(r.group()), m.group()), text)


def one_line(text: str, limit: int = 2000) -> str:
    """Untrusted text for the middle of a line of ghapp's: inert, on one line, clipped."""
    flat = " / ".join(part.strip() for part in inert(text).splitlines() if part.strip())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def fenced(text: str, info: str = "") -> str:
    """A code block the text cannot close: its fence is longer than any backtick run in it."""
    text = inert(text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def code(text: str, limit: int = 400) -> str:
    """An inline code span the text cannot close, on one line (a path, a command)."""
    text = one_line(text, limit)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def quoted(text: str) -> str:
    """A block quote: whatever markdown or HTML the text opens ends with the quote."""
    return "\n".join(f"> {line}" if line else ">" for line in inert(text).splitlines())


class Scrubber:
    """Removes known secret values and token-shaped strings from text about to be published."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is removed whole.
        self.secrets = tuple(sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return _TOKENS.sub(REDACTED, visible(text))
