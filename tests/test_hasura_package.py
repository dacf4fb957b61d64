"""The Hasura model is one package (app/hasura/) used by the program and the bootstrap, and the Job follows it."""

from __future__ import annotations

import ast
import shutil

from components.async_flow import bootstrap_fingerprint
from tests.conftest import REPO

APP = REPO / "app"


def test_the_hasura_model_is_one_package_not_loose_modules():
    assert (APP / "hasura" / "__init__.py").is_file()
    loose = sorted(p.name for p in APP.glob("*.py") if p.stem in ("hasura_metadata", "hasura_source",
                                                                  "connection_template", "kriti"))
    assert loose == []


def test_app_never_imports_components():
    for path in APP.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "components" or n.startswith("components.") for n in names), path


def test_the_bootstrap_job_reruns_when_any_module_of_the_package_changes(tmp_path):
    app = tmp_path / "app"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__"))
    before = bootstrap_fingerprint(app, "http://publisher")
    for path in sorted(p for p in (app / "hasura").rglob("*") if p.is_file()):
        original = path.read_bytes()
        path.write_bytes(original + b"\n")
        assert bootstrap_fingerprint(app, "http://publisher") != before, path
        path.write_bytes(original)
    (app / "hasura" / "new_module.py").write_text("X = 1\n")
    assert bootstrap_fingerprint(app, "http://publisher") != before
