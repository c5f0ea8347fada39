"""Structured logs: one JSON object per line on stderr (or plain text), set up once at start.

Access lines (one per call) bypass the `logging` machinery: building a LogRecord and running it
through handlers cost more than the call being logged, so `AccessLog` writes the line directly
in the same format.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TextIO


def request_ids() -> Iterator[str]:
    """Unique request ids without a system call per request: a random prefix and a counter."""
    prefix = os.urandom(4).hex()
    return (f"{prefix}{n:08x}" for n in itertools.count())


_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, pid: bool = False) -> None:
        super().__init__()
        self._pid = pid

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._pid:
            entry["pid"] = record.process
        entry |= {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self, pid: bool = False) -> None:
        super().__init__()
        self._pid = pid

    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD)
        if self._pid:
            extra = f"pid={record.process} {extra}"
        line = f"{record.levelname.lower():7} {record.name}: {record.getMessage()} {extra}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _demote_late_replies(record: logging.LogRecord) -> bool:
    """grpc.aio logs an error with a traceback when it cannot send the reply of a call whose
    client has gone (its deadline expired, or it hung up) before grpc noticed. Nothing failed
    on the server's side: the line becomes a debug one."""
    if record.levelno >= logging.ERROR and record.getMessage().startswith(
        "ExecuteBatchError raised in core by servicer method"
    ):
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info = record.exc_text = None
        return logging.getLogger().isEnabledFor(logging.DEBUG)
    return True


def configure(level: str, fmt: str, *, pid: bool = False) -> None:
    """`pid`: every line names the process that wrote it (the processes of `--workers`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(pid) if fmt == "json" else TextFormatter(pid))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's start/stop chatter; its errors still come through.
    logging.getLogger("uvicorn.error").setLevel(max(root.level, logging.WARNING))
    grpc_log = logging.getLogger("grpc._cython.cygrpc")
    grpc_log.filters[:] = [_demote_late_replies]


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


class AccessLog:
    """Writes one line per call (method, status code, duration, request id, peer)."""

    def __init__(self, stream: TextIO, fmt: str, enabled: bool = True, pid: bool = False) -> None:
        self._stream = stream
        self._json = fmt == "json"
        self.enabled = enabled
        self._pid = os.getpid() if pid else None

    def write(self, method: str, code: str, duration_ms: float, request_id: str, peer: str) -> None:
        if not self.enabled:
            return
        if self._json:
            entry = {
                "time": _timestamp(time.time()),
                "level": "info",
                "logger": "dicomstore.access",
                "message": "rpc",
                "method": method,
                "code": code,
                "duration_ms": duration_ms,
                "request_id": request_id,
                "peer": peer,
            }
            if self._pid is not None:
                entry["pid"] = self._pid
            line = json.dumps(entry)
        else:
            line = (
                f"info    dicomstore.access: rpc method={method} code={code} "
                f"duration_ms={duration_ms} request_id={request_id} peer={peer}"
            )
            if self._pid is not None:
                line += f" pid={self._pid}"
        self._stream.write(line + "\n")

    @classmethod
    def for_settings(cls, level: str, fmt: str, *, pid: bool = False) -> AccessLog:
        enabled = logging.getLevelName(level.upper()) <= logging.INFO
        return cls(sys.stderr, fmt, enabled=enabled, pid=pid)
