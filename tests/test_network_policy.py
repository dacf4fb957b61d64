"""The namespace's NetworkPolicies, as rendered in every stack's plan, allow exactly the flows of the
architecture drawing (README, Security): every (source, target, port) pair is evaluated, allowed or not."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import pytest

from scripts.pulumi_harness import load_stack_file
from scripts.scan import all_stacks, manifests, pod_templates
from tests.support.netpol import Endpoint, allowed

P = "graphql-entrypoint:"
CLOUDFLARED, HASURA = "cloudflared", "hasura"
PUBLISHER, WRITER = "graphql-async-request-publisher", "graphql-async-response-writer"
CLEANUP, BOOTSTRAP, DB_ROLES = "graphql-async-cleanup", "graphql-async-bootstrap", "graphql-async-db-roles"
WORKLOADS = (CLOUDFLARED, HASURA, PUBLISHER, WRITER, CLEANUP, BOOTSTRAP, DB_ROLES)


def external(name: str, peer: dict) -> Endpoint:
    """A dependency where the stack file says it is: an address in its first block, or a pod in its namespace."""
    if "cidrs" in peer:
        return Endpoint(name, str(ipaddress.ip_network(peer["cidrs"][0])[-1]))
    return Endpoint(name, "10.244.200.1", peer["namespace"], peer.get("podLabels", {}))


def endpoints(stack: str) -> dict[str, Endpoint]:
    ns = load_stack_file(stack)[P + "namespace"]
    network = load_stack_file(stack)[P + "network"]
    found = {}
    for i, (name, template) in enumerate(pod_templates(manifests(stack))):
        workload = next((job for job in (BOOTSTRAP, DB_ROLES) if name.startswith(job)), name)
        found[workload] = Endpoint(workload, f"10.244.1.{i + 1}", ns, template["metadata"]["labels"])
    assert set(found) == set(WORKLOADS)
    dns = network.get("dns", {"namespace": "kube-system", "podLabels": {"k8s-app": "kube-dns"}})
    found |= {"dns": external("dns", dns), "vault": external("vault", network["vault"]),
              "kafka": external("kafka", network["kafka"]), "database": external("database", network["database"]),
              "internet": Endpoint("internet", "104.16.132.229"),  # a Cloudflare edge address
              "cluster-node": Endpoint("cluster-node", "10.0.0.7"),  # the cluster's own range: not "internet"
              "other-pod": Endpoint("other-pod", "10.244.9.9", "default", {"app": "curious"}),
              "same-namespace-pod": Endpoint("same-namespace-pod", "10.244.9.10", ns, {"app": "debug"})}
    return found


def drawing(stack: str) -> set[tuple[str, str, str, int]]:
    """The flows the architecture allows, with ports from the stack file: (source, target, protocol, port)."""
    config = load_stack_file(stack)
    vault = urlsplit(config[P + "vault"]["address"])
    vault_port = vault.port or (443 if vault.scheme == "https" else 80)
    kafka_ports = {int(s.rsplit(":", 1)[1]) for s in config[P + "kafka"]["bootstrapServers"]}
    db_port = config[P + "network"].get("databasePort", 5432)
    flows = {(CLOUDFLARED, "internet", "UDP", 7844), (CLOUDFLARED, "internet", "TCP", 7844),
             (CLOUDFLARED, HASURA, "TCP", 8080), (HASURA, PUBLISHER, "TCP", 8080), (BOOTSTRAP, HASURA, "TCP", 8080)}
    for workload in WORKLOADS:
        flows |= {(workload, "dns", "UDP", 53), (workload, "dns", "TCP", 53)}
    for workload in (HASURA, PUBLISHER, WRITER, CLEANUP, BOOTSTRAP, DB_ROLES):  # their Vault agent; database role
        flows |= {(workload, "vault", "TCP", vault_port), (workload, "database", "TCP", db_port)}
    for workload in (PUBLISHER, WRITER):
        flows |= {(workload, "kafka", "TCP", port) for port in kafka_ports}
    return flows


def probes(stack: str) -> set[tuple[str, int]]:
    """Every port of the drawing plus a few nobody should open."""
    return {(p, port) for _, _, p, port in drawing(stack)} | {("TCP", 443), ("TCP", 22), ("TCP", 8081),
                                                                ("TCP", 2000), ("UDP", 7844)}


@pytest.mark.parametrize("stack", all_stacks())
def test_network_policies_allow_exactly_the_drawing(stack):
    objects = manifests(stack)
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    points = endpoints(stack)
    sources = [*WORKLOADS, "other-pod", "same-namespace-pod", "internet"]
    ns = load_stack_file(stack)[P + "namespace"]
    ours = {name for name, point in points.items() if point.namespace == ns}  # what our policies govern
    actual = {(s, t, protocol, port) for s in sources for t in points if s != t and {s, t} & ours
              for protocol, port in probes(stack)
              if allowed(policies, points[s], points[t], protocol, port)}
    expected = drawing(stack)
    assert actual - expected == set(), sorted(actual - expected)[:10]
    assert expected - actual == set(), sorted(expected - actual)[:10]


@pytest.mark.parametrize("stack", all_stacks())
def test_the_namespace_denies_by_default(stack):
    """A pod the flow table forgets is isolated both ways."""
    ns = load_stack_file(stack)[P + "namespace"]
    deny = [o for o in manifests(stack) if o["kind"] == "NetworkPolicy" and o["spec"]["podSelector"] == {}]
    assert [d["spec"] for d in deny] == [{"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}]
    assert deny[0]["metadata"]["namespace"] == ns


def test_hasura_reaches_a_stack_listed_extra_destination_and_nothing_more():
    """network.hasuraExtraEgress (Enterprise Redis, a JWK URL) opens exactly that peer and port, for Hasura only."""
    from scripts.pulumi_harness import run_stack

    network = {**load_stack_file("dev")[P + "network"],
               "hasuraExtraEgress": [{"cidrs": ["10.50.0.7/32"], "ports": [6379]}]}
    run = run_stack("dev", {P + "network": network})
    policies = [o for o in run.kubernetes_objects() if o["kind"] == "NetworkPolicy"]
    pods = {name: Endpoint(name, "10.244.1.1", "graphql", t["metadata"]["labels"])
            for name, t in pod_templates(run.kubernetes_objects())}
    redis = Endpoint("redis", "10.50.0.7")
    assert allowed(policies, pods[HASURA], redis, "TCP", 6379)
    assert not allowed(policies, pods[HASURA], redis, "TCP", 6380)
    assert not any(allowed(policies, pods[name], redis, "TCP", 6379) for name in pods if name != HASURA)


def cloudflared_policy(**network) -> list[dict]:
    """cloudflared's policy as the component renders it for dev's network settings (with `network` changes)."""
    from components.config import NetworkConfig
    from components.network_policy import NetworkPoliciesArgs, workload_policy

    config = NetworkConfig.model_validate({**load_stack_file("dev")[P + "network"], **network})
    args = NetworkPoliciesArgs("graphql", config, "https://vault.example.test:8200", ["kafka.example.test:9093"])
    return [{"metadata": {"namespace": "graphql"}, "spec": workload_policy(args, CLOUDFLARED)}]


def test_cloudflared_reaches_cloudflares_edge_but_no_special_purpose_address():
    policies = cloudflared_policy()
    cloudflared = Endpoint(CLOUDFLARED, "10.244.1.1", "graphql", {"app.kubernetes.io/name": CLOUDFLARED})
    assert all(allowed(policies, cloudflared, Endpoint("edge", "198.41.192.7"), protocol, 7844)
               for protocol in ("TCP", "UDP"))
    for address in ("169.254.169.254", "100.64.1.1", "127.0.0.1", "0.0.0.1"):  # metadata, CGNAT, loopback, 0/8
        for protocol, port in (("TCP", 443), ("TCP", 7844), ("UDP", 7844)):
            assert not allowed(policies, cloudflared, Endpoint("special", address), protocol, port), address


def test_cluster_cidrs_are_excluded_alongside_the_special_ranges_each_once():
    [rule] = [r for r in cloudflared_policy(clusterCidrs=["10.96.0.0/12", "169.254.0.0/16", "10.96.0.0/12"])[0]
              ["spec"]["egress"] if r["to"][0].get("ipBlock", {}).get("cidr") == "0.0.0.0/0"]
    assert rule["to"][0]["ipBlock"]["except"] == ["10.96.0.0/12", "169.254.0.0/16", "0.0.0.0/8", "100.64.0.0/10",
                                                  "127.0.0.0/8"]


def test_an_ipv6_cluster_range_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="fd00::/8 is IPv6: cloudflared's internet egress is IPv4 only"):
        cloudflared_policy(clusterCidrs=["10.0.0.0/8", "fd00::/8"])
