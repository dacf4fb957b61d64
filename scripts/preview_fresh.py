"""`bash scripts/dev.sh preview-fresh [stack...]`: what a pull request shows for a brand-new stack.

Runs the real `pulumi preview --diff` of each stack on a fresh, empty backend (no passwords generated yet,
no cluster, no Docker daemon, no network) and writes the text to plans/<stack>.preview.txt beside the plan.
Offline stand-ins, named in each file's header: placeholder values for the stack's secret config and for
provider credentials (nothing is called that would check them in a preview), and the plan's image references
instead of docker builds (the docker provider cannot configure without a daemon, even to preview).
"""

from __future__ import annotations

import argparse
import re
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from scripts.plan import PLANS, all_stacks
from scripts.rehearse import Pulumi, project_copy, pulumi_env
from scripts.servers import REPO

PROJECT = "graphql-entrypoint"
# timings, temp paths and the CLI's own update notices change every run; the diff must not
_NOISE = re.compile(r"^(Duration:|View in Browser|\s*@ previewing update|warning: A new version of Pulumi)")


_BLOCK_HEADER = re.compile(r"^\s*[-+~<>]{1,3} \S+: \((create|update|delete|replace|same|read|create-replacement|"
                           r"delete-replaced)\)$")
_PROVIDER_ID = re.compile(r"(\[provider=urn:[^\]]*::)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\]")


def normalize(text: str) -> str:
    """The engine registers resources as their inputs resolve, so its display order changes from run to run,
    and provider references carry a fresh id: resource blocks are sorted by URN and those ids masked, so the
    committed file changes only when the stack does."""
    lines = _PROVIDER_ID.sub(r"\1<id>]", text).splitlines()
    starts = [i for i, line in enumerate(lines) if _BLOCK_HEADER.match(line)]
    if not starts:
        return text
    end = next((i for i, line in enumerate(lines) if line.strip() == "--outputs:--" or line == "Resources:"),
               len(lines))
    blocks = [lines[start:stop] for start, stop in zip(starts, [*starts[1:], end], strict=True)]
    blocks.sort(key=lambda block: block[1] if len(block) > 1 else block[0])
    trailer = lines[end:]
    warnings = sorted(line for line in trailer if line.startswith("warning:"))
    trailer = [line for line in trailer if not line.startswith("warning:")] + warnings
    return "\n".join([*lines[:starts[0]], *(line for block in blocks for line in block), *trailer])


def offline_stack_file(stack: str, project: Path) -> None:
    """The committed stack file, with the plan's image references instead of builds."""
    document = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())
    plan = yaml.safe_load((PLANS / f"{stack}.plan.yaml").read_text())
    # the committed secrets (salt and ciphertext) belong to the real stack's passphrase; the fresh stack sets its own
    for key in ("encryptionsalt", "secretsprovider", "encryptedkey"):
        document.pop(key, None)
    config = document["config"] = {key: value for key, value in document["config"].items()
                                   if not (isinstance(value, dict) and "secure" in value)}
    config[f"{PROJECT}:images"] = dict(config[f"{PROJECT}:images"], prebuilt=plan["outputs"]["image_digests"])
    # the verification runs only in an `up`; its plugin (pulumi-command) is not part of the offline build
    config[f"{PROJECT}:verify"] = {"enabled": False}
    # provider settings a preview needs to configure without reaching anything
    config["vault:skipChildToken"] = True
    config["vault:skipGetVaultVersion"] = True
    config["vault:address"] = config[f"{PROJECT}:vault"]["address"]
    (project / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def placeholder_secrets(stack: str) -> dict[str, str]:
    """Stand-ins of the right shape (the program checks the database URLs' port against network.databasePort)."""
    network = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"][f"{PROJECT}:network"]
    db = f"db.preview.invalid:{network.get('databasePort', 5432)}"
    return {"databaseUrl": f"postgresql://hasura:preview-placeholder-{secrets.token_hex(4)}@{db}/hasura",
            "databaseRoleAdminUrl": f"postgresql://role_admin:preview-placeholder-{secrets.token_hex(4)}@{db}/hasura",
            "kafkaAdminPassword": f"preview-placeholder-{secrets.token_hex(4)}"}


def preview(stack: str, work: Path) -> str:
    project = project_copy(work)
    offline_stack_file(stack, project)
    env = pulumi_env() | {"PULUMI_BACKEND_URL": f"file://{work / 'state'}", "PULUMI_CONFIG_PASSPHRASE": "preview",
                          "VAULT_TOKEN": "preview-placeholder", "KUBECONFIG": str(work / "no-kubeconfig"),
                          "CLOUDFLARE_API_TOKEN": "preview-placeholder-" + "0" * 20}
    (work / "state").mkdir()
    pulumi = Pulumi(env, project)
    pulumi("stack", "init", stack, "--secrets-provider", "passphrase")
    for key, value in placeholder_secrets(stack).items():
        pulumi("config", "set", "--secret", "--stack", stack, key, value)
    run = pulumi("preview", "--diff", "--color", "never", "--stack", stack, capture=True, check=False)
    text = "\n".join(line.replace(str(work), "<work>") for line in (run.stdout + run.stderr).splitlines()
                     if not _NOISE.match(line))
    if run.returncode != 0:
        raise SystemExit(f"fresh preview of {stack} failed:\n{text[-6000:]}")
    return normalize(text)


HEADER = """# `pulumi preview --diff` of a FRESH `{stack}` stack (empty backend: no passwords yet, no cluster,
# no Docker), real CLI and provider plugins; regenerate with `bash scripts/dev.sh preview-fresh {stack}`.
# Offline stand-ins: placeholder secret config and provider credentials; images.prebuilt = the plan's image
# references (the docker provider cannot configure without a daemon); verify.enabled = false (the post-deploy
# check runs only in an `up`); the cluster is unreachable, so Kubernetes objects preview client-side only.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stacks", nargs="*")
    args = parser.parse_args(argv)
    for stack in args.stacks or all_stacks():
        work = Path(tempfile.mkdtemp(prefix=f"preview-{stack}-"))
        try:
            text = preview(stack, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        path = PLANS / f"{stack}.preview.txt"
        path.write_text(HEADER.format(stack=stack) + text.strip() + "\n")
        summary = [line for line in text.splitlines() if re.search(r"\d+ to (create|update|delete)", line)]
        print(f"{path.relative_to(PLANS.parent)}: {' '.join(s.strip() for s in summary) or 'written'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
