"""What the bootstrap checks about database roles before it changes anything (pure SQL, the caller's connection).

The owner role (databaseUrl) is Hasura's, so the public entrypoint's: it must hold nothing beyond its own
database. The services' roles must be exactly what app/db_roles.py makes them. Both audits run in sessions whose
search_path is pinned (app/db.py `pinned_connect`), so no function or operator the owner planted in its database
can answer in place of the catalog's. YugabyteDB YSQL (PostgreSQL 11) has every catalog column used here.
"""

from __future__ import annotations

import psycopg

# predefined roles whose members reach the host's programs or files, every database's data, or other sessions;
# the yb_ ones are YugabyteDB's administrative roles
RESTRICTED_ROLES = ("pg_execute_server_program", "pg_read_server_files", "pg_write_server_files",
                    "pg_read_all_data", "pg_write_all_data", "pg_signal_backend", "pg_maintain", "pg_checkpoint",
                    "pg_monitor", "pg_read_all_settings", "pg_read_all_stats", "pg_stat_scan_tables",
                    "pg_create_subscription", "pg_use_reserved_connections",
                    "yb_superuser", "yb_db_admin", "yb_extension", "yb_fdw")
ATTRIBUTES = ("SUPERUSER", "CREATEROLE", "REPLICATION", "BYPASSRLS")
# a role with any of ATTRIBUTES, or a member of RESTRICTED_ROLES (a superuser is a member of every role)
PRIVILEGED = """(r.rolsuper OR r.rolcreaterole OR r.rolreplication OR r.rolbypassrls
    OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles AS x WHERE x.rolname OPERATOR(pg_catalog.=) ANY(%(restricted)s)
                 AND pg_catalog.pg_has_role(r.oid, x.oid, 'MEMBER')))"""

MEMBER_OF_PRIVILEGED = f"""
SELECT r.rolname::text, r.rolsuper, r.rolcreaterole, r.rolreplication, r.rolbypassrls
  FROM pg_catalog.pg_roles AS r
 WHERE pg_catalog.pg_has_role(%(role)s, r.oid, 'MEMBER')
   AND ({PRIVILEGED} OR r.rolname OPERATOR(pg_catalog.=) ANY(%(restricted)s))
 ORDER BY 1
"""
# catalog functions PUBLIC may not run but this role may: granted on purpose (lo_export, pg_read_file, ...)
GRANTED_CATALOG_FUNCTIONS = """
SELECT p.oid::pg_catalog.regprocedure::text
  FROM pg_catalog.pg_proc AS p
 WHERE p.pronamespace OPERATOR(pg_catalog.=) 'pg_catalog'::pg_catalog.regnamespace
   AND pg_catalog.has_function_privilege(%(role)s, p.oid, 'EXECUTE')
   AND NOT pg_catalog.has_function_privilege('public', p.oid, 'EXECUTE')
 ORDER BY 1
"""
# catalog tables and views this role may read or change beyond PUBLIC (pg_authid's password hashes, ...)
GRANTED_CATALOG_RELATIONS = """
SELECT c.oid::pg_catalog.regclass::text, p.privilege
  FROM pg_catalog.pg_class AS c
 CROSS JOIN (VALUES ('SELECT'), ('INSERT'), ('UPDATE'), ('DELETE'), ('TRUNCATE')) AS p(privilege)
 WHERE c.relnamespace OPERATOR(pg_catalog.=) 'pg_catalog'::pg_catalog.regnamespace
   AND c.relkind OPERATOR(pg_catalog.=) ANY('{r,v,m,p}'::"char"[])
   AND pg_catalog.has_table_privilege(%(role)s, c.oid, p.privilege)
   AND NOT pg_catalog.has_table_privilege('public', c.oid, p.privilege)
 ORDER BY 1, 2
"""
# server parameters granted to this role (PostgreSQL 15+: ALTER SYSTEM SET archive_command runs a command on the
# host; SET session_replication_role = replica switches triggers off); YSQL and older servers have no such grants
GRANTED_PARAMETERS = """
SELECT a.parname::text, p.privilege
  FROM pg_catalog.pg_parameter_acl AS a CROSS JOIN (VALUES ('SET'), ('ALTER SYSTEM')) AS p(privilege)
 WHERE pg_catalog.has_parameter_privilege(%(role)s, a.parname, p.privilege)
 ORDER BY 1, 2
"""
# foreign servers and wrappers this role may use: a server with a superuser's user mapping (for it, or for PUBLIC)
# is a superuser session through dblink/postgres_fdw, and Hasura needs neither
USABLE_FOREIGN = """
SELECT 'foreign server ' || s.srvname::text FROM pg_catalog.pg_foreign_server AS s
 WHERE pg_catalog.has_server_privilege(%(role)s, s.oid, 'USAGE')
UNION ALL
SELECT 'foreign-data wrapper ' || w.fdwname::text FROM pg_catalog.pg_foreign_data_wrapper AS w
 WHERE pg_catalog.has_foreign_data_wrapper_privilege(%(role)s, w.oid, 'USAGE')
 ORDER BY 1
"""
# every other database this role may connect to: grants there are as good as grants here
OTHER_DATABASES = """
SELECT d.datname::text FROM pg_catalog.pg_database AS d
 WHERE d.datallowconn AND d.datname OPERATOR(pg_catalog.<>) pg_catalog.current_database()
   AND pg_catalog.has_database_privilege(%(role)s, d.oid, 'CONNECT')
 ORDER BY 1
"""
# functions that run as a privileged role, which this role may call (the database's own, not the system's)
PRIVILEGED_DEFINER_FUNCTIONS = f"""
SELECT p.oid::pg_catalog.regprocedure::text, r.rolname::text
  FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_roles AS r ON r.oid OPERATOR(pg_catalog.=) p.proowner
 WHERE p.prosecdef
   AND p.oid OPERATOR(pg_catalog.>=) 16384  -- FirstNormalObjectId: no built-in function is a definer, any schema
   AND pg_catalog.has_schema_privilege(%(role)s, p.pronamespace, 'USAGE')  -- one it cannot reach is no path
   AND pg_catalog.has_function_privilege(%(role)s, p.oid, 'EXECUTE')
   AND {PRIVILEGED}
 ORDER BY 1
"""


def _attributes(row: tuple) -> list[str]:
    return [name for name, held in zip(ATTRIBUTES, row, strict=True) if held]


def owner_role_problems(conn: psycopg.Connection, role: str) -> list[str]:
    """What `role` holds cluster-wide: attributes, memberships, server parameters."""
    params = {"role": role, "restricted": list(RESTRICTED_ROLES)}
    found = conn.execute(MEMBER_OF_PRIVILEGED, params).fetchall()
    if any(name == role and is_super for name, is_super, *_ in found):  # a member of every role: one line says it
        return [f"{role} is a SUPERUSER"]
    problems = []
    for name, *attributes in found:
        held = _attributes(tuple(attributes))
        if name == role:
            problems.append(f"{role} has {', '.join(held)}")
        else:
            problems.append(f"{role} is a member of {name}" + (f", which has {', '.join(held)}" if held else ""))
    if conn.execute("SELECT rolcreatedb FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) %s",
                    (role,)).fetchone()[0]:
        problems.append(f"{role} has CREATEDB")
    if conn.execute("SELECT pg_catalog.to_regclass('pg_catalog.pg_parameter_acl') IS NOT NULL").fetchone()[0]:
        problems += [f"{role} may {privilege} {name}"
                     for name, privilege in conn.execute(GRANTED_PARAMETERS, params).fetchall()]
    return problems


def database_problems(conn: psycopg.Connection, role: str) -> list[str]:
    """What `role` holds in the database `conn` is in: catalog grants beyond PUBLIC, privileged definers."""
    params = {"role": role, "restricted": list(RESTRICTED_ROLES)}
    where = conn.execute("SELECT pg_catalog.current_database()::text").fetchone()[0]
    problems = [f"{role} may run {fn} in {where}, which PUBLIC may not"
                for (fn,) in conn.execute(GRANTED_CATALOG_FUNCTIONS, params).fetchall()]
    problems += [f"{role} may {privilege} {relation} in {where}, which PUBLIC may not"
                 for relation, privilege in conn.execute(GRANTED_CATALOG_RELATIONS, params).fetchall()]
    problems += [f"{role} may run {fn} in {where}, a SECURITY DEFINER function of the privileged role {definer}"
                 for fn, definer in conn.execute(PRIVILEGED_DEFINER_FUNCTIONS, params).fetchall()]
    problems += [f"{role} may use the {what} in {where}"
                 for (what,) in conn.execute(USABLE_FOREIGN, params).fetchall()]
    return problems


def other_databases(conn: psycopg.Connection, role: str) -> list[str]:
    return [name for (name,) in conn.execute(OTHER_DATABASES, {"role": role}).fetchall()]


# PostgreSQL 16+ grants each new role to the non-superuser who created it (ADMIN, no INHERIT, no SET:
# src/backend/commands/user.c, CreateRole): that one row is the role administrator's, expected, not drift
CREATOR_GRANT = {15: "false", 16: """(m.member OPERATOR(pg_catalog.=) (SELECT oid FROM pg_catalog.pg_roles
                 WHERE rolname OPERATOR(pg_catalog.=) CURRENT_USER)
                 AND m.admin_option AND NOT m.inherit_option AND NOT m.set_option)"""}
SERVICE_ROLE_PROBLEMS = """
SELECT r.rolname::text, r.rolsuper, r.rolcreaterole, r.rolreplication, r.rolbypassrls, r.rolcreatedb,
       ARRAY(SELECT m.roleid::pg_catalog.regrole::text FROM pg_catalog.pg_auth_members AS m
              WHERE m.member OPERATOR(pg_catalog.=) r.oid ORDER BY 1),
       ARRAY(SELECT m.member::pg_catalog.regrole::text FROM pg_catalog.pg_auth_members AS m
              WHERE m.roleid OPERATOR(pg_catalog.=) r.oid AND NOT {creator_grant} ORDER BY 1),
       EXISTS (SELECT 1 FROM pg_catalog.pg_shdepend AS d
                WHERE d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_authid'::pg_catalog.regclass
                  AND d.refobjid OPERATOR(pg_catalog.=) r.oid AND d.deptype OPERATOR(pg_catalog.=) 'o'),
       EXISTS (SELECT 1 FROM pg_catalog.pg_db_role_setting AS s WHERE s.setrole OPERATOR(pg_catalog.=) r.oid)
  FROM pg_catalog.pg_roles AS r
 WHERE r.rolname OPERATOR(pg_catalog.=) ANY(%s)
 ORDER BY 1
"""
SERVICE_ATTRIBUTES = (*ATTRIBUTES, "CREATEDB")


def server_major(conn: psycopg.Connection) -> int:
    return conn.info.server_version // 10000


def service_role_problems(admin: psycopg.Connection, roles: list[str], *, attributes_only: bool = False) -> list[str]:
    """What makes an existing service role more than a login with its own grants: an attribute, a membership either
    way (SET ROLE to another role, or others acting as it), owned objects, settings that follow its logins."""
    query = SERVICE_ROLE_PROBLEMS.format(creator_grant=CREATOR_GRANT[16 if server_major(admin) >= 16 else 15])
    problems = []
    for name, *attributes, member_of, members, owns, settings in admin.execute(query, (roles,)).fetchall():
        held = [a for a, on in zip(SERVICE_ATTRIBUTES, attributes, strict=True) if on]
        if held:
            problems.append(f"{name} has {', '.join(held)}")
        if attributes_only:
            continue
        if member_of:
            problems.append(f"{name} is a member of {', '.join(member_of)}")
        if members:
            problems.append(f"{', '.join(members)} may act as {name}")
        if owns:
            problems.append(f"{name} owns objects (REASSIGN OWNED BY {name} TO ...)")
        if settings:
            problems.append(f"{name} has settings only a superuser can reset (ALTER ROLE {name} [IN DATABASE ...] "
                            "RESET ALL)")
    return problems


# the services' privileges in this database (or on shared objects) beyond the flow's table, its cleanup function
# and schema graphql; another database may hold another stack's flow table, which this one cannot tell apart
STRAY_GRANTS = """
WITH here AS (SELECT oid FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
SELECT r.rolname::text, pg_catalog.count(*)
  FROM pg_catalog.pg_shdepend AS d JOIN pg_catalog.pg_roles AS r ON r.oid OPERATOR(pg_catalog.=) d.refobjid
 WHERE d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_authid'::pg_catalog.regclass
   AND d.deptype OPERATOR(pg_catalog.=) 'a' AND r.rolname OPERATOR(pg_catalog.=) ANY(%(roles)s)
   AND d.dbid IN (0, (SELECT oid FROM here))
   AND NOT (d.dbid OPERATOR(pg_catalog.=) (SELECT oid FROM here)
            AND (d.classid, d.objid) IN (
                ('pg_catalog.pg_class'::pg_catalog.regclass, 'graphql.client_async_messages'::pg_catalog.regclass),
                ('pg_catalog.pg_proc'::pg_catalog.regclass,
                 'graphql.delete_expired_messages(integer)'::pg_catalog.regprocedure),
                ('pg_catalog.pg_namespace'::pg_catalog.regclass, 'graphql'::pg_catalog.regnamespace)))
 GROUP BY 1 ORDER BY 1
"""


def stray_grant_problems(owner: psycopg.Connection, roles: list[str]) -> list[str]:
    """Privileges someone gave the services' roles here beyond theirs (another table, a shared object): the roles
    are to hold exactly their grants (app/db_roles.py SERVICE_ROLES), which the owner has just reset."""
    return [f"{name} holds privileges on {count} other object(s) (REVOKE them, or DROP OWNED BY {name} in "
            "their database)" for name, count in owner.execute(STRAY_GRANTS, {"roles": roles}).fetchall()]
