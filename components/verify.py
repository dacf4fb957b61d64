"""DeploymentVerification: after an `up`, ask the public endpoint whether it answers as promised.

One `pulumi_command.local.Command` runs `python -m scripts.verify_deployment` on the machine running the
`up` (HTTP, both WebSocket subprotocols, 404 elsewhere, not cached, optionally one async round trip); a
failure fails the `up`. It runs again whenever what it verifies changes: the image digests, the Hasura
env file, or the tunnel's ingress rules.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pulumi
import pulumi_command as command

from components.k8s import child


@dataclass
class DeploymentVerificationArgs:
    graphql_url: str
    image_digests: dict[str, pulumi.Input[str]]
    hasura_env_file: str
    tunnel_rules: pulumi.Input[object]
    round_trip_seconds: int
    service_token: pulumi.Input[str] | None = None  # role `service`; enables the round trip


class DeploymentVerification(pulumi.ComponentResource):
    def __init__(self, name: str, args: DeploymentVerificationArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("graphql:index:DeploymentVerification", name, None, opts)
        run = (f"python3 -m scripts.verify_deployment --url {args.graphql_url} "
               f"--round-trip-seconds {args.round_trip_seconds}")
        environment = {}
        if args.service_token is not None:
            run += " --token-env VERIFY_SERVICE_TOKEN"
            environment["VERIFY_SERVICE_TOKEN"] = pulumi.Output.secret(args.service_token)
        self.command = command.local.Command(
            "verify-deployment", create=run, environment=environment or None,
            triggers=[*(args.image_digests[t] for t in sorted(args.image_digests)),
                      hashlib.sha256(args.hasura_env_file.encode()).hexdigest(), args.tunnel_rules],
            opts=child(self))
        self.register_outputs({"report": self.command.stdout})
