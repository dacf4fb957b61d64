"""Bounded JSON decoding: size, nesting depth, numbers and text checked before and during the parse.

Pure, no I/O. The publisher (action bodies) and the writer (responses) both decode untrusted JSON
with it, so neither relies on the interpreter's recursion limit or int-size limit to stop hostile
input: every refusal is a `JsonRefused` with a short machine reason.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

MAX_INT_DIGITS = 1000  # far beyond any real identifier or amount; below Python's 4300-digit str<->int limit

# a JSON string literal (possessive: no backtracking on megabyte strings), and everything that is not a bracket
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"')
_NOT_BRACKET = re.compile(rb"[^\[\]{}]++")
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class JsonRefused(ValueError):
    """Input that is not acceptable JSON; `reason` is one of REASONS, `detail` is short and never echoes input."""

    REASONS = ("too_large", "too_deep", "invalid_json", "invalid_number")

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def nesting_depth(data: bytes) -> int:
    """Deepest array/object nesting, counted without parsing (brackets inside strings do not count)."""
    structure = _NOT_BRACKET.sub(b"", _STRING.sub(b"", data))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, structure)), default=0)


def _refuse_constant(name: str) -> Any:
    raise JsonRefused("invalid_number", f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonRefused("invalid_number", f"number of {len(text)} characters overflows a double")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise JsonRefused("invalid_number", f"integer of {len(text)} digits; the limit is {MAX_INT_DIGITS}")
    return int(text)


# built once: json.loads with hooks builds a decoder and its scanner on every call (a third of a response's parse).
# Shared as json's own default decoder is: decode() keeps no state between calls
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int)


def loads(data: bytes, *, max_bytes: int, max_depth: int) -> Any:
    """Decode UTF-8 JSON of at most `max_bytes` and `max_depth` levels; finite numbers only."""
    if len(data) > max_bytes:
        raise JsonRefused("too_large", f"{len(data)} bytes; the limit is {max_bytes}")
    # brackets inside strings only add to this count: a count within the limit proves the depth without the scan
    if data.count(b"[") + data.count(b"{") > max_depth:
        depth = nesting_depth(data)
        if depth > max_depth:
            raise JsonRefused("too_deep", f"nested {depth} levels; the limit is {max_depth}")
    try:
        text = data.decode("utf-8")
        if text.startswith("\ufeff"):  # as json.loads refuses it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _DECODER.decode(text)
    except JsonRefused:
        raise
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise JsonRefused("invalid_json", _short(exc)) from None


def _short(exc: BaseException) -> str:
    # JSONDecodeError's message names a position, never the input; UnicodeDecodeError's repr holds bytes
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 at byte {exc.start}"
    return str(exc)[:200]


def may_hold_unstorable_text(data: bytes) -> bool:
    """Whether `loads(data)` can hold text unstorable_text refuses. Only a \\u escape decodes to NUL or a lone
    surrogate: a raw control byte in a string is refused by the strict parser, an encoded surrogate by UTF-8."""
    return b"\\u" in data


def unstorable_text(value: Any) -> str | None:
    """Why PostgreSQL text/jsonb cannot hold this decoded value (NUL, lone surrogate), or None. Iterative."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            problem = _text_problem(item)
            if problem:
                return problem
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "a lone surrogate (not valid Unicode text)"
    return None


def utf8_size(value: Any) -> int:
    """Bytes of the compact UTF-8 JSON encoding: how the value is stored and sent."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
