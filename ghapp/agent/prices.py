"""Model prices, so the metering proxy books what a response cost whatever the agent says."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ghapp.core.model import GhappError

PER_TOKEN = 1e-6  # table figures are USD per million tokens
WEB_SEARCH_USD = 0.01
US_GEO_FACTOR = 1.1
_DATE_SUFFIX = re.compile(r"-\d{8}$")


class PriceError(GhappError):
    """A price file or a model the table cannot price."""


@dataclass(frozen=True)
class Rate:
    """USD per million tokens for one model (list prices, metering.md §4)."""

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float


def _rate(i: float, o: float, w5: float, w1: float, r: float) -> Rate:
    return Rate(i, o, w5, w1, r)


_OPUS_4 = _rate(15, 75, 18.75, 30, 1.5)
_OPUS_45 = _rate(5, 25, 6.25, 10, 0.5)
_SONNET_4 = _rate(3, 15, 3.75, 6, 0.3)
_FABLE_5 = _rate(10, 50, 12.5, 20, 1)
BUILTIN: dict[str, Rate] = {
    "claude-opus-4": _OPUS_4,
    "claude-opus-4-0": _OPUS_4,
    "claude-opus-4-1": _OPUS_4,
    "claude-opus-4-5": _OPUS_45,
    "claude-opus-4-6": _OPUS_45,
    "claude-opus-4-7": _OPUS_45,
    "claude-opus-4-8": _OPUS_45,
    "claude-opus-5": _OPUS_45,
    "claude-opus-5-5": _rate(4, 20, 5, 8, 0.2),
    "claude-3-7-sonnet": _SONNET_4,
    "claude-sonnet-4": _SONNET_4,
    "claude-sonnet-4-0": _SONNET_4,
    "claude-sonnet-4-5": _SONNET_4,
    "claude-sonnet-4-6": _SONNET_4,
    "claude-sonnet-5": _rate(2, 10, 2.5, 4, 0.2),
    "claude-sonnet-5-5": _rate(2, 10, 2.5, 4, 0.1),
    "claude-3-5-haiku": _rate(0.8, 4, 1, 1.6, 0.08),
    "claude-haiku-4-5": _rate(1, 5, 1.25, 2, 0.1),
    "claude-haiku-5-5": _rate(0.1, 0.5, 0.125, 0.2, 0.01),
    "claude-fable-5": _FABLE_5,
    "claude-mythos-5": _FABLE_5,
    "claude-fable-5-1": _rate(10, 50, 12.5, 20, 0.25),
    "claude-mythos-5-1": _rate(10, 50, 12.5, 20, 0.25),
}
# Haiku 5.5 charges every token of a request at a higher band once its prompt passes 100k.
LONG_PROMPT: dict[str, tuple[int, Rate]] = {
    "claude-haiku-5-5": (100_000, _rate(0.5, 2.5, 0.625, 1, 0.05)),
}
FAST: dict[str, Rate] = {
    "claude-opus-4-6": _rate(30, 150, 37.5, 60, 3),
    "claude-opus-4-7": _rate(30, 150, 37.5, 60, 3),
    "claude-opus-4-8": _rate(10, 50, 12.5, 20, 1),
    "claude-opus-5": _rate(10, 50, 12.5, 20, 1),
    "claude-opus-5-5": _rate(8, 40, 10, 16, 0.4),
}


def normalise(model: str) -> str:
    """The table key of a model id: lowercase, no `[1m]`, no trailing date."""
    key = model.strip().lower().removesuffix("[1m]")
    return _DATE_SUFFIX.sub("", key)


def _count(usage: Mapping[str, Any], name: str) -> int:
    """A token count from a usage object; anything odd counts as 0."""
    value = usage.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return max(int(value), 0)


@dataclass(frozen=True)
class PriceTable:
    """Prices by normalised model id; a model with no price is refused, never free."""

    rates: Mapping[str, Rate]

    def knows(self, model: str) -> bool:
        return normalise(model) in self.rates

    def cost(self, model: str, usage: Mapping[str, Any]) -> float:
        """USD for one response's usage (the CLI's own formula, so the two agree)."""
        key = normalise(model)
        rate = self.rates.get(key)
        if rate is None:
            raise PriceError(f"no price for model {model!r}")
        inp = _count(usage, "input_tokens")
        out = _count(usage, "output_tokens")
        read = _count(usage, "cache_read_input_tokens")
        write = _count(usage, "cache_creation_input_tokens")
        split = usage.get("cache_creation")
        one_hour = _count(split, "ephemeral_1h_input_tokens") if isinstance(split, dict) else 0
        one_hour = min(one_hour, write)
        if usage.get("speed") == "fast" and key in FAST:
            rate = FAST[key]
        band = LONG_PROMPT.get(key)
        if band is not None and inp + read + write > band[0]:
            rate = band[1]
        tokens = (
            inp * rate.input
            + out * rate.output
            + read * rate.cache_read
            + (write - one_hour) * rate.cache_write_5m
            + one_hour * rate.cache_write_1h
        ) * PER_TOKEN
        if usage.get("inference_geo") == "us":
            tokens *= US_GEO_FACTOR
        tools = usage.get("server_tool_use")
        searches = _count(tools, "web_search_requests") if isinstance(tools, dict) else 0
        return tokens + searches * WEB_SEARCH_USD


def load_prices(path: Path | None) -> PriceTable:
    """The built-in table, overridden and extended by MC_PRICES (JSON, USD per million)."""
    rates = dict(BUILTIN)
    if path is None:
        return PriceTable(rates)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PriceError(f"MC_PRICES: cannot read {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise PriceError("MC_PRICES: must be a JSON object of model id -> prices")
    fields = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
    for model, entry in raw.items():
        if not isinstance(entry, dict) or set(entry) - set(fields) or "input" not in entry:
            raise PriceError(
                f"MC_PRICES: {model!r} needs input and output prices, optional "
                "cache_write_5m, cache_write_1h, cache_read (USD per million tokens)"
            )
        try:
            inp, out = float(entry["input"]), float(entry["output"])
            values = {
                "cache_write_5m": float(entry.get("cache_write_5m", inp * 1.25)),
                "cache_write_1h": float(entry.get("cache_write_1h", inp * 2)),
                "cache_read": float(entry.get("cache_read", inp * 0.1)),
            }
        except (KeyError, TypeError, ValueError):
            raise PriceError(f"MC_PRICES: {model!r} prices must be numbers") from None
        numbers = (inp, out, *values.values())
        if not all(math.isfinite(v) and v >= 0 for v in numbers):
            raise PriceError(f"MC_PRICES: {model!r} prices must be finite and >= 0")
        rates[normalise(model)] = Rate(inp, out, **values)
    return PriceTable(rates)
