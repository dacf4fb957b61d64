"""The publisher, writer and cleanup images, built from app/ (one Dockerfile, one target each) and pushed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker

from components.config import ImagesConfig
from components.k8s import child

TARGETS = ("publisher", "writer", "cleanup")


def source_digest(context: Path) -> str:
    """Content hash of the build context: the tag changes exactly when the image's inputs do."""
    digest = hashlib.sha256()
    for path in sorted(p for p in context.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(context)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass
class ServiceImagesArgs:
    config: ImagesConfig  # registry, platform, or prebuilt references
    context: Path  # absolute path of app/, hashed for the tag
    project_root: Path  # docker paths are relative to it, so plans do not depend on the checkout's location


class ServiceImages(pulumi.ComponentResource):
    digests: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: ServiceImagesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("graphql:index:ServiceImages", name, None, opts)
        if args.config.prebuilt is not None:  # no docker provider at all: it cannot configure without a daemon
            self.images = {}
            self.digests = {t: pulumi.Output.from_input(args.config.prebuilt[t]) for t in TARGETS}
            self.register_outputs({"digests": self.digests})
            return
        tag = source_digest(args.context)
        context = args.context.relative_to(args.project_root).as_posix()
        self.images = {
            target: docker.Image(
                f"image-{target}", image_name=f"{args.config.registry}/graphql-async-{target}:{tag}",
                build=docker.DockerBuildArgs(context=context, dockerfile=f"{context}/Dockerfile",
                                             target=target, platform=args.config.platform),
                opts=child(self))
            for target in TARGETS
        }
        # workloads run exactly what was pushed: registry/name@sha256:...
        self.digests = {t: image.repo_digest for t, image in self.images.items()}
        self.register_outputs({"digests": self.digests})
