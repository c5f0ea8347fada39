"""`dicomstore serve` as a child process for end-to-end tests, or an external server named by env.

`start_server(data_dir, *flags)` runs `python -m dicomstore.cli serve --grpc-port 0 --http-port 0`
and returns once the server has logged its "serving" line (JSON or text log format). A background
thread keeps reading the child's stderr into `ServerProcess.lines`, so the pipe never fills and the
tests can read the access log. Used as a context manager, the process is always killed on exit.

`DICOMSTORE_TEST_TARGET=host:grpcport,httpport` names an external server: `external_target()`
returns it, and the tests that do not need process control run against it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

TARGET_ENV = "DICOMSTORE_TEST_TARGET"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 30.0

# The text log format's serving line: `info    dicomstore: serving grpc_port=N http_port=M ...`.
_TEXT_SERVING = re.compile(r"\bdicomstore: serving\b.*\bgrpc_port=(\d+)\b.*\bhttp_port=(\d+)\b")


class ServerStartError(RuntimeError):
    """The server exited or did not log "serving" in time; the message holds its stderr."""


@dataclass(frozen=True)
class Target:
    """Where a running server answers."""

    host: str
    grpc_port: int
    http_port: int

    @property
    def grpc_address(self) -> str:
        return (
            f"[{self.host}]:{self.grpc_port}"
            if ":" in self.host
            else f"{self.host}:{self.grpc_port}"
        )

    @property
    def http_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.http_port}"


def external_target() -> Target | None:
    """The server `DICOMSTORE_TEST_TARGET=host:grpcport,httpport` names, if set."""
    value = os.environ.get(TARGET_ENV, "").strip()
    if not value:
        return None
    match = re.fullmatch(r"\[?(?P<host>[^\]]+?)\]?:(?P<grpc>\d+),(?P<http>\d+)", value)
    if match is None:
        raise ValueError(f"{TARGET_ENV} must be host:grpcport,httpport, got {value!r}")
    return Target(match["host"], int(match["grpc"]), int(match["http"]))


def serving_ports(line: str) -> tuple[int, int] | None:
    """The (grpc, http) ports of a "serving" log line in either log format, else None."""
    try:
        entry = json.loads(line)
    except ValueError:
        match = _TEXT_SERVING.search(line)
        return (int(match[1]), int(match[2])) if match else None
    if isinstance(entry, dict) and entry.get("message") == "serving":
        return int(entry["grpc_port"]), int(entry["http_port"])
    return None


def base_environment(env: Mapping[str, str] | None) -> dict[str, str]:
    """The parent's environment without DICOMSTORE_* settings (tests stay hermetic), plus `env`."""
    result = {k: v for k, v in os.environ.items() if not k.startswith("DICOMSTORE_")}
    result["PYTHONUNBUFFERED"] = "1"
    result.update(env or {})
    return result


def serve_command(data_dir: Path | None, *extra_args: str, ports: bool = True) -> list[str]:
    """The command line; `ports=False` leaves the ports to the env twins or the defaults."""
    command = [sys.executable, "-m", "dicomstore.cli", "serve"]
    if ports:
        command += ["--grpc-port", "0", "--http-port", "0"]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    return [*command, *extra_args]


class ServerProcess:
    """A running `dicomstore serve` child process."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self.host = "127.0.0.1"
        self.grpc_port = 0
        self.http_port = 0
        self._ready = threading.Event()
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._drain, name="dicomstore-stderr", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.rstrip("\n")
            with self._changed:
                self.lines.append(line)
                ports = None if self._ready.is_set() else serving_ports(line)
                if ports is not None:
                    self.grpc_port, self.http_port = ports
                    self._ready.set()
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()
        self._ready.set()  # EOF: wake the waiter, which sees the process ended

    def started(self, timeout: float = READY_TIMEOUT) -> bool:
        """Wait until the server logs "serving" (True) or closes stderr (False)."""
        if not self._ready.wait(timeout):
            raise TimeoutError(f"dicomstore neither served nor exited within {timeout}s")
        return self.grpc_port != 0

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        if not self._ready.wait(timeout) or self.grpc_port == 0:
            self.kill()
            raise ServerStartError(
                f"dicomstore did not log 'serving' within {timeout}s "
                f"(exit code {self.process.poll()}); stderr:\n" + self.stderr()
            )

    @property
    def target(self) -> Target:
        return Target(self.host, self.grpc_port, self.http_port)

    @property
    def grpc_address(self) -> str:
        return self.target.grpc_address

    @property
    def http_url(self) -> str:
        return self.target.http_url

    def stderr(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def records(self) -> list[dict[str, Any]]:
        """The JSON log lines seen so far (non-JSON lines are skipped)."""
        with self._changed:
            lines = list(self.lines)
        found = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                found.append(entry)
        return found

    def wait_for_records(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[dict[str, Any]]:
        """Wait until at least `count` JSON log lines match `predicate`; return all matches."""
        deadline = time.monotonic() + timeout
        while True:
            matches = [r for r in self.records() if predicate(r)]
            remaining = deadline - time.monotonic()
            if len(matches) >= count or remaining <= 0 or self.process.poll() is not None:
                return matches
            with self._changed:
                self._changed.wait(min(remaining, 0.2))

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for the exit code, then for the rest of stderr."""
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        if not self._reader.is_alive() and self.process.stderr is not None:
            self.process.stderr.close()
        return code

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then wait: the exit code."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> int:
        """SIGKILL, then wait: the exit code (-9 unless it had already exited)."""
        self.signal(signal.SIGKILL)
        return self.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()


def launch(
    data_dir: Path | None,
    *extra_args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    ports: bool = True,
) -> ServerProcess:
    """Start `dicomstore serve` (on ephemeral ports unless `ports=False`) without waiting for it.

    `env` is added to the parent's environment, from which DICOMSTORE_* variables are removed;
    `data_dir=None` passes no --data-dir (the env twin or the default then applies, under `cwd`).
    """
    process = subprocess.Popen(
        serve_command(data_dir, *extra_args, ports=ports),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=base_environment(env),
        cwd=cwd if cwd is not None else (data_dir.parent if data_dir is not None else None),
    )
    return ServerProcess(process)


def start_server(
    data_dir: Path | None,
    *extra_args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    ready_timeout: float = READY_TIMEOUT,
) -> ServerProcess:
    """Start `dicomstore serve` on ephemeral ports and wait until it logs "serving"."""
    server = launch(data_dir, *extra_args, env=env, cwd=cwd)
    server.wait_ready(ready_timeout)
    return server
