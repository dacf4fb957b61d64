"""confluent-kafka producer bridged to asyncio: produce from the event loop, deliveries as futures."""

from __future__ import annotations

import asyncio
import logging
import threading

from confluent_kafka import KafkaError, KafkaException, Producer

from app.settings import PRODUCER_MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)


class AsyncProducer:
    """One idempotent producer per process; a thread serves its delivery callbacks."""

    def __init__(self, config: dict[str, str | int | bool], loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._producer = Producer(config | {"error_cb": self._on_error})
        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-producer-poll", daemon=True)
        self._poller.start()

    @staticmethod
    def _on_error(err: KafkaError) -> None:
        # broker unreachable and similar: librdkafka keeps retrying on its own
        log.warning("kafka producer error", extra={"kafka_error": str(err)})

    def _poll(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(0.1)

    def send(self, topic: str, key: str, value: bytes, headers: list[tuple[str, bytes]]) -> asyncio.Future:
        """Queue one message; the future resolves on the broker's ack or fails with KafkaException."""
        future = self._loop.create_future()

        def delivered(err, _msg) -> None:
            self._loop.call_soon_threadsafe(_settle, future, err)

        try:
            self._producer.produce(topic, value=value, key=key.encode(), headers=headers, on_delivery=delivered)
        except BufferError as exc:
            future.set_exception(KafkaException(KafkaError(KafkaError._QUEUE_FULL, str(exc))))
        except KafkaException as exc:  # e.g. MSG_SIZE_TOO_LARGE: keep the code, the relay tells permanent apart
            future.set_exception(exc)
        return future

    def flush(self, timeout: float) -> int:
        return self._producer.flush(timeout)

    def close(self, timeout: float = 10.0) -> None:
        remaining = self.flush(timeout)
        if remaining:
            log.warning("producer closed with undelivered messages; the outbox relay will publish them",
                        extra={"undelivered": remaining})
        self._stopping.set()
        self._poller.join(timeout=2)


def _settle(future: asyncio.Future, err: KafkaError | None) -> None:
    if future.done():
        return
    if err is None:
        future.set_result(None)
    else:
        future.set_exception(KafkaException(err))


def producer_config(client_config: dict[str, str], message_timeout_seconds: float) -> dict[str, str | int | bool]:
    return client_config | {
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "compression.type": "lz4",
        "message.timeout.ms": int(message_timeout_seconds * 1000),
        "message.max.bytes": PRODUCER_MAX_MESSAGE_BYTES,
    }


# errors that will not change however often the same message is sent again
PERMANENT_PRODUCE_ERRORS = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD, KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_MSG, KafkaError._INVALID_ARG,
})


def kafka_error(exc: BaseException) -> KafkaError | None:
    """The KafkaError a KafkaException carries (its code, fatal/retriable/abortable flags), or None."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def is_permanent(exc: BaseException) -> bool:
    """True when the broker or client refuses this very message; a retry would fail the same way."""
    error = kafka_error(exc)
    return error is not None and error.code() in PERMANENT_PRODUCE_ERRORS
