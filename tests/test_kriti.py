"""The project's Kriti (app/hasura/kriti) rule by rule: lexer (Lexer.x), grammar (Grammar.y), evaluation (Eval.hs).
kriti-lang's own corpus is tests/test_kriti_corpus.py; these are the rules Hasura's routing depends on."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from lark import Lark, logger

from app.hasura.kriti import KritiEvalError, KritiParseError, aeson, ast, parse, run_eval
from app.hasura.kriti.lexer import KritiLexer, tokens
from app.hasura.kriti.parser import GRAMMAR


def kinds(source: str) -> list[tuple[str, str]]:
    return [(t.type, str(t)) for t in tokens(source)]


def value(source: str, **bindings):
    return aeson.to_python(run_eval(source, parse(source), {k: aeson.from_python(v) for k, v in bindings.items()}))


def test_grammar_conflicts_all_resolve_as_in_happy(caplog):
    """The only LALR conflicts are the two Grammar.y marks `%shift` (optionalFields before '.' and '['); lark
    shifts, as Happy does there, so no operator precedence of Grammar.y is needed elsewhere."""
    logger.setLevel(logging.DEBUG)
    with caplog.at_level(logging.DEBUG, logger="lark"):
        Lark(GRAMMAR.read_text(), parser="lalr", lexer=KritiLexer, debug=True)
    conflicts = sorted(r.getMessage() for r in caplog.records if "Shift/Reduce" in r.getMessage())
    assert conflicts == ["Shift/Reduce conflict for terminal DOT: (resolving as shift)",
                         "Shift/Reduce conflict for terminal LSQUARE: (resolving as shift)"]
    assert not [r for r in caplog.records if "Reduce/Reduce" in r.getMessage()]


def test_lexer_start_codes_keywords_and_longest_match():
    assert kinds('{{ if $.a }}') == [("LDCURLY", "{{"), ("IF", "if"), ("IDENT", "$"), ("DOT", "."), ("IDENT", "a"),
                                     ("RDCURLY", "}}")]
    assert kinds("true trueish null in inx $foo x-hasura-role") == [
        ("TRUE", "true"), ("IDENT", "trueish"), ("NULL", "null"), ("IN", "in"), ("IDENT", "inx"),
        ("IDENT", "$foo"), ("IDENT", "x-hasura-role")]
    assert kinds("?? ? >= := 12 -3 1.5e3") == [("DQMARK", "??"), ("QMARK", "?"), ("GTE", ">="), ("ASSIGN", ":="),
                                             ("INT", "12"), ("INT", "-3"), ("NUMBER", "1.5e3")]
    # a string template: "{{" inside a string enters <expr>, "}}" returns to <string>
    assert kinds('"a{{ 1 }}b"') == [("SBEGIN", '"'), ("STRING", "a"), ("LDCURLY", "{{"), ("INT", "1"),
                                    ("RDCURLY", "}}"), ("STRING", "b"), ("SEND", '"')]
    assert kinds("# comment\n1 # another") == [("INT", "1")]
    assert kinds("['k']") == [("LSQUARE", "["), ("SQUOTE", "'"), ("STRING", "k"), ("SQUOTE", "'"),
                              ("RSQUARE", "]")]


@pytest.mark.parametrize(("source", "expected"), [
    ('"a\\/b"', "a\\/b"), ('"\\u0041\\n"', "A\n"), ('"\\{{"', "{{"), ('"q\\"q"', 'q"q'), ('"\\\\"', "\\"),
    ('"{"', "{"), ('""', ""),
])
def test_string_escapes_follow_kritis_lexer(source, expected):
    assert value(source) == expected


@pytest.mark.parametrize(("source", "message"), [
    ('"\\q"', "Invalid Lexeme"), ("@", "Invalid Lexeme"), ("1 2", "Unexpected token '2'"),
    ("[true, ]", "Unexpected token ']'"), ("{ 1: null }", "Unexpected token '1'"),
    ("1 == 2 == 3", "Unexpected token '=='"), ("a && b || c", "Unexpected token '||'"),
    ("{{ if true }} 1 {{ elif false }} 2 {{ end }}", "Unexpected token 'end'"), ("", "Empty token stream"),
])
def test_refusals_name_the_token_and_its_place(source, message):
    with pytest.raises(KritiParseError) as caught:
        parse(source)
    assert message in caught.value.message and caught.value.line >= 1 and caught.value.column >= 1


def test_a_repeated_object_key_keeps_its_first_value():  # object_fields builds newest first, fromList keeps last
    assert value('{"a": 1, "a": 2}') == {"a": 1}


def test_optional_chains_extend_over_every_following_field():
    tree = parse("$.a?.b.c")
    assert isinstance(tree, ast.OptionalFieldAccess) and tree.fields == ("b", "c")
    assert value("$.a?.b.c", **{"$": {"a": {"b": {}}}}) is None
    assert value("$.x?.y", **{"$": {}}) is None  # a failing base is null, not an error
    with pytest.raises(KritiEvalError, match="expected type 'Object' with actual type 'Number'"):
        value("$.a?.b", **{"$": {"a": 1}})


@pytest.mark.parametrize(("source", "expected"), [
    ("true == 1", False), ("1 == 1.0", True), ('[1, "a"] == [1.0, "a"]', True), ("null ?? false", False),
    ("false ?? true", False), ('"b" in {"b": 1}', True), ("2 in [1, 2]", True), ('"a" < 1', True),
    ("[1] < [1, 0]", True), ("{{ range i, x := [5, 6] }} [{{ i }}, {{ x }}] {{ end }}", [[0, 5], [1, 6]]),
    ('"n={{ 1.5 }} o={{ {"b": [true, null]} }} s={{ "x" }}"', 'n=1.5 o={"b":[true,null]} s=x'),
])
def test_evaluation_follows_eval_hs(source, expected):
    assert value(source) == expected


@pytest.mark.parametrize(("source", "message"), [
    ("false && 1", "actual type 'Number'"),  # both sides, always
    ("true || $.missing", "has no attritubte 'missing'"),
    ("{{ if null }} 1 {{ else }} 2 {{ end }}", "expected type 'Boolean' with actual type 'Null'"),
    ("not(true)", "Variable 'not' not in scope"),  # no function map, as Hasura runs connection templates
    ("1 in 2", "expected type 'Array'"),
    ("[1][5]", "Index out of range"),
])
def test_evaluation_errors_follow_eval_hs(source, message):
    with pytest.raises(KritiEvalError, match=message):
        value(source, **{"$": {}})


def test_numbers_keep_their_exact_value():
    assert run_eval("0.1", parse("0.1"), {}) == Decimal("0.1")
    assert aeson.encode(Decimal("1e2")) == "100" and aeson.encode(Decimal("0.05")) == "5.0e-2"
