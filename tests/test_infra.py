"""The whole Pulumi program, run per stack file under mocks (scripts/pulumi_harness.py stands in for the
engine and providers): every seed object with its key properties, valid Kubernetes objects, least
privilege, only /v1/graphql public, no secret in plain text, hardened containers, an up-to-date plan."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import yaml

from components.async_flow import BOOTSTRAP, CLEANUP, DB_ROLES, PUBLISHER, WRITER
from components.kafka_access import AsyncTopics, ServicePrincipals, service_acls
from components.vault_access import CONSUMER_ENTRIES, EXTERNAL_SECRETS_ROLE
from scripts.plan import all_stacks, plan_document, plan_path, render
from scripts.pulumi_harness import REPO, StackRun, load_stack_file, mock_secret, run_stack
from tests.support.k8s_schemas import validate

STACKS = all_stacks()
K = "kubernetes:"
P = "graphql-entrypoint:"


@pytest.fixture(scope="module", params=STACKS)
def run(request) -> StackRun:
    return run_stack(request.param)


def cfg(run: StackRun, key: str):
    return load_stack_file(run.stack)[P + key]


def k8s(run: StackRun, kind: str, name: str) -> dict:
    [obj] = [o for o in run.kubernetes_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def pod_templates(run: StackRun) -> list[tuple[str, dict]]:
    templates = []
    for obj in run.kubernetes_objects():
        spec = obj.get("spec", {})
        if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
            templates.append((obj["metadata"]["name"], spec["template"]))
        elif obj["kind"] == "CronJob":
            templates.append((obj["metadata"]["name"], spec["jobTemplate"]["spec"]["template"]))
    return templates


# ------------------------------------------------------------------ inventory


def test_every_seed_object_exists(run):
    have = {(r.type, r.name) for r in run.resources}
    expected = {
        ("graphql:index:VaultAccess", "vault"), ("graphql:index:KafkaAccess", "kafka"),
        ("graphql:index:PublicEdge", "public-edge"), ("graphql:index:TunnelConnector", "tunnel-connector"),
        ("graphql:index:Hasura", "hasura"), ("graphql:index:AsyncFlow", "async-flow"),
        ("graphql:index:ServiceImages", "images"),
        ("cloudflare:index/zeroTrustTunnelCloudflared:ZeroTrustTunnelCloudflared", "tunnel"),
        ("cloudflare:index/zeroTrustTunnelCloudflaredConfig:ZeroTrustTunnelCloudflaredConfig", "tunnel-ingress"),
        ("cloudflare:index/dnsRecord:DnsRecord", "graphql-cname"),
        ("cloudflare:index/zoneSetting:ZoneSetting", "websockets"),
        ("cloudflare:index/ruleset:Ruleset", "graphql-cache-bypass"),
        ("kubernetes:core/v1:ServiceAccount", "secretstore-sa"),
        ("kubernetes:external-secrets.io/v1:SecretStore", "secretstore"),
        ("kubernetes:external-secrets.io/v1:ExternalSecret", "tunnel-token"),
        ("kubernetes:apps/v1:Deployment", "cloudflared"),
        ("kubernetes:core/v1:ConfigMap", "hasura-env"), ("kubernetes:apps/v1:Deployment", "hasura"),
        ("kubernetes:core/v1:Service", "hasura-svc"),
        ("kubernetes:batch/v1:Job", "bootstrap"), ("kubernetes:apps/v1:Deployment", "publisher"),
        ("kubernetes:core/v1:Service", "publisher-svc"), ("kubernetes:apps/v1:StatefulSet", "writer"),
        ("kubernetes:batch/v1:CronJob", "cleanup"),
        ("graphql:index:NetworkPolicies", "network"),
        ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "default-deny"),
        ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "graphql-async-request-publisher-flows"),
        ("docker:index/image:Image", "image-publisher"), ("docker:index/image:Image", "image-writer"),
        ("docker:index/image:Image", "image-cleanup"),
    }
    assert expected <= have, sorted(expected - have)
    for sa in (PUBLISHER, WRITER, CLEANUP, BOOTSTRAP, DB_ROLES):
        assert ("kubernetes:core/v1:ServiceAccount", sa) in have


def test_children_are_parented_to_their_component(run):
    components = {"graphql:index:" + c for c in ("VaultAccess", "KafkaAccess", "PublicEdge", "TunnelConnector",
                                                  "Hasura", "AsyncFlow", "ServiceImages",
                                                  "DeploymentVerification", "NetworkPolicies")}
    for r in run.resources:
        if r.type in components or r.type == "pulumi:pulumi:Stack":
            assert r.parent in (None, f"pulumi:pulumi:Stack::graphql-entrypoint-{run.stack}")
        else:
            assert r.parent and r.parent.split("::")[0] in components, (r.type, r.name, r.parent)


# ------------------------------------------------------------------ Vault


def policy_paths(hcl: str) -> dict[str, list[str]]:
    return {m[0]: json.loads(m[1]) for m in re.findall(r'path "([^"]+)" \{\s*capabilities = (\[[^\]]*\])', hcl)}


def test_vault_entries_policies_and_roles(run):
    mount, ns = cfg(run, "vault")["kvMount"], cfg(run, "namespace")
    entries = {r.name: r.inputs for r in run.of_type("vault:kv/secretV2:SecretV2")}
    assert set(entries) == {"graphql-hasura-database-url", "graphql-hasura-admin-secret",
                            "graphql-async-action-secret", "cloudflare-tunnel-token",
                            "graphql-kafka-async-publisher-username", "graphql-kafka-async-publisher-password",
                            "graphql-kafka-async-writer-username", "graphql-kafka-async-writer-password",
                            "graphql-async-publisher-database-url", "graphql-async-writer-database-url",
                            "graphql-async-cleanup-database-url", "graphql-async-database-role-verifiers",
                            "graphql-async-database-role-admin-url"}
    assert all(e["mount"] == mount for e in entries.values())
    # the token is written from the tunnel the program creates, under the configured key
    token_key = cfg(run, "vault")["tunnelTokenKey"]
    assert json.loads(entries["cloudflare-tunnel-token"]["dataJson"]) == {token_key: mock_secret("tunnel-token")}
    assert json.loads(entries["graphql-kafka-async-writer-username"]["dataJson"]) == {
        "value": ServicePrincipals().writer}

    policies = {r.name: policy_paths(r.inputs["policy"]) for r in run.of_type("vault:index/policy:Policy")}
    assert policies[EXTERNAL_SECRETS_ROLE] == {f"{mount}/data/cloudflare-tunnel-token": ["read"]}  # no list
    # Hasura also reads the entries the stack names for it (replicas, connection set, license, JWT ...)
    hasura = cfg(run, "hasura")
    hasura_reads = {*hasura.get("readReplicas", []), *hasura.get("routing", {}).get("connectionSet", {}).values(),
                    *([hasura["eeLicenseKeyEntry"]] if "eeLicenseKeyEntry" in hasura else []),
                    *hasura.get("secretEnvFromVault", {}).values()}
    ca = cfg(run, "kafka").get("caEntry")
    for consumer, wanted in CONSUMER_ENTRIES.items():
        extra = hasura_reads if consumer == "hasura" else {ca} if ca and consumer in (PUBLISHER, WRITER) else set()
        assert policies[consumer] == {f"{mount}/data/{e}": ["read"] for e in (*wanted, *extra)}
    roles = {r.name: r.inputs for r in run.of_type("vault:kubernetes/authBackendRole:AuthBackendRole")}
    assert set(roles) == set(policies)
    for name, role in roles.items():
        assert role["roleName"] == name and role["tokenPolicies"] == [name]
        assert role["boundServiceAccountNamespaces"] == [ns]
        assert role["backend"] == cfg(run, "vault")["kubernetesAuthPath"]
    assert roles[EXTERNAL_SECRETS_ROLE]["boundServiceAccountNames"] == ["cloudflare-tunnel-secretstore"]


def bootstrap_fingerprint_of(run: StackRun) -> str:
    """The Job's content fingerprint, recomputed as components/async_flow.py does from the stack file."""
    from components.async_flow import bootstrap_fingerprint
    from components.config import HasuraConfig

    hasura = HasuraConfig.model_validate(cfg(run, "hasura"))
    url = f"http://graphql-async-request-publisher.{cfg(run, 'namespace')}.svc.cluster.local:8080/action/" \
          "publish_async_request"
    return bootstrap_fingerprint(REPO / "app", url, hasura.source_settings().to_json()
                                 + str(hasura.subscriptions.user_row_limit))


def test_each_service_reads_its_own_database_role_and_the_bootstrap_only_verifiers(run):
    """The owner's URL is Hasura's and the bootstrap's; publisher, writer and cleanup each read a URL with their own
    role (tests/test_db_roles.py: what those roles may do), and the bootstrap gets only the roles' verifiers."""
    from urllib.parse import unquote, urlsplit

    from app.db_roles import ROLE_OF, scram_verifier

    mount = cfg(run, "vault")["kvMount"]
    policies = {r.name: policy_paths(r.inputs["policy"]) for r in run.of_type("vault:index/policy:Policy")}
    readers = {path: {name for name, grants in policies.items() if path in grants}
               for grants in policies.values() for path in grants}
    assert readers[f"{mount}/data/graphql-hasura-database-url"] == {"hasura", "graphql-async-bootstrap"}
    # the role administrator (CREATEROLE) and the verifiers are the db-roles Job's alone: not Hasura's, not the
    # bootstrap's (which holds Hasura's admin secret)
    assert readers[f"{mount}/data/graphql-async-database-role-verifiers"] == {DB_ROLES}
    assert readers[f"{mount}/data/graphql-async-database-role-admin-url"] == {DB_ROLES}
    entries = {r.name: json.loads(r.inputs["dataJson"])["value"] for r in run.of_type("vault:kv/secretV2:SecretV2")}
    owner = urlsplit(entries["graphql-hasura-database-url"])
    verifiers = json.loads(entries["graphql-async-database-role-verifiers"])
    for service, consumer in (("publisher", PUBLISHER), ("writer", WRITER), ("cleanup", CLEANUP)):
        entry = f"graphql-async-{service}-database-url"
        assert readers[f"{mount}/data/{entry}"] == {consumer}
        url = urlsplit(entries[entry])
        assert (url.username, url.hostname, url.port, url.path) == (ROLE_OF[service], owner.hostname, owner.port,
                                                                   owner.path)
        assert url.password != owner.password and verifiers[ROLE_OF[service]] == scram_verifier(unquote(url.password))
    # a replaced password changes the verifiers, and so the db-roles Job's name: it re-runs and sets the new one
    roles_version = hashlib.sha256(entries["graphql-async-database-role-verifiers"].encode()).hexdigest()[:8]
    jobs = {o["metadata"]["name"].rsplit("-", 1)[0]: o for o in run.kubernetes_objects() if o["kind"] == "Job"}
    assert set(jobs) == {BOOTSTRAP, DB_ROLES}
    assert jobs[BOOTSTRAP]["metadata"]["name"] == f"{BOOTSTRAP}-{bootstrap_fingerprint_of(run)}"
    code = hashlib.sha256(b"".join((REPO / "app" / f).read_bytes()
                                   for f in ("role_admin.py", "db_roles.py", "db_audit.py", "db.py"))).hexdigest()
    assert jobs[DB_ROLES]["metadata"]["name"] == f"{DB_ROLES}-" + hashlib.sha256(
        (code + roles_version).encode()).hexdigest()[:10]
    # the services read their URL once: a replaced password rolls their pods too (after the Jobs they depend on)
    for kind, name in (("Deployment", PUBLISHER), ("StatefulSet", WRITER)):
        annotations = k8s(run, kind, name)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["graphql-entrypoint/database-roles-version"] == roles_version
    # the role administrator's pod: its own command, no environment (its two files come from Vault), no Hasura
    assert container_of(jobs[DB_ROLES])["command"] == ["python", "-m", "app.role_admin"]
    assert not env_of(container_of(jobs[DB_ROLES]))


def test_each_pod_reads_exactly_what_its_vault_policy_grants(run):
    policies = {r.name: policy_paths(r.inputs["policy"]) for r in run.of_type("vault:index/policy:Policy")}
    roles = {r.name: r.inputs for r in run.of_type("vault:kubernetes/authBackendRole:AuthBackendRole")}
    checked = 0
    for name, template in pod_templates(run):
        annotations = template["metadata"].get("annotations", {})
        if "vault.hashicorp.com/role" not in annotations:
            assert name == "cloudflared"  # it gets its token through the ExternalSecret
            continue
        role = annotations["vault.hashicorp.com/role"]
        read = {v for k, v in annotations.items() if k.startswith("vault.hashicorp.com/agent-inject-secret-")}
        assert read == set(policies[role]), (name, read ^ set(policies[role]))
        sa = template["spec"]["serviceAccountName"]
        assert roles[role]["boundServiceAccountNames"] == [sa]
        checked += 1
    assert checked == 6  # hasura, bootstrap, db-roles, publisher, writer, cleanup


# ------------------------------------------------------------------ public ingress


def test_only_graphql_is_public(run):
    hostname = cfg(run, "publicHostname")
    config = run.one("cloudflare:index/zeroTrustTunnelCloudflaredConfig:ZeroTrustTunnelCloudflaredConfig",
                     "tunnel-ingress").inputs
    ingresses = config["config"]["ingresses"]
    assert len(ingresses) == 3 and ingresses[-1] == {"service": "http_status:404"}
    # the admin API under /v1/graphql/* is answered 404 before the GraphQL rule (first match wins)
    admin, rule = ingresses[:2]
    assert admin == {"hostname": hostname, "path": "^/v1/graphql/+explain", "service": "http_status:404"}
    for path in ("/v1/graphql/explain", "/v1/graphql//explain", "/v1/graphql/explain/"):
        assert re.search(admin["path"], path) and re.search(rule["path"], path), path
    assert not re.search(admin["path"], "/v1/graphql")
    assert rule["hostname"] == hostname
    assert rule["service"] == f"http://hasura.{cfg(run, 'namespace')}.svc.cluster.local:8080"
    path = re.compile(rule["path"])
    for public in ("/v1/graphql", "/v1/graphql/", "/v1/graphql/ws"):
        assert path.search(public), public
    for private in ("/v1/metadata", "/v2/query", "/console", "/healthz", "/v1/graphqlx", "/v1/version",
                    "/api/v1/graphql", "/"):
        assert not path.search(private), private
    # nothing else exposes the cluster: no LoadBalancer/NodePort Services, no Ingress objects
    for obj in run.kubernetes_objects():
        assert obj["kind"] != "Ingress"
        if obj["kind"] == "Service":
            assert obj["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_tunnel_dns_websockets_and_no_cache(run):
    cloudflare, hostname = cfg(run, "cloudflare"), cfg(run, "publicHostname")
    tunnel = run.one("cloudflare:index/zeroTrustTunnelCloudflared:ZeroTrustTunnelCloudflared", "tunnel")
    assert tunnel.inputs == {"accountId": cloudflare["accountId"], "name": cloudflare["tunnelName"],
                             "configSrc": "cloudflare"}
    tunnel_id = run.outputs["tunnel_id"]
    dns = run.one("cloudflare:index/dnsRecord:DnsRecord", "graphql-cname").inputs
    assert (dns["type"], dns["name"], dns["content"], dns["proxied"], dns["ttl"]) == (
        "CNAME", hostname, f"{tunnel_id}.cfargotunnel.com", True, 1)
    assert dns["zoneId"] == cloudflare["zoneId"]
    ws = run.one("cloudflare:index/zoneSetting:ZoneSetting", "websockets").inputs
    assert (ws["settingId"], ws["value"]) == ("websockets", "on")
    ruleset = run.one("cloudflare:index/ruleset:Ruleset", "graphql-cache-bypass").inputs
    assert ruleset["phase"] == "http_request_cache_settings" and ruleset["kind"] == "zone"
    [rule] = ruleset["rules"]
    assert rule["action"] == "set_cache_settings" and rule["actionParameters"] == {"cache": False}
    assert f'http.host eq "{hostname}"' in rule["expression"] and '"/v1/graphql"' in rule["expression"]


def test_tunnel_connector_objects(run):
    ns, vault = cfg(run, "namespace"), cfg(run, "vault")
    store = k8s(run, "SecretStore", "vault-graphql")["spec"]["provider"]["vault"]
    assert store["server"] == vault["address"] and store["path"] == vault["kvMount"] and store["version"] == "v2"
    assert store["auth"]["kubernetes"] == {"mountPath": vault["kubernetesAuthPath"], "role": EXTERNAL_SECRETS_ROLE,
                                           "serviceAccountRef": {"name": "cloudflare-tunnel-secretstore",
                                                                 "audiences": ["vault"]}}
    secret = k8s(run, "ExternalSecret", "cloudflare-tunnel-token")["spec"]
    assert secret["data"] == [{"secretKey": "token", "remoteRef": {"key": "cloudflare-tunnel-token",
                                                                    "property": vault["tunnelTokenKey"]}}]
    assert secret["target"]["name"] == "cloudflare-tunnel-token"
    tunnel = k8s(run, "Deployment", "cloudflared")
    assert tunnel["metadata"]["namespace"] == ns
    [container] = tunnel["spec"]["template"]["spec"]["containers"]
    # the token reaches cloudflared as a file from the ExternalSecret's Secret, never as an env var
    assert "env" not in container
    assert container["args"][-3:] == ["run", "--token-file", "/etc/cloudflared/tunnel-token/token"]
    assert "--no-autoupdate" in container["args"]
    [volume] = tunnel["spec"]["template"]["spec"]["volumes"]
    assert volume["secret"]["secretName"] == "cloudflare-tunnel-token" and volume["secret"]["items"] == [
        {"key": "token", "path": "token"}]
    assert container["volumeMounts"] == [{"name": volume["name"], "mountPath": "/etc/cloudflared/tunnel-token",
                                          "readOnly": True}]
    # out of rotation without an edge connection (/ready); restarted only when the process stops answering
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthcheck"


def test_tunnel_token_key_follows_stack_config():
    overridden = run_stack("dev", {P + "vault": {**load_stack_file("dev")[P + "vault"], "tunnelTokenKey": "vaule"}})
    entry = overridden.one("vault:kv/secretV2:SecretV2", "cloudflare-tunnel-token").inputs
    assert list(json.loads(entry["dataJson"])) == ["vaule"]
    secret = k8s(overridden, "ExternalSecret", "cloudflare-tunnel-token")
    assert secret["spec"]["data"][0]["remoteRef"]["property"] == "vaule"


# ------------------------------------------------------------------ Hasura


def test_hasura_env_file_configmap_and_deployment(run):
    env_file = (REPO / "config" / "hasura" / "hasura.env").read_text()
    config_map = k8s(run, "ConfigMap", "hasura-env")
    assert config_map["data"] == {"hasura.env": env_file}
    deployment = k8s(run, "Deployment", "hasura")
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert container["image"] == cfg(run, "hasura")["image"]
    assert {"name": "hasura-env", "mountPath": "/etc/hasura/hasura.env", "subPath": "hasura.env",
            "readOnly": True} in container["volumeMounts"]
    script = container["command"][-1]
    # Vault values first (read as data, tests/test_secret_loading.py), then the file (which only fills unset
    # variables), then the engine
    assert script.index("/vault/secrets/") < script.index(". /etc/hasura/hasura.env") < script.index(
        "exec graphql-engine serve")
    annotations = pod["metadata"]["annotations"]
    assert annotations["vault.hashicorp.com/role"] == "hasura"
    for variable, file_name in (("HASURA_GRAPHQL_DATABASE_URL", "database-url"), ("ASYNC_ACTION_SECRET",
                                "action-secret"), ("HASURA_GRAPHQL_ADMIN_SECRET", "admin-secret")):
        assert f'{variable}="$(cat /vault/secrets/{file_name})"' in script
        template = annotations[f"vault.hashicorp.com/agent-inject-template-{file_name}"]
        assert template.count("{{ .Data.data.value }}") == 1
    assert not any("export" in v for k, v in annotations.items() if "agent-inject-template" in k)
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    # a database outage fails /healthz: it must take replicas out of the Service, never restart them all
    assert "httpGet" not in container["livenessProbe"] and container["livenessProbe"]["tcpSocket"] == {"port": 8080}
    service = k8s(run, "Service", "hasura")
    assert service["spec"]["ports"][0]["port"] == 8080 and service["spec"]["selector"] == {
        "app.kubernetes.io/name": "hasura"}


def test_jwt_and_redis_settings_come_from_vault_when_configured():
    hasura = {**load_stack_file("dev")[P + "hasura"],
              "secretEnvFromVault": {"HASURA_GRAPHQL_REDIS_URL": "graphql-hasura-redis-url",
                                     "HASURA_GRAPHQL_JWT_SECRET": "graphql-hasura-jwt-secret"}}
    with_redis = run_stack("dev", {P + "hasura": hasura})
    policy = policy_paths(with_redis.one("vault:index/policy:Policy", "hasura").inputs["policy"])
    assert policy["secret/data/graphql-hasura-redis-url"] == policy["secret/data/graphql-hasura-jwt-secret"] == [
        "read"]
    annotations = k8s(with_redis, "Deployment", "hasura")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["vault.hashicorp.com/agent-inject-secret-hasura_graphql_redis_url"] == (
        "secret/data/graphql-hasura-redis-url")
    script = k8s(with_redis, "Deployment", "hasura")["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    for variable in ("HASURA_GRAPHQL_REDIS_URL", "HASURA_GRAPHQL_JWT_SECRET"):
        assert f'{variable}="$(cat /vault/secrets/{variable.lower()})"' in script
        assert "agent-inject-template-" + variable.lower() in " ".join(annotations)
    test_each_pod_reads_exactly_what_its_vault_policy_grants(with_redis)
    with pytest.raises(Exception, match=r"secretEnvFromVault.*HASURA_GRAPHQL_ADMIN_SECRET.*is not one of"):
        run_stack("dev", {P + "hasura": {**hasura, "secretEnvFromVault": {"HASURA_GRAPHQL_ADMIN_SECRET": "x"}}})


@pytest.mark.parametrize("key, value, entry", [
    ("hasura", {"secretEnvFromVault": {"HASURA_GRAPHQL_REDIS_URL": "graphql-async-database-role-admin-url"}},
     "graphql-async-database-role-admin-url (for hasura)"),
    ("hasura", {"readReplicas": ["graphql-async-writer-database-url"]}, "graphql-async-writer-database-url"),
    ("kafka", {"caEntry": "graphql-async-database-role-admin-url"},
     "graphql-async-database-role-admin-url (for kafka.caEntry)"),
])
def test_a_stack_file_cannot_hand_the_programs_own_entries_to_another_policy(key, value, entry):
    """The role administrator's URL read by Hasura, or by every Kafka client as its 'CA', would be a policy widened
    by one line of config; the program's own entries are never extra reads."""
    with pytest.raises(Exception, match="entries the program writes itself") as refused:
        run_stack("prod", {P + key: {**load_stack_file("prod")[P + key], **value}})
    assert entry in str(refused.value)


# ------------------------------------------------------------------ Kafka


def test_topics_users_and_acls(run):
    kafka = cfg(run, "kafka")
    topics = {r.inputs["name"]: r.inputs for r in run.of_type("kafka:index/topic:Topic")}
    assert set(topics) == {"graphql.async.requests.v1", "graphql.async.responses.v1",
                           "graphql.async.responses.dlq.v1"}
    for topic in topics.values():
        assert topic["partitions"] == kafka.get("partitions", 3)
        assert topic["replicationFactor"] == kafka.get("replicationFactor", 3)
        assert topic["config"]["min.insync.replicas"] == str(kafka.get("minInsyncReplicas", 2))
    users = {r.inputs["username"]: r.inputs for r in run.of_type("kafka:index/userScramCredential:UserScramCredential")}
    assert set(users) == {"graphql-async-publisher", "graphql-async-writer"}
    assert all(u["scramMechanism"] == "SCRAM-SHA-256" for u in users.values())
    provider = run.one("pulumi:providers:kafka", "kafka").inputs
    assert json.loads(provider["bootstrapServers"]) == kafka["bootstrapServers"]
    assert provider["saslMechanism"] == "scram-sha256"

    acls = {(a["aclPrincipal"], a["aclResourceType"], a["aclResourceName"], a["resourcePatternTypeFilter"],
             a["aclOperation"]) for a in (r.inputs for r in run.of_type("kafka:index/acl:Acl"))}
    expected = {(r.principal, r.resource_type, r.resource_name, r.pattern_type, r.operation)
                for r in service_acls(AsyncTopics(), ServicePrincipals())}
    assert acls == expected
    publisher = {a for a in acls if a[0] == "User:graphql-async-publisher"}
    assert publisher == {("User:graphql-async-publisher", "Topic", "graphql.async.requests.v1", "Literal", op)
                         for op in ("Write", "Describe")}
    assert not any(a[4] == "Read" for a in publisher)
    writer_writes = {a[2] for a in acls if a[0] == "User:graphql-async-writer" and a[1] == "Topic"
                     and a[4] == "Write"}
    assert writer_writes == {"graphql.async.responses.dlq.v1"}


def test_a_worker_principal_gets_its_user_acls_and_vault_entries_and_nothing_more():
    kafka = {**load_stack_file("dev")[P + "kafka"], "workers": [
        {"name": "billing", "kubernetesNamespace": "billing", "serviceAccount": "billing-worker"}, {"name": "mail"}]}
    run = run_stack("dev", {P + "kafka": kafka})
    users = {r.inputs["username"] for r in run.of_type("kafka:index/userScramCredential:UserScramCredential")}
    assert "graphql-async-worker-billing" in users
    acls = {(a["aclResourceType"], a["aclResourceName"], a["aclOperation"])
            for a in (r.inputs for r in run.of_type("kafka:index/acl:Acl"))
            if a["aclPrincipal"] == "User:graphql-async-worker-billing"}
    assert acls == {("Topic", "graphql.async.requests.v1", "Read"), ("Topic", "graphql.async.requests.v1", "Describe"),
                    ("Group", "graphql-async-worker-billing", "Read"),
                    ("Topic", "graphql.async.responses.v1", "Write"),
                    ("Topic", "graphql.async.responses.v1", "Describe")}
    entries = {r.inputs["name"] for r in run.of_type("vault:kv/secretV2:SecretV2")}
    assert {"graphql-kafka-async-worker-billing-username", "graphql-kafka-async-worker-billing-password"} <= entries
    assert run.outputs["kafka_principals"]["worker-billing"] == "graphql-async-worker-billing"
    # its policy reads its own two entries and nothing else; its role binds exactly its account, audience vault
    policy = run.one("vault:index/policy:Policy", "graphql-async-worker-billing").inputs["policy"]
    assert re.findall(r'path "([^"]+)"', policy) == [
        "secret/data/graphql-kafka-async-worker-billing-username",
        "secret/data/graphql-kafka-async-worker-billing-password"]
    assert '["read"]' in policy and "list" not in policy
    role = run.one("vault:kubernetes/authBackendRole:AuthBackendRole", "graphql-async-worker-billing").inputs
    assert (role["boundServiceAccountNames"], role["boundServiceAccountNamespaces"], role["audience"]) == (
        ["billing-worker"], ["billing"], "vault")
    assert not [r for r in run.of_type("vault:kubernetes/authBackendRole:AuthBackendRole")
                if r.name == "graphql-async-worker-mail"]  # no account given: the policy only
    # with SASL_SSL (prod) a worker also reads the brokers' CA, as every Kafka client must
    prod_kafka = {**load_stack_file("prod")[P + "kafka"], "workers": [{"name": "billing"}]}
    prod_policy = run_stack("prod", {P + "kafka": prod_kafka}).one("vault:index/policy:Policy",
                                                                   "graphql-async-worker-billing").inputs["policy"]
    assert f'secret/data/{prod_kafka["caEntry"]}' in prod_policy
    for other in ("graphql-async-request-publisher", "graphql-async-response-writer", "hasura"):
        assert "worker-billing" not in run.one("vault:index/policy:Policy", other).inputs["policy"]
    with pytest.raises(Exception, match="worker names must be unique"):
        run_stack("dev", {P + "kafka": {**kafka, "workers": [{"name": "a"}, {"name": "a"}]}})


def test_no_acls_when_the_broker_has_no_authorizer():
    without = run_stack("dev", {P + "kafka": {**load_stack_file("dev")[P + "kafka"], "authorizerEnabled": False}})
    assert without.of_type("kafka:index/acl:Acl") == []
    assert len(without.of_type("kafka:index/userScramCredential:UserScramCredential")) == 2


# ------------------------------------------------------------------ async flow


def container_of(obj: dict) -> dict:
    spec = obj["spec"]
    template = spec["jobTemplate"]["spec"]["template"] if obj["kind"] == "CronJob" else spec["template"]
    [container] = template["spec"]["containers"]
    return container


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_async_flow_workloads(run):
    ns, flow, kafka = cfg(run, "namespace"), cfg(run, "asyncFlow"), cfg(run, "kafka")
    digests = run.outputs["image_digests"]
    [job] = [o for o in run.kubernetes_objects() if o["kind"] == "Job" and o["metadata"]["name"].startswith(BOOTSTRAP)]
    job_container = container_of(job)
    assert job_container["command"] == ["python", "-m", "app.bootstrap"] and job_container["image"] == digests[
        "cleanup"]
    assert env_of(job_container)["ACTION_HANDLER_URL"] == (
        f"http://graphql-async-request-publisher.{ns}.svc.cluster.local:8080/action/publish_async_request")
    assert job["spec"]["template"]["metadata"]["annotations"]["vault.hashicorp.com/agent-pre-populate-only"] == "true"

    publisher = k8s(run, "Deployment", PUBLISHER)
    assert publisher["spec"]["replicas"] == flow["publisherReplicas"]
    assert container_of(publisher)["image"] == digests["publisher"]
    assert env_of(container_of(publisher))["ASYNC_REQUESTS_TOPIC"] == "graphql.async.requests.v1"
    assert env_of(container_of(publisher))["KAFKA_BOOTSTRAP_SERVERS"] == ",".join(kafka["bootstrapServers"])
    service = k8s(run, "Service", PUBLISHER)
    assert service["spec"]["ports"][0]["port"] == 8080
    assert_shutdown_fits_the_grace_period(publisher)

    writer = k8s(run, "StatefulSet", WRITER)
    assert container_of(writer)["image"] == digests["writer"]
    assert env_of(container_of(writer))["WRITER_GROUP_ID"] == ServicePrincipals().writer_group
    # stable identity per replica: the transactional.id's instance part is the StatefulSet pod name
    assert writer["spec"]["serviceName"] == k8s(run, "Service", WRITER)["metadata"]["name"]
    assert k8s(run, "Service", WRITER)["spec"]["clusterIP"] == "None"
    instance = next(e for e in container_of(writer)["env"] if e["name"] == "WRITER_INSTANCE_ID")
    assert instance["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}

    cleanup = k8s(run, "CronJob", CLEANUP)
    assert cleanup["spec"]["schedule"] == "*/10 * * * *" and cleanup["spec"]["concurrencyPolicy"] == "Forbid"
    assert container_of(cleanup)["image"] == digests["cleanup"]


def test_publisher_is_reachable_from_hasura_only(run):
    """The whole flow matrix is tests/test_network_policy.py; here the publisher's ingress rule by itself."""
    policy = k8s(run, "NetworkPolicy", f"{PUBLISHER}-flows")["spec"]
    publisher_labels = k8s(run, "Deployment", PUBLISHER)["spec"]["template"]["metadata"]["labels"]
    hasura_labels = k8s(run, "Deployment", "hasura")["spec"]["template"]["metadata"]["labels"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["podSelector"]["matchLabels"].items() <= publisher_labels.items()
    [rule] = policy["ingress"]
    [source] = rule["from"]
    assert set(source) == {"podSelector"} and source["podSelector"]["matchLabels"].items() <= hasura_labels.items()
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]
    for kind, name in (("Deployment", "cloudflared"), ("StatefulSet", WRITER)):  # nobody else matches the selector
        other = k8s(run, kind, name)["spec"]["template"]["metadata"]["labels"]
        assert not source["podSelector"]["matchLabels"].items() <= other.items()


def test_images_are_built_from_app_and_pinned_by_digest(run):
    images = {r.name: r.inputs for r in run.of_type("docker:index/image:Image")}
    dockerfile = (REPO / "app" / "Dockerfile").read_text()
    for target in ("publisher", "writer", "cleanup"):
        build = images[f"image-{target}"]["build"]
        assert build["target"] == target and build["context"] == "app" and build["dockerfile"] == "app/Dockerfile"
        assert re.search(rf"^FROM base AS {target}$", dockerfile, re.M)
        assert images[f"image-{target}"]["imageName"].startswith(cfg(run, "images")["registry"] + "/")
        assert re.match(r"^.+@sha256:[0-9a-f]{64}$", run.outputs["image_digests"][target])


# ------------------------------------------------------------------ every object, every container


def test_kubernetes_objects_are_schema_valid(run):
    version = cfg(run, "kubernetesVersion")
    objects = run.kubernetes_objects()
    assert len(objects) >= 17
    for obj in objects:
        validate(obj, version)


def test_invalid_manifest_is_rejected_by_the_validator(run):
    """The validator has teeth: a misspelt field fails strict validation."""
    deployment = json.loads(json.dumps(k8s(run, "Deployment", PUBLISHER)))
    deployment["spec"]["replicaz"] = 2
    with pytest.raises(Exception, match="replicaz"):
        validate(deployment, cfg(run, "kubernetesVersion"))


def test_external_secrets_objects_are_checked_against_the_real_crds(run):
    """The ESO v1.3.2 CRD schemas have teeth too: a misspelt field, or a wrong type, fails."""
    [external_secret] = [o for o in run.kubernetes_objects() if o["kind"] == "ExternalSecret"]
    validate(external_secret, "1.33.0")
    misspelt = json.loads(json.dumps(external_secret))
    misspelt["spec"]["secretStoreRefs"] = misspelt["spec"].pop("secretStoreRef")
    with pytest.raises(Exception, match="secretStoreRefs"):
        validate(misspelt, "1.33.0")
    store = json.loads(json.dumps(k8s(run, "SecretStore", "vault-graphql")))
    validate(store, "1.33.0")
    store["spec"]["provider"]["vault"]["version"] = "v3"
    with pytest.raises(Exception, match="v3"):
        validate(store, "1.33.0")


def test_every_container_is_bounded_non_root_and_pinned(run):
    for name, template in pod_templates(run):
        pod = template["spec"]
        for container in pod["containers"]:
            resources = container["resources"]
            assert set(resources["requests"]) == {"cpu", "memory", "ephemeral-storage"} == set(
                resources["limits"]), name
            assert container["imagePullPolicy"] == "Always", name  # the pull credentials are checked each start
            non_root = container.get("securityContext", {}).get("runAsNonRoot",
                                                                pod.get("securityContext", {}).get("runAsNonRoot"))
            assert non_root is True, name
            assert pod["securityContext"]["runAsUser"] > 0
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert re.match(r"^[^@\s]+@sha256:[0-9a-f]{64}$", container["image"]), (name, container["image"])


def test_no_secret_in_plain_text(run):
    assert run.secret_values  # the run produced secrets to look for
    document = plan_document(run)  # raises SecretLeak if any non-secret input or output holds one
    flat = json.dumps(document)
    assert not any(secret in flat for secret in run.secret_values)
    for obj in run.kubernetes_objects():
        if obj["kind"] == "ConfigMap":
            assert not any(secret in json.dumps(obj) for secret in run.secret_values)
            assert not re.search(r"^HASURA_GRAPHQL_(ADMIN_SECRET|DATABASE_URL|JWT_SECRET)=", obj["data"]["hasura.env"],
                                 re.M)
    for name, template in pod_templates(run):
        for container in template["spec"]["containers"]:
            for env in container.get("env", []):
                assert "value" not in env or not re.search(r"SECRET|PASSWORD|TOKEN|DATABASE_URL", env["name"]), (
                    name, env["name"])
    assert run.output_secret_paths == []  # nothing secret is exported at all


def test_stack_outputs_for_other_teams(run):
    hostname = cfg(run, "publicHostname")
    outputs = run.outputs
    assert outputs["graphql_url"] == f"https://{hostname}/v1/graphql"
    assert outputs["graphql_websocket_url"] == f"wss://{hostname}/v1/graphql"
    assert outputs["namespace"] == cfg(run, "namespace")
    assert outputs["topics"] == {"requests": "graphql.async.requests.v1", "responses": "graphql.async.responses.v1",
                                 "dlq": "graphql.async.responses.dlq.v1"}
    assert outputs["table"] == "graphql.client_async_messages" and outputs["action"] == "publish_async_request"
    assert outputs["vault_paths"]["cloudflare-tunnel-token"] == f"{cfg(run, 'vault')['kvMount']}/data/" \
                                                                 "cloudflare-tunnel-token"
    assert set(outputs["image_digests"]) == {"publisher", "writer", "cleanup"}


def test_committed_plan_matches_the_program(run):
    path = plan_path(run.stack)
    assert path.exists(), f"missing {path}; run python -m scripts.plan --all"
    assert path.read_text() == render(plan_document(run)), (
        f"{path.name} is out of date: run `python -m scripts.plan --all` and commit the result")


# ------------------------------------------------------------------ configuration errors


def test_missing_key_names_key_and_stack():
    with pytest.raises(Exception, match=r"stack 'dev'.*graphql-entrypoint:kafka.*Field required"):
        run_stack("dev", drop_keys=(P + "kafka",))


def test_malformed_key_names_key_and_stack():
    bad = {**load_stack_file("dev")[P + "kafka"], "partitions": "three"}
    with pytest.raises(Exception, match=r"stack 'dev'.*graphql-entrypoint:kafka\.partitions"):
        run_stack("dev", {P + "kafka": bad})


def test_unpinned_image_is_refused():
    with pytest.raises(Exception, match=r"graphql-entrypoint:hasura\.image.*pinned by digest"):
        run_stack("dev", {P + "hasura": {"image": "hasura/graphql-engine:latest"}})


@pytest.mark.parametrize("key", ["databaseUrl", "databaseRoleAdminUrl"])
def test_missing_secret_config_names_the_command(key):
    with pytest.raises(Exception, match=rf"pulumi config set --secret {key}\b"):
        run_stack("dev", drop_keys=(P + key,))


def test_a_role_admin_url_the_network_policies_would_block_is_refused_without_echoing_it():
    url = "postgresql://role_admin:do-not-echo@yugabyte.example:5432/hasura"  # dev's databasePort is 5433
    with pytest.raises(Exception, match=r"databaseRoleAdminUrl's port is 5432.*network.databasePort") as refused:
        run_stack("dev", {P + "databaseRoleAdminUrl": url})
    assert "do-not-echo" not in str(refused.value)


def test_stack_files_differ_only_where_stacks_should():
    dev, prod = (yaml.safe_load((REPO / f"Pulumi.{s}.yaml").read_text())["config"] for s in ("dev", "prod"))
    assert set(dev) == set(prod)
    assert dev[P + "publicHostname"] == "cf-suncoast-graphql-proxy.dev.suncoast.systems"
    assert dev[P + "namespace"] == "graphql"
    assert dev[P + "kafka"]["bootstrapServers"] == ["kafka.kafka.svc.internal.lan:9092"]
    assert (dev[P + "kafka"]["securityProtocol"], dev[P + "kafka"]["saslMechanism"]) == (
        "SASL_PLAINTEXT", "SCRAM-SHA-256")


def test_local_rehearsal_stack_builds_nothing_needing_a_daemon_or_cloudflare():
    """The `local` stack (applied for real by `dev.sh rehearse`) declares no Cloudflare and no docker resource;
    its workloads run the pinned prebuilt images, and the tunnel token reaches Vault from the local secret."""
    local = run_stack("local")
    types = {r.type for r in local.resources}
    assert not any(t.startswith(("cloudflare:", "docker:")) for t in types), sorted(types)
    prebuilt = load_stack_file("local")[P + "images"]["prebuilt"]
    assert local.outputs["image_digests"] == prebuilt
    writer = k8s(local, "StatefulSet", WRITER)
    assert writer["spec"]["template"]["spec"]["containers"][0]["image"] == prebuilt["writer"]
    token_entry = next(r for r in local.resources if r.type == "vault:kv/secretV2:SecretV2"
                       and r.inputs.get("name") == "cloudflare-tunnel-token")
    assert "dataJson" in token_entry.secret_paths
    assert "mock-local-tunnel-token" in token_entry.inputs["dataJson"]


@pytest.mark.parametrize(("override", "message"), [
    ({"cloudflare": {"enabled": False, "accountId": "a", "zoneId": "z", "tunnelName": "t"}},
     "set the secret localTunnelToken"),
    ({"images": {"registry": "r", "prebuilt": {"publisher": "r/p@sha256:" + "1" * 64}}},
     "needs exactly the targets publisher, writer, cleanup"),
    ({"images": {"registry": "r", "prebuilt": {"publisher": "r/p:latest", "writer": "r/w:latest",
                                               "cleanup": "r/c:latest"}}}, "must be pinned by digest"),
])
def test_rehearsal_switches_are_validated(override, message):
    from components.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        run_stack("dev", config_overrides={P + k: v for k, v in override.items()})


def test_post_deploy_verification_runs_after_the_edge_hasura_and_flow_and_reruns_on_change(run):
    [verify] = [r for r in run.resources if r.type == "command:local:Command"]
    assert verify.name == "verify-deployment"
    assert f"--url {run.outputs['graphql_url']}" in verify.inputs["create"]
    triggers = verify.inputs["triggers"]
    assert [t for t in triggers if isinstance(t, str) and "@sha256:" in t] == \
        [run.outputs["image_digests"][t] for t in sorted(run.outputs["image_digests"])]
    hasura_env = (REPO / "config" / "hasura" / "hasura.env").read_text()
    pinned = env_of(k8s(run, "Deployment", "hasura")["spec"]["template"]["spec"]["containers"][0])
    assert hashlib.sha256((hasura_env + json.dumps(pinned, sort_keys=True)).encode()).hexdigest() in triggers
    assert any(isinstance(t, dict) and t.get("ingresses") for t in triggers)  # the tunnel's ingress rules
    cloudflared = k8s(run, "Deployment", "cloudflared")
    assert {"cloudflared": cloudflared["spec"]["template"]["spec"]["containers"][0]["image"],
            "replicas": cloudflared["spec"]["replicas"]} in triggers  # the connector the edge answers through
    component = next(r for r in run.resources if r.type == "graphql:index:DeploymentVerification")
    # depends_on a component waits for all its children: the edge's, cloudflared's (a fresh stack's connector
    # must be up before the edge can answer), Hasura's and the flow's resources
    for parent in ("graphql:index:PublicEdge$", "graphql:index:TunnelConnector$", "graphql:index:Hasura$",
                   "graphql:index:AsyncFlow$"):
        assert any(parent in urn for urn in component.dependencies), (parent, component.dependencies)


@pytest.mark.parametrize("stack", STACKS)
def test_committed_fresh_preview_covers_the_plan_and_shows_no_secret(stack):
    """plans/<stack>.preview.txt (the real engine, `dev.sh preview-fresh`) creates every resource of the mock
    plan, except what its offline stand-ins switch off (docker builds, the post-deploy command)."""
    preview = (REPO / "plans" / f"{stack}.preview.txt").read_text()
    assert re.search(r"\+ \d+ to create", preview) and "error:" not in preview
    urn = re.compile(r"urn=urn:pulumi:[^:]+::[^:]+::(?:[^$\]]*\$)?([^:\]]+:[^:\]]*:[^:\]]+)::([^\]]+)\]")
    previewed = {(m[1], m[2]) for m in urn.finditer(preview)}
    planned = {(r.type, r.name) for r in run_stack(stack).resources
               if r.type not in ("docker:index/image:Image", "command:local:Command",
                                 "graphql:index:DeploymentVerification")}
    assert planned <= previewed, sorted(planned - previewed)[:5]
    for placeholder in ("mock-db-password", "mock-kafka-admin-password", "preview-placeholder-"):
        assert placeholder not in preview


def test_preview_text_is_normalized_to_a_stable_order():
    """Two engine runs list resources in different orders with fresh provider ids; the committed text must not."""
    from scripts.preview_fresh import normalize

    head = "Previewing update (dev):"
    a = ["    + t:a:A: (create)", "        [urn=urn:pulumi:dev::p::t:a:A::a]",
         "        [provider=urn:pulumi:dev::p::pulumi:providers:t::default::0a1b2c3d-0000-4000-8000-000000000001]"]
    b = ["    + t:b:B: (create)", "        [urn=urn:pulumi:dev::p::t:b:B::b]", "        x: 1"]
    tail = ["Resources:", "    + 2 to create", "warning: z", "warning: a"]
    one = normalize("\n".join([head, *a, *b, *tail]))
    two = normalize("\n".join([head, *b, *a, *tail]).replace("0a1b2c3d-0000-4000-8000-000000000001",
                                                                 "ffffffff-1111-4111-8111-111111111111"))
    assert one == two and "::default::<id>]" in one and one.endswith("warning: a\nwarning: z")


def test_multi_replica_workloads_have_a_disruption_budget_and_spread(run):
    """A drain or a lost node/zone never takes every replica of a serving workload at once."""
    budgets = {o["metadata"]["name"]: o["spec"] for o in run.kubernetes_objects() if o["kind"] == "PodDisruptionBudget"}
    serving = [("Deployment", "hasura"), ("Deployment", "cloudflared"), ("Deployment", PUBLISHER),
               ("StatefulSet", WRITER)]
    for kind, name in serving:
        workload = k8s(run, kind, name)
        pod = workload["spec"]["template"]
        if workload["spec"]["replicas"] >= 2:
            assert budgets[name] == {"maxUnavailable": 1, "selector": workload["spec"]["selector"]}, name
        else:
            assert name not in budgets
        [preferred] = pod["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert preferred["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        assert preferred["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        [zones] = pod["spec"]["topologySpreadConstraints"]
        assert zones["topologyKey"] == "topology.kubernetes.io/zone"
    assert len(budgets) == sum(k8s(run, kind, name)["spec"]["replicas"] >= 2 for kind, name in serving)


def test_vault_is_reached_over_tls_unless_it_is_in_the_cluster():
    """Dev's in-cluster Vault Service may be plain HTTP (README, Security); anything else must be https://."""
    from components.config import ConfigError

    vault = load_stack_file("dev")[P + "vault"]
    with pytest.raises(ConfigError, match=r"vault\.address.*must be https:// outside the cluster"):
        run_stack("dev", {P + "vault": {**vault, "address": "http://vault.prod.suncoast.systems:8200"}})
    assert run_stack("dev", {P + "vault": {**vault, "address": "https://vault.prod.suncoast.systems"}}).resources


def test_kafka_clients_verify_the_brokers_against_the_ca_from_vault_where_the_stack_uses_tls(run):
    """prod: SASL_SSL; the provider, the publisher and the writer verify the brokers against the CA entry the stack
    names, rendered by each pod's Vault agent (tests/test_kafka_tls.py: the same settings on a real TLS broker)."""
    kafka = cfg(run, "kafka")
    provider = run.one("pulumi:providers:kafka", "kafka")
    tls = kafka.get("securityProtocol") == "SASL_SSL"
    assert (provider.inputs.get("tlsEnabled") in (True, "true")) is tls
    if run.stack == "prod":
        assert tls and kafka["caEntry"]
    for kind, name in (("Deployment", PUBLISHER), ("StatefulSet", WRITER)):
        pod = k8s(run, kind, name)["spec"]["template"]
        env = env_of(pod["spec"]["containers"][0])
        annotations = pod["metadata"]["annotations"]
        assert env["KAFKA_SECURITY_PROTOCOL"] == kafka.get("securityProtocol", "SASL_PLAINTEXT")
        if tls:
            assert env["KAFKA_SSL_CA_LOCATION"] == "/vault/secrets/kafka_ca.pem"
            assert annotations["vault.hashicorp.com/agent-inject-secret-kafka_ca.pem"] == (
                f"{cfg(run, 'vault')['kvMount']}/data/{kafka['caEntry']}")
            assert "caCert" in provider.inputs and "caCert" in provider.secret_paths
        else:
            assert "KAFKA_SSL_CA_LOCATION" not in env


def test_sasl_ssl_needs_the_brokers_ca_entry():
    from components.config import ConfigError

    kafka = load_stack_file("dev")[P + "kafka"]
    with pytest.raises(ConfigError, match="SASL_SSL needs caEntry"):
        run_stack("dev", {P + "kafka": {**kafka, "securityProtocol": "SASL_SSL"}})
    with pytest.raises(ConfigError, match="caEntry is only for securityProtocol SASL_SSL"):
        run_stack("dev", {P + "kafka": {**kafka, "caEntry": "graphql-kafka-ca-certificate"}})


def test_the_providers_ca_is_read_from_vault_and_only_a_preview_may_go_on_without_it(monkeypatch):
    """An offline preview (`dev.sh preview-fresh`) cannot read the CA entry: it warns and previews with a
    placeholder; `pulumi up` must read it or fail, never run the provider without the brokers' CA."""
    import pulumi
    import pulumi_vault

    from components.config import KafkaConfig
    from components.kafka import KafkaAccessArgs
    from components.kafka_access import ServicePrincipals

    config = KafkaConfig.model_validate({**load_stack_file("prod")[P + "kafka"]})
    args = KafkaAccessArgs(config, admin_password="x", principals=ServicePrincipals(), kv_mount="secret")

    def unreachable(**_kwargs):
        raise ConnectionError("vault.prod.suncoast.systems: no route")

    monkeypatch.setattr(pulumi_vault.kv, "get_secret_v2", unreachable)
    monkeypatch.setattr(pulumi.log, "warn", lambda *_a, **_k: None)
    monkeypatch.setattr(pulumi.runtime, "is_dry_run", lambda: False)
    with pytest.raises(ConnectionError):
        args.ca_cert()
    monkeypatch.setattr(pulumi.runtime, "is_dry_run", lambda: True)
    assert args.ca_cert() is not None


def assert_shutdown_fits_the_grace_period(publisher: dict) -> None:
    """The publisher's settings, read from the pod's own env, end their drain and shutdown budget before SIGKILL."""
    from app.settings import PublisherSettings

    env = {k.lower(): v for k, v in env_of(container_of(publisher)).items()
           if k in ("SHUTDOWN_DRAIN_SECONDS", "SHUTDOWN_TIMEOUT_SECONDS", "PUBLISH_TIMEOUT_SECONDS")}
    settings = PublisherSettings.from_env(async_database_url="postgresql://x@127.0.0.1/db",
                                          async_action_secret="s" * 16, kafka_bootstrap_servers="k:9092", **env)
    assert {"shutdown_drain_seconds", "shutdown_timeout_seconds"} <= env.keys()
    grace = publisher["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert settings.shutdown_drain_seconds + settings.shutdown_timeout_seconds < grace


def _dev_object(key: str) -> dict:
    return json.loads(json.dumps(load_stack_file("dev")[P + key]))


def _with(key: str, path: str, value) -> dict:
    """dev's object `key` with the dotted `path` inside it set to `value`."""
    obj = _dev_object(key)
    node = obj
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return {P + key: obj}


POLICY_INJECTION = 'secret/data/x" {\n capabilities = ["read"]\n}\npath "sys/*" {\n capabilities = ["sudo"]\n}\npath "s'


@pytest.mark.parametrize(("overrides", "message"), [
    (_with("vault", "kvMount", POLICY_INJECTION), r"vault\.kvMount"),
    (_with("vault", "kvMount", "+"), r"vault\.kvMount"),
    (_with("vault", "kvMount", "secret/../sys"), r"vault\.kvMount"),
    (_with("vault", "kubernetesAuthPath", ""), r"vault\.kubernetesAuthPath"),
    (_with("vault", "address", "http://vault.vault.svc:99999"), r"vault\.address.*port"),
    (_with("vault", "address", "https://ops:hunter2@vault.example.com"), r"vault\.address.*credentials"),
    ({P + "namespace": "graphql\n"}, r"namespace.*namespace name"),
    ({P + "namespace": "kube-system"}, r"namespace.*cluster's own"),
    ({P + "publicHostname": "graphql.example.com\n"}, r"publicHostname.*DNS hostname"),
    (_with("kafka", "topics.requests", "*"), r"kafka\.topics\.requests"),
    (_with("kafka", "topics.dlq", _dev_object("kafka").get("topics", {}).get("responses",
                                                                             "graphql.async.responses.v1")),
     r"three different topics"),
    (_with("kafka", "bootstrapServers", ["kafka:99999"]), r"not host:port"),
    (_with("kafka", "bootstrapServers", ["kafka:9092\n"]), r"not host:port"),
    (_with("kafka", "workers", [{"name": "evil", "consumerGroup": "graphql-async-response-writer"}]),
     r"response writer's"),
    (_with("kafka", "workers", [{"name": "a"}, {"name": "b", "consumerGroup": "graphql-async-worker-a"}]),
     r"consumer groups must be unique"),
    (_with("kafka", "workers", [{"name": "a", "kubernetesNamespace": "kube-system", "serviceAccount": "default"}]),
     r"cluster's own"),
    (_with("kafka", "retentionMs", 10**30), r"kafka\.retentionMs"),
    (_with("asyncFlow", "cleanupSchedule", "every ten minutes"), r"asyncFlow\.cleanupSchedule"),
    (_with("asyncFlow", "cleanupTimeBudgetSeconds", 10**12), r"asyncFlow\.cleanupTimeBudgetSeconds"),
    (_with("hasura", "secretEnvFromVault", {"HASURA_GRAPHQL_JWT_SECRET\n": "jwt-config"}), r"JWT_SECRET"),
    (_with("hasura", "secretEnvFromVault", {"HASURA_GRAPHQL_JWT_SECRET": "jwt-config\n"}), r"KV entry"),
    (_with("network", "kafka", {"cidrs": ["0.0.0.0/0"]}), r"network\.kafka\.cidrs.*every address"),
    (_with("network", "clusterCidrs", ["0.0.0.0/0"]), r"network\.clusterCidrs.*every address"),
    (_with("network", "vault", {"namespace": "vault", "podLabels": {"bad key!": "v a l"}}),
     r"network\.vault\.podLabels.*not a Kubernetes label"),
    (_with("asyncFlow", "metrics", {"selectorLabels": {"release": "kube prometheus"}}),
     r"asyncFlow\.metrics\.selectorLabels.*not a Kubernetes label"),
    (_with("vault", "tunnelTokenRefreshInterval", "0s"), r"vault\.tunnelTokenRefreshInterval.*longer than 0"),
    (_with("hasura", "sourceName", ""), r"hasura\.sourceName"),
    ({P + "asyncflow": {"publisherReplicas": 7}}, r"unknown config key graphql-entrypoint:asyncflow "
                                                  r"\(did you mean graphql-entrypoint:asyncFlow\?\)"),
])
def test_hostile_or_mistyped_config_is_refused_naming_the_key(overrides, message):
    """Found by probing: each of these ran clean before (a policy block injected through the mount, a wildcard
    topic ACL, a trailing newline in a hostname, a worker in the writer's group, a typo keeping the defaults)."""
    from components.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        run_stack("dev", config_overrides=overrides)


def test_a_database_password_with_a_raw_slash_is_refused_without_echoing_it():
    url = "postgresql://hasura:Zx9/Qk+TopSecretPw@db.internal:5433/hasura"  # urllib reads "Zx9" as the port
    with pytest.raises(Exception, match=r"databaseUrl must be a postgresql://.*percent-encoded") as refused:
        run_stack("dev", {P + "databaseUrl": url})
    assert "Zx9" not in str(refused.value) and "TopSecret" not in str(refused.value)


def test_the_verification_never_sends_one_of_the_programs_own_secrets_as_its_token():
    with pytest.raises(Exception, match=r"verify\.serviceTokenEntry 'graphql-hasura-admin-secret' is an entry the "
                                        r"program writes itself"):
        run_stack("dev", config_overrides={P + "verify": {"serviceTokenEntry": "graphql-hasura-admin-secret"}})
