"""What the rehearsal hands its checks (REHEARSAL_STATE): addresses, credentials, outputs, the manifest folder."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import httpx
import yaml


@cache
def state() -> dict:
    path = os.environ.get("REHEARSAL_STATE")
    if not path:
        raise RuntimeError("run these checks through `bash scripts/dev.sh rehearse` (REHEARSAL_STATE is not set)")
    return json.loads(Path(path).read_text())


def rendered_objects() -> list[dict]:
    objects = []
    for path in sorted(Path(state()["manifests"]).rglob("*.yaml")):
        objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return objects


def _root() -> dict[str, str]:
    return {"X-Vault-Token": state()["openbao"]["token"]}


def bao_token(policies: list[str], with_default: bool = False) -> str:
    """A token holding exactly these policies; `with_default` adds `default`, as a Kubernetes-auth login does
    (it lets the token look itself up, which the Vault agent needs, and grants nothing under secret/)."""
    answer = httpx.post(f"{state()['openbao']['address']}/v1/auth/token/create", headers=_root(),
                        json={"policies": policies, "no_default_policy": not with_default, "ttl": "10m"})
    answer.raise_for_status()
    return answer.json()["auth"]["client_token"]


def kv_value(entry: str, key: str = "value") -> str:
    answer = httpx.get(f"{state()['openbao']['address']}/v1/secret/data/{entry}", headers=_root())
    answer.raise_for_status()
    return answer.json()["data"]["data"][key]
