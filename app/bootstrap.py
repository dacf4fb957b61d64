"""Bootstrap: create the table (idempotent SQL), then bring Hasura's metadata to what the flow needs.

Waits for the database and for Hasura (both may still be starting when the Job runs), then sends
only the metadata commands that differ from `export_metadata`, as one `bulk` call.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import httpx
import psycopg

from app import logs
from app.db import apply_schema, is_transient, pinned_connect
from app.db_audit import database_problems, other_databases, owner_role_problems, stray_grant_problems
from app.db_roles import ROLE_OF, ServiceRoleTooPrivileged, grant_service_privileges
from app.hasura.connection_template import Route
from app.hasura.metadata import DesiredMetadata, plan_metadata_commands
from app.hasura.source import RoutingCase
from app.retry import retry_transient
from app.settings import BootstrapSettings

log = logging.getLogger("app.bootstrap")


class HasuraError(RuntimeError):
    pass


class RoutingMismatch(HasuraError):
    """Hasura routes a listed request shape somewhere other than the stack file says."""


class OwnerTooPrivileged(RuntimeError):
    """Hasura's database role could create roles or reach the database host: refused before any change."""


def owner_privilege_problems(owner: psycopg.Connection, owner_url: str) -> list[str]:
    """The owner's audit (app/db_audit.py): its roles and parameters, then each database it may connect to, in a
    pinned session of its own there (grants on functions and catalog tables are per database)."""
    role = owner.info.user
    problems = owner_role_problems(owner, role)
    if problems == [f"{role} is a SUPERUSER"]:  # it may do everything everywhere: the list would say nothing more
        return problems
    problems += database_problems(owner, role)
    for database in other_databases(owner, role):
        try:
            elsewhere = pinned_connect(owner_url, dbname=database, connect_timeout=5)
        except psycopg.OperationalError as exc:  # CONNECT granted, login refused (pg_hba, a limit): no path there
            log.info("owner cannot log in to another database; not audited there",
                     extra={"database": database, "error": str(exc).splitlines()[0][:200]})
            continue
        with elsewhere:
            problems += database_problems(elsewhere, role)
    return problems


def bootstrap_database(settings: BootstrapSettings) -> None:
    """The table as the owner; with the services' roles (made by the db-roles Job, app/role_admin.py), their
    grants as the owner. The owner is audited first: Hasura holds its URL, so it must hold nothing beyond its
    database. A pinned session: the owner may have set its database's search_path or planted operators there."""

    def attempt() -> None:
        with pinned_connect(settings.async_database_url.get_secret_value(), connect_timeout=5) as owner:
            if settings.async_service_roles:
                problems = owner_privilege_problems(owner, settings.async_database_url.get_secret_value())
                if problems:
                    raise OwnerTooPrivileged(
                        "the owner role (databaseUrl, which Hasura holds) must not create roles or reach the database "
                        f"host: {'; '.join(problems)}. Create the service roles with databaseRoleAdminUrl instead, "
                        "and revoke these (e.g. ALTER ROLE <owner> NOCREATEROLE)")
            apply_schema(owner)
            if settings.async_service_roles:
                grant_service_privileges(owner)
                stray = stray_grant_problems(owner, sorted(ROLE_OF.values()))
                if stray:
                    raise ServiceRoleTooPrivileged("service database roles hold more than their grants: "
                                                   + "; ".join(stray))
                log.info("service database roles granted", extra={"roles": sorted(ROLE_OF.values())})

    retry_transient("database", attempt, time.monotonic() + settings.hasura_retry_seconds, is_transient, log)
    log.info("table graphql.client_async_messages is in place")


class MetadataClient:
    def __init__(self, endpoint: str, admin_secret: str, timeout: float = 30.0):
        self._http = httpx.Client(base_url=endpoint.rstrip("/"), timeout=timeout,
                                  headers={"X-Hasura-Admin-Secret": admin_secret})

    def call(self, body: dict[str, Any]) -> Any:
        response = self._http.post("/v1/metadata", json=body)
        if response.status_code >= 400:
            hint = ""
            if '"not-supported"' in response.text:
                hint = (" (this Hasura is the Community Edition: read replicas, connection sets and templates "
                        "need Enterprise; see hasura.edition)")
            raise HasuraError(f"{body['type']} failed with {response.status_code}: {response.text[:500]}{hint}")
        return response.json()

    def close(self) -> None:
        self._http.close()


def _hasura_transient(exc: BaseException) -> bool:
    return isinstance(exc, httpx.TransportError)


def check_routing(client: MetadataClient, source: str, cases: list[RoutingCase]) -> list[str]:
    """Ask Hasura where each case goes (`pg_test_connection_template`); raise RoutingMismatch listing every miss."""
    misses, report = [], []
    for case in cases:
        answer = client.call({"type": "pg_test_connection_template",
                              "args": {"source_name": source, "request_context": case.request.as_json()}})
        result = (answer or {}).get("result") or {}
        kind = result.get("routing_to")
        got = Route(kind, result.get("value") if kind == "connection_set" else None)
        verdict = case.verdict(got)
        report.append(f"{case.name}: {got}")
        if verdict:
            misses.append(f"{case.name} {verdict}")
    if misses:
        raise RoutingMismatch(f"{len(misses)} of {len(cases)} routing cases fail: " + "; ".join(misses))
    return report


# a template Hasura EE resolves for any request; CE answers not-supported before reading anything else
# (graphql-engine Backends/Postgres/Execute/Types.hs, pgResolveConnectionTemplate: ConnTemplate_NotApplicable)
EDITION_PROBE = {"connection_template": {"template": "{{ $.default }}"},
                 "request_context": {"session": {"x-hasura-role": "user"}, "query": {"operation_type": "query"}}}


def require_enterprise(client: MetadataClient, source: str) -> None:
    """Fail before applying Enterprise settings to a Community Edition Hasura, whose pg_add_source would store
    read replicas, connection sets and templates without a word and never use them."""
    client.call({"type": "pg_test_connection_template", "args": {"source_name": source, **EDITION_PROBE}})


def bootstrap_metadata(settings: BootstrapSettings) -> list[dict[str, Any]]:
    """Returns the commands it sent ([] when the metadata was already right)."""
    desired = DesiredMetadata(source=settings.hasura_source, handler_url=settings.action_handler_url,
                              timeout_seconds=settings.action_timeout_seconds,
                              source_settings=settings.hasura_source_settings,
                              user_row_limit=settings.hasura_user_row_limit)
    client = MetadataClient(settings.hasura_endpoint, settings.hasura_admin_secret.get_secret_value())
    try:
        deadline = time.monotonic() + settings.hasura_retry_seconds
        exported = retry_transient("hasura", lambda: client.call({"type": "export_metadata", "version": 2, "args": {}}),
                                   deadline, _hasura_transient, log)
        commands = plan_metadata_commands(exported, desired)
        if desired.source_settings.enterprise:
            require_enterprise(client, desired.source)
        if commands:
            client.call({"type": "bulk", "resource_version": exported.get("resource_version"), "args": commands})
            log.info("hasura metadata updated", extra={"commands": [c["type"] for c in commands]})
        else:
            log.info("hasura metadata already up to date")
        cases = desired.source_settings.routing_cases()
        if cases:
            routed = check_routing(client, desired.source, cases)
            log.info("connection template routes every case as listed", extra={"cases": routed})
        return commands
    finally:
        client.close()


def main() -> int:
    logs.setup()
    settings = BootstrapSettings.load_or_exit()
    try:
        bootstrap_database(settings)
        bootstrap_metadata(settings)
    except Exception as exc:  # noqa: BLE001 - the Job's log says why; its exit code says that it failed
        log.error("bootstrap failed", extra={"error": str(exc)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
