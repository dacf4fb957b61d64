"""Kriti's syntax tree: one dataclass per `ValueExt` constructor of kriti-lang `src/Kriti/Parser/Token.hs`."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from app.hasura.kriti.errors import Span


@dataclass(frozen=True)
class Node:
    span: Span


@dataclass(frozen=True)
class Object(Node):
    fields: tuple[tuple[str, Node], ...]  # a key given twice keeps its first value (see parser.object)


@dataclass(frozen=True)
class Array(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True)
class String(Node):
    value: str


@dataclass(frozen=True)
class Number(Node):
    value: Decimal  # Scientific


@dataclass(frozen=True)
class Boolean(Node):
    value: bool


@dataclass(frozen=True)
class Null(Node):
    pass


@dataclass(frozen=True)
class StringTem(Node):
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class Var(Node):
    name: str


@dataclass(frozen=True)
class RequiredFieldAccess(Node):
    target: Node
    field: str | Node  # Left name (`.name`) or Right term (`[term]`, `['key']`)


@dataclass(frozen=True)
class OptionalFieldAccess(Node):
    target: Node
    fields: tuple[str | Node, ...]  # in source order


@dataclass(frozen=True)
class Elif:
    span: Span
    cond: Node
    then: Node


@dataclass(frozen=True)
class Iff(Node):
    cond: Node
    then: Node
    elifs: tuple[Elif, ...]
    otherwise: Node


@dataclass(frozen=True)
class Binary(Node):
    """Eq, NotEq, Gt, Gte, Lt, Lte, And, Or, In, Defaulting: `op` is the constructor's name."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Range(Node):
    index: str | None
    binder: str
    source: Node
    body: Node


@dataclass(frozen=True)
class Function(Node):
    name: str
    argument: Node
