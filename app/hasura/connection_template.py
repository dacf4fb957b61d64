"""Hasura connection templates, checked offline as Hasura runs them: parse, check names, resolve a request.

Pure. Hasura Enterprise renders a source's connection template (Kriti, app/hasura/kriti) for every non-admin
request and routes the request to what it resolves to. What Hasura does, from graphql-engine's source:
- parses the template when the metadata is loaded (`FromJSON KritiTemplate`, Connection/Settings.hs): a
  template that is not Kriti fails `pg_add_source`;
- evaluates it with `Kriti.runEval`, no function map, `$` bound to the context
  (`runKritiEval` / `makeConnectionTemplateContext`, Execute/ConnectionTemplate.hs): `$.request.headers`,
  `$.request.session` (keys lower-cased), `$.request.query.operation_type/operation_name`, `$.primary` =
  "PRIMARY", `$.read_replicas` = "READ_REPLICAS", `$.default` = "DEFAULT", `$.connection_set.<m>` =
  {"type": "connection_set", "name": m};
- reads the result with `FromJSON PostgresResolvedConnectionTemplate`: one of those four, else the request fails;
- `pg_test_connection_template` (Execute/Types.hs, `pgResolveConnectionTemplate`) refuses a request context
  without `x-hasura-role` or with the admin role, and (`FromJSON QueryContext`) an operation type other than
  query/mutation/subscription or an operation name that is not a GraphQL name.
`check_names` is stricter than Hasura on purpose: a path outside that context, an unknown connection-set member
or a function call (never available here) fails every request, so the stack refuses it before deploying.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from app.hasura.kriti import KritiError, aeson, ast, run_eval
from app.hasura.kriti import parse as parse_kriti

ROUTES = ("primary", "read_replicas", "default")
TAGS = {"primary": "PRIMARY", "read_replicas": "READ_REPLICAS", "default": "DEFAULT"}  # Execute/ConnectionTemplate.hs
REQUEST_KEYS = ("headers", "session", "query")
QUERY_KEYS = ("operation_type", "operation_name")
OPERATION_TYPES = ("query", "mutation", "subscription")
ADMIN_ROLE = "admin"  # adminRoleName (Hasura.RQL.Types.Roles)
GRAPHQL_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")  # G.Name (graphql-parser-hs)
MEMBER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
MAX_TEMPLATE_CHARS = 16_384


class TemplateError(ValueError):
    """The template is not Kriti, reads outside Hasura's context, or does not resolve to one connection."""


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
        if member != text and MEMBER_NAME.fullmatch(member):
            return cls("connection_set", member)
        raise TemplateError(f"{text!r} is not a route (primary, read_replicas, default, connection_set.<name>)")

    def __str__(self) -> str:
        return f"connection_set.{self.value}" if self.routing_to == "connection_set" else self.routing_to


@dataclass(frozen=True)
class Template:
    source: str
    tree: ast.Node

    def paths(self) -> list[tuple[tuple[str, ...], int]]:
        """Every `$.a.b["c"]` the template reads, as its literal names up to the first computed key."""
        return [(names, span.start) for names, span in _paths(self.tree)]


def parse(source: str) -> Template:
    """Parse a connection template as Hasura does when the metadata is loaded; TemplateError says where and why."""
    if not isinstance(source, str) or not source.strip():
        raise TemplateError("the template is empty")
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"the template is over {MAX_TEMPLATE_CHARS} characters")
    try:
        return Template(source, parse_kriti(source))
    except KritiError as exc:
        raise TemplateError(f"not Kriti: {exc}") from None


# ------------------------------------------------------------------ static checks
def _literal_key(field: str | ast.Node) -> str | None:
    if isinstance(field, str):
        return field
    if isinstance(field, ast.String):
        return field.value
    if isinstance(field, ast.StringTem) and all(isinstance(p, ast.String) for p in field.parts):
        return "".join(p.value for p in field.parts)
    return None


def _chain(node: ast.Node) -> tuple[ast.Node, list[str | ast.Node]]:
    """The root and the keys of a path `root.k1[k2]?.k3`, in source order."""
    keys: list[str | ast.Node] = []
    while isinstance(node, (ast.RequiredFieldAccess, ast.OptionalFieldAccess)):
        if isinstance(node, ast.RequiredFieldAccess):
            keys[:0] = [node.field]
        else:
            keys[:0] = list(node.fields)
        node = node.target
    return node, keys


def _children(node: ast.Node) -> list[ast.Node]:
    out: list[ast.Node] = []
    for value in vars(node).values():
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if isinstance(item, ast.Node):
                out.append(item)
            elif isinstance(item, ast.Elif):
                out += [item.cond, item.then]
            elif isinstance(item, tuple):  # object fields
                out += [v for v in item if isinstance(v, ast.Node)]
    return out


def _paths(tree: ast.Node) -> list[tuple[tuple[str, ...], Any]]:
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.RequiredFieldAccess, ast.OptionalFieldAccess)):
            root, keys = _chain(node)
            if isinstance(root, ast.Var) and root.name == "$":
                names = []
                for key in keys:
                    name = _literal_key(key)
                    if name is None:
                        break
                    names.append(name)
                found.append((tuple(names), node.span))
            stack += [*([] if isinstance(root, ast.Var) else [root]), *(k for k in keys if isinstance(k, ast.Node))]
            continue
        if isinstance(node, ast.Var) and node.name == "$":
            found.append(((), node.span))
        stack += _children(node)
    return found


def check_names(template: Template, connection_set: set[str]) -> None:
    """Refuse what fails every request: reads outside Hasura's context, unknown members, function calls."""
    stack: list[ast.Node] = [template.tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Function):
            raise TemplateError(f"{node.name}(...) at character {node.span.start}: Hasura evaluates connection "
                                "templates without functions (Kriti.runEval), so every request would fail")
        if isinstance(node, ast.Var) and node.name != "$" and not _bound(template.tree, node):
            raise TemplateError(f"{node.name} at character {node.span.start} is not in scope: only $ is "
                                "(paths are $.request..., $.primary, $.connection_set.<name>, ...)")
        stack += _children(node)
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


def _bound(tree: ast.Node, var: ast.Var) -> bool:
    """Is `var` inside a `range` that binds its name?"""
    stack: list[tuple[ast.Node, frozenset[str]]] = [(tree, frozenset())]
    while stack:
        node, names = stack.pop()
        if node is var:
            return var.name in names
        if isinstance(node, ast.Range):
            inner = names | {node.binder} | ({node.index} if node.index else set())
            stack += [(node.source, names), (node.body, frozenset(inner))]
        else:
            stack += [(child, names) for child in _children(node)]
    return False


# ------------------------------------------------------------------ requests and resolution
@dataclass(frozen=True)
class RequestContext:
    """What Hasura gives the template: headers, session variables, operation type and name."""

    headers: dict[str, str]
    session: dict[str, str]
    operation_type: str
    operation_name: str | None = None

    def as_json(self) -> dict[str, Any]:
        """pg_test_connection_template's `request_context` (and `$.request` once Hasura has read it)."""
        query = {"operation_type": self.operation_type}
        if self.operation_name is not None:
            query["operation_name"] = self.operation_name
        return {"headers": dict(self.headers), "session": dict(self.session), "query": query}

    def problems(self) -> list[str]:
        """Why pg_test_connection_template would answer 400 for this request context ([] when it would not)."""
        out = []
        for part, values in (("headers", self.headers), ("session", self.session)):
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in values.items()):
                out.append(f"{part}: names and values must be strings")
        role = next((v for k, v in self.session.items() if isinstance(k, str) and k.lower() == "x-hasura-role"),
                    None)
        if not role:
            out.append("the session has no x-hasura-role (Hasura resolves templates only for a non-admin role)")
        elif role == ADMIN_ROLE:
            out.append("x-hasura-role is admin: Hasura never routes the admin role with the template")
        if self.operation_type not in OPERATION_TYPES:
            out.append(f"operation type {self.operation_type!r} is not query, mutation or subscription")
        if self.operation_name is not None and not (isinstance(self.operation_name, str)
                                                    and GRAPHQL_NAME.fullmatch(self.operation_name)):
            out.append(f"operation name {self.operation_name!r} is not a GraphQL name ([_A-Za-z][_0-9A-Za-z]*)")
        return out


def context(request: RequestContext, connection_set: set[str]) -> dict[str, Any]:
    """`$`, as `makeConnectionTemplateContext` builds it (session keys lower-cased by SessionVariables' ToJSON)."""
    request_json = request.as_json()
    request_json["session"] = {k.lower(): v for k, v in request.session.items()}
    return {"request": request_json, **{name: TAGS[name] for name in ROUTES},
            "connection_set": {m: {"type": "connection_set", "name": m} for m in connection_set}}


def resolved_route(value: Any) -> Route | None:
    """`FromJSON PostgresResolvedConnectionTemplate`: the route a rendered value names, or None."""
    for name, tag in TAGS.items():
        if value == tag:
            return Route(name)
    if (isinstance(value, dict) and value.get("type") == "connection_set" and isinstance(value.get("name"), str)
            and value["name"]):
        return Route("connection_set", value["name"])
    return None


def evaluate(template: Template, request: RequestContext, connection_set: set[str]) -> Route:
    """The route Hasura gives this request; TemplateError when Hasura would fail it (template-resolution-failed)."""
    try:
        value = run_eval(template.source, template.tree, {"$": aeson.from_python(context(request, connection_set))})
    except KritiError as exc:
        raise TemplateError(f"evaluation fails for this request: {exc}") from None
    route = resolved_route(aeson.to_python(value))
    if route is None:
        raise TemplateError(f"renders {aeson.encode(value)} for this request, not a connection ($.primary, "
                            "$.read_replicas, $.default or $.connection_set.<name>)")
    return route
