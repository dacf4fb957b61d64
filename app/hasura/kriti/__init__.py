"""Kriti, the template language Hasura routes connections with, transcribed from kriti-lang.

`lexer` (Lexer.x), `grammar.lark` + `parser` (Grammar.y), `ast` (Token.hs's ValueExt), `eval` (Eval.hs),
`aeson` (the JSON value semantics Eval.hs relies on). Checked against kriti-lang's own test corpus by
tests/test_kriti_corpus.py (set KRITI_LANG_REPO to a kriti-lang git directory).
"""

from app.hasura.kriti.errors import KritiError, KritiEvalError, KritiParseError, Span
from app.hasura.kriti.eval import run_eval
from app.hasura.kriti.parser import parse

__all__ = ["KritiError", "KritiEvalError", "KritiParseError", "Span", "parse", "run_eval"]
