"""Render the project's Kriti tree the way kriti-lang's golden parser files show a `ValueExt` (Haskell `show`
through pretty-simple), spans left out, as a token list; and read a golden file into the same tokens."""

from __future__ import annotations

import re
from decimal import Decimal

from app.hasura.kriti import ast

SPAN = re.compile(r"\(\s*Span\s*\{\s*start\s*=\s*AlexSourcePos\s*\{[^}]*\}\s*,\s*end\s*=\s*AlexSourcePos\s*"
                  r"\{[^}]*\}\s*\}\s*\)")
TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|-?[0-9][0-9.e\-]*|[A-Za-z_][A-Za-z0-9_]*|[()\[\],]')
BINARY = ("Eq", "NotEq", "Gt", "Gte", "Lt", "Lte", "And", "Or", "In", "Defaulting")


def golden_tokens(text: str) -> list[str]:
    return TOKEN.findall(SPAN.sub("", text))


def _string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


def _number(d: Decimal) -> str:
    """Scientific's `show` (Generic format: fixed when 0 <= e <= 7, else exponent)."""
    sign = "-" if d < 0 else ""
    d = abs(d).normalize() if d else Decimal(0)
    _, digits, exponent = d.as_tuple()
    text = "".join(map(str, digits)).rstrip("0") or "0"
    e = len(digits) + exponent if d else 0
    if d == 0:
        return "0.0"
    if e < 0 or e > 7:
        return f"{sign}{text[0]}.{text[1:] or '0'}e{e - 1}"
    if e == 0:
        return f"{sign}0.{text}"
    return f"{sign}{text[:e].ljust(e, '0')}.{text[e:] or '0'}"


def show(node: object, wrap: bool = False) -> str:  # noqa: C901, PLR0911 - one case per constructor
    def app(text: str) -> str:
        return f"({text})" if wrap else text

    def either(field: object) -> str:
        return f"Left {_string(field)}" if isinstance(field, str) else f"Right {show(field, True)}"

    if isinstance(node, ast.Null):
        return app("Null")  # `Null Span`: an application too
    if isinstance(node, ast.Boolean):
        return app(f"Boolean {node.value}")
    if isinstance(node, ast.Number):
        n = _number(node.value)
        return app(f"Number {'(' + n + ')' if n.startswith('-') else n}")
    if isinstance(node, ast.String):
        return app(f"String {_string(node.value)}")
    if isinstance(node, ast.StringTem):
        return app(f"StringTem [{', '.join(show(p) for p in node.parts)}]")
    if isinstance(node, ast.Array):
        return app(f"Array [{', '.join(show(p) for p in node.items)}]")
    if isinstance(node, ast.Object):
        pairs = ", ".join(f"({_string(k)}, {show(v)})" for k, v in sorted(node.fields))
        return app(f"Object (fromList [{pairs}])")
    if isinstance(node, ast.Var):
        return app(f"Var {_string(node.name)}")
    if isinstance(node, ast.RequiredFieldAccess):
        return app(f"RequiredFieldAccess {show(node.target, True)} ({either(node.field)})")
    if isinstance(node, ast.OptionalFieldAccess):  # Grammar.y's many() list is newest first
        return app(f"OptionalFieldAccess {show(node.target, True)} "
                   f"[{', '.join(either(f) for f in reversed(node.fields))}]")
    if isinstance(node, ast.Iff):
        elifs = ", ".join(f"Elif {show(e.cond, True)} {show(e.then, True)}" for e in node.elifs)
        return app(f"Iff {show(node.cond, True)} {show(node.then, True)} [{elifs}] {show(node.otherwise, True)}")
    if isinstance(node, ast.Binary):
        return app(f"{node.op} {show(node.left, True)} {show(node.right, True)}")
    if isinstance(node, ast.Range):
        index = "Nothing" if node.index is None else f"(Just {_string(node.index)})"
        return app(f"Range {index} {_string(node.binder)} {show(node.source, True)} {show(node.body, True)}")
    if isinstance(node, ast.Function):
        return app(f"Function {_string(node.name)} {show(node.argument, True)}")
    raise TypeError(node)


def node_tokens(node: ast.Node) -> list[str]:
    return TOKEN.findall(show(node))
