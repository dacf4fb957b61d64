"""OpenBao's `kubernetes` auth method pointed at the rehearsal's API server, as a cluster admin sets it up.

A reviewer service account bound to `system:auth-delegator` (TokenReview), its token from the TokenRequest API,
the API server's CA: OpenBao then accepts a workload's service-account token for the role bound to that
account (and refuses any other). Upstream: openbao's builtin/credential/kubernetes (path_config.go:
kubernetes_host, kubernetes_ca_cert, token_reviewer_jwt; path_login.go: bound_service_account_* and audience).
"""

from __future__ import annotations

import httpx

from components.k8s import VAULT_AUDIENCE
from scripts.control_plane import ControlPlane, Kube

REVIEWER_NAMESPACE = "kube-system"
REVIEWER = "openbao-token-reviewer"


def configure(plane: ControlPlane, bao_address: str, bao_token: str, mount: str = "kubernetes") -> None:
    """Enable (if needed) and configure `auth/<mount>` to review tokens with this API server."""
    kube = plane.kube
    kube.apply({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": REVIEWER, "namespace": REVIEWER_NAMESPACE}})
    kube.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": f"{REVIEWER}-auth-delegator"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "system:auth-delegator"},
                "subjects": [{"kind": "ServiceAccount", "name": REVIEWER, "namespace": REVIEWER_NAMESPACE}]})
    reviewer_jwt = kube.service_account_token(REVIEWER_NAMESPACE, REVIEWER, seconds=4 * 3600)
    headers = {"X-Vault-Token": bao_token}
    mounts = httpx.get(f"{bao_address}/v1/sys/auth", headers=headers).json()["data"]
    if f"{mount}/" not in mounts:
        httpx.post(f"{bao_address}/v1/sys/auth/{mount}", json={"type": "kubernetes"},
                   headers=headers).raise_for_status()
    httpx.post(f"{bao_address}/v1/auth/{mount}/config", headers=headers,
               json={"kubernetes_host": plane.server, "kubernetes_ca_cert": plane.ca.read_text(),
                     "token_reviewer_jwt": reviewer_jwt, "disable_local_ca_jwt": True}).raise_for_status()


class LoginRefused(RuntimeError):
    pass


def login(bao_address: str, role: str, jwt: str, mount: str = "kubernetes") -> list[str]:
    """Log in with a service-account token; returns the token's policies, or LoginRefused with OpenBao's reason.
    The client token itself is revoked at once: the check needs its policies, never the token."""
    answer = httpx.post(f"{bao_address}/v1/auth/{mount}/login", json={"role": role, "jwt": jwt})
    if answer.status_code != 200:
        raise LoginRefused(f"{answer.status_code} {'; '.join(answer.json().get('errors', [answer.text]))}")
    auth = answer.json()["auth"]
    httpx.post(f"{bao_address}/v1/auth/token/revoke-self", headers={"X-Vault-Token": auth["client_token"]})
    return sorted(auth["token_policies"])


def workload_token(kube: Kube, namespace: str, account: str, audience: str | None = VAULT_AUDIENCE) -> str:
    """What the injected Vault agent logs in with: the pod's projected token for Vault's audience (the program's
    `vault-token` volume, vault-k8s agent-inject/agent/agent.go serviceaccount(); ESO's token request names the
    same audience). `audience=None` is the API server's own token, which every role must refuse."""
    return kube.service_account_token(namespace, account, audience=audience)


def check_logins(kube: Kube, bao_address: str, namespace: str, pairs: dict[str, str],
                 mount: str = "kubernetes") -> list[str]:
    """role -> service account. Each account's token logs in to its own role and gets exactly that role's policy
    (plus `default`); every other account's token is refused for it. Returns report lines; raises AssertionError
    listing every deviation."""
    tokens = {account: workload_token(kube, namespace, account) for account in set(pairs.values())}
    lines, failures = [], []
    for role, account in sorted(pairs.items()):
        try:
            policies = login(bao_address, role, tokens[account], mount)
            if policies != sorted({"default", role}):
                failures.append(f"{account} -> {role}: policies {policies}, want default + {role}")
        except LoginRefused as refused:
            policies = []
            failures.append(f"{account} refused for its own role {role}: {refused}")
        try:  # the kubelet's default token (the API server's audience) must not open Vault
            login(bao_address, role, workload_token(kube, namespace, account, audience=None), mount)
            failures.append(f"{account}'s API-server-audience token was ACCEPTED for role {role}")
        except LoginRefused:
            pass
        refused_others = 0
        for other, token in sorted(tokens.items()):
            if other == account:
                continue
            try:
                login(bao_address, role, token, mount)
                failures.append(f"{other}'s token was ACCEPTED for role {role} (bound to {account})")
            except LoginRefused:
                refused_others += 1
        lines.append(f"{role}: {account} -> {policies}; {refused_others} other accounts refused")
    if failures:
        raise AssertionError("Kubernetes auth logins:\n  " + "\n  ".join(failures))
    return lines
