"""The db-roles Job: create or update the services' database roles as the role administrator, nothing else.

Its own Job, apart from the bootstrap: the role administrator's URL (CREATEROLE, as sensitive as a superuser's
on PostgreSQL <= 15 and YSQL) sits in a pod that holds no Hasura secret and reaches only the database and
Vault. It holds SCRAM verifiers, never a password a service logs in with (app/db_roles.py). The bootstrap
grants the roles their privileges afterwards, as the table's owner.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from app import logs
from app.db import is_transient, pinned_connect
from app.db_roles import create_service_logins
from app.retry import retry_transient
from app.settings import RoleAdminSettings

log = logging.getLogger("app.role_admin")


def create_roles(settings: RoleAdminSettings) -> list[str]:
    """Waits for the database (it may still be starting), retrying only what is transient."""
    verifiers = json.loads(settings.async_database_roles.get_secret_value())

    def attempt() -> list[str]:
        # pinned: the URL may name a database whose owner planted objects or settings there
        with pinned_connect(settings.async_database_role_admin_url.get_secret_value(), connect_timeout=5) as admin:
            return create_service_logins(admin, verifiers)

    return retry_transient("database", attempt, time.monotonic() + settings.db_retry_seconds, is_transient, log)


def main() -> int:
    logs.setup()
    settings = RoleAdminSettings.load_or_exit()
    try:
        roles = create_roles(settings)
    except Exception as exc:  # noqa: BLE001 - the Job's log says why; its exit code says that it failed
        log.error("service database roles not created", extra={"error": str(exc)})
        return 1
    log.info("service database roles in place", extra={"roles": roles})
    return 0


if __name__ == "__main__":
    sys.exit(main())
