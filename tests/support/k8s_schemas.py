"""Offline validation of the Kubernetes objects the program declares.

Core objects: the real Kubernetes OpenAPI schemas shipped with kubernetes-validate (strict).
external-secrets.io CRDs are not part of Kubernetes' schema; they are checked against the subset
of the external-secrets v1 CRD schema below (only the fields this program sets, no others allowed).
"""

from __future__ import annotations

import jsonschema
import kubernetes_validate

_OBJ = {"type": "object"}
_META = {"type": "object", "required": ["name", "namespace"],
         "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _OBJ},
         "additionalProperties": False}

CRD_SCHEMAS = {
    ("external-secrets.io/v1", "SecretStore"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
        "properties": {"apiVersion": {"const": "external-secrets.io/v1"}, "kind": {"const": "SecretStore"},
                       "metadata": _META, "spec": {
                           "type": "object", "required": ["provider"], "additionalProperties": False,
                           "properties": {"provider": {
                               "type": "object", "required": ["vault"], "additionalProperties": False,
                               "properties": {"vault": {
                                   "type": "object", "required": ["server", "auth"], "additionalProperties": False,
                                   "properties": {
                                       "server": {"type": "string", "pattern": "^https?://"},
                                       "path": {"type": "string"}, "version": {"enum": ["v1", "v2"]},
                                       "auth": {"type": "object", "additionalProperties": False, "properties": {
                                           "kubernetes": {
                                               "type": "object", "required": ["mountPath", "role"],
                                               "additionalProperties": False,
                                               "properties": {"mountPath": {"type": "string"},
                                                              "role": {"type": "string"},
                                                              "serviceAccountRef": {
                                                                  "type": "object", "required": ["name"],
                                                                  "properties": {"name": {"type": "string"}},
                                                                  "additionalProperties": False}}}}}}}}}}}}},
    ("external-secrets.io/v1", "ExternalSecret"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
        "properties": {"apiVersion": {"const": "external-secrets.io/v1"}, "kind": {"const": "ExternalSecret"},
                       "metadata": _META, "spec": {
                           "type": "object", "required": ["secretStoreRef", "target", "data"],
                           "additionalProperties": False,
                           "properties": {
                               "refreshInterval": {"type": "string", "pattern": r"^\d+[smh]$"},
                               "secretStoreRef": {"type": "object", "required": ["name"], "additionalProperties": False,
                                                  "properties": {"name": {"type": "string"},
                                                                 "kind": {"enum": ["SecretStore",
                                                                                   "ClusterSecretStore"]}}},
                               "target": {"type": "object", "additionalProperties": False,
                                          "properties": {"name": {"type": "string"},
                                                         "creationPolicy": {"enum": ["Owner", "Orphan", "Merge",
                                                                                     "None"]}}},
                               "data": {"type": "array", "minItems": 1, "items": {
                                   "type": "object", "required": ["secretKey", "remoteRef"],
                                   "additionalProperties": False,
                                   "properties": {"secretKey": {"type": "string"}, "remoteRef": {
                                       "type": "object", "required": ["key"], "additionalProperties": False,
                                       "properties": {"key": {"type": "string"},
                                                      "property": {"type": "string"}}}}}}}}}},
}


def validate(obj: dict, kubernetes_version: str) -> None:
    """Raise on an invalid object (kubernetes_validate.ValidationError or jsonschema.ValidationError)."""
    schema = CRD_SCHEMAS.get((obj.get("apiVersion"), obj.get("kind")))
    if schema is not None:
        jsonschema.validate(obj, schema)
        return
    kubernetes_validate.validate(obj, kubernetes_version, strict=True)
