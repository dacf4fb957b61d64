"""A NetworkPolicy evaluator (networking.k8s.io/v1 semantics, as kubernetes.io/docs/concepts/services-networking/
network-policies describes them): may a connection from one endpoint to another, on one port, pass? Enough of
the API for the policies this program renders; anything else (matchExpressions, named ports) fails loudly."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Endpoint:
    name: str
    ip: str
    namespace: str | None = None  # None: outside the cluster
    labels: dict[str, str] = field(default_factory=dict)  # pod labels

    @property
    def namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace} if self.namespace else {}


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"unsupported selector {selector}"
    return selector.get("matchLabels", {}).items() <= labels.items()


def _peer_matches(peer: dict, other: Endpoint, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        address = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(e) for e in block.get("except", []))
    if other.namespace is None:  # pod and namespace selectors only ever select pods
        return False
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], other.namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return "podSelector" not in peer or _selects(peer["podSelector"], other.labels)


def _port_matches(ports: list[dict] | None, protocol: str, port: int) -> bool:
    if not ports:
        return True
    for p in ports:
        assert isinstance(p.get("port", 0), int), f"named port {p}"
        if p.get("protocol", "TCP") == protocol and ("port" not in p or p["port"] == port):
            return True
    return False


def _side_allows(policies: list[dict], pod: Endpoint, other: Endpoint, direction: str, protocol: str,
                 port: int) -> bool:
    """Isolated on this side (some policy selects the pod for the direction): one rule must allow it."""
    kind, rules_key, peers_key = ("Egress", "egress", "to") if direction == "egress" else ("Ingress", "ingress", "from")
    selecting = [p for p in policies if p["metadata"]["namespace"] == pod.namespace
                 and _selects(p["spec"]["podSelector"], pod.labels) and kind in p["spec"].get("policyTypes", [])]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(rules_key, []) or []:
            peers = rule.get(peers_key)
            if (not peers or any(_peer_matches(peer, other, policy["metadata"]["namespace"]) for peer in peers)) \
                    and _port_matches(rule.get("ports"), protocol, port):
                return True
    return False


def allowed(policies: list[dict], source: Endpoint, target: Endpoint, protocol: str, port: int) -> bool:
    """Egress at the source (if it is a pod) and ingress at the target (if it is a pod) both allow it."""
    out = source.namespace is None or _side_allows(policies, source, target, "egress", protocol, port)
    into = target.namespace is None or _side_allows(policies, target, source, "ingress", protocol, port)
    return out and into
