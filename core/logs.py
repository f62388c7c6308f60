"""Log lines: plain text, or one JSON object per line (``LOG_FORMAT=json``), each naming what it belongs to.

Every process (API, Celery workers and beat, serving) logs through the root
logger configured from ``settings.LOGGING``; this module gives it the two
formatters and the context they read:

- ``request_id``: set by ``core.middleware.RequestIdMiddleware`` (API) or the serving app for each request.
- ``tenant_id``: set once the API has authenticated a request (``set_tenant``); the middleware clears it when the
  request ends, so a thread that serves the next request never carries the last one's tenant.
- ``job_id`` / ``dataset_id``: set by the Celery hooks around a task that takes one (``config.celery``), and
  ``tenant_id`` by the trainer once it has claimed the job.

Context variables rather than thread locals: a value set around a task or a request is seen by everything it
calls, and a thread started with ``contextvars.copy_context().run`` (the trainer's heartbeat) carries it too.

Both formatters redact what looks like a credential (``Bearer …``, ``Basic …``, an API key's secret part), as
a last line of defence: no code logs an ``Authorization`` header or a key on purpose.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from core import middleware  # the module, not its names: it imports this one too

tenant_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant_id", default=None)
job_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)
dataset_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("dataset_id", default=None)
_CONTEXT = {"tenant_id": tenant_id_var, "job_id": job_id_var, "dataset_id": dataset_id_var}

_REDACTIONS = (
    (re.compile(r"\b(bearer|basic|token)(\s+)[^\s\"',;]+", re.IGNORECASE), r"\1\2[redacted]"),
    # An API key (mlp_<prefix>_<secret>): the prefix says which key and is kept; the secret is not.
    (re.compile(r"\b(mlp_[A-Za-z0-9]{10}_)[A-Za-z0-9]{40}\b"), r"\1[redacted]"),
)
# Attributes every LogRecord has: anything else on a record came from ``extra=`` and is written as a field.
_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "taskName",
    "color_message",  # uvicorn's copy of the message with terminal colours
}


def set_tenant(tenant_id: object) -> None:
    """The tenant of the request being served (cleared by the request middleware when the request ends)."""
    tenant_id_var.set(str(tenant_id))


@contextmanager
def context(**ids: object) -> Iterator[None]:
    """``tenant_id``, ``job_id`` and ``dataset_id`` for every line logged inside the block (None: left as is)."""
    tokens = [(_CONTEXT[name], _CONTEXT[name].set(str(value))) for name, value in ids.items() if value is not None]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current() -> dict[str, str]:
    """The ids known here now: what a JSON line carries."""
    found = {}
    request_id = middleware.request_id_var.get()
    if request_id and request_id != "-":
        found["request_id"] = request_id
    for name, var in _CONTEXT.items():
        value = var.get()
        if value:
            found[name] = value
    return found


_ANY_CREDENTIAL = re.compile("|".join(f"(?:{pattern.pattern})" for pattern, _ in _REDACTIONS), re.IGNORECASE)


def redact(text: str) -> str:
    if not _ANY_CREDENTIAL.search(text):  # nearly always: one scan, no substitution (a few hundred nanoseconds)
        return text
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


class PlainFormatter(logging.Formatter):
    """``time level logger [request id] message``, as before, with credentials redacted.

    Works without the request-id filter too (gunicorn's own loggers): the id is read here when a record lacks it.
    """

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = middleware.request_id_var.get()
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the ids known, ``extra=`` fields, exception text."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "pid": record.process,  # which worker process (gunicorn, Celery's pool, serving --workers)
        }
        entry |= current()
        request_id = getattr(record, "request_id", None)  # set by the filter in the thread that logged
        if request_id and request_id != "-":
            entry["request_id"] = request_id
        fields = record.__dict__
        for key in fields.keys() - _STANDARD_ATTRIBUTES:  # what ``extra=`` added
            if key.startswith("_") or key in entry:
                continue
            value = fields[key]
            # Plain values only: an object's text (a request, a connection) may carry more than it should.
            if isinstance(value, str):
                entry[key] = redact(value)
            elif value is None or isinstance(value, bool | int | float):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)
