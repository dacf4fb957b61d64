"""The real Prometheus Operator CRD schemas (PodMonitor, ServiceMonitor, PrometheusRule), from the Go module
proxy, for strict offline validation (tests/support/module_crds.py).

Pinned to v0.85.0: the release the module proxy serves here (its list holds no other), and a recent one; the
monitoring.coreos.com/v1 kinds used here have been stable across the v0.x releases clusters run. The zip is
about 4 MB, cached in .cache/.
"""

from __future__ import annotations

from tests.support.module_crds import ModuleCrds

PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
PROMETHEUS_OPERATOR = ModuleCrds(
    "github.com/prometheus-operator/prometheus-operator", PROMETHEUS_OPERATOR_VERSION,
    crd_files=tuple(f"example/prometheus-operator-crd/monitoring.coreos.com_{name}.yaml"
                    for name in ("podmonitors", "servicemonitors", "prometheusrules")),
    cache_name=f"prometheus-operator-{PROMETHEUS_OPERATOR_VERSION}.zip")


def validate_monitoring_object(obj: dict) -> None:
    """Raise jsonschema.ValidationError when the object does not fit the real CRD (strictly)."""
    PROMETHEUS_OPERATOR.validate(obj)
