"""Generate config/hasura/hasura.env from the graphql-engine binary of the pinned Hasura image.

The inventory comes from the binary itself (every `HASURA_GRAPHQL_*` name it contains), so the
file matches the engine version that runs. Each line only fills a variable that is still unset:

    HASURA_GRAPHQL_ENABLE_CONSOLE="${HASURA_GRAPHQL_ENABLE_CONSOLE:-false}"

so container env and Vault-injected secrets always win. Secrets, connection strings and Redis
variables are written commented out: the file ends up in a ConfigMap.

    python scripts/generate_hasura_config.py                 # image from Pulumi.dev.yaml (needs docker)
    python scripts/generate_hasura_config.py --image REF     # another image (needs docker)
    python scripts/generate_hasura_config.py --binary PATH   # a graphql-engine binary already on disk
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "config" / "hasura" / "hasura.env"
ENV_NAME = re.compile(rb"HASURA_GRAPHQL_[A-Z0-9_]*[A-Z0-9]")
BINARY_IN_IMAGE = "/bin/graphql-engine"

# production defaults for a public entrypoint; everything else keeps the engine's own default
DEFAULTS: dict[str, tuple[str, str]] = {
    "HASURA_GRAPHQL_ENABLE_CONSOLE": ("false", "no console on the public entrypoint"),
    "HASURA_GRAPHQL_DEV_MODE": ("false", "no internal error details in responses"),
    "HASURA_GRAPHQL_ENABLE_TELEMETRY": ("false", "no telemetry from production"),
    "HASURA_GRAPHQL_ENABLED_APIS": ("metadata,graphql", "no pgdump/config APIs; metadata stays in-cluster"),
    "HASURA_GRAPHQL_SERVER_PORT": ("8080", "the Service and the tunnel target this port"),
    "HASURA_GRAPHQL_LOG_LEVEL": ("info", ""),
    "HASURA_GRAPHQL_ENABLED_LOG_TYPES": ("startup,http-log,webhook-log,websocket-log,query-log", ""),
    "HASURA_GRAPHQL_LIVE_QUERIES_MULTIPLEXED_REFETCH_INTERVAL": ("1000", "ms between subscription refetches"),
    "HASURA_GRAPHQL_LIVE_QUERIES_MULTIPLEXED_BATCH_SIZE": ("100", ""),
    "HASURA_GRAPHQL_STREAMING_QUERIES_MULTIPLEXED_REFETCH_INTERVAL": ("1000", ""),
    "HASURA_GRAPHQL_STREAMING_QUERIES_MULTIPLEXED_BATCH_SIZE": ("100", ""),
    "HASURA_GRAPHQL_WEBSOCKET_KEEPALIVE": ("5", "seconds; keeps Cloudflare from closing idle sockets"),
    "HASURA_GRAPHQL_WEBSOCKET_CONNECTION_INIT_TIMEOUT": ("3", "seconds"),
    "HASURA_GRAPHQL_CLOSE_WEBSOCKETS_ON_METADATA_CHANGE": ("true", ""),
    "HASURA_GRAPHQL_GRACEFUL_SHUTDOWN_TIMEOUT": ("60", "seconds; below the pod's termination grace period"),
    "HASURA_GRAPHQL_ENABLE_ALLOWLIST": ("false", ""),
    "HASURA_GRAPHQL_STRINGIFY_NUMERIC_TYPES": ("false", ""),
}
SECRET_WORDS = ("SECRET", "PASSWORD", "KEY", "TOKEN", "JWT", "CERT")


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # default | engine-default | secret | connection | redis
    value: str = ""
    note: str = ""


def inventory(binary: bytes) -> list[str]:
    """Every distinct HASURA_GRAPHQL_* name in the binary, sorted."""
    return sorted({m.decode() for m in ENV_NAME.findall(binary)})


def classify(name: str) -> Entry:
    if "REDIS" in name:
        return Entry(name, "redis", note="Redis URLs come from Vault injection, never from this file")
    if any(word in name for word in SECRET_WORDS):
        return Entry(name, "secret", note="secret: injected from Vault, never stored in a ConfigMap")
    if name.endswith(("_URL", "_URI", "_URLS", "_CONNECTION_STRING")) or "DATABASE" in name:
        return Entry(name, "connection", note="connection string: injected from Vault")
    if name in DEFAULTS:
        value, note = DEFAULTS[name]
        return Entry(name, "default", value, note)
    return Entry(name, "engine-default", note="engine default")


def render(names: list[str], image: str) -> str:
    lines = [
        "# Hasura GraphQL Engine environment defaults (generated; do not edit by hand)",
        f"# image: {image}",
        "# regenerate: python scripts/generate_hasura_config.py",
        "#",
        "# Sourced with `set -a` before graphql-engine starts. Every line only fills a variable that is",
        "# still unset, so env set on the container and secrets injected by Vault take precedence.",
        "# Secrets, connection strings and Redis settings are deliberately commented out: this file is a ConfigMap.",
        "",
    ]
    for entry in (classify(n) for n in names):
        if entry.kind == "default":
            if entry.note:
                lines.append(f"# {entry.note}")
            lines.append(f'{entry.name}="${{{entry.name}:-{entry.value}}}"')
        else:
            lines.append(f"# {entry.name}=    # {entry.note}")
    return "\n".join(lines) + "\n"


def binary_from_image(image: str) -> bytes:
    docker = shutil.which("docker")
    if docker is None:
        raise SystemExit("docker is not available: run with --binary PATH to a graphql-engine binary instead")
    container = subprocess.run([docker, "create", image], check=True, capture_output=True, text=True).stdout.strip()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "graphql-engine"
            subprocess.run([docker, "cp", f"{container}:{BINARY_IN_IMAGE}", str(target)], check=True)
            return target.read_bytes()
    finally:
        subprocess.run([docker, "rm", container], check=False, capture_output=True)


def pinned_image(stack_file: Path) -> str:
    config = yaml.safe_load(stack_file.read_text())["config"]
    return config["graphql-entrypoint:hasura"]["image"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", help="image reference (default: the one pinned in Pulumi.dev.yaml)")
    parser.add_argument("--binary", type=Path, help="a graphql-engine binary (or a capture of its strings)")
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    image = args.image or pinned_image(REPO / "Pulumi.dev.yaml")
    data = args.binary.read_bytes() if args.binary else binary_from_image(image)
    names = inventory(data)
    if not names:
        raise SystemExit("no HASURA_GRAPHQL_* names found: is this a graphql-engine binary?")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(names, image))
    print(f"wrote {args.out} ({len(names)} variables)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
