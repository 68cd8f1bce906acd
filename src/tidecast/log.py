"""Logging set-up: one line per event with time, level, pid and connection id.

Connection ids travel in a context variable so that every line logged while a
connection's callbacks run is tagged with it, without passing it around.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import time
from typing import Any

connection_id: contextvars.ContextVar[str] = contextvars.ContextVar("connection_id", default="")

# SRS level names mapped onto Python's.
SRS_LEVELS = {
    "verbose": logging.DEBUG,
    "info": logging.DEBUG,
    "trace": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}

_SHORT_LEVEL = {"DEBUG": "Debug", "INFO": "Trace", "WARNING": "Warn", "ERROR": "Error", "CRITICAL": "Error"}


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "cid"):
            record.cid = connection_id.get()
        return True


class TextFormatter(logging.Formatter):
    """`[time][Level][pid][cid] message`, SRS's familiar shape."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        ms = int(record.msecs)
        level = _SHORT_LEVEL.get(record.levelname, record.levelname)
        line = f"[{ts}.{ms:03d}][{level}][{record.process}][{getattr(record, 'cid', '')}] "
        line += record.getMessage()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "pid": record.process,
            "cid": getattr(record, "cid", ""),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class ReopenableFileHandler(logging.FileHandler):
    """A file handler that SIGUSR1 can point at a fresh file after logrotate moved it."""

    def reopen(self) -> None:
        self.acquire()
        try:
            if self.stream:
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


def setup_logging(tank: str = "console", level: str = "trace", file: str = "", fmt: str = "text") -> None:
    root = logging.getLogger("tidecast")
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    handler: logging.Handler
    if tank == "file" and file:
        os.makedirs(os.path.dirname(os.path.abspath(file)), exist_ok=True)
        handler = ReopenableFileHandler(file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    root.addHandler(handler)
    root.setLevel(SRS_LEVELS.get(level, logging.INFO))
    root.propagate = False


def reopen_log_files() -> None:
    for handler in logging.getLogger("tidecast").handlers:
        if isinstance(handler, ReopenableFileHandler):
            handler.reopen()


class RateLimitedLogger:
    """Exceptions from connections and requests, at most `per_second` lines a second: an attacker who can
    trigger an error must not also be able to flood the log. Suppressed lines are counted in the next one."""

    def __init__(self, logger: logging.Logger, per_second: float = 5.0) -> None:
        self.logger = logger
        self.interval = 1.0 / per_second
        self.last = 0.0
        self.suppressed = 0

    def exception(self, msg: str, *args: object) -> None:
        self.error(msg, *args, exc_info=True)

    def error(self, msg: str, *args: object, exc_info: Any = None) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            self.suppressed += 1
            return
        self.last = now
        if self.suppressed:
            msg += f" ({self.suppressed} similar errors not logged)"
            self.suppressed = 0
        self.logger.error(msg, *args, exc_info=exc_info)
