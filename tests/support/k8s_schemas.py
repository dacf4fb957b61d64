"""Offline validation of the Kubernetes objects the program declares.

Core objects: the real Kubernetes OpenAPI schemas shipped with kubernetes-validate (strict).
external-secrets.io objects: the real External Secrets v1.3.2 CRD schemas (tests/support/eso_crds.py), strict.
monitoring.coreos.com objects: the real Prometheus Operator v0.85.0 CRD schemas (prometheus_operator_crds.py), strict.
"""

from __future__ import annotations

import kubernetes_validate

from tests.support.eso_crds import validate_external_secrets_object
from tests.support.prometheus_operator_crds import validate_monitoring_object


def validate(obj: dict, kubernetes_version: str) -> None:
    """Raise on an invalid object (kubernetes_validate.ValidationError or jsonschema.ValidationError)."""
    if str(obj.get("apiVersion", "")).startswith("external-secrets.io/"):
        validate_external_secrets_object(obj)
        return
    if str(obj.get("apiVersion", "")).startswith("monitoring.coreos.com/"):
        validate_monitoring_object(obj)
        return
    kubernetes_validate.validate(obj, kubernetes_version, strict=True)
