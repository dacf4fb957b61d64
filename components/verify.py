"""DeploymentVerification: after an `up`, ask the public endpoint whether it answers as promised.

One `pulumi_command.local.Command` runs `scripts/verify_deployment.py` on the machine running the `up`
(HTTP, both WebSocket subprotocols, 404 for admin and other paths, not cached, optionally one async round
trip); a failure fails the `up`. It runs again whenever what it verifies changes: the image digests, Hasura's
settings (env file and pinned env), or the tunnel's ingress rules.

The interpreter is the project's virtual environment, the one Pulumi.yaml names (`venv/`, made by
`bash scripts/dev.sh venv` or CI's install step): the engine starts the command plugin with the CLI's own
environment (only the program runs inside the virtualenv), and the plugin runs `create` with `/bin/sh -c` in
its working directory, the project root (pulumi-command, provider/pkg/provider/local/commandOutputs.go). A
bare `python3` there is whatever the CLI's PATH finds, without httpx or websockets.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_command as command
import pulumi_vault.kv as vault_kv
import yaml

from components.config import VerifyConfig
from components.k8s import child
from components.vault_access import is_program_entry

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def venv_python(project_root: Path = PROJECT_ROOT) -> str:
    """The interpreter of the virtualenv Pulumi.yaml names, relative to the project root (as the plan keeps it)."""
    project = yaml.safe_load((project_root / "Pulumi.yaml").read_text())
    virtualenv = project["runtime"]["options"]["virtualenv"]
    return f"{virtualenv.rstrip('/')}/bin/python"


def verify_command(graphql_url: str, config: VerifyConfig, token_env: str | None = None) -> str:
    run = [venv_python(), "-m", "scripts.verify_deployment", "--url", graphql_url,
           "--round-trip-seconds", str(config.round_trip_seconds)]
    if token_env:
        run += ["--token-env", token_env]
    return shlex.join(run)


@dataclass
class DeploymentVerificationArgs:
    graphql_url: str
    image_digests: dict[str, pulumi.Input[str]]
    hasura_config: str  # checksum of Hasura's env file and pinned settings
    tunnel_rules: pulumi.Input[object]
    tunnel_connector: dict[str, object]  # cloudflared's image and replicas (TunnelConnector.fingerprint)
    config: VerifyConfig  # round-trip time, and the KV entry of a `service` token that enables the round trip
    kv_mount: str = "secret"


class DeploymentVerification(pulumi.ComponentResource):
    TOKEN_ENV = "VERIFY_SERVICE_TOKEN"

    def __init__(self, name: str, args: DeploymentVerificationArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("graphql:index:DeploymentVerification", name, None, opts)
        environment = {}
        entry = args.config.service_token_entry
        if entry and is_program_entry(entry):  # the token is sent to the public URL: never one of our secrets
            raise ValueError(f"verify.serviceTokenEntry {entry!r} is an entry the program writes itself; name the "
                             "entry holding a token of role `service`")
        if entry:
            token = vault_kv.get_secret_v2_output(mount=args.kv_mount, name=entry).data["value"]
            environment[self.TOKEN_ENV] = pulumi.Output.secret(token)
        run = verify_command(args.graphql_url, args.config, self.TOKEN_ENV if entry else None)
        self.command = command.local.Command(
            "verify-deployment", create=run, environment=environment or None,
            triggers=[*(args.image_digests[t] for t in sorted(args.image_digests)),
                      args.hasura_config, args.tunnel_rules, args.tunnel_connector],
            opts=child(self))
        self.register_outputs({"report": self.command.stdout})
