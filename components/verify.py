"""DeploymentVerification: after an `up`, ask the public endpoint whether it answers as promised.

One `pulumi_command.local.Command` runs `python -m scripts.verify_deployment` on the machine running the
`up` (HTTP, both WebSocket subprotocols, 404 elsewhere, not cached, optionally one async round trip); a
failure fails the `up`. It runs again whenever what it verifies changes: the image digests, Hasura's
settings (env file and pinned env), or the tunnel's ingress rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_command as command
import pulumi_vault.kv as vault_kv

from components.config import VerifyConfig
from components.k8s import child


@dataclass
class DeploymentVerificationArgs:
    graphql_url: str
    image_digests: dict[str, pulumi.Input[str]]
    hasura_config: str  # checksum of Hasura's env file and pinned settings
    tunnel_rules: pulumi.Input[object]
    config: VerifyConfig  # round-trip time, and the KV entry of a `service` token that enables the round trip
    kv_mount: str = "secret"


class DeploymentVerification(pulumi.ComponentResource):
    def __init__(self, name: str, args: DeploymentVerificationArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("graphql:index:DeploymentVerification", name, None, opts)
        run = (f"python3 -m scripts.verify_deployment --url {args.graphql_url} "
               f"--round-trip-seconds {args.config.round_trip_seconds}")
        environment = {}
        entry = args.config.service_token_entry
        if entry:
            token = vault_kv.get_secret_v2_output(mount=args.kv_mount, name=entry).data["value"]
            run += " --token-env VERIFY_SERVICE_TOKEN"
            environment["VERIFY_SERVICE_TOKEN"] = pulumi.Output.secret(token)
        self.command = command.local.Command(
            "verify-deployment", create=run, environment=environment or None,
            triggers=[*(args.image_digests[t] for t in sorted(args.image_digests)),
                      args.hasura_config, args.tunnel_rules],
            opts=child(self))
        self.register_outputs({"report": self.command.stdout})
