"""Parse Kriti with lark (LALR) from grammar.lark; build the `ValueExt` tree as Grammar.y's actions do.

The transformer runs inside the LALR parser (one callback per reduction, no recursion over the tree), and
each method carries the Grammar.y action it transcribes.
"""

from __future__ import annotations

from decimal import Decimal
from functools import cache
from pathlib import Path

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from app.hasura.kriti import ast
from app.hasura.kriti.errors import KritiError, KritiParseError, Span
from app.hasura.kriti.lexer import KritiLexer

GRAMMAR = Path(__file__).with_name("grammar.lark")
MAX_SOURCE_CHARS = 65_536
MAX_DEPTH = 200  # syntax tree depth: the evaluator recurses over it


def _span(item: ast.Node | ast.Elif | Token) -> Span:
    if isinstance(item, Token):
        return Span(item.start_pos, item.end_pos)
    return item.span


def _depth(*children: object) -> int:
    return 1 + max((getattr(c, "_depth", 0) for c in children), default=0)


class _Build(Transformer):
    """Grammar.y's semantic actions ({ ... } after each production)."""

    def __init__(self) -> None:
        super().__init__(visit_tokens=False)

    def _node(self, node, *children):  # noqa: ANN001, ANN202 - every node records its depth
        depth = _depth(*children)
        if depth > MAX_DEPTH:
            raise KritiParseError("ParseErrorCode", f"the template nests over {MAX_DEPTH} deep", node.span, "")
        object.__setattr__(node, "_depth", depth)
        return node

    def start(self, c):
        return c[0]

    def pass_through(self, c):  # expr: ap { $1 } / ap: atom { $1 } / atom: var { $1 } / json: ... { $1 }
        return c[0]

    def braced(self, c):  # '{{' expr '}}' { $2 }
        return c[1]

    def parenthesised(self, c):  # '(' expr ')' { $2 }
        return c[1]

    def _binary(op):  # noqa: N805 - builds the methods below
        def method(self, c):  # atom OP atom { Op (locate $1 <> locate $3) $1 $3 }
            return self._node(ast.Binary(_span(c[0]) | _span(c[2]), op, c[0], c[2]), c[0], c[2])
        return method

    gt, lt, gte, lte = _binary("Gt"), _binary("Lt"), _binary("Gte"), _binary("Lte")
    not_eq, eq, and_, or_ = _binary("NotEq"), _binary("Eq"), _binary("And"), _binary("Or")
    in_, defaulting = _binary("In"), _binary("Defaulting")

    def function(self, c):  # ident '(' expr ')' { Function (locate $1 <> locate $4) (unLoc $1) $3 }
        return self._node(ast.Function(_span(c[0]) | _span(c[3]), str(c[0]), c[2]), c[2])

    def not_function(self, c):  # 'not' expr { Function (locate $1 <> locate $2) "not" $2 }
        return self._node(ast.Function(_span(c[0]) | _span(c[1]), "not", c[1]), c[1])

    def var(self, c):  # ident { Var (locate $1) (unLoc $1) }
        return self._node(ast.Var(_span(c[0]), str(c[0])))

    def required_dot(self, c):  # atom '.' ident
        return self._node(ast.RequiredFieldAccess(_span(c[0]) | _span(c[2]), c[0], str(c[2])), c[0])

    def required_quoted(self, c):  # atom '[' '\'' string '\'' ']' { ... (Right (String (locate $4) ..)) }
        key = ast.String(_span(c[3]), str(c[3]))
        return self._node(ast.RequiredFieldAccess(_span(c[0]) | _span(c[5]), c[0], key), c[0])

    def required_term(self, c):  # atom '[' atom ']'
        return self._node(ast.RequiredFieldAccess(_span(c[0]) | _span(c[3]), c[0], c[2]), c[0], c[2])

    def optional_fields(self, c):  # atom '?' many(field) { OptionalFieldAccess (locate $1) $1 ($3) }
        fields = tuple(c[2])
        return self._node(ast.OptionalFieldAccess(_span(c[0]), c[0], fields), c[0],
                          *(f for f in fields if not isinstance(f, str)))

    def many_empty(self, c):  # many(prod): { [] }
        return []

    def many_more(self, c):  # many(prod) prod { $2 : $1 } (kept here in source order)
        return [*c[0], c[1]]

    def field_dot(self, c):  # '.' ident { Left (unLoc $2) }
        return str(c[1])

    def field_quoted(self, c):  # '[' '\'' string '\'' ']' { Right (String (locate $3) (unLoc $3)) }
        return ast.String(_span(c[2]), str(c[2]))

    def field_term(self, c):  # '[' atom ']' { Right $2 }
        return c[1]

    def range(self, c):  # '{{' 'range' mident ',' ident ':=' expr '}}' expr '{{' 'end' '}}'
        return self._node(ast.Range(_span(c[0]) | _span(c[11]), c[2], str(c[4]), c[6], c[8]), c[6], c[8])

    def mident_none(self, c):  # '_' { Nothing }
        return None

    def mident_some(self, c):  # ident { Just $1 }
        return str(c[0])

    def iff(self, c):  # '{{' 'if' expr '}}' expr elif_exprs '{{' 'else' '}}' expr '{{' 'end' '}}'
        elifs = tuple(c[5])
        return self._node(ast.Iff(_span(c[0]) | _span(c[12]), c[2], c[4], elifs, c[9]), c[2], c[4], c[9],
                          *(e.cond for e in elifs), *(e.then for e in elifs))

    def elifs_empty(self, c):
        return []

    def elifs_more(self, c):  # elif_exprs elif_expr { V.snoc $1 $2 }
        return [*c[0], c[1]]

    def elif_expr(self, c):  # '{{' 'elif' expr '}}' expr { Elif (locate $2 <> locate $3) $3 $5 }
        return ast.Elif(_span(c[1]) | _span(c[2]), c[2], c[4])

    def string_lit(self, c):  # 's"' string_template '"e' { StringTem (locate $1 <> $3) $2 }
        parts = tuple(c[1])
        return self._node(ast.StringTem(_span(c[0]) | _span(c[2]), parts), *parts)

    def string_empty(self, c):  # 's"' '"e' { StringTem ... mempty }
        return self._node(ast.StringTem(_span(c[0]) | _span(c[1]), ()))

    def template_more_expr(self, c):  # string_template '{{' expr '}}' { V.snoc $1 $3 }
        return [*c[0], c[2]]

    def template_more_string(self, c):  # string_template string { V.snoc $1 (String ..) }
        return [*c[0], ast.String(_span(c[1]), str(c[1]))]

    def template_expr(self, c):  # '{{' expr '}}' { V.singleton $2 }
        return [c[1]]

    def template_string(self, c):  # string { V.singleton (String ..) }
        return [ast.String(_span(c[0]), str(c[0]))]

    def number(self, c):  # number { Number (locate $1) (unLoc $1) }
        return self._node(ast.Number(_span(c[0]), Decimal(str(c[0]))))

    def int(self, c):  # int %prec LOW { Number (locate $1) (S.scientific (fromIntegral (unLoc $1)) 0) }
        return self._node(ast.Number(_span(c[0]), Decimal(int(str(c[0])))))

    def boolean(self, c):
        return self._node(ast.Boolean(_span(c[0]), c[0].type == "TRUE"))

    def null(self, c):
        return self._node(ast.Null(_span(c[0])))

    def array(self, c):  # '[' list_elements ']' { Array (locate $1 <> locate $3) $2 }
        items = tuple(c[1])
        return self._node(ast.Array(_span(c[0]) | _span(c[2]), items), *items)

    def array_empty(self, c):
        return self._node(ast.Array(_span(c[0]) | _span(c[1]), ()))

    def elements_one(self, c):
        return [c[0]]

    def elements_more(self, c):
        return [*c[0], c[2]]

    def object(self, c):  # '{' object_fields '}' { Object (..) (Compat.fromList $2) }
        # object_fields builds its list newest first ($3 : $1) and fromList keeps the last of a repeated
        # key, so the key's *first* occurrence in the source wins
        fields: dict[str, ast.Node] = {}
        for key, value in c[1]:
            fields.setdefault(key, value)
        return self._node(ast.Object(_span(c[0]) | _span(c[2]), tuple(fields.items())), *fields.values())

    def object_empty(self, c):
        return self._node(ast.Object(_span(c[0]) | _span(c[1]), ()))

    def fields_one(self, c):
        return [c[0]]

    def fields_more(self, c):
        return [*c[0], c[2]]

    def object_field(self, c):  # 's"' object_key '"e' ':' expr { (unLoc $2, $5) }
        return (c[1], c[4])

    def object_field_empty_key(self, c):  # 's"' '"e' ':' expr { ("", $4) }
        return ("", c[3])

    def key_more(self, c):  # object_key string { $1 <> $2 }
        return c[0] + str(c[1])

    def key_one(self, c):
        return str(c[0])


@cache
def _lark() -> Lark:
    return Lark(GRAMMAR.read_text(), parser="lalr", lexer=KritiLexer, transformer=_Build(),
                maybe_placeholders=False)


def parse(source: str) -> ast.Node:
    """The template's tree, or KritiParseError naming the unexpected token and where it is."""
    if len(source) > MAX_SOURCE_CHARS:
        raise KritiParseError("ParseErrorCode", f"the template is over {MAX_SOURCE_CHARS} characters",
                              Span(0, 0), source)
    try:
        return _lark().parse(source)
    except KritiError as exc:
        raise KritiParseError(exc.code, exc.message, exc.span, source) from None
    except UnexpectedToken as exc:
        token = exc.token
        if token.type == "$END":  # `failure []`: the tokens ran out
            raise KritiParseError("ParseErrorCode", "ParseError: Empty token stream.",
                                  Span(len(source), len(source)), source) from None
        raise KritiParseError("ParseErrorCode", f"Unexpected token '{_show(token)}'.", _span(token),
                              source) from None
    except (UnexpectedEOF, UnexpectedCharacters, UnexpectedInput):
        raise KritiParseError("ParseErrorCode", "ParseError: Empty token stream.",
                              Span(len(source), len(source)), source) from None


def _show(token: Token) -> str:
    """`serializeToken` (Token.hs): a string literal in double quotes, any other token as written."""
    if token.type == "STRING":
        return f'"{token}"'
    if token.type in ("SBEGIN", "SEND"):
        return '"'
    return str(token)
