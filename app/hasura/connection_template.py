"""Hasura connection templates (Kriti), checked offline: parse, resolve names, evaluate a request.

Pure. Hasura Enterprise renders a source's connection template for each non-admin request and routes it
to what the template resolves to: `$.primary`, `$.read_replicas`, `$.default` or `$.connection_set.<name>`.
Hasura itself cannot run here, so the stack checks a template before anything is deployed with the Kriti
subset below, and the bootstrap asks the real Hasura (`pg_test_connection_template`) for the same cases.

Supported (anything else is refused with the position, so a template is never half-checked):
  {{ if E }} … {{ elif E }} … {{ else }} … {{ end }}   blocks, nested; text outside {{ }} only whitespace
  {{ E }}                                              the route, e.g. {{ $.connection_set.analytics }}
  E: paths $.a.b, $.a?.b, $.a["k"], $.a?["k"]; "strings", numbers, true, false, null; ( E );
     == != < <= > >=, && ||, not(E), E ?? E
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

ROUTES = ("primary", "read_replicas", "default")
REQUEST_KEYS = ("headers", "session", "query")
QUERY_KEYS = ("operation_type", "operation_name")
OPERATION_TYPES = ("query", "mutation", "subscription")
MAX_TEMPLATE_CHARS = 16_384
MAX_NESTING = 32  # if blocks, and parentheses/not() inside one expression
MAX_OPERATORS = 128  # per expression: keeps parse and evaluation depth bounded


class TemplateError(ValueError):
    """The template is not valid in the supported Kriti subset, or does not resolve to one route."""


@dataclass(frozen=True)
class Route:
    """Where a request goes: routing_to = primary | read_replicas | default | connection_set (value = member)."""

    routing_to: str
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> Route:
        """`primary`, `read_replicas`, `default` or `connection_set.<member>` (the stack file's spelling)."""
        if text in ROUTES:
            return cls(text)
        member = text.removeprefix("connection_set.")
        if member != text and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", member):
            return cls("connection_set", member)
        raise TemplateError(f"{text!r} is not a route (primary, read_replicas, default, connection_set.<name>)")

    def __str__(self) -> str:
        return f"connection_set.{self.value}" if self.routing_to == "connection_set" else self.routing_to


# ------------------------------------------------------------------ lexing
TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<op>\?\?|==|!=|<=|>=|&&|\|\||\?\.|\?\[|[<>()\[\].$])
  | (?P<word>[A-Za-z_][A-Za-z0-9_-]*)
""", re.VERBOSE)


def _tokens(expr: str, offset: int) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(expr):
        match = TOKEN.match(expr, pos)
        if match is None:
            raise TemplateError(f"unexpected {expr[pos]!r} at character {offset + pos}")
        if match.lastgroup != "ws":
            out.append((match.lastgroup, match.group(), offset + pos))
        pos = match.end()
    return out


# ------------------------------------------------------------------ expressions (parsed to tuples)
class _Expr:
    def __init__(self, tokens: list[tuple[str, str, int]], end: int):
        self.tokens, self.i, self.end = tokens, 0, end
        self.depth = self.operators = 0

    def nested(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise TemplateError(f"expression nested over {MAX_NESTING} deep at character {pos}")

    def peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def take(self, want: str | None = None) -> tuple[str, str, int]:
        if self.i >= len(self.tokens):
            raise TemplateError(f"expression ends early at character {self.end}" +
                                (f" (expected {want!r})" if want else ""))
        token = self.tokens[self.i]
        if want is not None and token[1] != want:
            raise TemplateError(f"expected {want!r} at character {token[2]}, found {token[1]!r}")
        self.i += 1
        return token

    def parse(self) -> tuple:
        node = self.binary(0)
        if self.i < len(self.tokens):
            kind, text, pos = self.tokens[self.i]
            raise TemplateError(f"unexpected {text!r} at character {pos}")
        return node

    LEVELS = (("??",), ("||",), ("&&",), ("==", "!="), ("<", "<=", ">", ">="))

    def binary(self, level: int) -> tuple:
        if level == len(self.LEVELS):
            return self.primary()
        node = self.binary(level + 1)
        while self.peek() in self.LEVELS[level]:
            _, op, pos = self.take()
            self.operators += 1
            if self.operators > MAX_OPERATORS:
                raise TemplateError(f"over {MAX_OPERATORS} operators in one expression at character {pos}")
            node = ("op", op, node, self.binary(level + 1))
        return node

    def primary(self) -> tuple:
        kind, text, pos = self.take()
        if kind == "string":
            try:
                return ("lit", json.loads(text))
            except json.JSONDecodeError:
                raise TemplateError(f"bad string literal at character {pos}") from None
        if kind == "number":
            return ("lit", float(text) if "." in text else int(text))
        if text == "(":
            self.nested(pos)
            node = self.binary(0)
            self.take(")")
            self.depth -= 1
            return node
        if kind == "word" and text in ("true", "false", "null"):
            return ("lit", {"true": True, "false": False, "null": None}[text])
        if kind == "word" and text == "not" and self.peek() == "(":
            self.take("(")
            self.nested(pos)
            node = self.binary(0)
            self.take(")")
            self.depth -= 1
            return ("not", node)
        if text == "$":
            return self.path(pos)
        raise TemplateError(f"unsupported {text!r} at character {pos} (supported: paths, literals, ==, !=, "
                            "<, >, &&, ||, not(), ??)")

    def path(self, pos: int) -> tuple:
        steps: list[tuple[Any, bool]] = []
        while self.peek() in (".", "?.", "[", "?["):
            _, op, at = self.take()
            optional = op.startswith("?")
            if op.endswith("."):
                kind, name, name_at = self.take()
                if kind != "word":
                    raise TemplateError(f"expected a field name at character {name_at}")
                steps.append((name, optional))
            else:
                kind, key, key_at = self.take()
                if kind == "word":
                    raise TemplateError(f"quote the key {key!r} at character {key_at}: [\"{key}\"]")
                if kind != "string":
                    raise TemplateError(f"only quoted keys are supported in [...] (character {key_at})")
                self.take("]")
                steps.append((json.loads(key), optional))
        return ("path", tuple(steps), pos)


# ------------------------------------------------------------------ template structure
@dataclass(frozen=True)
class Template:
    body: tuple  # nodes: ("out", expr) | ("if", ((cond, nodes), ...), else_nodes | None)

    def paths(self) -> list[tuple[tuple[str, ...], int]]:
        """Every path the template reads, as field names (the bracket keys included)."""
        found: list[tuple[tuple[str, ...], int]] = []

        def expr(node: tuple) -> None:
            if node[0] == "path":
                found.append((tuple(str(name) for name, _ in node[1]), node[2]))
            elif node[0] == "op":
                expr(node[2])
                expr(node[3])
            elif node[0] == "not":
                expr(node[1])

        def seq(nodes: list) -> None:
            for node in nodes:
                if node[0] == "out":
                    expr(node[1])
                else:
                    for cond, branch in node[1]:
                        expr(cond)
                        seq(branch)
                    if node[2] is not None:
                        seq(node[2])

        seq(self.body)
        return found


BLOCK = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


def parse(source: str) -> Template:
    """Parse a connection template, or raise TemplateError saying where and why."""
    if not isinstance(source, str) or not source.strip():
        raise TemplateError("the template is empty")
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"the template is over {MAX_TEMPLATE_CHARS} characters")
    root: list = []
    # open if blocks: [the if node, the sequence it sits in, its position]
    stack: list[list] = []
    current = root
    pos = 0
    for match in BLOCK.finditer(source):
        gap = source[pos:match.start()]
        if gap.strip():
            raise TemplateError(f"text outside {{{{ }}}} at character {pos}: {gap.strip()[:40]!r} (a template "
                                "renders exactly one route)")
        if "{{" in gap or "}}" in gap:
            raise TemplateError(f"unbalanced braces at character {pos}")
        pos = match.end()
        inner, at = match.group(1).strip(), match.start(1)
        word = inner.split(None, 1)[0] if inner else ""
        rest = inner[len(word):].strip()
        if word == "if":
            if len(stack) >= MAX_NESTING:
                raise TemplateError(f"blocks nested over {MAX_NESTING} deep")
            branch: list = []
            node = ["if", [(_expression(rest, at), branch)], None]
            current.append(node)
            stack.append([node, current, at])
            current = branch
        elif word in ("elif", "else", "end"):
            if not stack:
                raise TemplateError(f"{{{{ {word} }}}} without an open {{{{ if }}}} at character {at}")
            node = stack[-1][0]
            if node[2] is not None and word != "end":
                raise TemplateError(f"{{{{ {word} }}}} after {{{{ else }}}} at character {at}")
            if word == "elif":
                branch = []
                node[1].append((_expression(rest, at), branch))
                current = branch
            elif word == "else":
                if rest:
                    raise TemplateError(f"use {{{{ elif … }}}} instead of {{{{ else {rest[:20]} }}}} "
                                        f"at character {at}")
                node[2] = []
                current = node[2]
            else:
                if rest:
                    raise TemplateError(f"unexpected text after end at character {at}")
                _, current, _ = stack.pop()
        elif word == "range":
            raise TemplateError(f"range blocks are not supported at character {at}")
        else:
            current.append(["out", _expression(inner, at)])
    tail = source[pos:]
    if tail.strip() or "{{" in tail or "}}" in tail:
        raise TemplateError(f"text outside {{{{ }}}} at character {pos}: {tail.strip()[:40]!r}")
    if stack:
        raise TemplateError(f"{{{{ if }}}} at character {stack[-1][2]} is never closed with {{{{ end }}}}")
    return Template(body=_freeze(root))


def _expression(text: str, at: int) -> tuple:
    if not text:
        raise TemplateError(f"empty expression at character {at}")
    return _Expr(_tokens(text, at), at + len(text)).parse()


def _freeze(nodes: list) -> tuple:
    out = []
    for node in nodes:
        if node[0] == "out":
            out.append(("out", node[1]))
        else:
            out.append(("if", tuple((cond, _freeze(branch)) for cond, branch in node[1]),
                        None if node[2] is None else _freeze(node[2])))
    return tuple(out)


def check_names(template: Template, connection_set: set[str]) -> None:
    """Every path starts at a known root; every `$.connection_set.<name>` is a member of the set."""
    for names, at in template.paths():
        if not names:
            raise TemplateError(f"bare $ at character {at}: route to $.primary, $.read_replicas, $.default or "
                                "$.connection_set.<name>")
        root = names[0]
        if root == "request":
            if len(names) > 1 and names[1] not in REQUEST_KEYS:
                raise TemplateError(f"$.request.{names[1]} at character {at}: the request has "
                                    f"{', '.join(REQUEST_KEYS)}")
            if len(names) > 2 and names[1] == "query" and names[2] not in QUERY_KEYS:
                raise TemplateError(f"$.request.query.{names[2]} at character {at}: the query has "
                                    f"{', '.join(QUERY_KEYS)}")
        elif root == "connection_set":
            if len(names) > 1 and names[1] not in connection_set:
                known = ", ".join(sorted(connection_set)) or "none"
                raise TemplateError(f"$.connection_set.{names[1]} at character {at} is not in the connection "
                                    f"set ({known})")
        elif root not in ROUTES:
            raise TemplateError(f"$.{root} at character {at}: the context has request, connection_set, "
                                f"{', '.join(ROUTES)}")


# ------------------------------------------------------------------ evaluation
@dataclass(frozen=True)
class RequestContext:
    """What Hasura gives the template: lower-case headers, session variables, operation type and name."""

    headers: dict[str, str]
    session: dict[str, str]
    operation_type: str
    operation_name: str | None = None

    def as_json(self) -> dict[str, Any]:
        query = {"operation_type": self.operation_type}
        if self.operation_name is not None:
            query["operation_name"] = self.operation_name
        return {"headers": dict(self.headers), "session": dict(self.session), "query": query}


class _RouteValue:
    def __init__(self, route: Route):
        self.route = route


def evaluate(template: Template, request: RequestContext, connection_set: set[str]) -> Route:
    """The route this request takes, as Hasura would render it; TemplateError when it renders no single route."""
    context = {
        "request": {"headers": {k.lower(): v for k, v in request.headers.items()},
                    "session": {k.lower(): v for k, v in request.session.items()},
                    "query": request.as_json()["query"]},
        "connection_set": {name: _RouteValue(Route("connection_set", name)) for name in connection_set},
        **{name: _RouteValue(Route(name)) for name in ROUTES},
    }
    out: list[Any] = []
    _run(template.body, context, out)
    if len(out) != 1 or not isinstance(out[0], _RouteValue):
        rendered = ", ".join(str(v.route) if isinstance(v, _RouteValue) else json.dumps(v) for v in out)
        raise TemplateError(f"renders {rendered or 'nothing'} for this request, not exactly one route")
    return out[0].route


def _run(nodes: tuple, context: dict, out: list) -> None:
    for node in nodes:
        if node[0] == "out":
            out.append(_eval(node[1], context))
            continue
        for cond, branch in node[1]:
            value = _eval(cond, context)
            if not isinstance(value, bool):
                raise TemplateError(f"an if condition is {json.dumps(_plain(value))}, not true or false")
            if value:
                _run(branch, context, out)
                break
        else:
            if node[2] is not None:
                _run(node[2], context, out)


def _plain(value: Any) -> Any:
    return str(value.route) if isinstance(value, _RouteValue) else value


def _eval(node: tuple, context: dict) -> Any:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "not":
        value = _eval(node[1], context)
        if not isinstance(value, bool):
            raise TemplateError("not() needs true or false")
        return not value
    if kind == "path":
        value: Any = context
        shown = "$"
        for name, optional in node[1]:
            shown += f".{name}"
            if isinstance(value, dict) and name in value:
                value = value[name]
            elif optional:
                return None
            else:
                raise TemplateError(f"{shown} is not in the request (use ?. or ?[...] for optional fields)")
        return value
    op, left = node[1], _eval(node[2], context)
    if op == "??":
        return _eval(node[3], context) if left is None else left
    if op in ("&&", "||"):
        if not isinstance(left, bool):
            raise TemplateError(f"{op} needs true or false on its left")
        if (op == "&&" and not left) or (op == "||" and left):
            return left
        right = _eval(node[3], context)
        if not isinstance(right, bool):
            raise TemplateError(f"{op} needs true or false on its right")
        return right
    right = _eval(node[3], context)
    left, right = _plain(left), _plain(right)
    if op == "==":
        return left == right
    if op == "!=":
        return left != right
    if not (isinstance(left, (int, float)) and isinstance(right, (int, float))
            or isinstance(left, str) and isinstance(right, str)):
        raise TemplateError(f"{op} compares two numbers or two strings")
    return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]
