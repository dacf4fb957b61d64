"""One database role per service, with only the grants its SQL needs (created by the bootstrap).

The program generates each role's password, writes the service's own connection URL to a Vault entry only that
service reads, and hands the bootstrap nothing but SCRAM-SHA-256 verifiers: the bootstrap can create the roles
without ever holding a password that logs in as them. Pure SQL text and hashing here; no Pulumi, no I/O but the
connection the caller passes. YugabyteDB YSQL compatible (column grants, SCRAM verifiers: PostgreSQL 10+).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

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


def service_url(database_url: str, role: str, password: str, expect_port: int | None = None) -> str:
    """The stack's database URL with this service's role and password in place of the owner's."""
    parts = urlsplit(database_url)
    if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
        raise ValueError("databaseUrl must be a postgresql://user:password@host[:port]/database URL")
    if expect_port is not None and (parts.port or 5432) != expect_port:
        raise ValueError(f"databaseUrl's port is {parts.port or 5432}, but network.databasePort (what the "
                         f"NetworkPolicies open) is {expect_port}")
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{quote(role, safe='')}:{quote(password, safe='')}@{host}"))


def apply_service_roles(conn: psycopg.Connection, verifiers: dict[str, str]) -> list[str]:
    """Create or update each service's role (login, nothing inherited, no attributes) and reset its grants to
    exactly SERVICE_ROLES. Needs CREATEROLE; the table and the cleanup function must exist. Returns the roles."""
    with conn.transaction():
        for service_role in SERVICE_ROLES:
            verifier = verifiers[service_role.role]
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (service_role.role,)).fetchone()
            conn.execute(sql.SQL("{} ROLE {} LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                                 "PASSWORD {}").format(sql.SQL("ALTER" if exists else "CREATE"),
                                                       sql.Identifier(service_role.role), sql.Literal(verifier)))
            for statement in service_role.statements():
                conn.execute(statement)
    return [r.role for r in SERVICE_ROLES]
