"""The Prometheus Operator objects of the stack (components/monitoring.py) under Pulumi mocks, with
asyncFlow.metrics switched on: PodMonitors that match the pods' named metrics ports, the PrometheusRule that
is config/prometheus/rules.yaml, the scrape NetworkPolicy; all strictly valid against the real CRDs."""

from __future__ import annotations

import copy
from urllib.parse import urlsplit

import pytest
import yaml

from components.async_flow import CLEANUP, PUBLISHER, WRITER
from scripts.local_prometheus import RULES
from scripts.pulumi_harness import load_stack_file, run_stack
from tests.support.k8s_schemas import validate
from tests.support.netpol import Endpoint, allowed

P = "graphql-entrypoint:"
PUSHGATEWAY = "http://prometheus-pushgateway.monitoring.svc.cluster.local:9091"
RUNBOOKS = "https://git.example.com/platform/graphql-entrypoint/-/blob/main"


def with_metrics(stack: str = "prod", **metrics):
    flow = {**load_stack_file(stack).get(P + "asyncFlow", {}), "metrics": {
        "podMonitor": True, "prometheusRule": True, "selectorLabels": {"release": "kube-prometheus-stack"},
        "pushgatewayUrl": PUSHGATEWAY, "runbookBaseUrl": RUNBOOKS, **metrics}}
    return run_stack(stack, {P + "asyncFlow": flow})


@pytest.fixture(scope="module")
def run():
    return with_metrics()


def objects(run, kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in run.kubernetes_objects() if o["kind"] == kind}


def pod_template(run, kind: str, name: str) -> dict:
    spec = objects(run, kind)[name]["spec"]
    return spec["jobTemplate"]["spec"]["template"] if kind == "CronJob" else spec["template"]


def test_pod_monitors_scrape_the_named_metrics_port_of_each_service(run):
    monitors = objects(run, "PodMonitor")
    assert set(monitors) == {PUBLISHER, WRITER}
    for name, kind in ((PUBLISHER, "Deployment"), (WRITER, "StatefulSet")):
        monitor, template = monitors[name], pod_template(run, kind, name)
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"  # job = the app name the rules use
        [endpoint] = monitor["spec"]["podMetricsEndpoints"]
        ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    publisher = pod_template(run, "Deployment", PUBLISHER)["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in publisher["env"]}["METRICS_PORT"] == "9102"
    rules = yaml.safe_load(RULES.read_text())
    jobs = {"graphql-async-request-publisher", "graphql-async-response-writer"}
    assert all(job in RULES.read_text() for job in jobs) and rules  # the rules' `up{job=...}` names these apps


def test_the_prometheus_rule_is_the_promtool_tested_file(run):
    [rule] = objects(run, "PrometheusRule").values()
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    expected = copy.deepcopy(yaml.safe_load(RULES.read_text()))
    for group in expected["groups"]:
        for r in group["rules"]:
            if "annotations" in r:
                r["annotations"]["runbook_url"] = f"{RUNBOOKS}/{r['annotations']['runbook_url']}"
    assert rule["spec"] == expected


def test_without_a_pushgateway_the_cleanup_alert_is_left_out_and_the_cronjob_pushes_nothing():
    run = with_metrics(pushgatewayUrl=None, runbookBaseUrl=None)
    [rule] = objects(run, "PrometheusRule").values()
    deployed = {r.get("alert") for g in rule["spec"]["groups"] for r in g["rules"]}
    in_file = {r.get("alert") for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert in_file - deployed == {"AsyncCleanupNotRun"}
    assert all(r["annotations"]["runbook_url"].startswith("docs/runbook.md#")
               for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r)
    cleanup = pod_template(run, "CronJob", CLEANUP)["spec"]["containers"][0]
    assert "CLEANUP_PUSHGATEWAY_URL" not in {e["name"] for e in cleanup["env"]}


def test_the_cleanup_pushes_to_the_configured_pushgateway(run):
    cleanup = pod_template(run, "CronJob", CLEANUP)["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in cleanup["env"]}["CLEANUP_PUSHGATEWAY_URL"] == PUSHGATEWAY


def test_the_cleanup_may_reach_the_pushgateway_and_nothing_else_is_opened(run):
    # the namespace's default deny would drop the push: one egress policy, cleanup only, to Prometheus's namespace
    policy = objects(run, "NetworkPolicy")["graphql-async-cleanup-to-pushgateway"]["spec"]
    assert policy["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": CLEANUP}}
    assert policy["policyTypes"] == ["Egress"] and "ingress" not in policy
    [rule] = policy["egress"]
    assert rule["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": urlsplit(PUSHGATEWAY).port or 80}]
    assert "graphql-async-cleanup-to-pushgateway" not in objects(with_metrics(pushgatewayUrl=None), "NetworkPolicy")


def test_each_workload_opens_only_its_own_metrics_ports_and_only_to_prometheus(run):
    policies = list(objects(run, "NetworkPolicy").values())
    ns = load_stack_file("prod")[P + "namespace"]
    prometheus = Endpoint("prometheus", "10.244.7.7", "monitoring", {"app.kubernetes.io/name": "prometheus"})
    stranger = Endpoint("stranger", "10.244.7.8", "default", {"app.kubernetes.io/name": "prometheus"})
    metrics_ports = {}
    for name, kind in ((PUBLISHER, "Deployment"), (WRITER, "StatefulSet")):
        template = pod_template(run, kind, name)
        numbers = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        scraped = objects(run, "PodMonitor")[name]["spec"]["podMetricsEndpoints"]
        metrics_ports[name] = (Endpoint(name, "10.244.1.1", ns, template["metadata"]["labels"]),
                               {numbers[e["port"]] for e in scraped})
    assert metrics_ports[PUBLISHER][1].isdisjoint(metrics_ports[WRITER][1])  # else the next check proves nothing
    probed = {8080} | metrics_ports[PUBLISHER][1] | metrics_ports[WRITER][1]  # 8080: the action port stays Hasura's
    for name, (pod, own) in metrics_ports.items():
        opened = {port for port in probed if allowed(policies, prometheus, pod, "TCP", port)}
        assert opened == own, name  # the writer is not opened on the publisher's metrics ports, nor the reverse
        assert not any(allowed(policies, stranger, pod, "TCP", port) for port in own)
        assert f"{name}-metrics-from-prometheus" in objects(run, "NetworkPolicy")


def test_every_object_is_valid_against_the_real_crds_and_kubernetes(run):
    kinds = set()
    for obj in run.kubernetes_objects():
        validate(obj, "1.33.0")
        kinds.add(obj["kind"])
    assert {"PodMonitor", "PrometheusRule"} <= kinds


def test_the_crd_validation_has_teeth(run):
    monitor = copy.deepcopy(objects(run, "PodMonitor")[WRITER])
    monitor["spec"]["podMetricsEndpoint"] = monitor["spec"].pop("podMetricsEndpoints")
    with pytest.raises(Exception, match="podMetricsEndpoint"):
        validate(monitor, "1.33.0")
    rule = copy.deepcopy(next(iter(objects(run, "PrometheusRule").values())))
    rule["spec"]["groups"][1]["rules"][0]["for"] = 10  # a duration is a string like "10m"
    with pytest.raises(Exception, match="10"):
        validate(rule, "1.33.0")


def test_switched_off_by_default_nothing_is_declared():
    run = run_stack("dev")
    assert not [o for o in run.kubernetes_objects() if o["apiVersion"].startswith("monitoring.coreos.com/")]
    assert not [name for name in objects(run, "NetworkPolicy") if name.endswith("-metrics-from-prometheus")]


def test_a_malformed_scrape_interval_names_the_key():
    with pytest.raises(Exception, match=r"asyncFlow\.metrics\.scrapeInterval"):
        with_metrics(scrapeInterval="often")
