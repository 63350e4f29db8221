"""Telegram's message limit: 4,096 UTF-16 units, so long texts go out in a few parts."""

from __future__ import annotations

from ghapp.messaging.text import MAX_MESSAGE, cut, trim, units

MAX_PARTS = 4


def split(text: str, limit: int = MAX_MESSAGE, max_parts: int = MAX_PARTS) -> list[str]:
    """Parts within the limit, broken at line ends where possible; the rest is trimmed."""
    text = text.strip() or "(empty)"
    parts: list[str] = []
    rest = text
    while rest and len(parts) < max_parts:
        if units(rest) <= limit:
            parts.append(rest)
            rest = ""
            break
        head = cut(rest, limit)
        newline = head.rfind("\n")
        if newline > len(head) // 2:
            head = head[:newline]
        parts.append(head.rstrip() or head)
        rest = rest[len(head) :].lstrip("\n")
    if rest:
        parts[-1] = trim(parts[-1] + "\n" + rest, limit)
    return parts
