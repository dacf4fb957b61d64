"""The cheap pre-checks of app/bounded_json.py never let through what the full checks refuse.

Each pre-check skips a full pass when the raw bytes prove it unnecessary; an attacker who finds a document the
pre-check waves through but the full check would refuse gets deep or unstorable JSON past the writer."""

from __future__ import annotations

import json
import random

import pytest

from app import bounded_json
from app.bounded_json import JsonRefused

MAX_DEPTH = 8

# raw forms that might smuggle NUL or a lone surrogate past a check of the escapes alone
HOSTILE_TEXT = [
    b'"a\x00b"',              # raw NUL in a string: the strict parser refuses control characters
    b'"\x01\x1f"',            # other raw control characters
    b'"\xed\xa0\x80"',        # a surrogate encoded as UTF-8 (CESU-8): not UTF-8
    b'"\xc0\x80"',            # overlong NUL (Java's modified UTF-8): not UTF-8
    b'"\xf4\x90\x80\x80"',    # beyond U+10FFFF
    b'"\\u0000"', b'"\\ud800"', b'"\\uDFFF"', b'{"\\udc00": 1}', b'"\\ud83d"',
    b'"\\ud83d\\ude00"',      # a valid pair: storable
    b'"\\\\u0000"',           # an escaped backslash, then the text u0000: storable
    b'"\\\\\\u0000"',         # an escaped backslash, then a real escape
    b'["\\u0000", 1]', b'{"k": {"n": ["x", "\\u0000"]}}',
    '"é😀"'.encode(), b'"plain"', b'{"a": [1, 2.5, true, null]}',
]


def refused(data: bytes) -> bool:
    try:
        bounded_json.loads(data, max_bytes=1 << 20, max_depth=MAX_DEPTH)
    except JsonRefused:
        return True
    return False


@pytest.mark.parametrize("data", HOSTILE_TEXT)
def test_text_the_database_cannot_store_always_needs_the_full_check(data):
    if refused(data):
        return
    doc = bounded_json.loads(data, max_bytes=1 << 20, max_depth=MAX_DEPTH)
    if bounded_json.unstorable_text(doc) is not None:
        assert bounded_json.may_hold_unstorable_text(data), data


def test_the_escape_pre_check_is_not_vacuous():
    """Both outcomes happen: storable documents skip the walk, unstorable ones never do."""
    assert not bounded_json.may_hold_unstorable_text(b'{"a": "plain"}')
    assert bounded_json.unstorable_text(json.loads('"\\u0000"')) and bounded_json.may_hold_unstorable_text(
        b'"\\u0000"')


KEY_PARTS = ["{", "[[", "k", "\u0000", "\udfff"]
# raw bytes inside a string literal: control characters, encoded surrogates, overlong and valid non-ASCII UTF-8
RAW_IN_STRINGS = [b"\x00", b"\x1f", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xc0\x80", "é".encode(), "😀".encode()]


def random_json(rng: random.Random, depth: int) -> tuple[bytes, int]:
    """Nested arrays and objects whose strings are full of brackets, quotes, backslashes, escapes and raw bytes;
    with the nesting depth it was built with (a scalar 0, `[]` 1)."""
    if depth == 0 or rng.random() < 0.2:
        if rng.random() < 0.3:
            return b'"a' + rng.choice(RAW_IN_STRINGS) + b'b"', 0
        return json.dumps(rng.choice(["[", "{", "]}", '"[', "\\", "\u0000", "\ud800", "x", 1, 2.5, None])).encode(), 0
    items = [random_json(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    built = 1 + max((d for _, d in items), default=0)
    if rng.random() < 0.5:
        return b"[" + b",".join(text for text, _ in items) + b"]", built
    keys = [json.dumps(rng.choice(KEY_PARTS) + str(i)).encode() for i in range(len(items))]
    return b"{" + b",".join(key + b":" + text for key, (text, _) in zip(keys, items, strict=True)) + b"}", built


def test_random_documents_refused_exactly_as_the_full_checks_say():
    rng = random.Random(20261202)
    seen = {"deep": 0, "unstorable": 0, "raw_accepted": 0}
    for _ in range(4000):
        data, built = random_json(rng, rng.randint(1, 2 * MAX_DEPTH))
        try:
            doc = bounded_json.loads(data, max_bytes=1 << 20, max_depth=MAX_DEPTH)
        except JsonRefused as exc:
            if exc.reason == "too_deep":
                assert built > MAX_DEPTH, data
                seen["deep"] += 1
            else:  # only a raw byte the parser or the UTF-8 decoder refuses makes these documents invalid
                assert exc.reason == "invalid_json" and any(raw in data for raw in RAW_IN_STRINGS[:5]), (data, exc)
            continue
        assert built <= MAX_DEPTH, data  # accepted only within the depth it was built with
        seen["raw_accepted"] += any(raw in data for raw in RAW_IN_STRINGS[5:])
        if bounded_json.unstorable_text(doc) is not None:
            seen["unstorable"] += 1
            assert bounded_json.may_hold_unstorable_text(data), data
    assert min(seen.values()) > 100, seen  # the generator reaches every case


@pytest.mark.parametrize("data", [b'"a\x00b"', b'"\x01\x1f"', b'"\xed\xa0\x80"', b'"\xc0\x80"', b'{"\x00": 1}'])
def test_raw_control_bytes_and_encoded_surrogates_are_refused_outright(data):
    """What lets the escape pre-check be sound: these never decode at all."""
    assert refused(data)


def test_depth_exactly_at_and_one_past_the_limit():
    at, past = "[" * MAX_DEPTH + "]" * MAX_DEPTH, "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    assert not refused(at.encode()) and refused(past.encode())
    # many brackets inside strings, shallow structure: counted, then scanned, then accepted
    assert not refused(json.dumps(["[[[[{{{{" * 10]).encode())


EDGE_DOCUMENTS = [b"\xef\xbb\xbf{}", b"\xef\xbb\xbf", b" {} ", b"{}x", b"", b" ", b"NaN", b"[-Infinity]", b"[1e400]",
                  b"[-1e400]", b"[1e-400]", b"[-0.0]", b"[" + b"9" * 1000 + b"]", b"[" + b"9" * 1001 + b"]",
                  b'{"a": 1, "a": 2}', b'"\\ud800"', b"[1,]", b"{'a': 1}", b"\t[\n1\r]", b"[01]", b"[.5]"]


def reference_loads(data: bytes):
    """What bounded_json.loads did with json.loads and its hooks per call, before the decoder was built once."""
    return json.loads(data.decode("utf-8"), parse_constant=bounded_json._refuse_constant,
                      parse_float=bounded_json._finite_float, parse_int=bounded_json._bounded_int)


def outcome(parse, data: bytes):
    try:
        return "value", repr(parse(data))  # repr: 1, 1.0 and True differ
    except JsonRefused as exc:
        return "refused", exc.reason, exc.detail
    except ValueError as exc:  # the reference's own errors, as bounded_json turns them into invalid_json
        return "refused", "invalid_json", bounded_json._short(exc)


@pytest.mark.parametrize("data", EDGE_DOCUMENTS)
def test_the_shared_decoder_answers_as_a_fresh_one_per_call(data):
    ours = outcome(lambda d: bounded_json.loads(d, max_bytes=1 << 20, max_depth=MAX_DEPTH), data)
    assert ours == outcome(reference_loads, data)


def test_the_shared_decoder_answers_as_a_fresh_one_on_random_documents():
    rng = random.Random(20261203)
    for _ in range(3000):
        data, _built = random_json(rng, rng.randint(1, MAX_DEPTH))
        ours = outcome(lambda d: bounded_json.loads(d, max_bytes=1 << 20, max_depth=MAX_DEPTH), data)
        assert ours == outcome(reference_loads, data), data
