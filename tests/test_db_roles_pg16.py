"""The service roles' lifecycle on PostgreSQL 16 (the pgserver wheel's server; Debian ships 15), whose CREATEROLE
rules differ (src/backend/commands/user.c): a non-superuser who creates a role is granted it (ADMIN, no INHERIT,
no SET), and only a CREATEDB role may mention CREATEDB in ALTER ROLE, even as NOCREATEDB. Both broke every
deploy on 16 in review; this runs the whole first deploy, a re-run, a password rotation and a refusal there."""

from __future__ import annotations

import secrets
import shutil
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from app import store, writer
from app.bootstrap import bootstrap_database
from app.cleanup import DELETE_EXPIRED_BATCH
from app.db import pinned_connect
from app.db_roles import ROLE_OF, SERVICE_ROLES, ServiceRoleTooPrivileged, create_service_logins, scram_verifier
from app.role_admin import create_roles
from app.settings import BootstrapSettings
from scripts.servers import PostgresServer
from tests.conftest import TEST_TEMP_ROOT
from tests.test_db_roles import role_admin_settings, role_url


@pytest.fixture(scope="module")
def pg16(tmp_path_factory):
    pgserver = pytest.importorskip("pgserver")
    root = tmp_path_factory.mktemp("pg16")
    # a copy beside the data: the server runs as `postgres`, which may not read a venv under a private home; the
    # wheel's libraries come along (its binaries find them at $ORIGIN/../../../pgserver.libs)
    package = Path(pgserver.__file__).parent
    install = shutil.copytree(package / "pginstall", root / "pgserver" / "pginstall")
    shutil.copytree(package.parent / "pgserver.libs", root / "pgserver.libs")
    server = PostgresServer(root / "data", owned_root=TEST_TEMP_ROOT, bindir=install / "bin")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(pg16):
    suffix, password = uuid.uuid4().hex[:8], secrets.token_hex(16)
    owner, admin, database = f"hasura_{suffix}", f"role_admin_{suffix}", f"hasura_{suffix}"
    with psycopg.connect(pg16.url, autocommit=True) as su:
        assert su.info.server_version // 10000 == 16
        su.execute(f"CREATE ROLE {owner} LOGIN PASSWORD '{password}'")
        su.execute(f"CREATE ROLE {admin} LOGIN CREATEROLE PASSWORD '{password}'")
        su.execute(f"CREATE DATABASE {database} OWNER {owner}")
    return {"owner_url": role_url(pg16, owner, password, database),
            "admin_url": role_url(pg16, admin, password, "postgres"), "database": database,
            "superuser": pg16.url.rsplit("/", 1)[0] + f"/{database}"}


def deploy(pg16, stack, passwords) -> dict[str, str]:
    create_roles(role_admin_settings(stack["admin_url"], passwords))
    bootstrap_database(BootstrapSettings(async_database_url=stack["owner_url"], hasura_admin_secret="x" * 16,
                                         async_service_roles=True, hasura_retry_seconds=0))
    return {service: role_url(pg16, role, passwords[role], stack["database"]) for service, role in ROLE_OF.items()}


def each_service_does_its_job(urls: dict[str, str]) -> None:
    request_id = f"pg16-{uuid.uuid4().hex[:10]}"
    with psycopg.connect(urls["publisher"], autocommit=True) as conn:
        conn.execute(store.INSERT_PENDING, (request_id, "c", "h", "op", "normal", Jsonb({}), Jsonb({}), Jsonb({}),
                                            60))
    with psycopg.connect(urls["writer"], autocommit=True) as conn:
        written = conn.execute(writer.WRITE_OUTCOMES, ([request_id], ["completed"], [Jsonb({"ok": True})], [None],
                                                       ["2026-01-01T00:00:00Z"], [request_id])).fetchall()
        assert written == [(request_id,)]
    with psycopg.connect(urls["cleanup"], autocommit=True) as conn:
        assert conn.execute(DELETE_EXPIRED_BATCH, (10,)).fetchone()[0] == 0


def test_first_deploy_rerun_and_rotation_on_postgresql_16(pg16, stack):
    passwords = {r.role: secrets.token_hex(24) for r in SERVICE_ROLES}
    each_service_does_its_job(deploy(pg16, stack, passwords))  # CREATE: the creator's own grant is expected
    each_service_does_its_job(deploy(pg16, stack, passwords))  # ALTER: no CREATEDB option mentioned
    rotated = {role: secrets.token_hex(24) for role in passwords}
    each_service_does_its_job(deploy(pg16, stack, rotated))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(role_url(pg16, ROLE_OF["writer"], passwords[ROLE_OF["writer"]], stack["database"]))


def test_a_membership_someone_added_is_still_refused_on_postgresql_16(pg16, stack):
    passwords = {r.role: secrets.token_hex(24) for r in SERVICE_ROLES}
    deploy(pg16, stack, passwords)
    with psycopg.connect(stack["superuser"], autocommit=True) as su:
        su.execute("GRANT pg_read_all_data TO graphql_async_writer")
        try:
            with pinned_connect(stack["admin_url"]) as admin, pytest.raises(ServiceRoleTooPrivileged,
                                                                            match="member of pg_read_all_data"):
                create_service_logins(admin, {role: scram_verifier(p) for role, p in passwords.items()})
        finally:
            su.execute("REVOKE pg_read_all_data FROM graphql_async_writer")


def test_a_role_administrator_set_to_self_grant_more_still_creates_plain_roles(pg16, stack):
    """`createrole_self_grant` (16+) on the administrator would add SET and INHERIT to the creator's own grant,
    which the audit refuses; the db-roles session asks for nothing beyond the server's ADMIN-only grant."""
    admin = stack["admin_url"].split("//", 1)[1].split(":", 1)[0]
    with psycopg.connect(stack["superuser"], autocommit=True) as su:
        su.execute(f"ALTER ROLE {admin} SET createrole_self_grant = 'set, inherit'")
        for role in ROLE_OF.values():  # from scratch: the setting acts when a role is created
            if su.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                su.execute(f"DROP OWNED BY {role}")
                su.execute(f"DROP ROLE {role}")
    passwords = {r.role: secrets.token_hex(24) for r in SERVICE_ROLES}
    each_service_does_its_job(deploy(pg16, stack, passwords))
