"""Logging for the supervisor and its workers: one line per event, text or JSON, on stderr.

Both processes call `setup_logging` once at start. Flow events go through `flow_event`, so
every line about a Flow names it the same way (type, id, state, attempt) in both formats:

    text: 2024-05-01 12:00:00,123 INFO [4242] ferricflowd.worker:
          flow order/o-17 created#1 completed (0.012s)                     (one line)
    json: {"ts": "...", "level": "INFO", "pid": 4242, "logger": "ferricflowd.worker",
           "msg": "...", "event": "completed", "type": "order", "id": "o-17",
           "state": "created", "attempt": 1, "duration_s": 0.012}
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any

from ferricflowd.flow.urls import redact as redact_url  # one redaction for logs and errors
from ferricflowd.safetext import TRACEBACK_KEEP, escape_controls

__all__ = [
    "FLOW_FIELDS", "JsonFormatter", "TextFormatter", "flow_event", "init_sentry", "redact_url",
    "setup_logging",
]

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
FLOW_FIELDS = ("type", "id", "state", "attempt")
# Attributes every LogRecord has; anything else on a record came in through `extra=`.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; `extra=` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "pid": record.process,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in doc:
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, one line per event: control characters in the message (a newline in a
    Flow id, say) are escaped, so nobody can forge a log line through a Flow id or payload.
    A traceback still follows on its own lines, with every other control escaped (a handler
    error holding terminal escapes must not act on whoever reads the log)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - stdlib name
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:  # noqa: N802 - stdlib name
        return escape_controls(super().formatException(ei), TRACEBACK_KEEP)

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - stdlib name
        return escape_controls(super().formatStack(stack_info), TRACEBACK_KEEP)


def setup_logging(log_format: str = "text", level: str = "info") -> None:
    """Send the root logger to stderr in `log_format` ("text" or "json") at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Whatever Python would print on its own goes through the same handler: warnings, and
    # uncaught exceptions of the main thread and of other threads (one JSON object each).
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_uncaught


def _log_uncaught(exc_type: Any, exc: BaseException, tb: Any) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger(__name__).critical("uncaught exception", exc_info=(exc_type, exc, tb))


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger(__name__).error(
        "uncaught exception in thread %s", name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )  # fmt: skip


def flow_fields(job: Any) -> dict[str, Any]:
    """The identifying fields of a claimed Flow (a flow/ Job or anything shaped like one)."""
    return {
        "type": getattr(job, "type", None),
        "id": getattr(job, "id", None),
        "state": getattr(job, "state", None),
        "attempt": getattr(job, "attempt", None),
    }


def flow_event(
    logger: logging.Logger,
    level: int,
    event: str,
    job: Any,
    detail: str = "",
    **fields: Any,
) -> None:
    """Log one line about one Flow: `flow <type>/<id> <state>#<attempt> <event> <detail>`."""
    if not logger.isEnabledFor(level):
        return
    ident = flow_fields(job)
    text = f"flow {ident['type']}/{ident['id']} {ident['state']}#{ident['attempt']} {event}"
    if detail:
        text = f"{text} {detail}"
    logger.log(level, "%s", text, extra={"event": event, **ident, **fields})


def init_sentry(dsn: str, environment: str = "", **options: Any) -> Any:
    """sentry_sdk, initialised with `dsn`; None when no DSN is set or the SDK is missing.

    Each process initialises its own SDK after it starts (never inherited across fork), so
    no SDK thread or lock is shared between processes. `release` is this ferricflowd's
    version; `environment` the config's, else the SDK reads SENTRY_ENVIRONMENT itself.
    Error log lines become events (the SDK's logging integration), so a caller logs an
    error once instead of also capturing it.
    """
    if not dsn:
        return None
    try:
        import sentry_sdk
    except ImportError:
        logging.getLogger(__name__).warning(
            "sentry_dsn is set but sentry-sdk is not installed (pip install sentry-sdk)"
        )
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = f"ferricflowd@{version('ferricflowd')}"
    except PackageNotFoundError:  # a checkout on PYTHONPATH, not installed
        release = None
    if environment:
        options["environment"] = environment
    sentry_sdk.init(dsn=dsn, release=release, **options)
    return sentry_sdk


_FILTERED = "[Filtered: Flow payload or value]"


def scrub_flow_data(event: dict[str, Any], secrets: list[bytes]) -> dict[str, Any]:
    """Replace every frame local that holds (or contains) one of `secrets`, a Flow's payload
    and values, so an event never carries them. Secrets shorter than 4 bytes are matched
    only as a whole value (a payload b"1" must not filter every local with a 1 in it)."""
    texts = [(sec.decode("utf-8", "replace"), len(sec) >= 4) for sec in secrets if sec]
    if not texts:
        return event
    for exc in (event.get("exception") or {}).get("values") or []:
        for frame in (exc.get("stacktrace") or {}).get("frames") or []:
            local_vars = frame.get("vars")
            if not isinstance(local_vars, dict):
                continue
            for name, value in list(local_vars.items()):
                if _holds(value, texts):
                    local_vars[name] = _FILTERED
    return event


def _holds(value: Any, texts: list[tuple[str, bool]]) -> bool:
    if isinstance(value, bytes | bytearray):
        shown = bytes(value).decode("utf-8", "replace")
    elif isinstance(value, str):
        shown = value
    else:
        try:
            shown = repr(value)[:100_000]
        except Exception:  # noqa: BLE001 - a broken __repr__: filter rather than risk it
            return True
    return any(text in shown if partial else text == shown for text, partial in texts)
