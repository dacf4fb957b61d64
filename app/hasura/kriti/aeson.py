"""JSON values as Kriti sees them (aeson's `Value`): equality, ordering and encoding.

Numbers are `Decimal` (aeson's Scientific), so `true` is never `1` and `1 == 1.0`. `Ord Value` is aeson's
derived instance: constructors order Object < Array < String < Number < Bool < Null, objects compare as their
key-sorted pairs (aeson 2's ordered KeyMap). `encode` is aeson's `encode`, used when a string template
interpolates a non-string.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

RANK = {dict: 0, list: 1, str: 2, Decimal: 3, bool: 4, type(None): 5}


def from_python(value: Any) -> Any:
    """A plain JSON-like Python value as a Kriti value (ints and floats become Decimal)."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, Decimal)):
        return value
    if isinstance(value, (int, float)):
        return Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    if isinstance(value, dict):
        return {str(k): from_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [from_python(v) for v in value]
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def to_python(value: Any) -> Any:
    """Back to plain JSON: integral numbers as int, others as float."""
    if isinstance(value, Decimal):  # a huge exponent stays a float: int() of 1e99999999 would take forever
        integral = value.adjusted() < 64 and value == value.to_integral_value()
        return int(value) if integral else float(value)
    if isinstance(value, dict):
        return {k: to_python(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_python(v) for v in value]
    return value


def equal(a: Any, b: Any) -> bool:
    """aeson's `Eq Value`: same constructor and equal contents (objects ignore key order)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def compare(a: Any, b: Any) -> int:
    """aeson's derived `Ord Value`: -1, 0 or 1."""
    ra, rb = RANK[type(a)], RANK[type(b)]
    if ra != rb:
        return -1 if ra < rb else 1
    if isinstance(a, dict):
        return compare([[k, a[k]] for k in sorted(a)], [[k, b[k]] for k in sorted(b)])
    if isinstance(a, list):
        for x, y in zip(a, b, strict=False):  # a shorter prefix orders first
            c = compare(x, y)
            if c:
                return c
        return (len(a) > len(b)) - (len(a) < len(b))
    return (a > b) - (a < b)


def encode(value: Any) -> str:
    """aeson's `encode`: compact, keys in KeyMap order, its number and string formats."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return _number(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ",".join(encode(v) for v in value) + "]"
    return "{" + ",".join(f"{_string(k)}:{encode(value[k])}" for k in sorted(value)) + "}"


def _string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out) + '"'


def _number(value: Decimal) -> str:
    """aeson's `scientific` builder: an integer when 0 <= exponent <= 1024, else Scientific's Generic format."""
    sign, digits, exponent = value.as_tuple()
    coefficient = int("".join(map(str, digits)) or "0")
    if 0 <= exponent <= 1024:
        return ("-" if sign and coefficient else "") + str(coefficient * 10 ** exponent)
    # toDecimalDigits: value = 0.d1d2.. * 10^e, digits without trailing zeros
    text = str(coefficient).rstrip("0") or "0"
    e = len(str(coefficient)) + exponent if coefficient else 0
    prefix = "-" if sign and coefficient else ""
    if coefficient == 0:
        return prefix + "0.0"
    if e < 0 or e > 7:  # Exponent
        return f"{prefix}{text[0]}.{text[1:] or '0'}e{e - 1}"
    if e == 0:  # Fixed
        return f"{prefix}0.{text}"
    whole = text[:e].ljust(e, "0")
    return f"{prefix}{whole}.{text[e:] or '0'}"
