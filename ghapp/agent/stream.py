"""Pure reading of the CLI's stream-json lines: the result, the running cost, readable summaries."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ghapp.core.model import GhappError

CLIP = 300


class StreamError(GhappError):
    """A line that is not a stream-json object; the caller logs it and reads on."""


@dataclass(frozen=True)
class StreamEvent:
    """One decoded line: its type, subtype and the whole object."""

    type: str
    subtype: str | None
    data: Mapping[str, Any]


@dataclass(frozen=True)
class ResultInfo:
    """The fields of the final `result` line that decide the outcome."""

    subtype: str
    is_error: bool
    cost_usd: float | None
    permission_denials: int
    num_turns: int | None
    text: str
    errors: tuple[str, ...] = ()
    terminal_reason: str | None = None

    @property
    def success(self) -> bool:
        """The CLI's own verdict; git still decides whether work exists."""
        return self.subtype == "success" and not self.is_error and self.permission_denials == 0


def parse_line(line: str) -> StreamEvent | None:
    """Decode one line; None for a blank one, StreamError for anything not a typed object."""
    text = line.strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise StreamError(f"not JSON: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise StreamError("not a JSON object")
    kind = data.get("type")
    if not isinstance(kind, str) or not kind:
        raise StreamError("no type field")
    sub = data.get("subtype")
    return StreamEvent(kind, sub if isinstance(sub, str) else None, data)


def _num(value: object) -> float | None:
    """A finite non-negative number, or None; bools and strings are not numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _int(value: object) -> int | None:
    """A non-negative int, or None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _str(value: object) -> str:
    """A string field, or empty."""
    return value if isinstance(value, str) else ""


def _scalar(value: object) -> str:
    """A number or string for display; anything else (possibly deeply nested) as '?'."""
    if isinstance(value, str):
        return value
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else "?"


def clip(text: str, limit: int = CLIP) -> str:
    """One printable line of at most `limit` characters, safe to encode as UTF-8."""
    flat = " ".join(text.split())
    flat = "".join(ch for ch in flat if ch.isprintable())
    flat = flat.encode("utf-8", "replace").decode("utf-8")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def parse_result(data: Mapping[str, Any]) -> ResultInfo:
    """The outcome fields of a result object, with defaults for anything missing or odd."""
    cost = _num(data.get("total_cost_usd"))
    if cost is None:
        cost = _num(data.get("cost_usd"))
    denials = data.get("permission_denials")
    errors = data.get("errors")
    reason = data.get("terminal_reason")
    return ResultInfo(
        subtype=_str(data.get("subtype")) or "unknown",
        is_error=data.get("is_error") is not False,
        cost_usd=cost,
        permission_denials=len(denials) if isinstance(denials, list) else 0,
        num_turns=_int(data.get("num_turns")),
        text=_str(data.get("result")),
        errors=tuple(e for e in errors if isinstance(e, str)) if isinstance(errors, list) else (),
        terminal_reason=reason if isinstance(reason, str) else None,
    )


def _blocks(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Content blocks of an assistant or user line."""
    message = data.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        return []
    return [b for b in content if isinstance(b, dict)]


def _tool_detail(name: str, args: object) -> str:
    """The one argument of a tool call a reader wants to see."""
    if not isinstance(args, dict):
        return ""
    for key in ("command", "file_path", "path", "pattern", "url", "query", "description"):
        if isinstance(args.get(key), str):
            return str(args[key])
    try:
        return json.dumps(args, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):
        return "…"


def _result_text(content: object) -> str:
    """Text of a tool_result's content (a string or a list of text blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_str(b.get("text")) for b in content if isinstance(b, dict))
    return ""


def summarize(event: StreamEvent) -> list[str]:
    """Readable one-liners for /logs: tool calls, commands, text, results."""
    data = event.data
    if event.type == "system":
        if event.subtype == "init":
            return [
                clip(
                    f"session started: model {_str(data.get('model'))}, cwd {_str(data.get('cwd'))}"
                )
            ]
        if event.subtype == "api_retry":
            attempt, most = _scalar(data.get("attempt")), _scalar(data.get("max_retries"))
            return [clip(f"API retry {attempt}/{most} (HTTP {_scalar(data.get('error_status'))})")]
        return []
    if event.type == "assistant":
        lines = []
        for block in _blocks(data):
            if block.get("type") == "text" and _str(block.get("text")).strip():
                lines.append(clip("assistant: " + _str(block.get("text"))))
            elif block.get("type") == "tool_use":
                name = _str(block.get("name")) or "?"
                lines.append(clip(f"tool {name}: {_tool_detail(name, block.get('input'))}"))
        return lines
    if event.type == "user":
        lines = []
        for block in _blocks(data):
            if block.get("type") == "tool_result":
                tag = "error" if block.get("is_error") is True else "ok"
                lines.append("  -> " + clip(f"{tag}: {_result_text(block.get('content'))}"))
            elif block.get("type") == "text":
                lines.append(clip("user: " + _str(block.get("text"))))
        return lines
    if event.type == "result":
        res = parse_result(data)
        cost = "?" if res.cost_usd is None else f"${res.cost_usd:.4f}"
        flag = ", is_error" if res.is_error else ""
        tail = res.text or "; ".join(res.errors)
        return [
            clip(
                f"result: {res.subtype}{flag}, {cost}, {res.num_turns} turns, "
                f"{res.permission_denials} denials: {tail}"
            )
        ]
    return []


@dataclass
class StreamState:
    """Everything learned from the lines so far; feed it lines in order."""

    result: ResultInfo | None = None
    session_id: str | None = None
    lines: int = 0
    bad_lines: int = 0

    def feed(self, line: str) -> list[str]:
        """Take one line; return its summaries. StreamError for a line that is not an event."""
        self.lines += 1
        try:
            event = parse_line(line)
        except StreamError:
            self.bad_lines += 1
            raise
        if event is None:
            return []
        data = event.data
        if self.session_id is None and isinstance(data.get("session_id"), str):
            self.session_id = data["session_id"]
        if event.type == "result":
            self.result = parse_result(data)
        return summarize(event)


def summaries(lines: Iterable[str]) -> list[str]:
    """Readable lines for /logs from a task log; lines that are not events are skipped."""
    state = StreamState()
    out: list[str] = []
    for line in lines:
        try:
            out += state.feed(line)
        except StreamError:
            continue
    return out
