"""Pure Hasura metadata: what the flow needs, and the commands that bring a live metadata there.

`plan_metadata_commands(exported, desired)` compares against `export_metadata` (version 2) and
returns only what differs, so a second bootstrap sends nothing and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.hasura.source import FLOW_ROLES, SourceSettings, plan_source_command
from app.settings import ACTION_NAME, ACTION_SECRET_HEADER

TABLE = {"schema": "graphql", "name": "client_async_messages"}
OUTPUT_TYPE = "PublishAsyncRequestOutput"
USER_COLUMNS = [
    "request_id", "client_id", "handler", "operation", "status", "priority", "payload", "metadata",
    "response", "error", "created_at", "updated_at", "published_at", "completed_at", "expires_at",
]
# services also see the correlation headers (client IP, CF-Ray) for support work
SERVICE_COLUMNS = [*USER_COLUMNS, "correlation"]


@dataclass(frozen=True)
class DesiredMetadata:
    source: str
    handler_url: str
    timeout_seconds: int = 30
    secret_env: str = "ASYNC_ACTION_SECRET"
    action_roles: tuple[str, ...] = FLOW_ROLES
    # pool, read replicas, connection set and template of the source
    source_settings: SourceSettings = field(default_factory=SourceSettings)
    # rows a `user` sees per query; Hasura also caps a streaming subscription's batch_size with it
    user_row_limit: int = 100

    def select_permissions(self) -> dict[str, dict[str, Any]]:
        return {
            "user": {
                "columns": USER_COLUMNS,
                "filter": {"client_id": {"_eq": "X-Hasura-User-Id"}},
                "limit": self.user_row_limit,
                "allow_aggregations": False,
                "query_root_fields": ["select", "select_by_pk"],
                "subscription_root_fields": ["select", "select_by_pk", "select_stream"],
            },
            "service": {
                "columns": SERVICE_COLUMNS,
                "filter": {},
                "limit": 1000,
                "allow_aggregations": True,
                "query_root_fields": ["select", "select_by_pk", "select_aggregate"],
                "subscription_root_fields": ["select", "select_by_pk", "select_aggregate", "select_stream"],
            },
        }

    def output_object(self) -> dict[str, Any]:
        return {
            "name": OUTPUT_TYPE,
            "description": "Accepted async request; follow it with a subscription on client_async_messages",
            "fields": [
                {"name": "request_id", "type": "String!"},
                {"name": "client_id", "type": "String!"},
                {"name": "status", "type": "String!"},
                {"name": "duplicate", "type": "Boolean!"},
                {"name": "created_at", "type": "String!"},
                {"name": "expires_at", "type": "String!"},
            ],
        }

    def action_definition(self) -> dict[str, Any]:
        return {
            "kind": "synchronous",
            "type": "mutation",
            "arguments": [{"name": "input", "type": "json!"}],
            "output_type": OUTPUT_TYPE,
            "handler": self.handler_url,
            "headers": [{"name": ACTION_SECRET_HEADER, "value_from_env": self.secret_env}],
            "forward_client_headers": True,
            "timeout": self.timeout_seconds,
        }


class MetadataError(RuntimeError):
    pass


def _find(items: list[dict[str, Any]], key: str, value: Any) -> dict[str, Any] | None:
    return next((item for item in items if item.get(key) == value), None)


def _matches(existing: dict[str, Any], desired: dict[str, Any], defaults: dict[str, Any]) -> bool:
    """Hasura omits defaults on export: compare each desired key against the export or its default."""
    for key, want in desired.items():
        have = existing.get(key, defaults.get(key))
        if isinstance(want, list) and isinstance(have, list) and all(isinstance(x, str) for x in want):
            if sorted(want) != sorted(have):
                return False
        elif have != want:
            return False
    return True


PERMISSION_DEFAULTS = {"allow_aggregations": False, "filter": {}, "limit": None}
ACTION_DEFAULTS = {"forward_client_headers": False, "headers": [], "timeout": 30, "kind": "synchronous",
                   "type": "mutation"}


def plan_metadata_commands(exported: dict[str, Any], desired: DesiredMetadata) -> list[dict[str, Any]]:
    """The metadata API commands (in order) that make `exported` match `desired`; [] when it does."""
    metadata = exported.get("metadata", exported)
    source = _find(metadata.get("sources", []), "name", desired.source)
    if source is None:
        raise MetadataError(f"Hasura has no source {desired.source!r}: configure HASURA_GRAPHQL_DATABASE_URL "
                            "or add the source before the bootstrap runs")
    commands: list[dict[str, Any]] = []
    source_command = plan_source_command(source, desired.source_settings)
    if source_command is not None:  # first: the tables below are tracked on the source as configured
        commands.append(source_command)
    table = next((t for t in source.get("tables", []) if t.get("table") == TABLE), None)
    if table is None:
        commands.append({"type": "pg_track_table", "args": {"source": desired.source, "table": TABLE}})
        table = {}
    existing_perms = {p["role"]: p.get("permission", {}) for p in table.get("select_permissions", [])}
    for role, permission in desired.select_permissions().items():
        have = existing_perms.get(role)
        if have is not None and _matches(have, permission, PERMISSION_DEFAULTS):
            continue
        if have is not None:
            commands.append({"type": "pg_drop_select_permission",
                             "args": {"source": desired.source, "table": TABLE, "role": role}})
        commands.append({"type": "pg_create_select_permission",
                         "args": {"source": desired.source, "table": TABLE, "role": role, "permission": permission}})

    custom_types = metadata.get("custom_types", {}) or {}
    objects = list(custom_types.get("objects", []) or [])
    ours = desired.output_object()
    current = _find(objects, "name", OUTPUT_TYPE)
    if current is None or current.get("fields") != ours["fields"]:
        merged = {k: list(v) for k, v in custom_types.items() if v}
        merged["objects"] = [o for o in objects if o.get("name") != OUTPUT_TYPE] + [ours]
        commands.append({"type": "set_custom_types", "args": merged})

    action = _find(metadata.get("actions", []) or [], "name", ACTION_NAME)
    definition = desired.action_definition()
    if action is None:
        commands.append({"type": "create_action", "args": {"name": ACTION_NAME, "definition": definition}})
        have_roles: set[str] = set()
    else:
        if not _matches(action.get("definition", {}), definition, ACTION_DEFAULTS):
            commands.append({"type": "update_action", "args": {"name": ACTION_NAME, "definition": definition}})
        have_roles = {p["role"] for p in action.get("permissions", []) or []}
    for role in desired.action_roles:
        if role not in have_roles:
            commands.append({"type": "create_action_permission", "args": {"action": ACTION_NAME, "role": role}})
    return commands
