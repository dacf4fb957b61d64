"""The alert rules (config/prometheus/rules.yaml) checked by the real promtool (Debian's prometheus 2.42):
valid, every alert unit-tested firing and silent, every name a metric the services export, every alert with
a summary and a runbook section that exists."""

from __future__ import annotations

import re
import shutil

import pytest
import yaml

from app.metrics import CleanupMetrics, PublisherMetrics, WriterMetrics
from scripts.local_prometheus import RULE_TESTS, RULES, promtool
from scripts.servers import REPO

RUNBOOK = REPO / "docs" / "runbook.md"


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def alerts() -> list[dict]:
    return [rule for rule in rules() if "alert" in rule]


def test_promtool_checks_the_rules():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_silent_unit_test():
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for alert in alerts():
        name = alert["alert"]
        assert any(c["alertname"] == name and c.get("exp_alerts") for c in cases), f"{name} never fires in a test"
        assert any(c["alertname"] == name and not c.get("exp_alerts") for c in cases), f"{name} never silent in a test"


def test_the_unit_tests_have_teeth(tmp_path):
    """The same tests against a rule file whose outbox threshold is off by 100x must fail."""
    shutil.copy(RULE_TESTS, tmp_path / "rules_test.yaml")
    (tmp_path / "config").mkdir()
    broken = RULES.read_text().replace("graphql_async:outbox_oldest_pending_age_seconds:max > 300",
                                       "graphql_async:outbox_oldest_pending_age_seconds:max > 30000")
    assert broken != RULES.read_text()
    (tmp_path / "rules.yaml").write_text(broken)
    test_file = (tmp_path / "rules_test.yaml")
    test_file.write_text(test_file.read_text().replace("../../config/prometheus/rules.yaml", "rules.yaml"))
    result = promtool("test", "rules", str(test_file))
    assert result.returncode != 0 and "AsyncOutboxBacklogOld" in result.stdout + result.stderr


def exported_names() -> set[str]:
    """Every sample name the services' registries expose (counters with _total, histograms with _bucket...)."""
    names = set()
    for registry in (PublisherMetrics().registry, WriterMetrics().registry, CleanupMetrics().registry,
                     CleanupMetrics().failure_registry):
        for family in registry.collect():
            names |= {family.name, f"{family.name}_total", f"{family.name}_bucket", f"{family.name}_sum",
                      f"{family.name}_count"}
    return names


def test_rules_name_only_metrics_the_services_export():
    exported = exported_names()
    for rule in rules():
        for name in re.findall(r"\bgraphql_async_[a-z_]+", rule["expr"]):
            assert name in exported, f"{rule.get('alert') or rule['record']}: {name} is exported by no service"


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_every_alert_has_a_summary_a_severity_and_a_runbook_section(alert):
    annotations = alert["annotations"]
    assert annotations["summary"] and alert["labels"]["severity"] in ("warning", "critical")
    path, anchor = annotations["runbook_url"].split("#")
    assert path == "docs/runbook.md" and anchor == alert["alert"].lower()
    headings = {line[3:].strip().lower() for line in RUNBOOK.read_text().splitlines() if line.startswith("## ")}
    assert anchor in headings, f"docs/runbook.md has no section '## {alert['alert']}'"
