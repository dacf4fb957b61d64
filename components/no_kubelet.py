"""Only for a cluster without a kubelet (the `local` rehearsal stack, `kubelet: false`): the Kubernetes provider
is told not to wait for what only running Pods bring.

The provider waits after create/update for: a Deployment's and a StatefulSet's ready replicas, a Job's
completion, a Service's ready endpoints (pulumi-kubernetes provider/pkg/await/awaiters.go: the `awaiters` map).
With no kubelet no Pod ever runs, so each of those waits would end in a timeout that says nothing about the
program. Those four kinds get `pulumi.com/skipAwait: "true"`; everything else is awaited as in a real cluster.
Stacks with a kubelet (dev, prod) never register this transform.
"""

from __future__ import annotations

import pulumi

SKIP_AWAIT = "pulumi.com/skipAwait"
NEEDS_A_KUBELET = frozenset({"kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet",
                             "kubernetes:batch/v1:Job", "kubernetes:core/v1:Service"})


def _annotated(metadata: dict) -> dict:
    return {**metadata, "annotations": {**(metadata.get("annotations") or {}), SKIP_AWAIT: "true"}}


def skip_await(args: pulumi.ResourceTransformArgs) -> pulumi.ResourceTransformResult | None:
    if args.type_ not in NEEDS_A_KUBELET:
        return None
    metadata = args.props.get("metadata") or {}
    annotated = (_annotated(metadata) if isinstance(metadata, dict)
                 else pulumi.Output.from_input(metadata).apply(_annotated))
    return pulumi.ResourceTransformResult(props={**args.props, "metadata": annotated}, opts=args.opts)


def register(kubelet: bool) -> None:
    if not kubelet:
        pulumi.runtime.register_resource_transform(skip_await)
