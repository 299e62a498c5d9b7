"""Structured logs: one JSON object per line (or plain text for humans)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from relora_operator.redaction import redact

# kopf attaches its whole settings object to each record: noise, not context.
_EXTRA_SKIP = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "settings"}


class _QuietTimers(logging.Filter):
    """Drops kopf's "Timer '...' succeeded." lines: one per object per resync, they would drown the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("Timer '") and msg.endswith("succeeded."))


class Redact(logging.Filter):
    """Redacts every record (message and arguments) with the operator's one redaction function; on kopf's
    per-object logger it also covers the Kubernetes Events kopf posts from those records."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        # kopf's per-object loggers carry the object reference in `k8s_ref`; keep it and other extras.
        for key, value in record.__dict__.items():
            if key not in _EXTRA_SKIP and not key.startswith("_"):
                entry[key] = value if isinstance(value, (str, int, float, bool, type(None), dict, list)) else str(value)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def configure(fmt: str, level: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_QuietTimers())
    handler.addFilter(Redact())
    logging.getLogger("kopf.objects").addFilter(Redact())
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The client libraries are noisy at INFO/DEBUG and say nothing an operator user needs.
    for name in ("kubernetes", "urllib3", "botocore", "boto3", "aiohttp.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
