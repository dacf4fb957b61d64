"""Structured JSON logs on stdout, one object per line, with secrets and credentials redacted."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import UTC, datetime
from urllib.parse import unquote

# color_message: uvicorn's ANSI-coloured copy of the message, meant for terminals, never for JSON lines
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}
REDACTED = "[redacted]"
# credentials in any connection string: scheme://user:password@ and key=value libpq/librdkafka forms
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@\"']*:)[^\s@\"']*@", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"\b(password|passwd|pwd|sasl\.password)(\s*[=:]\s*)('[^']*'|\"[^\"]*\"|[^\s,;&\"}]+)",
                          re.IGNORECASE)
_secrets: set[str] = set()
# each secret as it appears in a line, raw and JSON-escaped, longest first: computed once per secret, not per line
_forms: list[str] = []


def register_secret(value: str | None) -> None:
    """Every later log line has this value (and a URL's password, raw and decoded) replaced by [redacted]."""
    if not value or len(value) < 6:
        return
    _secrets.add(value)
    match = re.search(r"://[^:/@]*:([^@]*)@", value)
    if match and len(match.group(1)) >= 4:
        _secrets.update({match.group(1), unquote(match.group(1))})
    _forms[:] = sorted({form for secret in _secrets for form in (secret, json.dumps(secret)[1:-1])},
                       key=len, reverse=True)


def redact(text: str) -> str:
    for form in _forms:
        if form in text:
            text = text.replace(form, REDACTED)
    # the patterns only where they can match: a scan per line is most of a log call's cost otherwise
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)
    folded = text.casefold()  # as the pattern's IGNORECASE folds: "ſ" (U+017F) matches "s"
    if "pass" in folded or "pwd" in folded:
        text = _KV_PASSWORD.sub(rf"\1\2{REDACTED}", text)
    return text


_ENCODER = json.JSONEncoder(default=str)  # built once: json.dumps(..., default=str) builds one per call


class JsonFormatter(logging.Formatter):
    _second: tuple[int, str] = (-1, "")  # the timestamp's text up to the second changes once a second

    def _timestamp(self, created: float) -> str:
        """datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"), the same text: rounded to the
        microsecond first (as datetime does, datetime.py's fromtimestamp), then cut to the millisecond."""
        second = int(created)
        micros = round((created - second) * 1e6)
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        cached_second, text = self._second
        if second != cached_second:
            text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = (second, text)  # one tuple: a reader never pairs a second with another second's text
        return f"{text}.{micros // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(_ENCODER.encode(entry))


def setup(level: str | None = None) -> None:
    level = level or os.environ.get("LOG_LEVEL", "INFO")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # the logging HOWTO's "Optimization": no caller lookup, thread or process names per record (a JSON line
    # never shows them); a quarter of an INFO call's cost, and the publisher writes one per call
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # an uncaught exception is logged through the same redacting formatter, not printed raw to stderr
    sys.excepthook = lambda *exc_info: logging.getLogger("app").critical("uncaught exception", exc_info=exc_info)
