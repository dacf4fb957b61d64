"""One database role per service, with only the grants its SQL needs (created by the bootstrap).

The program generates each role's password, writes the service's own connection URL to a Vault entry only that
service reads, and hands the bootstrap nothing but SCRAM-SHA-256 verifiers: the bootstrap can create the roles
without ever holding a password that logs in as them. Two administrators, two jobs: the role administrator
(CREATEROLE, a URL only the bootstrap reads) creates the logins; the table's owner (Hasura's role, which must not
hold CREATEROLE: before PostgreSQL 16 that grants itself pg_execute_server_program) grants on its table. Pure SQL
text and hashing here; no Pulumi, no I/O but the connections the caller passes. YugabyteDB YSQL compatible
(column grants, SCRAM verifiers: PostgreSQL 10+).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from app.db_audit import service_role_problems

TABLE = "graphql.client_async_messages"
CLEANUP_FUNCTION = "graphql.delete_expired_messages(integer)"


@dataclass(frozen=True)
class ServiceRole:
    service: str  # publisher | writer | cleanup
    role: str
    grants: tuple[str, ...]  # GRANT ... (without "TO role"), after USAGE on the schema

    def statements(self) -> list[sql.Composed]:
        role = sql.Identifier(self.role)
        revoke = [sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(sql.SQL(TABLE), role),  # columns too
                  sql.SQL("REVOKE ALL ON FUNCTION {} FROM {}").format(sql.SQL(CLEANUP_FUNCTION), role)]
        grant = [sql.SQL("GRANT USAGE ON SCHEMA graphql TO {}").format(role),
                 *(sql.SQL(g + " TO {}").format(role) for g in self.grants)]
        return [*revoke, *grant]


# what each service's SQL touches (app/store.py, app/writer.py, app/cleanup.py), nothing more
SERVICE_ROLES: tuple[ServiceRole, ...] = (
    ServiceRole("publisher", "graphql_async_publisher", (
        # the action's insert and idempotent re-read, the relay's claim (FOR UPDATE needs an UPDATE grant)
        f"GRANT SELECT (request_id, client_id, handler, operation, status, priority, payload, metadata, "
        f"correlation, created_at, published_at, expires_at) ON {TABLE}",
        f"GRANT INSERT (request_id, client_id, handler, operation, status, priority, payload, metadata, "
        f"correlation, expires_at) ON {TABLE}",
        # mark published; park what Kafka refuses for good
        f"GRANT UPDATE (status, published_at, completed_at, updated_at, error) ON {TABLE}",
    )),
    ServiceRole("writer", "graphql_async_writer", (
        f"GRANT SELECT (request_id, status) ON {TABLE}",
        f"GRANT UPDATE (status, response, error, completed_at, updated_at) ON {TABLE}",
    )),
    # no table privilege at all: the one function deletes expired rows only (schema.sql, SECURITY DEFINER)
    ServiceRole("cleanup", "graphql_async_cleanup", (f"GRANT EXECUTE ON FUNCTION {CLEANUP_FUNCTION}",)),
)
ROLE_OF = {r.service: r.role for r in SERVICE_ROLES}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """PostgreSQL's stored form of a SCRAM-SHA-256 password (RFC 5802/7677, src/common/scram-common.c): what
    CREATE ROLE ... PASSWORD accepts as already hashed. The salt is derived from the password, so the same
    password gives the same verifier on every `pulumi up` (a generated 48-character password needs no
    secret salt). ASCII passwords only: SASLprep leaves them as they are."""
    if not password.isascii():
        raise ValueError("generated passwords are ASCII")
    salt = hashlib.sha256(b"graphql-async-role-salt:" + password.encode()).digest()[:16]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def checked_url(url: str, expect_port: int | None = None, key: str = "databaseUrl") -> str:
    """A stack's database URL, refused (naming the key, never the value) unless a postgresql:// URL on the port the
    NetworkPolicies open."""
    form = (f"{key} must be a postgresql://user:password@host[:port]/database URL, with / ? # @ : [ ] in the "
            "password percent-encoded")
    try:
        parts = urlsplit(url)
        port = parts.port or 5432  # a password with a raw / or ? puts part of it where the port goes
    except ValueError:
        raise ValueError(form) from None  # urllib's own message quotes what it found there: the password
    if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
        raise ValueError(form)
    if expect_port is not None and port != expect_port:
        raise ValueError(f"{key}'s port is {port}, but network.databasePort (what the "
                         f"NetworkPolicies open) is {expect_port}")
    return url


def service_url(database_url: str, role: str, password: str, expect_port: int | None = None) -> str:
    """The stack's database URL with this service's role and password in place of the owner's."""
    parts = urlsplit(checked_url(database_url, expect_port))
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{quote(role, safe='')}:{quote(password, safe='')}@{host}"))


# a CREATEROLE administrator may set these on CREATE and ALTER; SUPERUSER, REPLICATION, BYPASSRLS and (from
# PostgreSQL 16) CREATEDB are not its to change on an existing role, even to NO-, so an ALTER leaves them and the
# audit refuses a role that has one
LOGIN_ATTRIBUTES = "LOGIN NOINHERIT NOCREATEROLE CONNECTION LIMIT -1 VALID UNTIL 'infinity'"
CREATE_ONLY_ATTRIBUTES = "NOSUPERUSER NOREPLICATION NOBYPASSRLS NOCREATEDB"
ROLE_SETTINGS_ELSEWHERE = """
SELECT d.datname::text FROM pg_catalog.pg_db_role_setting AS s
  JOIN pg_catalog.pg_database AS d ON d.oid OPERATOR(pg_catalog.=) s.setdatabase
 WHERE s.setrole OPERATOR(pg_catalog.=) (SELECT oid FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) %s)
"""


class ServiceRoleTooPrivileged(RuntimeError):
    """A service role exists as more than a login with its own grants; what is wrong needs a person to undo."""


def _refuse(problems: list[str]) -> None:
    if problems:
        raise ServiceRoleTooPrivileged("service database roles are more than logins: " + "; ".join(problems))


def create_service_logins(admin: psycopg.Connection, verifiers: dict[str, str]) -> list[str]:
    """As the role administrator (CREATEROLE, the db-roles Job's alone; a pinned session: app/db.py): create or
    update each service's role with login, nothing inherited, no attributes, no per-role settings, and the password
    whose verifier the program wrote; refuse a role someone made more than that (app/db_audit.py). Returns them."""
    names = [r.role for r in SERVICE_ROLES]
    if admin.info.server_version >= 160000:  # only the server's own ADMIN-only grant to us, whatever the role's
        admin.execute("SET createrole_self_grant = ''")  # setting asks (it would add SET, INHERIT: refused below)
    with admin.transaction():
        # what no ALTER of ours can undo is refused first, in our words rather than in a permission error
        _refuse(service_role_problems(admin, names, attributes_only=True))
        for service_role in SERVICE_ROLES:
            role = sql.Identifier(service_role.role)
            exists = admin.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) %s",
                                   (service_role.role,)).fetchone()
            attributes = LOGIN_ATTRIBUTES if exists else f"{LOGIN_ATTRIBUTES} {CREATE_ONLY_ATTRIBUTES}"
            admin.execute(sql.SQL("{} ROLE {} {} PASSWORD {}").format(
                sql.SQL("ALTER" if exists else "CREATE"), role, sql.SQL(attributes),
                sql.Literal(verifiers[service_role.role])))
            if exists:  # a search_path or role setting someone added would follow every login
                admin.execute(sql.SQL("ALTER ROLE {} RESET ALL").format(role))
                for (database,) in admin.execute(ROLE_SETTINGS_ELSEWHERE, (service_role.role,)).fetchall():
                    admin.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} RESET ALL").format(
                        role, sql.Identifier(database)))
        _refuse(service_role_problems(admin, names))
    return names


def grant_service_privileges(owner: psycopg.Connection) -> None:
    """As the table's owner: reset each service role's grants to exactly SERVICE_ROLES (the roles, the table and
    the cleanup function must exist). An owner may grant on its own objects to any role: it needs no CREATEROLE."""
    with owner.transaction():
        for service_role in SERVICE_ROLES:
            for statement in service_role.statements():
                owner.execute(statement)


def apply_service_roles(admin: psycopg.Connection, owner: psycopg.Connection, verifiers: dict[str, str]) -> list[str]:
    """Logins by the role administrator, grants by the owner (two connections, two roles)."""
    roles = create_service_logins(admin, verifiers)
    grant_service_privileges(owner)
    return roles
