"""A small demo worker for the local run: answers every request envelope on the reply topic.

Stands in for the other teams' worker services. It echoes the payload back as the result, or
answers `failed` when the operation is `demo.fail`, so both terminal states can be tried.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from datetime import UTC, datetime

from confluent_kafka import Consumer, Producer


def answer(envelope: dict) -> dict:
    response = {"spec_version": "async.response.v1", "request_id": envelope["request_id"],
                "completed_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")}
    if envelope["route"]["operation"] == "demo.fail":
        return response | {"status": "failed", "error": {"code": "DEMO_FAILURE", "message": "asked to fail"}}
    return response | {"status": "completed", "result": {"echo": envelope["payload"], "handled_by": "demo-worker"}}


def main() -> int:
    client = {"bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"], "security.protocol": "SASL_PLAINTEXT",
              "sasl.mechanisms": "SCRAM-SHA-256", "sasl.username": os.environ["KAFKA_USERNAME"],
              "sasl.password": os.environ["KAFKA_PASSWORD"]}
    consumer = Consumer(client | {"group.id": "demo-worker", "auto.offset.reset": "earliest"})
    producer = Producer(client | {"linger.ms": 2})
    consumer.subscribe([os.environ.get("ASYNC_REQUESTS_TOPIC", "graphql.async.requests.v1")])
    running = True

    def stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while running:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        try:
            envelope = json.loads(msg.value())
            reply = answer(envelope)
        except (ValueError, KeyError, TypeError) as exc:
            print(json.dumps({"msg": "demo worker skipped a message", "error": str(exc)}), flush=True)
            continue
        producer.produce(envelope["options"]["reply_topic"], key=envelope["request_id"], value=json.dumps(reply))
        producer.poll(0)
        print(json.dumps({"msg": "demo worker answered", "request_id": envelope["request_id"],
                          "status": reply["status"]}), flush=True)
    producer.flush(10)
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
