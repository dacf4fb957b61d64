"""kriti-lang's own test corpus through the project's Kriti (app/hasura/kriti): parser golden ASTs, parser
failures, evaluation golden outputs (test/data in kriti-lang, run by its test/Spec.hs).

Needs a kriti-lang git directory in KRITI_LANG_REPO (e.g. the one `fetch github:hasura/kriti-lang` gives);
KRITI_LANG_REV picks the commit (default: the one graphql-engine's cabal.project pins). Skips without it.
"""

from __future__ import annotations

import json
import os
import subprocess
from decimal import Decimal
from pathlib import PurePosixPath

import pytest

from app.hasura.kriti import KritiParseError, aeson, parse, run_eval
from tests.support.kriti_functions import BASIC_FUNC_MAP
from tests.support.kriti_show import golden_tokens, node_tokens

REPO = os.environ.get("KRITI_LANG_REPO", "")
REV = os.environ.get("KRITI_LANG_REV", "c8fd863d359876af3a0fce47db8a5393dc556667")
pytestmark = pytest.mark.skipif(not REPO, reason="set KRITI_LANG_REPO to a kriti-lang git directory")


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", REPO, *args], check=True, capture_output=True, text=True).stdout


def _files(folder: str) -> list[str]:
    if not REPO:
        return []
    return sorted(p for p in _git("ls-tree", "-r", "--name-only", REV, folder).split() if p.endswith(".kriti"))


def _show(path: str) -> str:
    return _git("show", f"{REV}:{path}")


def _golden(path: str, folder: str, ext: str) -> str:
    name = PurePosixPath(path).stem
    return _show(f"{folder}/golden/{name}.{ext}")


@pytest.mark.parametrize("path", _files("test/data/parser/success/examples"))
def test_parses_as_kriti_does(path):
    assert node_tokens(parse(_show(path))) == golden_tokens(_golden(path, "test/data/parser/success", "txt"))


@pytest.mark.parametrize("path", _files("test/data/parser/failure/examples"))
def test_refuses_what_kriti_refuses(path):
    golden = _golden(path, "test/data/parser/failure", "txt")
    expected = golden.split('_message = "', 1)[1].split('", _span', 1)[0].replace('\\"', '"').replace("\\'", "'")
    with pytest.raises(KritiParseError) as caught:
        parse(_show(path))
    assert caught.value.message == expected


@pytest.mark.parametrize("path", _files("test/data/eval/success/examples"))
def test_evaluates_as_kriti_does(path):
    source = json.loads(_show("test/data/eval/success/source.json"), parse_float=Decimal, parse_int=Decimal)
    golden = json.loads(_golden(path, "test/data/eval/success", "json"), parse_float=Decimal,
                        parse_int=Decimal)
    text = _show(path)
    got = run_eval(text, parse(text), {"$": source}, BASIC_FUNC_MAP)
    assert aeson.equal(got, golden), (aeson.encode(got), aeson.encode(golden))
