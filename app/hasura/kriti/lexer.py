"""Kriti's lexer: the rules of kriti-lang `src/Kriti/Parser/Lexer.x`, in its order, with its start codes.

kriti-lang commit c8fd863d359876af3a0fce47db8a5393dc556667 (the one graphql-engine's cabal.project pins).
Alex semantics: at each position every rule of the current start code is tried, the longest match wins and a
tie goes to the rule written first. Start codes are a stack (`pushStartCode` / `popStartCode` in
`Kriti/Parser/Monad.hs`): `"` enters <string>, `{{` enters <expr>, `'` enters <literal>; `}}`, the closing
`"` and `'` pop. Identifiers become keywords the way Happy's `%token` list matches them (Grammar.y): the
keyword patterns come before `ident`, so `if`, `elif`, `else`, `end`, `null`, `range`, `in`, `not` are never
identifiers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from lark.lexer import Lexer, Token

from app.hasura.kriti.errors import KritiParseError, Span

S0, EXPR, STRING, LITERAL = "0", "expr", "string", "literal"
MAX_NESTING = 64  # open (, [, {, {{ and strings at once: keeps the parse tree shallow for the evaluator

HEX = "[A-Fa-f0-9]"
IDENT = r"\$?[a-zA-Z][$a-zA-Z0-9_\-]*"


@dataclass(frozen=True)
class Rule:
    codes: tuple[str, ...]
    pattern: re.Pattern[str]
    # (matched text) -> (token type or None to skip, token value, start-code change: "push:<code>" / "pop" / "")
    action: Callable[[str], tuple[str | None, str, str]]


def _rule(codes: str, regex: str, action: Callable[[str], tuple[str | None, str, str]]) -> Rule:
    return Rule(tuple(codes.split(",")), re.compile(regex, re.DOTALL), action)


def _tok(kind: str, change: str = "") -> Callable[[str], tuple[str | None, str, str]]:
    return lambda text: (kind, text, change)


def _text(kind: str, value: str) -> Callable[[str], tuple[str | None, str, str]]:
    return lambda _text: (kind, value, "")


def _skip(_text: str) -> tuple[None, str, str]:
    return None, "", ""


def _hex(text: str) -> tuple[str, str, str]:  # `tokenizeHex`: \uXXXX becomes the character
    return "STRING", chr(int(text[2:], 16)), ""


# Lexer.x `tokens :-`, rule for rule and in its order (`<0, expr>` is written "0,expr")
RULES: tuple[Rule, ...] = (
    _rule("0,expr", r"[ \t\n\f\v\r]+", _skip),                   # $white+
    _rule("0,expr", r"#[^\n]*", _skip),                           # "#".*  (comments)
    _rule("0", r"range", _tok("IDENT")),
    _rule("0", r"not", _tok("IDENT")),
    _rule("0,expr", r"true", _tok("TRUE")),
    _rule("0,expr", r"false", _tok("FALSE")),
    _rule("0,expr", r"\$", _tok("IDENT")),
    _rule("0,expr", IDENT, _tok("IDENT")),                        # \$? $alpha [\$ $alpha $digit \_ \-]*
    _rule("0,expr", r"in", _tok("IDENT")),
    _rule("0,expr", r'"', _tok("SBEGIN", f"push:{STRING}")),      # enter <string>
    _rule("string", r"\\\{", _text("STRING", "{")),
    _rule("string", r'\\"', _text("STRING", '"')),
    _rule("string", r"\\\\", _text("STRING", "\\")),
    _rule("string", r"\\/", _text("STRING", "\\/")),              # keeps its backslash, as Lexer.x says
    _rule("string", r"\\b", _text("STRING", "\b")),
    _rule("string", r"\\f", _text("STRING", "\f")),
    _rule("string", r"\\n", _text("STRING", "\n")),
    _rule("string", r"\\r", _text("STRING", "\r")),
    _rule("string", r"\\t", _text("STRING", "\t")),
    _rule("string", rf"\\u{HEX}{HEX}{HEX}{HEX}", _hex),
    _rule("string", r'[^\\"{]+', _tok("STRING")),
    _rule("string", r"\{", _tok("STRING")),
    _rule("string", r"\{\{", _tok("LDCURLY", f"push:{EXPR}")),
    _rule("expr", r"\}\}", _tok("RDCURLY", "pop")),
    _rule("string", r'"', _tok("SEND", "pop")),
    _rule("0,expr", r"'", _tok("SQUOTE", f"push:{LITERAL}")),
    _rule("literal", r"(?:\\\\|\\`|[^'{])+", _tok("STRING")),
    _rule("literal", r"'", _tok("SQUOTE", "pop")),
    _rule("0,expr", r"-?[0-9]+", _tok("INT")),
    _rule("0,expr", r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+\-]?[0-9]+)?", _tok("NUMBER")),
    _rule("0,expr", r":", _tok("COLON")),
    _rule("0,expr", r"\.", _tok("DOT")),
    _rule("0,expr", r",", _tok("COMMA")),
    _rule("0,expr", r"\?", _tok("QMARK")),
    _rule("0,expr", r"\?\?", _tok("DQMARK")),
    _rule("0,expr", r"==", _tok("EQ")),
    _rule("0,expr", r"!=", _tok("NEQ")),
    _rule("0,expr", r">", _tok("GT")),
    _rule("0,expr", r"<", _tok("LT")),
    _rule("0,expr", r">=", _tok("GTE")),
    _rule("0,expr", r"<=", _tok("LTE")),
    _rule("0,expr", r"&&", _tok("AND")),
    _rule("0,expr", r"\|\|", _tok("OR")),
    _rule("0,expr", r"_", _tok("UNDERSCORE")),
    _rule("0,expr", r":=", _tok("ASSIGN")),
    _rule("0,expr", r"\{", _tok("LCURLY")),
    _rule("0,expr", r"\}", _tok("RCURLY")),
    _rule("0,expr", r"\{\{", _tok("LDCURLY", f"push:{EXPR}")),
    _rule("0,expr", r"\[", _tok("LSQUARE")),
    _rule("0,expr", r"\]", _tok("RSQUARE")),
    _rule("0,expr", r"\(", _tok("LPAREN")),
    _rule("0,expr", r"\)", _tok("RPAREN")),
)

BY_CODE = {code: [r for r in RULES if code in r.codes] for code in (S0, EXPR, STRING, LITERAL)}  # in rule order

# Grammar.y's %token list: these identifiers are keywords, matched before `ident`
KEYWORDS = {"if": "IF", "elif": "ELIF", "else": "ELSE", "end": "END", "null": "NULL", "range": "RANGE",
            "in": "IN", "not": "NOT"}
OPENERS, CLOSERS = {"LPAREN", "LSQUARE", "LCURLY", "LDCURLY", "SBEGIN"}, {"RPAREN", "RSQUARE", "RCURLY",
                                                                          "RDCURLY", "SEND"}


def tokens(source: str) -> Iterator[Token]:
    """The token stream of `source`; KritiParseError("Invalid Lexeme") where no rule matches."""
    codes = [S0]
    pos = depth = 0
    while pos < len(source):
        best: tuple[int, Rule] | None = None
        for rule in BY_CODE[codes[-1]]:
            match = rule.pattern.match(source, pos)
            if match and match.end() > pos and (best is None or match.end() > best[0]):
                best = (match.end(), rule)
        if best is None:
            raise KritiParseError("LexErrorCode", f"Invalid Lexeme: {source[pos:pos + 20]!r}",
                                  Span(pos, pos + 1), source)
        end, rule = best
        kind, value, change = rule.action(source[pos:end])
        if change.startswith("push:"):
            codes.append(change[5:])
        elif change == "pop":
            codes.pop() if len(codes) > 1 else None  # popStartCode never empties the stack
        if kind is not None:
            if kind == "IDENT":
                kind = KEYWORDS.get(value, "IDENT")
            depth += (kind in OPENERS) - (kind in CLOSERS)
            if depth > MAX_NESTING:
                raise KritiParseError("ParseErrorCode", f"nested over {MAX_NESTING} deep", Span(pos, end), source)
            yield _token(kind, value, pos, end)
        pos = end


def _token(kind: str, value: str, start: int, end: int) -> Token:
    # positions are character offsets; KritiError turns them into a line and column when it reports one
    return Token(kind, value, start_pos=start, end_pos=end)


class KritiLexer(Lexer):
    """Hands lark the tokens of `tokens` (lark's own lexers have no start-code stack)."""

    def __init__(self, lexer_conf: object) -> None:
        pass

    def lex(self, text: str) -> Iterator[Token]:  # lark hands a custom lexer the whole text
        yield from tokens(text)
