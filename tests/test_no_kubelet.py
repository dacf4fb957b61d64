"""The local stack's `kubelet: false`: only the kinds whose readiness needs running Pods skip the provider's wait."""

from __future__ import annotations

import pulumi

from components.no_kubelet import SKIP_AWAIT, skip_await


def _transform(type_: str, metadata: dict) -> pulumi.ResourceTransformResult | None:
    args = pulumi.ResourceTransformArgs(custom=True, type_=type_, name="x", props={"metadata": metadata, "spec": {}},
                                        opts=pulumi.ResourceOptions())
    return skip_await(args)


def test_workloads_and_services_skip_the_wait_and_keep_their_annotations():
    for type_ in ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet", "kubernetes:batch/v1:Job",
                  "kubernetes:core/v1:Service"):
        result = _transform(type_, {"name": "a", "annotations": {"keep": "me"}})
        assert result.props["metadata"] == {"name": "a", "annotations": {"keep": "me", SKIP_AWAIT: "true"}}
        assert result.props["spec"] == {}


def test_everything_else_is_awaited_as_in_a_real_cluster():
    for type_ in ("kubernetes:core/v1:ServiceAccount", "kubernetes:core/v1:ConfigMap", "kubernetes:batch/v1:CronJob",
                  "kubernetes:external-secrets.io/v1:ExternalSecret", "vault:index/policy:Policy"):
        assert _transform(type_, {"name": "a"}) is None
