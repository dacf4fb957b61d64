"""Vault access: KV v2 entries, one policy per consumer with exactly its paths, Kubernetes auth roles."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

import pulumi
import pulumi_random as random
import pulumi_vault as vault

from app.db_roles import ROLE_OF, checked_url, scram_verifier, service_url
from components.config import VaultConfig, WorkerConfig
from components.k8s import VAULT_AUDIENCE, VaultFile, child

# KV entry names (the seed's naming); each holds its value under the key `value`
DATABASE_URL = "graphql-hasura-database-url"
HASURA_ADMIN_SECRET = "graphql-hasura-admin-secret"
ACTION_SECRET = "graphql-async-action-secret"
TUNNEL_TOKEN = "cloudflare-tunnel-token"


# the SCRAM verifiers of the services' database roles: what the bootstrap creates them with (app/db_roles.py)
DATABASE_ROLE_VERIFIERS = "graphql-async-database-role-verifiers"
# the role administrator (CREATEROLE) that creates them: the bootstrap's alone, never Hasura's
DATABASE_ROLE_ADMIN_URL = "graphql-async-database-role-admin-url"


def kafka_entry(service: str, field: str) -> str:
    """`graphql-kafka-async-<service>-username` / `-password` (the seed's naming, one principal per service)."""
    return f"graphql-kafka-async-{service}-{field}"


def database_entry(service: str) -> str:
    """`graphql-async-<service>-database-url`: the URL with the service's own role (publisher, writer, cleanup)."""
    return f"graphql-async-{service}-database-url"


# consumer -> the entries it reads; the policy grants exactly these, the pod mounts exactly these. The stack's
# database URL (its owner role) is Hasura's and the bootstrap's only; each service logs in as its own role.
CONSUMER_ENTRIES: dict[str, tuple[str, ...]] = {
    "hasura": (DATABASE_URL, HASURA_ADMIN_SECRET, ACTION_SECRET),
    "graphql-async-request-publisher": (database_entry("publisher"), ACTION_SECRET,
                                        kafka_entry("publisher", "username"), kafka_entry("publisher", "password")),
    "graphql-async-response-writer": (database_entry("writer"), kafka_entry("writer", "username"),
                                      kafka_entry("writer", "password")),
    "graphql-async-cleanup": (database_entry("cleanup"),),
    "graphql-async-bootstrap": (DATABASE_URL, HASURA_ADMIN_SECRET),
    # the role administrator in a Job of its own, beside no Hasura secret (app/role_admin.py)
    "graphql-async-db-roles": (DATABASE_ROLE_ADMIN_URL, DATABASE_ROLE_VERIFIERS),
}
EXTERNAL_SECRETS_ROLE = "externalsecrets-graphql"


def data_path(mount: str, entry: str) -> str:
    return f"{mount}/data/{entry}"


def policy_hcl(grants: list[tuple[str, list[str]]]) -> str:
    return "".join(f'path "{path}" {{\n  capabilities = {json.dumps(caps)}\n}}\n' for path, caps in grants)


Grants = dict[str, list[tuple[str, list[str]]]]  # consumer -> [(path, capabilities)]


def policy_grants(mount: str, extra_reads: dict[str, list[str]] | None = None) -> Grants:
    """Least privilege per consumer: read on its own entries, nothing else. External Secrets reads only the
    token's data path: its Vault provider touches metadata only for metadataPolicy Fetch, which we do not use
    (external-secrets, providers/v1/vault/client_get.go, GetSecret -> readSecret)."""
    extra_reads = extra_reads or {}
    grants = {consumer: [(data_path(mount, e), ["read"]) for e in (*entries, *extra_reads.get(consumer, ()))]
              for consumer, entries in CONSUMER_ENTRIES.items()}
    grants[EXTERNAL_SECRETS_ROLE] = [(data_path(mount, TUNNEL_TOKEN), ["read"])]
    return grants


def refuse_program_entries(program: dict[str, object], extra_reads: dict[str, list[str]],
                           kafka_ca_entry: str | None) -> None:
    """Entries the stack file names for a workload to read (Hasura's replicas and secret env, the Kafka CA) are
    other teams' entries: naming one of the program's own would hand it to that workload's policy."""
    named = {(consumer, entry) for consumer, entries in extra_reads.items() for entry in entries}
    named |= {("kafka.caEntry", kafka_ca_entry)} if kafka_ca_entry else set()
    taken = sorted((who, entry) for who, entry in named if entry in program)
    if taken:
        raise ValueError("the stack file names entries the program writes itself, which would widen a policy: "
                         + ", ".join(f"{entry} (for {who})" for who, entry in taken))


def is_program_entry(entry: str) -> bool:
    """An entry this program writes itself (its secrets, each service's database URL and Kafka login)."""
    fixed = {DATABASE_URL, HASURA_ADMIN_SECRET, ACTION_SECRET, TUNNEL_TOKEN, DATABASE_ROLE_VERIFIERS,
             DATABASE_ROLE_ADMIN_URL}
    service_entry = re.fullmatch(r"graphql-kafka-async-.+-(username|password)|graphql-async-.+-database-url", entry)
    return entry in fixed or service_entry is not None


def vault_file(mount: str, entry: str, file_name: str) -> VaultFile:
    return VaultFile(file_name=file_name, kv_path=data_path(mount, entry))


@dataclass
class KafkaCredential:
    username: pulumi.Input[str]
    password: pulumi.Input[str]


@dataclass
class VaultAccessArgs:
    namespace: str
    vault: VaultConfig  # KV mount, Kubernetes auth mount, the tunnel token entry's key
    database_url: pulumi.Input[str]
    database_role_admin_url: pulumi.Input[str]
    tunnel_token: pulumi.Input[str]
    kafka_credentials: dict[str, KafkaCredential]  # "publisher" / "writer"
    database_port: int | None = None  # the port the NetworkPolicies open: the URL must use it
    workers: list[WorkerConfig] = field(default_factory=list)  # other teams' workers: a policy (and role) each
    kafka_ca_entry: str | None = None  # SASL_SSL: the brokers' CA, which every Kafka client (workers too) reads
    # entries managed outside this program that a consumer also reads (e.g. Hasura's Redis URLs)
    extra_reads: dict[str, list[str]] = field(default_factory=dict)
    # consumer (policy and role name) -> its Kubernetes service account; each workload's account is its name
    service_accounts: dict[str, str] = field(default_factory=lambda: {
        **{consumer: consumer for consumer in CONSUMER_ENTRIES},
        EXTERNAL_SECRETS_ROLE: "cloudflare-tunnel-secretstore"})


class VaultAccess(pulumi.ComponentResource):
    """KV entries, policies and Kubernetes auth roles for every consumer of a secret."""

    def __init__(self, name: str, args: VaultAccessArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("graphql:index:VaultAccess", name, None, opts)
        mount = args.vault.kv_mount

        # generated here so no person ever sees them; rotated by replacing the RandomPassword
        self.hasura_admin_secret = random.RandomPassword(
            "hasura-admin-secret", length=48, special=False, opts=child(self)).result
        self.action_secret = random.RandomPassword(
            "async-action-secret", length=48, special=False, opts=child(self)).result

        values: dict[str, tuple[pulumi.Input[str], str]] = {
            DATABASE_URL: (pulumi.Output.from_input(args.database_url).apply(
                lambda url: checked_url(url, args.database_port)), "value"),
            DATABASE_ROLE_ADMIN_URL: (pulumi.Output.from_input(args.database_role_admin_url).apply(
                lambda url: checked_url(url, args.database_port, "databaseRoleAdminUrl")), "value"),
            HASURA_ADMIN_SECRET: (self.hasura_admin_secret, "value"),
            ACTION_SECRET: (self.action_secret, "value"),
            TUNNEL_TOKEN: (args.tunnel_token, args.vault.tunnel_token_key),
        }
        # one database role per service: its URL for it alone, only the verifier for the bootstrap that creates it
        verifiers: dict[str, pulumi.Output[str]] = {}
        for service, role in sorted(ROLE_OF.items()):
            password = random.RandomPassword(f"{service}-database-password", length=48, special=False,
                                             opts=child(self)).result
            url = pulumi.Output.all(args.database_url, password).apply(
                lambda v, r=role: service_url(v[0], r, v[1], expect_port=args.database_port))
            values[database_entry(service)] = (url, "value")
            verifiers[role] = password.apply(scram_verifier)
        verifiers_json = pulumi.Output.all(**verifiers).apply(lambda v: json.dumps(dict(sorted(v.items()))))
        values[DATABASE_ROLE_VERIFIERS] = (verifiers_json, "value")
        # changes when a service's password is replaced, so the bootstrap Job re-runs and sets the new verifier;
        # 8 hex of a hash of the verifiers (themselves salted hashes) tells nothing about a password
        self.database_roles_version = pulumi.Output.unsecret(
            verifiers_json.apply(lambda j: hashlib.sha256(j.encode()).hexdigest()[:8]))
        for service, credential in sorted(args.kafka_credentials.items()):
            values[kafka_entry(service, "username")] = (credential.username, "value")
            values[kafka_entry(service, "password")] = (credential.password, "value")

        refuse_program_entries(values, args.extra_reads, args.kafka_ca_entry)
        self.entries: dict[str, vault.kv.SecretV2] = {}
        for entry, (value, key) in values.items():
            data_json = pulumi.Output.from_input(value).apply(lambda v, k=key: json.dumps({k: v}))
            # delete_all_versions: a destroy removes the entry and its history, not only the latest version
            self.entries[entry] = vault.kv.SecretV2(entry, mount=mount, name=entry, delete_all_versions=True,
                                                    data_json=pulumi.Output.secret(data_json), opts=child(self))

        self.policies: dict[str, vault.Policy] = {}
        self.roles: dict[str, vault.kubernetes.AuthBackendRole] = {}
        for consumer, grants in policy_grants(mount, args.extra_reads).items():
            self.policies[consumer] = vault.Policy(consumer, name=consumer, policy=policy_hcl(grants),
                                                   opts=child(self))
            self.roles[consumer] = vault.kubernetes.AuthBackendRole(
                consumer, backend=args.vault.kubernetes_auth_path, role_name=consumer,
                bound_service_account_names=[args.service_accounts[consumer]],
                bound_service_account_namespaces=[args.namespace],
                # a token minted for another audience (the API server's own, another app's) is refused
                audience=VAULT_AUDIENCE,
                token_policies=[self.policies[consumer].name], token_ttl=3600, token_max_ttl=14400,
                opts=child(self))

        for worker in args.workers:  # its own Kafka credentials, nothing else; its role only where it runs
            consumer = f"graphql-async-worker-{worker.name}"
            entries = [kafka_entry(f"worker-{worker.name}", f) for f in ("username", "password")]
            grants = [(data_path(mount, e), ["read"]) for e in (*entries, *filter(None, [args.kafka_ca_entry]))]
            self.policies[consumer] = vault.Policy(consumer, name=consumer, policy=policy_hcl(grants),
                                                   opts=child(self))
            if worker.service_account:
                self.roles[consumer] = vault.kubernetes.AuthBackendRole(
                    consumer, backend=args.vault.kubernetes_auth_path, role_name=consumer,
                    bound_service_account_names=[worker.service_account],
                    bound_service_account_namespaces=[worker.kubernetes_namespace], audience=VAULT_AUDIENCE,
                    token_policies=[self.policies[consumer].name], token_ttl=3600, token_max_ttl=14400,
                    opts=child(self))

        self.paths = {entry: data_path(mount, entry) for entry in sorted(values)}
        self.register_outputs({"paths": self.paths, "roles": sorted(self.roles)})
