"""Checks after a real `pulumi up` of the local stack (run by `bash scripts/dev.sh rehearse`, never by `test`).

Everything here talks to what the real providers created: SCRAM users and ACLs on the Kafka broker, KV
entries, policies and roles on OpenBao, the Kubernetes objects the program declared (as the stack's state holds them;
the rehearsal applied them to a real API server).
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, KafkaException, Producer

from components.kafka_access import ServicePrincipals
from components.vault_access import EXTERNAL_SECRETS_ROLE
from tests.rehearsal.support import bao_token, kv_value, rendered_objects, state
from tests.support.k8s_schemas import validate

pytestmark = pytest.mark.rehearsal
PRINCIPALS = ServicePrincipals()
SECRET_FILE = re.compile(r"^vault\.hashicorp\.com/agent-inject-secret-(.+)$")


def test_manifests_are_valid_kubernetes_objects_and_external_secrets_match_the_real_crds():
    objects = rendered_objects()
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "StatefulSet", "Job", "CronJob", "Service", "ConfigMap", "ServiceAccount",
            "NetworkPolicy", "SecretStore", "ExternalSecret"} <= kinds, kinds
    for obj in objects:
        validate(obj, "1.33.0")  # external-secrets.io objects against the real CRDs


def pod_templates() -> dict[str, dict]:
    """Vault role -> pod metadata annotations, for every workload the Vault agent serves."""
    pods = {}
    for obj in rendered_objects():
        spec = obj.get("spec", {})
        template = spec.get("jobTemplate", {}).get("spec", {}).get("template") or spec.get("template")
        annotations = (template or {}).get("metadata", {}).get("annotations", {})
        if "vault.hashicorp.com/role" in annotations:
            pods[annotations["vault.hashicorp.com/role"]] = annotations
    return pods


def annotated_entries(annotations: dict) -> set[str]:
    return {v.removeprefix("secret/data/") for k, v in annotations.items() if SECRET_FILE.match(k)}


def test_each_policy_reads_exactly_the_entries_its_pods_name():
    pods = pod_templates()
    assert set(pods) == {"hasura", "graphql-async-request-publisher", "graphql-async-response-writer",
                         "graphql-async-cleanup", "graphql-async-bootstrap", "graphql-async-db-roles"}
    # the program's own entries, and those another team owns that the stack file names for Hasura
    entries = set(state()["outputs"]["vault_paths"]) | set(state()["external_entries"])
    assert state()["external_entries"] and set(state()["external_entries"]) <= annotated_entries(pods["hasura"])
    for role, pod_annotations in pods.items():
        token = bao_token([role])
        allowed = annotated_entries(pod_annotations)
        assert allowed and allowed <= entries
        for entry in entries:
            status = httpx.get(f"{state()['openbao']['address']}/v1/secret/data/{entry}",
                               headers={"X-Vault-Token": token}).status_code
            assert status == (200 if entry in allowed else 403), (role, entry, status)


def test_each_kubernetes_auth_role_binds_one_service_account_to_its_policy():
    address, root = state()["openbao"]["address"], state()["openbao"]["token"]
    for role in [*pod_templates(), EXTERNAL_SECRETS_ROLE]:
        data = httpx.get(f"{address}/v1/auth/kubernetes/role/{role}", headers={"X-Vault-Token": root}).json()["data"]
        assert data["bound_service_account_namespaces"] == ["graphql"]
        assert len(data["bound_service_account_names"]) == 1
        assert data["token_policies"] == [role]
        assert data["audience"] == "vault"  # the projected tokens' audience; any other token is refused


def test_external_secrets_role_reads_the_tunnel_token_entry_only():
    address, token = state()["openbao"]["address"], bao_token([EXTERNAL_SECRETS_ROLE])
    headers = {"X-Vault-Token": token}
    assert httpx.get(f"{address}/v1/secret/data/cloudflare-tunnel-token", headers=headers).status_code == 200
    assert httpx.get(f"{address}/v1/secret/metadata/cloudflare-tunnel-token", headers=headers).status_code == 403
    assert httpx.request("LIST", f"{address}/v1/secret/metadata/cloudflare-tunnel-token",
                         headers=headers).status_code == 403
    assert httpx.get(f"{address}/v1/secret/data/graphql-hasura-admin-secret", headers=headers).status_code == 403
    assert httpx.request("LIST", f"{address}/v1/secret/metadata/", headers=headers).status_code == 403


def test_vault_agent_renders_every_template_as_the_service_expects(tmp_path):
    """`bao agent` (template mode, token auth with the workload's own policy) renders each pod's templates."""
    address = state()["openbao"]["address"]
    for role, pod_annotations in pod_templates().items():
        files = {m.group(1) for k in pod_annotations if (m := SECRET_FILE.match(k))}
        folder = tmp_path / role
        folder.mkdir()
        (folder / "token").write_text(bao_token([role], with_default=True))
        stanzas = "".join(
            f'template {{\n  destination = "{folder / name}"\n  contents = <<EOT\n'
            f'{pod_annotations[f"vault.hashicorp.com/agent-inject-template-{name}"]}\nEOT\n}}\n' for name in files)
        (folder / "agent.hcl").write_text(
            f'vault {{\n  address = "{address}"\n}}\nexit_after_auth = true\n'
            f'auto_auth {{\n  method "token_file" {{\n    config = {{\n      token_file_path = "{folder / "token"}"\n'
            f"    }}\n  }}\n}}\ntemplate_config {{\n  exit_on_retry_failure = true\n}}\n{stanzas}")
        run = subprocess.run(["bao", "agent", "-config", str(folder / "agent.hcl")], capture_output=True, text=True,
                             timeout=30)
        assert run.returncode == 0, run.stdout + run.stderr
        for name in files:
            entry = pod_annotations[f"vault.hashicorp.com/agent-inject-secret-{name}"].removeprefix("secret/data/")
            value = kv_value(entry)
            # every file holds the bare value: read as data by the services and by Hasura's start script
            assert (folder / name).read_text() == value, (role, name)


def kafka_client(user: str, password: str) -> dict:
    return state()["kafka"] | {"sasl.username": user, "sasl.password": password}


def can_produce(config: dict, topic: str, **extra) -> bool:
    producer = Producer(config | {"message.timeout.ms": 8000} | extra)
    failures = []
    producer.produce(topic, b"rehearsal-probe", on_delivery=lambda err, _m: err and failures.append(err))
    producer.flush(10)
    return not failures


def can_consume(config: dict, topic: str, group: str) -> bool:
    consumer = Consumer(config | {"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    try:
        for _ in range(10):
            msg = consumer.poll(1.0)
            if msg is not None and msg.error():
                return False
            if msg is not None:
                return True
            if consumer.assignment():
                return True
        return False
    finally:
        consumer.close()


def test_each_service_principal_can_do_exactly_what_the_readme_says():
    topics = state()["outputs"]["topics"]
    publisher = kafka_client(PRINCIPALS.publisher, kv_value("graphql-kafka-async-publisher-password"))
    writer = kafka_client(PRINCIPALS.writer, kv_value("graphql-kafka-async-writer-password"))
    assert kv_value("graphql-kafka-async-publisher-username") == PRINCIPALS.publisher

    assert can_produce(publisher, topics["requests"])
    assert not can_produce(publisher, topics["responses"]) and not can_produce(publisher, topics["dlq"])
    assert not can_consume(publisher, topics["requests"], f"{PRINCIPALS.writer_group}-{uuid.uuid4().hex[:6]}")

    assert can_consume(writer, topics["responses"], f"{PRINCIPALS.writer_group}-{uuid.uuid4().hex[:6]}")
    assert not can_consume(writer, topics["responses"], f"someone-else-{uuid.uuid4().hex[:6]}")
    assert not can_consume(writer, topics["requests"], f"{PRINCIPALS.writer_group}-{uuid.uuid4().hex[:6]}")
    assert not can_produce(writer, topics["requests"])
    transactional = Producer(writer | {"transactional.id": f"{PRINCIPALS.writer_transactional_id}-rehearsal"})
    transactional.init_transactions(15)
    transactional.begin_transaction()
    transactional.produce(topics["dlq"], b"rehearsal-probe")
    transactional.commit_transaction(15)
    foreign = Producer(writer | {"transactional.id": "not-the-writers-prefix"})
    with pytest.raises(KafkaException):
        foreign.init_transactions(15)


def test_another_team_reads_the_outputs_through_a_stack_reference():
    outputs, consumer = state()["outputs"], state()["consumer_outputs"]
    assert consumer == {"graphql_url": outputs["graphql_url"],
                        "graphql_websocket_url": outputs["graphql_websocket_url"],
                        "requests_topic": outputs["topics"]["requests"],
                        "responses_topic": outputs["topics"]["responses"], "action": outputs["action"]}


def test_no_secret_in_outputs_or_rendered_manifests():
    secrets = [kv_value(e) for e in state()["outputs"]["vault_paths"]]
    text = str(state()["outputs"]) + "".join(p.read_text() for p in Path(state()["manifests"]).rglob("*.yaml"))
    for value in secrets:
        if not value.startswith("graphql-async-"):  # the usernames are not secret
            assert value not in text


def test_the_bootstrap_configures_hasura_with_exactly_the_urls_its_vault_agent_exports():
    """The rendered bootstrap Job names replica and connection-set URLs by env var; Hasura's start script must
    load exactly those variables from the files its Vault agent renders, from the entries the stack file lists."""
    [job] = [o for o in rendered_objects() if o["kind"] == "Job" and o["metadata"]["name"].startswith(
        "graphql-async-bootstrap-")]
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    settings = json.loads(env["HASURA_SOURCE_SETTINGS"])
    wanted = {*settings["read_replica_envs"], *settings["connection_set"].values()}
    assert wanted and settings["edition"] == "ee" and settings["cases"]
    hasura = pod_templates()["hasura"]
    [deployment] = [o for o in rendered_objects() if o["kind"] == "Deployment" and o["metadata"]["name"] == "hasura"]
    script = deployment["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    exported = {}  # variable -> KV entry, through the file Hasura's start script reads it from
    for variable, file_name in re.findall(r'([A-Z0-9_]+)="\$\(cat /vault/secrets/([a-z0-9_.-]+)\)"', script):
        exported[variable] = hasura[f"vault.hashicorp.com/agent-inject-secret-{file_name}"].removeprefix("secret/data/")
    assert wanted <= set(exported)
    assert {exported[v] for v in wanted} | {exported["HASURA_GRAPHQL_EE_LICENSE_KEY"]} == set(
        state()["external_entries"])
    assert not any(value in json.dumps(rendered_objects()) for value in state()["external_entries"].values())
