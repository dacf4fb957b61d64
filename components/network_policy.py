"""The namespace's network: nothing in or out by default, then exactly the flows of the architecture drawing.

    cloudflared -> Hasura -> publisher          every workload -> DNS
    Hasura, publisher, writer, cleanup, bootstrap, db-roles -> database and Vault (their agent sidecar)
    publisher, writer -> Kafka                  bootstrap -> Hasura (metadata)
    cloudflared -> Cloudflare's edge (internet: never the cluster's own or special-purpose ranges)

One policy per workload holds both directions of its flows; the default deny covers any pod the table
forgets. Dependencies outside the namespace are peers the stack configures (components/config.py,
NetworkConfig), because cluster and data-centre addresses differ per stack.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

import pulumi
import pulumi_kubernetes as k8s

from components.async_flow import BOOTSTRAP, CLEANUP, DB_ROLES, PUBLISHER, PUBLISHER_PORT, WRITER
from components.config import NetworkConfig, PeerConfig
from components.hasura import PORT as HASURA_PORT
from components.k8s import child, labels, selector
from components.public_ingress import CLOUDFLARED

HASURA = "hasura"
# dependencies outside the namespace, by the name the flow table uses
DNS, VAULT, KAFKA, DATABASE, INTERNET = "dns", "vault", "kafka", "database", "internet"
# cloudflared's edge connections (QUIC over UDP, HTTP/2 over TCP); updates are off (--no-autoupdate), so no 443
TUNNEL_PORTS = (("UDP", 7844), ("TCP", 7844))
# never Cloudflare's edge, yet reachable from a pod: this host, CGNAT (some clusters' pods), loopback, cloud metadata
SPECIAL_PURPOSE_CIDRS = ("0.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16")

# (source workload, target): the drawing's arrows
FLOWS: tuple[tuple[str, str], ...] = (
    (CLOUDFLARED, INTERNET), (CLOUDFLARED, HASURA),
    (HASURA, PUBLISHER), (HASURA, DATABASE), (HASURA, VAULT),
    (PUBLISHER, DATABASE), (PUBLISHER, KAFKA), (PUBLISHER, VAULT),
    (WRITER, DATABASE), (WRITER, KAFKA), (WRITER, VAULT),
    (CLEANUP, DATABASE), (CLEANUP, VAULT),
    (BOOTSTRAP, DATABASE), (BOOTSTRAP, VAULT), (BOOTSTRAP, HASURA),
    (DB_ROLES, DATABASE), (DB_ROLES, VAULT),
)
WORKLOADS = (CLOUDFLARED, HASURA, PUBLISHER, WRITER, CLEANUP, BOOTSTRAP, DB_ROLES)
SERVING_PORTS = {HASURA: HASURA_PORT, PUBLISHER: PUBLISHER_PORT}  # workloads others connect to


def url_port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


@dataclass
class NetworkPoliciesArgs:
    namespace: str
    network: NetworkConfig
    vault_address: str  # its port is the agents' egress port
    kafka_servers: list[str]  # host:port; their ports are the services' egress ports

    def external_ports(self) -> dict[str, list[tuple[str, int]]]:
        return {
            DNS: [("UDP", 53), ("TCP", 53)],
            VAULT: [("TCP", url_port(self.vault_address))],
            KAFKA: [("TCP", p) for p in sorted({int(s.rsplit(":", 1)[1]) for s in self.kafka_servers})],
            DATABASE: [("TCP", self.network.database_port)],
            INTERNET: list(TUNNEL_PORTS),
        }

    def external_peer(self, target: str) -> list[dict]:
        if target == INTERNET:
            return [{"ipBlock": {"cidr": "0.0.0.0/0", "except": internet_except(self.network.cluster_cidrs)}}]
        return peer(getattr(self.network, target))


def internet_except(cluster_cidrs: list[str]) -> list[str]:
    """The cluster's own ranges, then the special-purpose ones, each once."""
    return list(dict.fromkeys(str(ipaddress.ip_network(c)) for c in (*cluster_cidrs, *SPECIAL_PURPOSE_CIDRS)))


def peer(config: PeerConfig) -> list[dict]:
    if config.cidrs:
        return [{"ipBlock": {"cidr": cidr}} for cidr in config.cidrs]
    found: dict = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": config.namespace}}}
    if config.pod_labels:
        found["podSelector"] = {"matchLabels": dict(config.pod_labels)}
    return [found]


def ports(pairs: list[tuple[str, int]]) -> list[dict]:
    return [{"protocol": protocol, "port": port} for protocol, port in pairs]


def workload_policy(args: NetworkPoliciesArgs, workload: str) -> dict:
    """The spec of one workload's policy: who may connect to it, and where it may connect (DNS always)."""
    external = args.external_ports()
    ingress = [{"from": [{"podSelector": {"matchLabels": selector(source)}}],
                "ports": ports([("TCP", SERVING_PORTS[workload])])}
               for source, target in FLOWS if target == workload]
    egress = [{"to": peer(args.network.dns), "ports": ports(external[DNS])}]
    for source, target in FLOWS:
        if source != workload:
            continue
        if target in SERVING_PORTS:
            egress.append({"to": [{"podSelector": {"matchLabels": selector(target)}}],
                           "ports": ports([("TCP", SERVING_PORTS[target])])})
        else:
            egress.append({"to": args.external_peer(target), "ports": ports(external[target])})
    if workload == HASURA:  # the stack's additions for Hasura's own integrations (Redis, JWK URL)
        egress += [{"to": peer(extra), "ports": ports([("TCP", p) for p in extra.ports])}
                   for extra in args.network.hasura_extra_egress]
    return {"podSelector": {"matchLabels": selector(workload)}, "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress, "egress": egress}


class NetworkPolicies(pulumi.ComponentResource):
    def __init__(self, name: str, args: NetworkPoliciesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("graphql:index:NetworkPolicies", name, None, opts)
        ns = args.namespace
        self.default_deny = k8s.networking.v1.NetworkPolicy(
            "default-deny", metadata={"name": "default-deny", "namespace": ns,
                                      "labels": labels("default-deny", "network")},
            spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, opts=child(self))
        self.policies = {
            workload: k8s.networking.v1.NetworkPolicy(
                f"{workload}-flows", metadata={"name": f"{workload}-flows", "namespace": ns,
                                               "labels": labels(workload, "network")},
                spec=workload_policy(args, workload), opts=child(self))
            for workload in WORKLOADS}
        self.register_outputs({"policies": sorted(self.policies)})
