"""JSON from untrusted bytes in time linear in their size, and peer values shown safely in text.

Used for the safetensors header and the gauntlet metadata of a peer's file. The standard parser
is linear except where hooks make it otherwise, so the hooks here are linear too: duplicate keys
are found with one set per object (the first version rebuilt a dict per key, so a 300 KB header
of distinct keys with one repeat took 20 s, and 4 MB hours), integers are refused past a fixed
number of digits before `int()` sees them (its conversion is quadratic in the digits), and
NaN/Infinity/overflowing floats are refused where they are read. Nesting deeper than the
interpreter allows ends in RecursionError, which `loads` reports like any other fault.
"""

from __future__ import annotations

import json
import math
from itertools import islice
from typing import Any

MAX_INT_DIGITS = 40
"""Longest integer literal read (sign included); every integer of a valid file has < 20 digits."""


class JSONRefused(ValueError):
    """The text is not JSON this project accepts; the message says why."""


def _pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in items:
        if key in out:
            raise JSONRefused(f"duplicate key {show(key)}")
        out[key] = value
    return out


def _int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise JSONRefused(f"integer literal of {len(text)} characters (at most {MAX_INT_DIGITS})")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONRefused(f"number {show(text)} overflows a float")
    return value


def _constant(name: str) -> Any:
    raise JSONRefused(f"non-standard constant {name}")


def loads(text: bytes | str) -> Any:
    """json.loads without duplicate keys, NaN/Infinity, overlong integers or overflowing floats.

    Duplicate keys matter: Python keeps the last one while other parsers may keep the first, so
    a file could show different tensors to different readers; likewise bytes are read as UTF-8
    only (as safetensors reads them), never as a guessed UTF-16. Every fault is a JSONRefused.
    """
    try:
        if isinstance(text, bytes):  # json.loads would guess UTF-16/32 from the first bytes; files are UTF-8
            text = text.decode("utf-8")
        return json.loads(text, object_pairs_hook=_pairs, parse_int=_int, parse_float=_float,
                          parse_constant=_constant)
    except JSONRefused:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise JSONRefused(f"{type(exc).__name__}: {str(exc)[:200]}") from None


def is_int(x: Any) -> bool:
    """A JSON integer (Python's bool is an int, JSON's true is not)."""
    return isinstance(x, int) and not isinstance(x, bool)


def finite_float(v: Any) -> float | None:
    """A JSON number as a finite float, else None (an integer can be too large for a float)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def show(value: Any, limit: int = 60) -> str:
    """A short printable ASCII rendering of a parsed JSON value, bounded in time and length.

    Peer strings go through `ascii`, so control characters, bidi overrides and lone surrogates
    appear escaped; containers show their size and first items only, never recursing deeply.
    """
    return _show(value, limit, depth=2)


def _show(value: Any, limit: int, depth: int) -> str:
    if isinstance(value, str):
        cut = value[:limit]
        return ascii(cut) + ("..." if len(value) > limit else "")
    if value is None or isinstance(value, (bool, float)):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 128 else f"<integer of {value.bit_length()} bits>"
    if isinstance(value, dict):
        if depth == 0:
            return f"<object of {len(value)} keys>"
        head = ", ".join(f"{_show(k, 20, 0)}: {_show(v, 20, depth - 1)}" for k, v in islice(value.items(), 3))
        return "{" + head + (", ..." if len(value) > 3 else "") + "}"
    if isinstance(value, list):
        if depth == 0:
            return f"<array of {len(value)}>"
        head = ", ".join(_show(v, 20, depth - 1) for v in value[:3])
        return "[" + head + (", ..." if len(value) > 3 else "") + "]"
    return f"<{type(value).__name__}>"
