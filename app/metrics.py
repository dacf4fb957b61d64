"""Prometheus metrics of the async flow: one registry per service instance, the definitions, the /metrics server.

Names follow Prometheus conventions: a `graphql_async_<service>_` prefix, `_total` counters, base units
(`_seconds`, messages, rows), labels from small closed sets (outcome, error code, DLQ reason, topic/partition),
never a request id or a client id. `config/prometheus/rules.yaml` alerts on these names; docs/runbook.md says
what each alert means.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, start_http_server

LATENCY_BUCKETS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 50_000)
BATCH_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# what the action answered; `code` is the action error code of a refusal, empty otherwise
REQUEST_OUTCOMES = ("accepted", "replay", "refused", "unavailable", "internal")


def new_registry() -> CollectorRegistry:
    """A registry of our own (tests run several services in one process), with the process's CPU/memory/start."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    return registry


def serve(registry: CollectorRegistry, port: int, host: str = "0.0.0.0", ports: int = 1) -> ThreadingHTTPServer:
    """GET /metrics on its own port, in a daemon thread (off the publisher's event loop). With several processes
    in one pod (`ports` > 1) each takes the first free of port, port + 1, ...: one scrape target per process."""
    for candidate in range(port, port + ports):
        try:
            server, _thread = start_http_server(candidate, addr=host, registry=registry)
            return server
        except OSError:
            if candidate == port + ports - 1:
                raise
    raise ValueError("ports must be at least 1")


class PublisherMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or new_registry()
        r = self.registry
        self.requests = Counter("graphql_async_publisher_requests", "Action calls by what they were answered",
                                ["outcome", "code"], registry=r)
        self.latency = Histogram("graphql_async_publisher_request_duration_seconds",
                                 "Time from the action call to its answer", ["outcome"], buckets=LATENCY_BUCKETS,
                                 registry=r)
        self.delivery_failures = Counter("graphql_async_publisher_kafka_delivery_failures",
                                         "Request messages Kafka did not acknowledge (the row stays pending)",
                                         ["path", "error"], registry=r)
        self.relay_published = Counter("graphql_async_publisher_relay_published",
                                       "Pending rows the outbox relay published", registry=r)
        self.relay_parked = Counter("graphql_async_publisher_relay_parked",
                                    "Rows Kafka refuses for good, parked as failed/unpublishable", registry=r)
        self.outbox_backlog = Gauge("graphql_async_outbox_backlog_rows",
                                    "Unexpired rows still pending (not yet on Kafka), from the last outbox scan",
                                    registry=r)
        self.outbox_oldest_age = Gauge("graphql_async_outbox_oldest_pending_age_seconds",
                                       "Age of the oldest unexpired pending row at the last outbox scan (0: none)",
                                       registry=r)
        self.outbox_scanned = Gauge("graphql_async_outbox_last_scan_timestamp_seconds",
                                    "When the outbox was last scanned successfully (Unix time)", registry=r)
        # the hot path reaches its children without a label lookup; series exist at 0 from the start
        self._answered = {o: (self.requests.labels(o, ""), self.latency.labels(o))
                          for o in REQUEST_OUTCOMES if o != "refused"}
        self.latency.labels("refused")
        self.delivery_failures.labels("action", "_MSG_TIMED_OUT")

    def answered(self, outcome: str, started: float, code: str = "") -> None:
        """One action answer: its outcome (and refusal code) and how long it took since `started` (perf_counter)."""
        elapsed = time.perf_counter() - started
        if outcome == "refused":
            self.requests.labels(outcome, code).inc()
            self.latency.labels(outcome).observe(elapsed)
            return
        counter, histogram = self._answered[outcome]
        counter.inc()
        histogram.observe(elapsed)

    def outbox(self, rows: int, oldest_age_seconds: float) -> None:
        self.outbox_backlog.set(rows)
        self.outbox_oldest_age.set(oldest_age_seconds)
        self.outbox_scanned.set_to_current_time()


class WriterMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or new_registry()
        r = self.registry
        self.responses = Counter("graphql_async_writer_responses",
                                 "Consumed responses by where they ended (counted when their batch commits)",
                                 ["fate", "reason"], registry=r)
        self.batch_size = Histogram("graphql_async_writer_batch_messages", "Messages per committed batch",
                                    buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.batch_duration = Histogram("graphql_async_writer_batch_duration_seconds",
                                        "Time to write and commit one batch", buckets=BATCH_SECONDS_BUCKETS,
                                        registry=r)
        self.rewinds = Counter("graphql_async_writer_batch_rewinds", "Batches rewound to be tried again",
                               ["cause"], registry=r)
        self.aborts = Counter("graphql_async_writer_transaction_aborts", "Kafka transactions aborted", registry=r)
        self.lag = Gauge("graphql_async_writer_consumer_lag_messages",
                         "High watermark minus the group's committed offset, per partition of the responses topic",
                         ["topic", "partition"], registry=r)
        self.lag_sampled = Gauge("graphql_async_writer_lag_last_sample_timestamp_seconds",
                                 "When the lag was last measured (Unix time)", registry=r)
        self.healthy = Gauge("graphql_async_writer_healthy",
                             "1 while the writer makes progress or has nothing to do, 0 when /healthz is red",
                             registry=r)
        self.batch_limit = Gauge("graphql_async_writer_batch_limit_messages",
                                 "Most messages the next batch may take: WRITER_BATCH_SIZE, less after writes that "
                                 "ran past their budget", registry=r)
        self.last_commit = Gauge("graphql_async_writer_last_commit_timestamp_seconds",
                                 "When a batch last committed (Unix time)", registry=r)
        for fate in ("applied", "duplicate"):
            self.responses.labels(fate, "")
        self._lag_series: set[tuple[str, str]] = set()

    def watch_health(self, stalled: Callable[[], bool]) -> None:
        """The health gauge is read at scrape time, from the same check /healthz uses."""
        self.healthy.set_function(lambda: 0.0 if stalled() else 1.0)

    def committed(self, applied: int, duplicates: int, dead_letter_reasons: list[str], messages: int,
                  seconds: float) -> None:
        self.responses.labels("applied", "").inc(applied)
        self.responses.labels("duplicate", "").inc(duplicates)
        for reason in dead_letter_reasons:
            self.responses.labels("dead_lettered", reason).inc()
        self.batch_size.observe(messages)
        self.batch_duration.observe(seconds)
        self.last_commit.set_to_current_time()

    def set_lag(self, lag: dict[tuple[str, int], int]) -> None:
        """Replace the per-partition lag; partitions no longer there disappear."""
        current = {(topic, str(partition)) for topic, partition in lag}
        for labels in self._lag_series - current:
            self.lag.remove(*labels)
        for (topic, partition), value in lag.items():
            self.lag.labels(topic, str(partition)).set(value)
        self._lag_series = current
        self.lag_sampled.set_to_current_time()


class CleanupMetrics:
    """A CronJob pod is gone before any scrape: one run's figures are pushed to a Pushgateway at its end."""

    def __init__(self, registry: CollectorRegistry | None = None):
        # no process collector: the pushed group must hold the run's figures only
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.deleted = Gauge("graphql_async_cleanup_last_run_deleted_rows", "Expired rows the last run deleted",
                             registry=r)
        self.batches = Gauge("graphql_async_cleanup_last_run_batches", "Delete batches of the last run", registry=r)
        self.duration = Gauge("graphql_async_cleanup_last_run_duration_seconds", "How long the last run took",
                              registry=r)
        self.incomplete = Gauge("graphql_async_cleanup_last_run_incomplete",
                                "1 when the last run stopped on its time budget or a signal with rows left", registry=r)
        self.last_success = Gauge("graphql_async_cleanup_last_success_timestamp_seconds",
                                  "When a cleanup run last finished without error (Unix time)", registry=r)
        # pushed alone when a run fails, so the last success stays in the Pushgateway's group
        self.failure_registry = CollectorRegistry()
        self.last_failure = Gauge("graphql_async_cleanup_last_failure_timestamp_seconds",
                                  "When a cleanup run last failed (Unix time)", registry=self.failure_registry)
