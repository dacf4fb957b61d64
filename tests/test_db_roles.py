"""Each service's own database role, created by the bootstrap on the real PostgreSQL, can run exactly its own
SQL (the statements the services execute, imported from them) and nothing else: the publisher cannot DELETE,
the writer cannot INSERT or DELETE, the cleanup cannot UPDATE or even SELECT. Logins use the URL the program
writes to each service's Vault entry; the bootstrap only ever saw SCRAM verifiers."""

from __future__ import annotations

import json
import secrets
import uuid
from types import SimpleNamespace
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg.types.json import Jsonb

from app import store, writer
from app.bootstrap import bootstrap_database
from app.cleanup import DELETE_EXPIRED_BATCH
from app.db import apply_schema
from app.db_roles import ROLE_OF, SERVICE_ROLES, apply_service_roles, scram_verifier, service_url
from app.role_admin import create_roles
from app.settings import BootstrapSettings, RoleAdminSettings

DENIED = psycopg.errors.InsufficientPrivilege


@pytest.fixture(scope="module")
def passwords() -> dict[str, str]:
    return {r.role: secrets.token_hex(24) for r in SERVICE_ROLES}


def role_url(pg, role: str, password: str, database: str) -> str:
    return service_url(pg.url.rsplit("/", 1)[0] + f"/{database}", role, password)


@pytest.fixture(scope="module")
def cluster(pg):
    """What a production database offers the stack: an owner role with no attributes that owns the database
    (databaseUrl, Hasura's), and a role administrator with CREATEROLE only (databaseRoleAdminUrl)."""
    suffix, password = uuid.uuid4().hex[:8], secrets.token_hex(16)
    owner, admin, database = f"hasura_owner_{suffix}", f"role_admin_{suffix}", f"roles_{suffix}"
    with psycopg.connect(pg.url, autocommit=True) as su:
        su.execute(f"CREATE ROLE {owner} LOGIN PASSWORD '{password}'")
        su.execute(f"CREATE ROLE {admin} LOGIN CREATEROLE PASSWORD '{password}'")
        su.execute(f"CREATE DATABASE {database} OWNER {owner}")
    yield SimpleNamespace(owner=owner, database=database, superuser=pg.url.rsplit("/", 1)[0] + f"/{database}",
                          owner_url=role_url(pg, owner, password, database),
                          admin_url=role_url(pg, admin, password, "postgres"))  # README: not the owner's


def role_admin_settings(admin_url: str, passwords: dict[str, str]) -> RoleAdminSettings:
    verifiers = {role: scram_verifier(password) for role, password in passwords.items()}
    return RoleAdminSettings(async_database_role_admin_url=admin_url, async_database_roles=json.dumps(verifiers),
                             db_retry_seconds=0)


@pytest.fixture(scope="module")
def roles(pg, cluster, passwords):
    """What the db-roles Job, then the bootstrap Job, do with the URLs and verifiers from their Vault entries."""
    create_roles(role_admin_settings(cluster.admin_url, passwords))
    bootstrap_database(BootstrapSettings(async_database_url=cluster.owner_url, hasura_admin_secret="x" * 16,
                                         async_service_roles=True))
    return {service: role_url(pg, role, passwords[role], cluster.database) for service, role in ROLE_OF.items()}


@pytest.fixture
def db(cluster):
    """A superuser connection to the stack's database (this module's, not the session's)."""
    with psycopg.connect(cluster.superuser, autocommit=True) as conn:
        yield conn


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def insert_row(db, *, expired: bool = False) -> str:
    request_id = f"roles-{uuid.uuid4().hex[:12]}"
    db.execute("INSERT INTO graphql.client_async_messages (request_id, client_id, handler, operation, expires_at) "
               "VALUES (%s, 'c', 'h', 'op', now() + %s * interval '1 hour')", (request_id, -1 if expired else 1))
    return request_id


def test_the_publisher_role_inserts_reads_and_marks_but_cannot_delete(roles, db):
    with connect(roles["publisher"]) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "graphql_async_publisher"
        request_id = f"roles-{uuid.uuid4().hex[:12]}"
        conn.execute(store.INSERT_PENDING, (request_id, "c", "h", "op", "normal", Jsonb({}), Jsonb({}), Jsonb({}), 60))
        assert conn.execute(store.SELECT_ONE, (request_id,)).fetchone()
        with conn.transaction():
            conn.execute(store.CLAIM_UNPUBLISHED, (0, 10)).fetchall()
        assert conn.execute(store.MARK_PUBLISHED, ([request_id],)).rowcount == 1
        conn.execute(store.PARK_UNPUBLISHABLE, ([request_id], ["too large"], [request_id]))
        for forbidden in ("DELETE FROM graphql.client_async_messages WHERE request_id = %s",
                          "UPDATE graphql.client_async_messages SET response = '{}' WHERE request_id = %s",
                          "UPDATE graphql.client_async_messages SET payload = '{}' WHERE request_id = %s",
                          "TRUNCATE graphql.client_async_messages"):
            with pytest.raises(DENIED):
                conn.execute(forbidden, (request_id,) if "%s" in forbidden else None)


def test_the_writer_role_records_outcomes_but_cannot_insert_or_delete(roles, db):
    request_id = insert_row(db)
    with connect(roles["writer"]) as conn:
        done = conn.execute(writer.WRITE_OUTCOMES, ([request_id], ["completed"], [Jsonb({"ok": True})], [None],
                                                    ["2026-01-01T00:00:00Z"], [request_id])).fetchall()
        assert done == [(request_id,)]
        assert conn.execute(writer.EXISTING, ([request_id],)).fetchall() == [(request_id,)]
        for forbidden in ("DELETE FROM graphql.client_async_messages WHERE request_id = %s",
                          "INSERT INTO graphql.client_async_messages (request_id, client_id, handler, operation, "
                          "expires_at) VALUES (%s, 'c', 'h', 'op', now())",
                          "UPDATE graphql.client_async_messages SET client_id = 'other' WHERE request_id = %s",
                          "SELECT payload FROM graphql.client_async_messages WHERE request_id = %s"):
            with pytest.raises(DENIED):
                conn.execute(forbidden, (request_id,))


def test_the_cleanup_role_deletes_expired_rows_only_and_cannot_update(roles, db):
    db.execute("DELETE FROM graphql.client_async_messages WHERE expires_at < now()")
    expired, live = insert_row(db, expired=True), insert_row(db)
    with connect(roles["cleanup"]) as conn:
        assert conn.execute(DELETE_EXPIRED_BATCH, (100,)).fetchone()[0] == 1
        for forbidden in ("UPDATE graphql.client_async_messages SET status = 'failed' WHERE request_id = %s",
                          "DELETE FROM graphql.client_async_messages WHERE request_id = %s",
                          "SELECT client_id FROM graphql.client_async_messages WHERE request_id = %s"):
            with pytest.raises(DENIED):
                conn.execute(forbidden, (live,))
    remaining = db.execute("SELECT request_id FROM graphql.client_async_messages WHERE request_id = ANY(%s)",
                           ([expired, live],)).fetchall()
    assert remaining == [(live,)]


def test_a_wrong_password_is_refused_and_roles_have_no_attributes(roles, db, pg, cluster):
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(role_url(pg, "graphql_async_writer", "not-the-password", cluster.database))
    attributes = db.execute("SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolinherit, rolcanlogin "
                            "FROM pg_roles WHERE rolname LIKE 'graphql_async_%' ORDER BY 1").fetchall()
    assert attributes == [(role, False, False, False, False, True) for role in sorted(ROLE_OF.values())]


def test_a_rerun_resets_grants_to_exactly_the_list(roles, db, cluster, passwords):
    db.execute("GRANT DELETE ON graphql.client_async_messages TO graphql_async_publisher")  # drift
    with connect(cluster.admin_url) as admin, connect(cluster.owner_url) as owner:
        apply_service_roles(admin, owner, {role: scram_verifier(password) for role, password in passwords.items()})
    with connect(roles["publisher"]) as conn, pytest.raises(DENIED):
        conn.execute("DELETE FROM graphql.client_async_messages WHERE false")


def test_service_url_swaps_only_the_credentials():
    url = service_url("postgresql://owner:s3cr%40t@db.example.test:5433/app?sslmode=verify-full",
                      "graphql_async_writer", "p@ss/word")
    assert url == "postgresql://graphql_async_writer:p%40ss%2Fword@db.example.test:5433/app?sslmode=verify-full"
    with pytest.raises(ValueError, match="postgresql://"):
        service_url("host=db user=x", "r", "p")
    with pytest.raises(ValueError, match="network.databasePort"):  # the NetworkPolicies would block it
        service_url("postgresql://o:p@db:5432/app", "r", "p", expect_port=5433)


# ------------------------------------------------------ the owner (Hasura's role) holds nothing beyond its tables


def test_the_owner_hasura_holds_cannot_create_roles_nor_grant_itself_host_access(roles, cluster):
    """The attack the split closes: before PostgreSQL 16 a CREATEROLE role grants itself
    pg_execute_server_program and runs `COPY ... FROM PROGRAM` on the database host."""
    with connect(cluster.owner_url) as owner:
        for attempt in ("CREATE ROLE mallory LOGIN", "GRANT pg_execute_server_program TO current_user",
                        "ALTER ROLE graphql_async_writer PASSWORD 'taken-over'"):
            with pytest.raises(DENIED):
                owner.execute(attempt)
        with pytest.raises(DENIED):
            owner.execute("COPY (SELECT 1) TO PROGRAM 'true'")


@pytest.fixture
def unsafe_owner(pg, cluster):
    """A fresh database and its owner, to be given one privilege too many (or to plant traps) by each test."""
    suffix, password = uuid.uuid4().hex[:8], secrets.token_hex(16)
    owner, database = f"unsafe_owner_{suffix}", f"unsafe_{suffix}"
    with psycopg.connect(pg.url, autocommit=True) as su:
        su.execute(f"CREATE ROLE {owner} LOGIN PASSWORD '{password}'")
        su.execute(f"CREATE DATABASE {database} OWNER {owner}")
    owner_url = role_url(pg, owner, password, database)
    settings = BootstrapSettings(async_database_url=owner_url, hasura_admin_secret="x" * 16,
                                 async_service_roles=True, hasura_retry_seconds=0)
    # the superuser works in the owner's database: function privileges are per database
    with psycopg.connect(pg.url.rsplit("/", 1)[0] + f"/{database}", autocommit=True) as su:
        yield SimpleNamespace(name=owner, settings=settings, su=su, url=owner_url, database=database,
                              tables=lambda: su.execute("SELECT count(*) FROM pg_tables "
                                                        "WHERE schemaname = 'graphql'").fetchone()[0])
    # gone, so the next owner's audit (which visits every database it may connect to) does not meet its traps
    with psycopg.connect(pg.url, autocommit=True) as su:
        su.execute(f"DROP DATABASE {database} WITH (FORCE)")


@pytest.mark.parametrize("grant, reason", [
    ("ALTER ROLE {owner} CREATEROLE", "{owner} has CREATEROLE"),
    ("ALTER ROLE {owner} REPLICATION", "{owner} has REPLICATION"),  # BASE_BACKUP: every database, pg_authid
    ("ALTER ROLE {owner} BYPASSRLS", "{owner} has BYPASSRLS"),
    ("GRANT pg_execute_server_program TO {owner}", "{owner} is a member of pg_execute_server_program"),
    ("GRANT pg_read_all_data TO {owner}", "{owner} is a member of pg_read_all_data"),
    ("GRANT {admin} TO {owner}", "{owner} is a member of {admin}, which has CREATEROLE"),
    ("ALTER ROLE {owner} SUPERUSER", "{owner} is a SUPERUSER"),
    # writes files as the server's user (PostgreSQL's docs warn it can be turned into superuser)
    ("GRANT EXECUTE ON FUNCTION lo_export(oid, text) TO {owner}",
     "{owner} may run lo_export(oid,text) in {database}, which PUBLIC may not"),
    ("CREATE FUNCTION public.run_as_su() RETURNS void LANGUAGE sql SECURITY DEFINER AS 'SELECT'",
     "{owner} may run public.run_as_su() in {database}, a SECURITY DEFINER function of the privileged role"),
    ("GRANT SELECT ON pg_catalog.pg_authid TO {owner}", "{owner} may SELECT pg_authid in {database}"),  # hashes
    ("GRANT ALTER SYSTEM ON PARAMETER archive_command TO {owner}", "{owner} may ALTER SYSTEM archive_command"),
    ("GRANT SET ON PARAMETER session_replication_role TO {owner}", "{owner} may SET session_replication_role"),
    ("GRANT pg_monitor TO {owner}", "{owner} is a member of pg_monitor"),
    ("ALTER ROLE {owner} CREATEDB", "{owner} has CREATEDB"),
    # a server whose user mapping logs in as a superuser: dblink/postgres_fdw sessions as that superuser
    ("CREATE EXTENSION IF NOT EXISTS postgres_fdw; CREATE SERVER loop FOREIGN DATA WRAPPER postgres_fdw; "
     "GRANT USAGE ON FOREIGN SERVER loop TO {owner}", "{owner} may use the foreign server loop in {database}"),
    # the namespace is no shelter: a definer function a superuser put in pg_catalog
    ("CREATE FUNCTION pg_catalog.run_as_su() RETURNS void LANGUAGE sql SECURITY DEFINER AS 'SELECT'",
     "{owner} may run run_as_su() in {database}, a SECURITY DEFINER function of the privileged role"),
])
def test_an_owner_that_could_create_roles_or_reach_the_host_is_refused_before_any_change(unsafe_owner, cluster,
                                                                                         grant, reason):
    from app.bootstrap import OwnerTooPrivileged

    admin = urlsplit(cluster.admin_url).username
    unsafe_owner.su.execute(grant.format(owner=unsafe_owner.name, admin=admin))
    with pytest.raises(OwnerTooPrivileged, match="databaseRoleAdminUrl") as refused:
        bootstrap_database(unsafe_owner.settings)
    assert reason.format(owner=unsafe_owner.name, admin=admin, database=unsafe_owner.database) in str(refused.value)
    assert unsafe_owner.tables() == 0  # refused before the schema


# what an owner (or Hasura's admin secret, through run_sql) can plant in its own database for the next bootstrap:
# a pg_roles view and a name = operator in public that grant host access when a privileged session reads them,
# and public first in the database's search_path
TRAP = """
CREATE FUNCTION public.pwn() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF session_user <> '{owner}' THEN EXECUTE 'GRANT pg_execute_server_program TO {owner}'; END IF;
    RETURN true;
END $$;
CREATE VIEW public.pg_roles AS SELECT r.* FROM pg_catalog.pg_roles AS r WHERE public.pwn();
CREATE FUNCTION public.name_eq(name, name) RETURNS boolean LANGUAGE sql AS
    'SELECT public.pwn() AND $1 OPERATOR(pg_catalog.=) $2';
CREATE OPERATOR public.= (LEFTARG = name, RIGHTARG = name, FUNCTION = public.name_eq);
CREATE FUNCTION public.text_eq(name, text) RETURNS boolean LANGUAGE sql AS
    'SELECT public.pwn() AND $1::text OPERATOR(pg_catalog.=) $2';
CREATE OPERATOR public.= (LEFTARG = name, RIGHTARG = text, FUNCTION = public.text_eq);
ALTER DATABASE {database} SET search_path = public, pg_catalog;
"""


def test_traps_the_owner_planted_in_its_database_never_run_in_the_jobs_sessions(unsafe_owner, cluster, passwords):
    with connect(unsafe_owner.url) as owner:
        owner.execute(TRAP.format(owner=unsafe_owner.name, database=unsafe_owner.database))
    with connect(unsafe_owner.url) as owner:  # the trap is live for any session that does not pin its path
        assert owner.execute("SHOW search_path").fetchone()[0] == "public, pg_catalog"
    # the worst case: the role administrator's URL names the owner's own database
    create_roles(role_admin_settings(cluster.admin_url.rsplit("/", 1)[0] + f"/{unsafe_owner.database}", passwords))
    bootstrap_database(unsafe_owner.settings)
    member = unsafe_owner.su.execute("SELECT pg_has_role(%s, 'pg_execute_server_program', 'MEMBER')",
                                     (unsafe_owner.name,)).fetchone()[0]
    assert member is False
    assert unsafe_owner.tables() == 1


def test_the_admin_session_is_pinned_even_in_the_owners_database(unsafe_owner, cluster):
    from app.db import pinned_connect

    with connect(unsafe_owner.url) as owner:
        owner.execute(TRAP.format(owner=unsafe_owner.name, database=unsafe_owner.database))
    admin_here = cluster.admin_url.rsplit("/", 1)[0] + f"/{unsafe_owner.database}?options=-c%20work_mem%3D8MB"
    with pinned_connect(admin_here) as admin:
        assert admin.execute("SHOW search_path").fetchone()[0] == "pg_catalog,pg_temp"
        assert admin.execute("SHOW work_mem").fetchone()[0] == "8MB"  # the URL's own options are kept
        admin.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'x'").fetchone()
    member = unsafe_owner.su.execute("SELECT pg_has_role(%s, 'pg_execute_server_program', 'MEMBER')",
                                     (unsafe_owner.name,)).fetchone()[0]
    assert member is False


@pytest.mark.parametrize("drift, problem", [
    ("GRANT pg_execute_server_program TO graphql_async_writer", "graphql_async_writer is a member of "
                                                                "pg_execute_server_program"),
    ("GRANT graphql_async_writer TO {admin}", "{admin} may act as graphql_async_writer"),
])
def test_a_service_role_with_memberships_either_way_is_refused(roles, db, cluster, passwords, drift, problem):
    from app.db import pinned_connect
    from app.db_roles import ServiceRoleTooPrivileged, create_service_logins

    admin_name = urlsplit(cluster.admin_url).username
    db.execute(drift.format(admin=admin_name))
    try:
        with pinned_connect(cluster.admin_url) as admin, pytest.raises(ServiceRoleTooPrivileged) as refused:
            create_service_logins(admin, {role: scram_verifier(password) for role, password in passwords.items()})
        assert problem.format(admin=admin_name) in str(refused.value)
    finally:
        db.execute(drift.format(admin=admin_name).replace("GRANT", "REVOKE").replace(" TO ", " FROM "))


def test_a_rerun_undoes_what_would_keep_a_service_from_logging_in_or_change_its_sessions(roles, db, cluster,
                                                                                          passwords):
    db.execute("ALTER ROLE graphql_async_cleanup VALID UNTIL '2000-01-01' CONNECTION LIMIT 0")
    db.execute("ALTER ROLE graphql_async_cleanup SET search_path = public")
    with pytest.raises(psycopg.OperationalError):
        connect(roles["cleanup"])
    with connect(cluster.admin_url) as admin, connect(cluster.owner_url) as owner:
        apply_service_roles(admin, owner, {role: scram_verifier(password) for role, password in passwords.items()})
    with connect(roles["cleanup"]) as conn:
        assert conn.execute("SHOW search_path").fetchone()[0] == '"$user", public'  # the server's default again


def test_the_db_roles_job_refuses_settings_it_cannot_use(passwords):
    from app.settings import SettingsError

    good = role_admin_settings("postgresql://a:p@db/postgres", passwords)
    with pytest.raises(SettingsError, match="ASYNC_DATABASE_ROLE_ADMIN_URL.*not a valid libpq"):
        RoleAdminSettings.from_env(async_database_role_admin_url="postgresql://a:%zz@db/app",
                                   async_database_roles=good.async_database_roles)
    with pytest.raises(SettingsError, match="no verifier for graphql_async_cleanup, graphql_async_writer"):
        RoleAdminSettings.from_env(async_database_role_admin_url="postgresql://a:p@db/postgres",
                                   async_database_roles=json.dumps({"graphql_async_publisher": "x"}))
    with pytest.raises(SettingsError, match="ASYNC_DATABASE_ROLES"):
        RoleAdminSettings.from_env(async_database_role_admin_url="postgresql://a:p@db/postgres")


def test_a_service_role_someone_let_bypass_row_security_is_refused_not_silently_kept(roles, db, cluster, passwords):
    from app.db_roles import ServiceRoleTooPrivileged, create_service_logins

    db.execute("ALTER ROLE graphql_async_cleanup BYPASSRLS")  # PG refuses the ALTER itself for SUPERUSER/REPLICATION
    try:
        with connect(cluster.admin_url) as admin, pytest.raises(ServiceRoleTooPrivileged, match="_cleanup"):
            create_service_logins(admin, {role: scram_verifier(password) for role, password in passwords.items()})
    finally:
        db.execute("ALTER ROLE graphql_async_cleanup NOBYPASSRLS")


CHECK = psycopg.errors.CheckViolation
STATUS_TRIGGER = "client_async_messages_status_transitions_v1"


def status_of(db, request_id: str) -> tuple:
    return db.execute("SELECT status, response, error FROM graphql.client_async_messages WHERE request_id = %s",
                      (request_id,)).fetchone()


def test_the_writer_role_moves_rows_forward_only_and_never_rewrites_a_terminal_one(roles, db):
    done, published = insert_row(db), insert_row(db)
    db.execute(store.MARK_PUBLISHED, ([published],))
    with connect(roles["writer"]) as conn:
        applied = conn.execute(writer.WRITE_OUTCOMES, (
            [done, published], ["completed", "failed"], [Jsonb({"n": 1}), None], [None, Jsonb({"code": "x"})],
            ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"], [done, published])).fetchall()
        # pending -> completed, published -> failed; the trigger's function only raises, so the allowed path never
        # calls it (the rule is its WHEN clause)
        assert sorted(applied) == sorted([(done,), (published,)])
        for statement, request_id, move in (
                ("UPDATE graphql.client_async_messages SET status = 'pending' WHERE request_id = %s", done,
                 "completed -> pending"),
                ("UPDATE graphql.client_async_messages SET response = '{\"n\": 2}' WHERE request_id = %s", done,
                 "completed -> completed"),
                ("UPDATE graphql.client_async_messages SET status = 'completed' WHERE request_id = %s", published,
                 "failed -> completed")):
            with pytest.raises(CHECK, match=f"{request_id}.*{move}"):
                conn.execute(statement, (request_id,))
    assert status_of(db, done) == ("completed", {"n": 1}, None)
    assert status_of(db, published) == ("failed", None, {"code": "x"})


def test_the_publisher_role_cannot_unpublish_or_reopen_a_failed_row(roles, db):
    published, parked = insert_row(db), insert_row(db)
    with connect(roles["publisher"]) as conn:
        assert conn.execute(store.MARK_PUBLISHED, ([published],)).rowcount == 1  # pending -> published
        assert conn.execute(store.PARK_UNPUBLISHABLE, ([parked], ["too large"], [parked])).rowcount == 1  # -> failed
        for request_id, status, move in ((published, "pending", "published -> pending"),
                                         (parked, "pending", "failed -> pending"),
                                         (parked, "published", "failed -> published")):
            with pytest.raises(CHECK, match=f"{request_id}.*{move}"):
                conn.execute("UPDATE graphql.client_async_messages SET status = %s, completed_at = NULL "
                             "WHERE request_id = %s", (status, request_id))
    assert status_of(db, published)[0] == "published" and status_of(db, parked)[0] == "failed"


def test_re_applying_the_schema_keeps_exactly_one_status_trigger(roles, db):
    apply_schema(db)
    apply_schema(db)
    names = db.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'graphql.client_async_messages'::regclass "
                       "AND tgfoid = 'graphql.refuse_status_transition'::regproc").fetchall()
    assert names == [(STATUS_TRIGGER,)]


def test_the_cleanup_function_deletes_nothing_when_given_null(roles, db):
    expired = insert_row(db, expired=True)
    with connect(roles["cleanup"]) as conn:
        assert conn.execute(DELETE_EXPIRED_BATCH, (None,)).fetchone()[0] is None
    assert status_of(db, expired) is not None


def test_the_owners_audit_visits_every_database_it_may_connect_to(unsafe_owner, pg):
    """Function grants are per database: one in `postgres` lets the owner read server files from there."""
    from app.bootstrap import OwnerTooPrivileged

    with psycopg.connect(pg.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as elsewhere:
        elsewhere.execute(f"GRANT EXECUTE ON FUNCTION pg_read_file(text) TO {unsafe_owner.name}")
        try:
            with pytest.raises(OwnerTooPrivileged) as refused:
                bootstrap_database(unsafe_owner.settings)
        finally:
            elsewhere.execute(f"REVOKE EXECUTE ON FUNCTION pg_read_file(text) FROM {unsafe_owner.name}")
    assert f"{unsafe_owner.name} may run pg_read_file(text) in postgres, which PUBLIC may not" in str(refused.value)


def test_privileges_someone_gave_a_service_role_beside_its_own_fail_the_bootstrap(roles, db, cluster):
    from app.db_roles import ServiceRoleTooPrivileged

    db.execute("CREATE TABLE IF NOT EXISTS public.invoices (id int)")
    db.execute("GRANT SELECT ON public.invoices TO graphql_async_writer")
    settings = BootstrapSettings(async_database_url=cluster.owner_url, hasura_admin_secret="x" * 16,
                                 async_service_roles=True, hasura_retry_seconds=0)
    try:
        with pytest.raises(ServiceRoleTooPrivileged, match="graphql_async_writer holds privileges on 1 other"):
            bootstrap_database(settings)
    finally:
        db.execute("DROP TABLE public.invoices")
    bootstrap_database(settings)  # its own grants alone: accepted again


def test_settings_for_one_database_are_reset_too(roles, db, cluster, passwords):
    db.execute(f"ALTER ROLE graphql_async_writer IN DATABASE {cluster.database} SET search_path = public")
    with connect(roles["writer"]) as conn:
        assert conn.execute("SHOW search_path").fetchone()[0] == "public"
    create_roles(role_admin_settings(cluster.admin_url, passwords))
    with connect(roles["writer"]) as conn:
        assert conn.execute("SHOW search_path").fetchone()[0] == '"$user", public'


def test_what_the_owner_cannot_reach_is_no_reason_to_refuse_it(roles, unsafe_owner, pg):
    """False positives would stop every deploy: a definer function in a schema the owner may not use (a
    monitoring agent's helper), and a database whose CONNECT it has but where it cannot log in (pg_hba, limits)."""
    unsafe_owner.su.execute("CREATE SCHEMA ops; CREATE FUNCTION ops.explain(q text) RETURNS text LANGUAGE sql "
                            "SECURITY DEFINER AS 'SELECT q'")
    closed = f"closed_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg.url, autocommit=True) as su:
        su.execute(f"CREATE DATABASE {closed} CONNECTION LIMIT 0")
        try:
            bootstrap_database(unsafe_owner.settings)
        finally:
            su.execute(f"DROP DATABASE {closed}")
    assert unsafe_owner.tables() == 1
