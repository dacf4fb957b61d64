"""Real CRD schemas taken from a Go module's release zip (the Go module proxy), for strict offline validation.

The module zip is fetched once and cached in .cache/; only the named CRD files are read from it. "Strict" as
kubernetes-validate means it: an object may not carry a field the schema does not declare. Used for the External
Secrets objects (eso_crds.py) and the Prometheus Operator's (prometheus_operator_crds.py).
"""

from __future__ import annotations

import copy
import io
import os
import re
import subprocess
import urllib.request
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import jsonschema
import yaml

CACHE_DIR = Path(__file__).resolve().parents[2] / ".cache"


def _proxy() -> str:
    configured = os.environ.get("GOPROXY") or subprocess.run(["go", "env", "GOPROXY"], capture_output=True,
                                                             text=True).stdout.strip()
    return next((p for p in configured.split(",") if p.startswith("http")), "https://proxy.golang.org")


def _strict(schema: dict) -> dict:
    """Objects with declared properties allow no others, unless the CRD says unknown fields are preserved."""
    schema = copy.deepcopy(schema)
    stack = [schema]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node \
                and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        if isinstance(node.get("pattern"), str):
            node["pattern"] = _python_regex(node["pattern"])
        for value in node.values():
            if isinstance(value, dict):
                stack.append(value)
            elif isinstance(value, list):
                stack.extend(v for v in value if isinstance(v, dict))
    return schema


def _python_regex(pattern: str) -> str:
    """Go's RE2 takes flags anywhere (`^(?i)(abort|warn)?$` in the PrometheusRule CRD); Python wants global flags
    first. Same language, moved to where Python reads it."""
    match = re.match(r"^\^\(\?([imsU]+)\)", pattern)
    return f"(?{match.group(1)})^{pattern[match.end():]}" if match else pattern


@dataclass(frozen=True)
class ModuleCrds:
    module: str  # e.g. github.com/external-secrets/external-secrets
    version: str
    crd_files: tuple[str, ...]  # paths inside the module
    cache_name: str  # the zip's file name in .cache/

    def _module_zip(self) -> bytes:
        cache = CACHE_DIR / self.cache_name
        if not cache.exists():
            cache.parent.mkdir(parents=True, exist_ok=True)
            with urllib.request.urlopen(f"{_proxy()}/{self.module}/@v/{self.version}.zip", timeout=120) as answer:
                cache.write_bytes(answer.read())
        return cache.read_bytes()

    @cached_property
    def schemas(self) -> dict[tuple[str, str], dict]:
        """(apiVersion, kind) -> strict JSON schema of every served version of the CRDs."""
        schemas = {}
        with zipfile.ZipFile(io.BytesIO(self._module_zip())) as archive:
            for name in self.crd_files:
                crd = yaml.safe_load(archive.read(f"{self.module}@{self.version}/{name}"))
                group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
                for version in crd["spec"]["versions"]:
                    schema = _strict(version["schema"]["openAPIV3Schema"])
                    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta is Kubernetes', checked apart
                    schemas[(f"{group}/{version['name']}", kind)] = schema
        return schemas

    def validate(self, obj: dict) -> None:
        """Raise jsonschema.ValidationError when the object does not fit the real CRD (strictly)."""
        key = (obj.get("apiVersion"), obj.get("kind"))
        schema = self.schemas.get(key)
        if schema is None:
            raise jsonschema.ValidationError(f"no CRD of {self.module}@{self.version} serves {key}")
        jsonschema.validate(obj, schema)
        metadata = obj.get("metadata", {})
        if not metadata.get("name") or not metadata.get("namespace"):
            raise jsonschema.ValidationError("metadata.name and metadata.namespace are required")
