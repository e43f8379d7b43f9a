"""Log set-up for ``routeledger serve``: text or JSON lines on stderr, secrets scrubbed.

Loggers: ``routeledger.server`` (one INFO line per request), ``routeledger.engine``
(one line per availability change, see ``adapters/engine/logs.py``). A record's
``routeledger`` extra (a dict) becomes the JSON line's keys; in text it is
already in the message. Every line passes through the engine's scrubber, the
one that also cleans problem details and failure reports.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

import orjson

__all__ = ["LOG_FORMATS", "ScrubbingFormatter", "configure_logging"]

LOG_FORMATS: Final = ("text", "json")


class ScrubbingFormatter(logging.Formatter):
    """A text or JSON formatter whose output goes through ``scrub``."""

    def __init__(self, json_lines: bool, scrub: Callable[[str], str]) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.json_lines = json_lines
        self.scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        if not self.json_lines:
            return self.scrub(super().format(record))
        document: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "routeledger", None)
        if isinstance(fields, dict):
            document.update(fields)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return self.scrub(orjson.dumps(document, default=str).decode())


def configure_logging(log_format: str, level: str, scrub: Callable[[str], str]) -> None:
    """Send ``routeledger.*`` records at ``level`` and above to stderr in ``log_format``."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ScrubbingFormatter(log_format == "json", scrub))
    root = logging.getLogger("routeledger")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
