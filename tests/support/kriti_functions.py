"""kriti-lang's `basicFuncMap` (src/Kriti/CustomFunctions.hs), only for running its own test corpus.

Hasura evaluates connection templates without any function map (`Kriti.runEval`), so the project's Kriti
never registers these; kriti-lang's golden evaluation tests do (`runEvalWith ... basicFuncMap`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from urllib.parse import quote


def _empty(v: Any) -> bool:  # emptyF
    if isinstance(v, bool):
        raise ValueError("Cannot define emptiness for a boolean")
    if isinstance(v, (dict, list)):
        return not v
    if isinstance(v, str):
        return v.strip() == ""
    if isinstance(v, Decimal):
        return v == 0
    return True


def _size(v: Any) -> Decimal:  # lengthF
    if isinstance(v, bool):
        return Decimal(int(v))
    if isinstance(v, (dict, list, str)):
        return Decimal(len(v))
    return v if isinstance(v, Decimal) else Decimal(0)


def _inverse(v: Any) -> Any:  # inverseF
    if isinstance(v, bool):
        return not v
    if isinstance(v, (list, str)):
        return v[::-1]
    if isinstance(v, Decimal):
        return 1 / v
    return v


def _head(v: Any) -> Any:  # headF
    if isinstance(v, (list, str)):
        if not v:
            raise ValueError("Empty array" if isinstance(v, list) else "Empty string")
        return v[0]
    raise ValueError("Expected an array or string")


def _tail(v: Any) -> Any:  # tailF
    if isinstance(v, (list, str)):
        return v[1:]
    raise ValueError("Expected an array or string")


def _text(f):  # parserToFunc (J.withText "String" ...)
    def run(v: Any) -> Any:
        if not isinstance(v, str):
            raise ValueError("expected String")
        return f(v)
    return run


def _to_pairs(v: Any) -> Any:  # toPairsF: KeyMap order
    if not isinstance(v, dict):
        raise ValueError("expected Object")
    return [[k, v[k]] for k in sorted(v)]


def _from_pairs(v: Any) -> Any:  # fromPairsF: the last pair of a key wins (KM.fromList)
    if not isinstance(v, list) or not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
                                          for p in v):
        raise ValueError("Expected an array of shape [ [k1,v1], [k2,v2] ... ] - With String keys.")
    return {k: val for k, val in v}


def _remove_nulls(v: Any) -> Any:
    if not isinstance(v, list):
        raise ValueError("expected Array")
    return [x for x in v if x is not None]


def _concat(v: Any) -> Any:  # arrays, else strings, else objects (later keys win)
    if not isinstance(v, list):
        raise ValueError("expected Array")
    if all(isinstance(x, list) for x in v):
        return [y for x in v for y in x]
    if all(isinstance(x, str) for x in v):
        return "".join(v)
    if all(isinstance(x, dict) for x in v):
        out: dict[str, Any] = {}
        for x in v:
            out.update(x)
        return out
    raise ValueError("expected Object")


def _not(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("expected Bool")
    return not v


BASIC_FUNC_MAP = {
    "empty": _empty, "size": _size, "inverse": _inverse, "head": _head, "tail": _tail,
    "toCaseFold": _text(str.casefold), "toLower": _text(str.lower), "toUpper": _text(str.upper),
    "toTitle": _text(str.title), "escapeUri": _text(lambda s: quote(s, safe="-_.~")),
    "fromPairs": _from_pairs, "toPairs": _to_pairs, "removeNulls": _remove_nulls, "concat": _concat, "not": _not,
}
