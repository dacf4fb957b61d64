"""Prometheus Operator objects for the async flow: a PodMonitor per scraped workload, the PrometheusRule of
config/prometheus/rules.yaml, and per scraped workload the NetworkPolicy that lets the cluster's Prometheus
reach that workload's metrics ports.

PodMonitors rather than ServiceMonitors: the publisher's Service carries only the action port Hasura calls,
and the writer's is the StatefulSet's headless Service; a PodMonitor scrapes each pod's named metrics port
without putting it on a Service.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.config import MetricsConfig
from components.k8s import child, labels

RULES_FILE = Path(__file__).resolve().parent.parent / "config" / "prometheus" / "rules.yaml"
RUNBOOK = "docs/runbook.md"
CLEANUP_ALERT = "AsyncCleanupNotRun"
CLEANUP_APP = "graphql-async-cleanup"  # the CronJob's pods' app.kubernetes.io/name (components/async_flow.py)
MONITORING_API = "monitoring.coreos.com/v1"


@dataclass(frozen=True)
class ScrapeTarget:
    app: str  # the workload's app.kubernetes.io/name: also the scrape job's name (jobLabel)
    ports: tuple[tuple[str, int], ...]  # (name, number) of each container port serving /metrics (one per process)


def alert_rules(config: MetricsConfig, rules_file: Path = RULES_FILE) -> dict:
    """The PrometheusRule spec: the rule file as promtool tested it, runbook links made absolute when a base is
    configured, and the cleanup alert left out when no Pushgateway receives the cleanup's figures."""
    spec = yaml.safe_load(rules_file.read_text())
    for group in spec["groups"]:
        if config.pushgateway_url is None:
            group["rules"] = [r for r in group["rules"] if r.get("alert") != CLEANUP_ALERT]
        for rule in group["rules"]:
            link = rule.get("annotations", {}).get("runbook_url")
            if link and config.runbook_base_url:
                rule["annotations"]["runbook_url"] = f"{config.runbook_base_url.rstrip('/')}/{link}"
    return spec


@dataclass
class FlowMonitoringArgs:
    namespace: str
    config: MetricsConfig
    targets: list[ScrapeTarget]


def declare_monitoring(parent: pulumi.Resource, args: FlowMonitoringArgs) -> list[pulumi.Resource]:
    """The monitoring objects the switches ask for, children of the workloads' component (AsyncFlow)."""
    ns, cfg = args.namespace, args.config

    def metadata(name: str) -> dict:
        return {"name": name, "namespace": ns, "labels": labels(name, "async") | cfg.selector_labels}

    declared: list[pulumi.Resource] = []
    if cfg.pod_monitor:
        for target in args.targets:
            short = target.app.removeprefix("graphql-async-")
            pod_selector = {"matchLabels": {"app.kubernetes.io/name": target.app}}
            declared.append(k8s.apiextensions.CustomResource(
                f"{short}-podmonitor", api_version=MONITORING_API, kind="PodMonitor", metadata=metadata(target.app),
                spec={"jobLabel": "app.kubernetes.io/name", "selector": pod_selector,
                      "namespaceSelector": {"matchNames": [ns]},
                      "podMetricsEndpoints": [{"port": name, "path": "/metrics", "interval": cfg.scrape_interval}
                                              for name, _ in target.ports]},
                opts=child(parent)))
            # NetworkPolicies add up: one per target, so a pod is opened on its own metrics ports only
            declared.append(k8s.networking.v1.NetworkPolicy(
                f"{short}-metrics-from-prometheus", metadata=metadata(f"{target.app}-metrics-from-prometheus"),
                spec={"podSelector": pod_selector, "policyTypes": ["Ingress"],
                      "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {
                          "kubernetes.io/metadata.name": cfg.prometheus_namespace}}}],
                          "ports": [{"protocol": "TCP", "port": p} for p in sorted({p for _, p in target.ports})]}]},
                opts=child(parent)))
    if cfg.pushgateway_url:
        # the namespace denies all egress by default: the cleanup's push needs its own way out, to the Pushgateway
        # in Prometheus's namespace on the URL's port, nothing else
        parts = urlsplit(cfg.pushgateway_url)
        declared.append(k8s.networking.v1.NetworkPolicy(
            "cleanup-to-pushgateway", metadata=metadata("graphql-async-cleanup-to-pushgateway"),
            spec={"podSelector": {"matchLabels": {"app.kubernetes.io/name": CLEANUP_APP}}, "policyTypes": ["Egress"],
                  "egress": [{"to": [{"namespaceSelector": {"matchLabels": {
                      "kubernetes.io/metadata.name": cfg.prometheus_namespace}}}],
                      "ports": [{"protocol": "TCP",
                                 "port": parts.port or (443 if parts.scheme == "https" else 80)}]}]},
            opts=child(parent)))
    if cfg.prometheus_rule:
        declared.append(k8s.apiextensions.CustomResource(
            "alert-rules", api_version=MONITORING_API, kind="PrometheusRule",
            metadata=metadata("graphql-async-flow"), spec=alert_rules(cfg), opts=child(parent)))
    return declared
