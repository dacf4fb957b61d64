"""One more service process in the foreground against a running `dev.sh up` stack: `bash scripts/dev.sh service`.

    bash scripts/dev.sh service writer [--data DIR]      a second writer (own instance id and health port)
    bash scripts/dev.sh service writer --instance-id ID  a writer that takes over ID's identity (a crashed writer
                                                         coming back, as a StatefulSet pod keeps its name): it fences
                                                         ID's open transaction and resumes at once
    bash scripts/dev.sh service publisher [--port N]     another publisher on another port
    bash scripts/dev.sh service worker                   another demo worker
    bash scripts/dev.sh service cleanup                  one cleanup pass, then exit
    bash scripts/dev.sh service dlq                      print what is in the DLQ (read_committed), then exit

Connection details come from DATA/local-state.json, which `up` writes. Ctrl-C stops the process.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import uuid
from pathlib import Path

from scripts.servers import REPO, free_port

SERVICES = {"writer": "app.writer", "publisher": "app.publisher", "worker": "scripts.demo_worker",
            "cleanup": "app.cleanup"}


def service_env(state: dict, service: str, port: int | None = None,
                instance_id: str | None = None) -> dict[str, str]:
    """The environment of a local service, from local-state.json: `up` starts its services with it, and
    `dev.sh service` starts one more (a fresh writer identity, so it joins the group rather than fences)."""
    principals = state["kafka_principals"]
    role = {"writer": "writer", "publisher": "publisher", "worker": "worker"}.get(service, "admin (super user)")
    env = {"KAFKA_BOOTSTRAP_SERVERS": state["kafka_bootstrap"], "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256", "KAFKA_USERNAME": principals[role]["username"],
           "KAFKA_PASSWORD": principals[role]["password"], "ASYNC_DATABASE_URL": state["database_url"]}
    if service == "writer":
        env |= {"WRITER_INSTANCE_ID": instance_id or f"local-extra-{uuid.uuid4().hex[:6]}",
                "HEALTH_PORT": str(port or free_port())}
    if service == "publisher":  # its own metrics port too: a second publisher must not collide on 9102
        env |= {"ASYNC_ACTION_SECRET": state["action_secret"], "PUBLISHER_HOST": "127.0.0.1",
                "PUBLISHER_PORT": str(port or free_port()), "METRICS_PORT": str(free_port())}
    return env


def print_dlq(state: dict) -> int:
    from confluent_kafka import Consumer, TopicPartition

    admin = state["kafka_principals"]["admin (super user)"]
    consumer = Consumer({"bootstrap.servers": state["kafka_bootstrap"], **state["kafka_security"],
                         "sasl.username": admin["username"], "sasl.password": admin["password"],
                         "group.id": f"dlq-reader-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    topic = state["topics"]["dlq"]
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    count = 0
    while batch := consumer.consume(500, 2.0):
        for msg in batch:
            if msg.error():
                continue
            count += 1
            headers = {k: (v or b"").decode(errors="replace") for k, v in msg.headers() or []}
            print(json.dumps({"key": (msg.key() or b"").decode(errors="replace"),
                              "reason": headers.get("dlq.reason"), "detail": headers.get("dlq.detail"),
                              "source": f"{headers.get('dlq.source.topic')}/{headers.get('dlq.source.partition')}"
                                        f"@{headers.get('dlq.source.offset')}",
                              "value": (msg.value() or b"")[:200].decode(errors="replace")}))
    consumer.close()
    print(f"{count} message(s) in {topic}", file=sys.stderr)
    return 0


def reachable(address: str, timeout: float = 2.0) -> bool:
    """One TCP connect: is anything listening at host:port (the broker of a running `up`)?"""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service", choices=[*SERVICES, "dlq"])
    parser.add_argument("--data", type=Path, default=REPO / ".local")
    parser.add_argument("--port", type=int, default=0, help="publisher port / writer health port (default: free)")
    parser.add_argument("--instance-id", default=None,
                        help="writer only: the identity to take over (e.g. `local`, the writer `up` started); "
                             "default: a fresh one that joins the group beside the others")
    args = parser.parse_args(argv)
    state_file = args.data.resolve() / "local-state.json"
    if not state_file.exists() or "kafka_bootstrap" not in (state := json.loads(state_file.read_text())):
        print(f"no running local stack in {args.data} (start one with: bash scripts/dev.sh up)", file=sys.stderr)
        return 2
    # the broker of a stopped `up` would get ~200 lines of librdkafka retries and a traceback: say it plainly
    brokers = state["kafka_bootstrap"].split(",")
    if not any(reachable(b) for b in brokers):
        print(f"no running local stack in {args.data}: nothing answers at {state['kafka_bootstrap']} "
              "(start one with: bash scripts/dev.sh up)", file=sys.stderr)
        return 2
    if args.instance_id is not None and args.service != "writer":
        parser.error("--instance-id is for `service writer` only")
    if args.service == "dlq":
        return print_dlq(state)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "ASYNC_"))}
    env |= service_env(state, args.service, args.port, args.instance_id) | {
        "ASYNC_SECRETS_DIR": str(args.data / "no-vault")}
    print(f"running {SERVICES[args.service]} against {state['kafka_bootstrap']} (Ctrl-C stops it)", file=sys.stderr)
    if "METRICS_PORT" in env:
        print(f"its metrics: http://127.0.0.1:{env['METRICS_PORT']}/metrics", file=sys.stderr)
    os.chdir(REPO)
    os.execvpe(sys.executable, [sys.executable, "-m", SERVICES[args.service]], env)


if __name__ == "__main__":
    sys.exit(main())
