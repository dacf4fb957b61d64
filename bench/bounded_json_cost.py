"""What the bounded decode (size, depth pre-scan, number checks) costs beside plain json.loads, same run.

Prints one JSON line per body shape: microseconds per decode for both, and the ratio.
"""

from __future__ import annotations

import json
import timeit

from app import bounded_json
from bench.common import emit


def bodies() -> dict[str, bytes]:
    typical = {"action": {"name": "publish_async_request"},
               "input": {"input": {"handler": "billing-worker", "operation": "invoice.create",
                                   "payload": {"invoice_id": "inv_123", "amount": 42.5, "lines": list(range(20))},
                                   "metadata": {"tenant": "acme"}}},
               "session_variables": {"x-hasura-role": "user", "x-hasura-user-id": "user-123"}}
    at_limit = dict(typical, input={"input": dict(typical["input"]["input"], payload={"blob": "x" * 250_000})})
    nested = dict(typical, input={"input": dict(typical["input"]["input"], payload=[[[[{"a": [1] * 50}]]]] * 200)})
    return {name: json.dumps(doc).encode() for name, doc in
            {"typical_action_body": typical, "payload_250KB": at_limit, "nested_10k_values": nested}.items()}


def main() -> None:
    for name, body in bodies().items():
        number = max(20, 200_000 // len(body))
        plain = min(timeit.repeat(lambda b=body: json.loads(b), number=number, repeat=5)) / number
        bounded = min(timeit.repeat(lambda b=body: bounded_json.loads(b, max_bytes=2 << 20, max_depth=64),
                                    number=number, repeat=5)) / number
        emit({"bench": "bounded_json_cost", "body": name, "bytes": len(body),
              "bounded_us": round(bounded * 1e6, 1), "baseline_json_loads_us": round(plain * 1e6, 1),
              "ratio": round(bounded / plain, 2)})


if __name__ == "__main__":
    main()
