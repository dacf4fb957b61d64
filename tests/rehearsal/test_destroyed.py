"""After `pulumi destroy` of the local stack: nothing the program created is left on the broker or OpenBao."""

from __future__ import annotations

import httpx
import pytest
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from components.kafka_access import ServicePrincipals
from components.vault_access import CONSUMER_ENTRIES, EXTERNAL_SECRETS_ROLE
from tests.rehearsal.support import state

pytestmark = pytest.mark.rehearsal_destroyed
PRINCIPALS = ServicePrincipals()


def admin() -> AdminClient:
    return AdminClient(state()["kafka"])


def test_no_topic_acl_or_scram_user_is_left():
    client = admin()
    topics = set(client.list_topics(timeout=10).topics)
    assert not topics & set(state()["outputs"]["topics"].values())
    acls = client.describe_acls(AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY),
        request_timeout=10).result()
    assert [a for a in acls if a.principal in (f"User:{PRINCIPALS.publisher}", f"User:{PRINCIPALS.writer}")] == []
    users = client.describe_user_scram_credentials([PRINCIPALS.publisher, PRINCIPALS.writer])
    for future in users.values():
        with pytest.raises(Exception, match="RESOURCE_NOT_FOUND|not found|does not exist"):
            future.result()


def test_no_policy_role_or_kv_entry_is_left():
    address, headers = state()["openbao"]["address"], {"X-Vault-Token": state()["openbao"]["token"]}
    policies = httpx.get(f"{address}/v1/sys/policies/acl", params={"list": "true"}, headers=headers).json()
    assert not set(policies["data"]["keys"]) & {*CONSUMER_ENTRIES, EXTERNAL_SECRETS_ROLE}
    roles = httpx.request("LIST", f"{address}/v1/auth/kubernetes/role", headers=headers)
    assert roles.status_code == 404 or not roles.json()["data"]["keys"]
    entries = httpx.request("LIST", f"{address}/v1/secret/metadata/", headers=headers)
    left = set(entries.json()["data"]["keys"]) if entries.status_code == 200 else set()
    assert not left & set(state()["outputs"]["vault_paths"])
    # what another team owns (replica URLs, the license key) is only read by the program: it survives a destroy
    assert set(state()["external_entries"]) <= left
