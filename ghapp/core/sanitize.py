"""Untrusted text made safe to quote to the agent: hidden text removed, fences unforgeable."""

from __future__ import annotations

import re
import secrets
import unicodedata

MAX_FIELD_CHARS = 20_000

# Text GitHub never shows but the agent would read.
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)
# A markdown link reference definition, `[label]: destination "title"`; GitHub renders none
# of it, so `[//]: # (...)` is a comment. Titles may run over lines (never a blank one).
_LINK_DEF = re.compile(
    r"^ {0,3}\[(?P<label>(?:[^\[\]\\\n]|\\.){1,999})\]:"
    r"[ \t]*\n?[ \t]*(?P<dest><[^<>\n]*>|\S+)"
    r"(?:[ \t]*\n?[ \t]*(?:\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|\((?:[^()\\]|\\.)*\)))?"
    r"[ \t]*$",
    re.MULTILINE,
)
# Image alt text and link titles: shown only when an image fails, or on hover.
_IMAGE_ALT = re.compile(r"!\[(?:[^\[\]\\]|\\.)*\](?=[(\[])")
_LINK_TITLE = re.compile(
    r"\]\((?P<dest><[^<>]*>|[^\s()]*)\s+(?:\"[^\"]*\"|'[^']*'|\([^()]*\))\s*\)"
)
_IMG_ATTR = re.compile(
    r"(<img\b[^>]*?)\s+(?:alt|title)\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>]+)", re.IGNORECASE
)
_DETAILS_OPEN = re.compile(r"<details\b[^>]*>", re.IGNORECASE)
_DETAILS_CLOSE = re.compile(r"</details\s*>", re.IGNORECASE)
COLLAPSED = "[collapsed on GitHub: the requester may not have opened this part]"
COLLAPSED_END = "[end of the collapsed part]"

# Invisible characters beyond categories Cf/Co/Cs/Cc: variation selectors (which can smuggle
# bytes after any visible character), the combining grapheme joiner, Hangul fillers.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Co", "Cs", "Cc"})
_INVISIBLE_RANGES = ((0xFE00, 0xFE0F), (0xE0100, 0xE01EF), (0xE0000, 0xE007F))
_INVISIBLE_CHARS = frozenset({0x034F, 0x115F, 0x1160, 0x3164, 0xFFA0, 0x180E})
_KEEP = frozenset("\n\t")
_LINE_BREAKS = str.maketrans({"\u2028": "\n", "\u2029": "\n", "\x85": "\n", "\r": None})


def _visible(ch: str) -> bool:
    """False for a character that renders as nothing."""
    if ch in _KEEP:
        return True
    code = ord(ch)
    if code in _INVISIBLE_CHARS or any(lo <= code <= hi for lo, hi in _INVISIBLE_RANGES):
        return False
    return unicodedata.category(ch) not in _INVISIBLE_CATEGORIES


def _strip_link_definitions(text: str) -> str:
    """Drop link definitions nothing refers to; keep a referenced one's target, not its title."""
    bare = _LINK_DEF.sub("", text)

    def keep(m: re.Match[str]) -> str:
        label = m.group("label")
        referenced = f"[{label.lower()}]" in bare.lower()
        dest = m.group("dest")
        return f"[{label}]: {dest}" if referenced and dest not in ("#", "<>") else ""

    return _LINK_DEF.sub(keep, text)


def _strip_img_attrs(text: str) -> str:
    while True:
        stripped = _IMG_ATTR.sub(r"\1", text)
        if stripped == text:
            return text
        text = stripped


def clip(text: str, limit: int) -> str:
    """At most `limit` characters of text; a cut one says how much was left out."""
    if len(text) <= limit:
        return text
    marker = f"\n[clipped: {len(text) - limit:,} more characters not shown]"
    return text[: max(0, limit - len(marker))] + marker


def sanitize(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    """Untrusted markdown as GitHub shows it: hidden parts and invisible characters removed."""
    text = "".join(ch for ch in text.translate(_LINE_BREAKS) if _visible(ch))
    text = _HTML_COMMENT.sub("", text)
    text = _strip_link_definitions(text)
    text = _IMAGE_ALT.sub("![]", text)
    text = _LINK_TITLE.sub(r"](\g<dest>)", text)
    text = _strip_img_attrs(text)
    text = _DETAILS_OPEN.sub(f"\n{COLLAPSED}\n", text)
    text = _DETAILS_CLOSE.sub(f"\n{COLLAPSED_END}\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    return clip(text, limit)


def one_line(text: str, limit: int = 200) -> str:
    """Untrusted text for a label: sanitised, on one line, short."""
    return " ".join(sanitize(text, limit).split())


def new_nonce() -> str:
    """The random part of one attempt's fence markers; no user text can know it."""
    return secrets.token_hex(8)


# Text shaped like a marker inside a field (code such as `>>> x` or `a >>> 2` is left alone).
_FENCE_LIKE = re.compile(r"<{3,}(?=\s*DATA)|(?<=DATA)[\w-]*\s*>{3,}", re.IGNORECASE)


class Fence:
    """One attempt's markers around user text; text inside can neither close nor forge them."""

    def __init__(self, nonce: str | None = None) -> None:
        self.nonce = nonce or new_nonce()
        self.open = f"<<<DATA-{self.nonce}"
        self.close = f"DATA-{self.nonce}>>>"

    def neutralise(self, text: str) -> str:
        """Field text with the nonce and anything shaped like a marker defused."""
        text = re.sub(re.escape(self.nonce), "[marker]", text, flags=re.IGNORECASE)

        def defuse(m: re.Match[str]) -> str:
            found = m.group(0)
            return found.replace("<", "\u2039").replace(">", "\u203a")

        return _FENCE_LIKE.sub(defuse, text)

    def wrap(self, label: str, text: str) -> str:
        """A block of user text under a label ghapp wrote (itself defused, on one line)."""
        head = self.neutralise(" ".join(label.split()))
        return f"{self.open} {head}\n{self.neutralise(text)}\n{self.close}"
