"""Run the Pulumi program under `pulumi.runtime.set_mocks` and record every resource it declares.

Stands in for the Pulumi engine and the providers (Kubernetes, Vault, Cloudflare, Kafka, Docker,
random), none of which can run on these machines. Resource inputs are what the real engine would
send to the providers; outputs that only a provider knows (ids, digests, tokens, passwords) are
deterministic placeholders from the mocks below.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
PROJECT = "graphql-entrypoint"
SECRET_SIG = "4dabf18193072939515e22adb298388d"
# stand-in values for the stack's secret config (a real stack sets them with `pulumi config set --secret`)
PLACEHOLDER_SECRETS = {"databaseUrl": "postgresql://hasura:mock-db-password@yugabyte.example:5433/hasura",
                       "databaseRoleAdminUrl": "postgresql://role_admin:mock-admin-password@yugabyte.example:5433/hasura",
                       "kafkaAdminPassword": "mock-kafka-admin-password"}


def mock_secret(name: str) -> str:
    return "mock-" + hashlib.sha256(name.encode()).hexdigest()[:24]


@dataclass
class Recorded:
    type: str
    name: str
    parent: str | None
    inputs: dict[str, Any]  # secrets unwrapped
    secret_paths: list[str]  # dotted paths of inputs that were marked secret
    custom: bool
    dependencies: list[str] = field(default_factory=list)  # URNs of depends_on (and input) dependencies


@dataclass
class StackRun:
    stack: str
    resources: list[Recorded] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    output_secret_paths: list[str] = field(default_factory=list)
    secret_values: set[str] = field(default_factory=set)  # every secret the run produced or was given

    def of_type(self, type_: str) -> list[Recorded]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str) -> Recorded:
        found = [r for r in self.resources if r.type == type_ and r.name == name]
        if len(found) != 1:
            raise KeyError(f"{type_} {name}: found {len(found)}")
        return found[0]

    def kubernetes_objects(self) -> list[dict]:
        """Every Kubernetes manifest the program declares (inputs are whole manifests)."""
        return [r.inputs for r in self.resources if r.type.startswith("kubernetes:") and r.custom]


def unwrap(value: Any, path: str = "", secrets: list[str] | None = None) -> Any:
    """Remove Pulumi's secret wrappers, noting where they were; integral numbers back to int."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
            if secrets is not None:
                secrets.append(path)
            return unwrap(value.get("value"), path, secrets)
        return {k: unwrap(v, f"{path}.{k}" if path else k, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v, f"{path}[{i}]", secrets) for i, v in enumerate(value)]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # the wire format carries every number as a double
    return value


def load_stack_file(stack: str) -> dict[str, Any]:
    path = REPO / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise SystemExit(f"no stack file {path.name}")
    return yaml.safe_load(path.read_text()).get("config", {})


def run_stack(stack: str, config_overrides: dict[str, Any] | None = None, drop_keys: tuple[str, ...] = ()) -> StackRun:
    """Run __main__.py for `stack` (its Pulumi.<stack>.yaml, plus overrides) and return what it declared."""
    import pulumi
    from pulumi.runtime import mocks as pulumi_mocks
    from pulumi.runtime.settings import SETTINGS
    from pulumi.runtime.stack import run_in_stack, run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    run = StackRun(stack)
    # the SDK schedules on the thread's current loop; an earlier asyncio.run() (a test, a tool) leaves none
    asyncio.set_event_loop(asyncio.new_event_loop())

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs):
            outputs = dict(args.inputs)
            if args.typ == "random:index/randomPassword:RandomPassword":
                outputs["result"] = mock_secret(args.name)
                run.secret_values.add(outputs["result"])
            elif args.typ == "docker:index/image:Image":
                digest = hashlib.sha256(args.inputs["imageName"].encode()).hexdigest()
                outputs["repoDigest"] = f"{args.inputs['imageName'].rsplit(':', 1)[0]}@sha256:{digest}"
            elif args.typ == "cloudflare:index/zeroTrustTunnelCloudflared:ZeroTrustTunnelCloudflared":
                return "4d5e6f70-0000-4000-8000-" + hashlib.sha256(args.name.encode()).hexdigest()[:12], outputs
            return f"{args.name}-id", outputs

        def call(self, args: pulumi.runtime.MockCallArgs):
            if args.token == "cloudflare:index/getZeroTrustTunnelCloudflaredToken:getZeroTrustTunnelCloudflaredToken":
                token = mock_secret("tunnel-token")
                run.secret_values.add(token)
                return {"token": token, "accountId": args.args.get("accountId"), "tunnelId": args.args.get("tunnelId")}
            if args.token == "vault:kv/getSecretV2:getSecretV2":  # an entry another team wrote (the brokers' CA)
                return {"mount": args.args.get("mount"), "name": args.args.get("name"),
                        "data": {"value": f"-----BEGIN CERTIFICATE-----\nmock {args.args.get('name')}\n"
                                          "-----END CERTIFICATE-----\n"}}
            return {}

    class Monitor(pulumi_mocks.MockMonitor):
        def RegisterResource(self, request):  # noqa: N802 - the gRPC method's name
            from google.protobuf import json_format

            inputs = json_format.MessageToDict(request.object)
            secrets: list[str] = []
            clean = unwrap(inputs, "", secrets)
            parent = None
            if request.parent:
                qualified_type, parent_name = request.parent.split("::")[-2:]
                parent = f"{qualified_type.split('$')[-1]}::{parent_name}"
            if request.type == "pulumi:pulumi:Stack":
                run.resources[:] = [r for r in run.resources if r.type != request.type]
            run.resources.append(Recorded(request.type, request.name, parent, clean, secrets, request.custom,
                                          list(request.dependencies)))
            return super().RegisterResource(request)

        def RegisterResourceOutputs(self, request):  # noqa: N802
            from google.protobuf import json_format

            if request.urn.split("::")[-2] == "pulumi:pulumi:Stack":
                secrets: list[str] = []
                run.outputs = unwrap(json_format.MessageToDict(request.outputs), "", secrets)
                run.output_secret_paths = secrets
            return super().RegisterResourceOutputs(request)

    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=Monitor(mocks))
    # ciphertext committed by `pulumi config set --secret` (`secure: v1:...`) is unreadable here: the placeholders
    # below stand in for it
    config = {key: value for key, value in load_stack_file(stack).items()
              if not (isinstance(value, dict) and "secure" in value)}
    secrets = dict(PLACEHOLDER_SECRETS)
    if not config.get(f"{PROJECT}:cloudflare", {}).get("enabled", True):
        secrets["localTunnelToken"] = "mock-local-tunnel-token"
    for key, value in secrets.items():
        config.setdefault(f"{PROJECT}:{key}", value)
        run.secret_values.add(value)
    config.update(config_overrides or {})
    for key in drop_keys:
        config.pop(key, None)
    flat = {k: json.dumps(v) if isinstance(v, (dict, list)) else str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in config.items()}
    pulumi.runtime.set_all_config(flat, secret_keys=[f"{PROJECT}:{k}" for k in secrets])
    SETTINGS.rpc_manager.clear()
    SETTINGS.outputs.clear()

    sys.path.insert(0, str(REPO))
    try:
        pulumi.runtime.settings.ROOT.set(None)  # set_mocks made and closed a root stack; the program gets its own
        # as the real language host does: a fresh root stack, the program, then the stack's outputs
        _sync_await(run_pulumi_func(lambda: run_in_stack(
            lambda: runpy.run_path(str(REPO / "__main__.py"), run_name="__main__"))))
    finally:
        sys.path.remove(str(REPO))
    return run
