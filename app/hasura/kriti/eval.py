"""Evaluate a Kriti tree: kriti-lang `src/Kriti/Eval.hs` (`evalWith`), case for case.

Hasura runs a connection template with `Kriti.runEval` and only `$` bound (Execute/ConnectionTemplate.hs,
`runKritiEval`): no function map, so `not(...)` and every other function call is a NameError there.
`functions` exists for kriti-lang's own test corpus, which evaluates with its `basicFuncMap`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from app.hasura.kriti import aeson, ast
from app.hasura.kriti.errors import KritiEvalError, Span

TYPE_NAMES = {dict: "Object", list: "Array", str: "String", Decimal: "Number", bool: "Boolean", type(None): "Null"}
Function = Callable[[Any], Any]  # raises ValueError with the message of a `CustomFunctionError`


def run_eval(source: str, template: ast.Node, bindings: Mapping[str, Any],
             functions: Mapping[str, Function] | None = None) -> Any:
    """`runEvalWith src template source funcMap` (`runEval`: no functions). Values are aeson values."""
    return _Eval(source, functions or {}).eval(template, dict(bindings))


class _Eval:
    def __init__(self, source: str, functions: Mapping[str, Function]):
        self.source, self.functions = source, functions

    def error(self, code: str, message: str, span: Span) -> KritiEvalError:
        return KritiEvalError(code, message, span, self.source)

    def type_error(self, span: Span, value: Any, expected: str) -> KritiEvalError:
        return self.error("TypeErrorCode", f"Couldn't match expected type '{expected}' with actual type "
                          f"'{TYPE_NAMES[type(value)]}'", span)

    def eval(self, node: ast.Node, scope: dict[str, Any]) -> Any:  # noqa: C901, PLR0911, PLR0912 - one case each
        ev = self.eval
        if isinstance(node, ast.String):
            return node.value
        if isinstance(node, ast.Number):
            return node.value
        if isinstance(node, ast.Boolean):
            return node.value
        if isinstance(node, ast.Null):
            return None
        if isinstance(node, ast.Object):
            return {key: ev(value, scope) for key, value in node.fields}
        if isinstance(node, ast.StringTem):  # strings as they are, anything else as its JSON encoding
            return "".join(v if isinstance(v, str) else aeson.encode(v) for v in (ev(p, scope) for p in node.parts))
        if isinstance(node, ast.Array):
            return [ev(item, scope) for item in node.items]
        if isinstance(node, ast.Var):
            if node.name not in scope:
                raise self.error("NameErrorCode", f"Variable '{node.name}' not in scope", node.span)
            return scope[node.name]
        if isinstance(node, ast.RequiredFieldAccess):
            return self.required(node, scope)
        if isinstance(node, ast.OptionalFieldAccess):
            return self.optional(node, scope)
        if isinstance(node, ast.Iff):
            for span, cond, then in ((node.span, node.cond, node.then),
                                     *((e.span, e.cond, e.then) for e in node.elifs)):
                value = ev(cond, scope)
                if value is True:
                    return ev(then, scope)
                if value is not False:  # only true and false decide
                    raise self.type_error(span, value, "Boolean")
            return ev(node.otherwise, scope)
        if isinstance(node, ast.Binary):
            return self.binary(node, scope)
        if isinstance(node, ast.Range):
            items = ev(node.source, scope)
            if not isinstance(items, list):
                raise self.type_error(node.span, items, "Array")
            out = []
            for i, item in enumerate(items):
                inner = {**scope, node.binder: item}
                if node.index is not None:
                    inner[node.index] = Decimal(i)
                out.append(ev(node.body, inner))
            return out
        if isinstance(node, ast.Function):
            argument = ev(node.argument, scope)  # the argument first, then the name
            function = self.functions.get(node.name)
            if function is None:
                raise self.error("NameErrorCode", f"Variable '{node.name}' not in scope", node.span)
            try:
                return function(argument)
            except ValueError as exc:
                raise self.error("FunctionErrorCode", str(exc), node.argument.span) from None
        raise TypeError(f"unknown node {node!r}")

    def required(self, node: ast.RequiredFieldAccess, scope: dict[str, Any]) -> Any:
        target = self.eval(node.target, scope)
        if isinstance(node.field, str):  # Left bndr: objects only
            if not isinstance(target, dict):
                raise self.type_error(node.target.span, target, "Object")
            if node.field not in target:
                raise self.error("AttributeErrorCode", f"'Object' has no attritubte '{node.field}'.", node.span)
            return target[node.field]
        if isinstance(target, dict):
            key = self.eval(node.field, scope)
            if not isinstance(key, str):
                raise self.type_error(node.target.span, key, "String")
            if key not in target:
                raise self.error("AttributeErrorCode", f"'Object' has no attritubte '{key}'.", node.span)
            return target[key]
        if isinstance(target, list):
            index = self.eval(node.field, scope)
            if not isinstance(index, Decimal) or index != index.to_integral_value():
                raise self.type_error(node.span, index, "Integer")
            i = int(index)
            if not 0 <= i < len(target):
                raise self.error("IndexErrorCode", "Index out of range", node.span)
            return target[i]
        raise self.type_error(node.target.span, target, "Object")

    def optional(self, node: ast.OptionalFieldAccess, scope: dict[str, Any]) -> Any:
        try:
            value = self.eval(node.target, scope)
        except KritiEvalError:  # `eval t1 `catchError` \_err -> pure J.Null`
            value = None
        keys = [f if isinstance(f, str) else self.eval(f, scope) for f in reversed(node.fields)][::-1]
        if value is None:
            return None
        if not isinstance(value, (dict, list)):
            raise self.type_error(node.target.span, value, "Object")
        for key in keys:  # evalFieldChain: a missing step is null, never an error
            if isinstance(key, str) and isinstance(value, dict) and key in value:
                value = value[key]
            elif (isinstance(key, Decimal) and isinstance(value, list) and key == key.to_integral_value()
                  and 0 <= int(key) < len(value)):
                value = value[int(key)]
            else:
                return None
        return value

    def binary(self, node: ast.Binary, scope: dict[str, Any]) -> Any:
        op = node.op
        left = self.eval(node.left, scope)
        if op == "Defaulting":  # only null falls through to the right
            return self.eval(node.right, scope) if left is None else left
        right = self.eval(node.right, scope)  # both sides always: no short-circuit in Eval.hs
        if op == "Eq":
            return aeson.equal(left, right)
        if op == "NotEq":
            return not aeson.equal(left, right)
        if op in ("Lt", "Gt", "Lte", "Gte"):
            c = aeson.compare(left, right)
            return {"Lt": c < 0, "Gt": c > 0, "Lte": c <= 0, "Gte": c >= 0}[op]
        if op in ("And", "Or"):
            if isinstance(left, bool) and isinstance(right, bool):
                return (left and right) if op == "And" else (left or right)
            raise self.type_error(node.span, left if isinstance(right, bool) else right, "Boolean")
        if op == "In":
            if isinstance(right, dict):
                if not isinstance(left, str):
                    raise self.type_error(node.span, left, "String")
                return left in right
            if isinstance(right, list):
                return any(aeson.equal(left, item) for item in right)
            raise self.type_error(node.span, right, "Array")
        raise TypeError(f"unknown operator {op}")
