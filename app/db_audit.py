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
                    "pg_read_all_data", "pg_write_all_data", "pg_signal_backend",
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
# functions that run as a privileged role, which this role may call (the database's own, not the system's)
PRIVILEGED_DEFINER_FUNCTIONS = f"""
SELECT p.oid::pg_catalog.regprocedure::text, r.rolname::text
  FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_roles AS r ON r.oid OPERATOR(pg_catalog.=) p.proowner
 WHERE p.prosecdef
   AND p.pronamespace NOT IN ('pg_catalog'::pg_catalog.regnamespace, 'information_schema'::pg_catalog.regnamespace)
   AND pg_catalog.has_function_privilege(%(role)s, p.oid, 'EXECUTE')
   AND {PRIVILEGED}
 ORDER BY 1
"""


def _attributes(row: tuple) -> list[str]:
    return [name for name, held in zip(ATTRIBUTES, row, strict=True) if held]


def owner_privilege_problems(owner: psycopg.Connection, role: str) -> list[str]:
    """Why `role` (the owner) holds more than its tables need; empty when it is fine. `owner` is a pinned
    session in the owner's database (functions are per database)."""
    params = {"role": role, "restricted": list(RESTRICTED_ROLES)}
    found = owner.execute(MEMBER_OF_PRIVILEGED, params).fetchall()
    if any(name == role and is_super for name, is_super, *_ in found):  # a member of every role: one line says it
        return [f"{role} is a SUPERUSER"]
    problems = []
    for name, *attributes in found:
        held = _attributes(tuple(attributes))
        if name == role:
            problems.append(f"{role} has {', '.join(held)}")
        else:
            problems.append(f"{role} is a member of {name}" + (f", which has {', '.join(held)}" if held else ""))
    problems += [f"{role} may run {fn}, which PUBLIC may not"
                 for (fn,) in owner.execute(GRANTED_CATALOG_FUNCTIONS, params).fetchall()]
    problems += [f"{role} may run {fn}, a SECURITY DEFINER function of the privileged role {definer}"
                 for fn, definer in owner.execute(PRIVILEGED_DEFINER_FUNCTIONS, params).fetchall()]
    return problems


SERVICE_ROLE_PROBLEMS = """
SELECT r.rolname::text, r.rolsuper, r.rolcreaterole, r.rolreplication, r.rolbypassrls,
       ARRAY(SELECT m.roleid::pg_catalog.regrole::text FROM pg_catalog.pg_auth_members AS m
              WHERE m.member OPERATOR(pg_catalog.=) r.oid ORDER BY 1),
       ARRAY(SELECT m.member::pg_catalog.regrole::text FROM pg_catalog.pg_auth_members AS m
              WHERE m.roleid OPERATOR(pg_catalog.=) r.oid ORDER BY 1),
       EXISTS (SELECT 1 FROM pg_catalog.pg_shdepend AS d
                WHERE d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_authid'::pg_catalog.regclass
                  AND d.refobjid OPERATOR(pg_catalog.=) r.oid AND d.deptype OPERATOR(pg_catalog.=) 'o')
  FROM pg_catalog.pg_roles AS r
 WHERE r.rolname OPERATOR(pg_catalog.=) ANY(%s)
 ORDER BY 1
"""


def service_role_problems(admin: psycopg.Connection, roles: list[str]) -> list[str]:
    """What makes an existing service role more than a login with its own grants: an attribute only a superuser
    can take away, a membership either way (SET ROLE to another role, or others acting as it), owned objects."""
    problems = []
    for name, *attributes, member_of, members, owns in admin.execute(SERVICE_ROLE_PROBLEMS, (roles,)).fetchall():
        held = _attributes(tuple(attributes))
        if held:
            problems.append(f"{name} has {', '.join(held)} (only a superuser can remove it)")
        if member_of:
            problems.append(f"{name} is a member of {', '.join(member_of)}")
        if members:
            problems.append(f"{', '.join(members)} may act as {name}")
        if owns:
            problems.append(f"{name} owns objects (REASSIGN OWNED BY {name} TO ...)")
    return problems
