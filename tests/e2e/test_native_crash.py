"""A native crash of `dicomstore serve` leaves every thread's Python stack in its log, and a hang
can be diagnosed without stopping it (faulthandler, on SIGSEGV and SIGUSR1)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
from tests.e2e.server import start_server


def _wait_for(server_lines: list[str], text: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in line for line in list(server_lines)):
            return True
        time.sleep(0.05)
    return False


def test_segfault_writes_every_threads_stack_to_the_log(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    with server:
        server.signal(signal.SIGSEGV)
        code = server.wait()

    log = server.stderr()
    assert code == -signal.SIGSEGV, log
    assert "Fatal Python error: Segmentation fault" in log
    assert "Current thread" in log  # the thread that crashed
    assert log.count("Thread 0x") >= 3  # the loop, grpc's poller, the catalog writer, ...
    assert "dicomstore/cli.py" in log  # the main thread: the event loop started by the CLI


def test_sigusr1_writes_the_stacks_and_the_server_keeps_serving(tmp_path: Path) -> None:
    with start_server(tmp_path / "data") as server:
        server.signal(signal.SIGUSR1)

        assert _wait_for(server.lines, "Current thread"), server.stderr()
        assert httpx.get(f"{server.http_url}/healthz", timeout=10).status_code == 200
        assert server.terminate() == 0
