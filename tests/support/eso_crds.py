"""The real External Secrets CRD schemas (v1.3.2), from the Go module proxy, for strict offline validation.

The module zip is about 19 MB (under a second here), cached in .cache/; only
config/crds/bases/external-secrets.io_{secretstores,externalsecrets}.yaml are read from it
(the mechanism: tests/support/module_crds.py).
"""

from __future__ import annotations

from tests.support.module_crds import ModuleCrds

ESO_VERSION = "v1.3.2"
MODULE = "github.com/external-secrets/external-secrets"
EXTERNAL_SECRETS = ModuleCrds(
    MODULE, ESO_VERSION,
    crd_files=tuple(f"config/crds/bases/external-secrets.io_{name}.yaml"
                    for name in ("secretstores", "externalsecrets")),
    cache_name=f"external-secrets-{ESO_VERSION}.zip")


def validate_external_secrets_object(obj: dict) -> None:
    """Raise jsonschema.ValidationError when the object does not fit the real CRD (strictly)."""
    EXTERNAL_SECRETS.validate(obj)
