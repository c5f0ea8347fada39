"""`dicomstore-soak` as a user runs it: a few thousand mixed calls against its own server end
with no crash and no unexpected error, and a server that dies is counted as a crash, with the
stacks faulthandler wrote, and replaced so that the soak goes on."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from typing import Any

from dicomstore_bench.soak_traffic import Worker


def _soak(*args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "dicomstore_bench.soak", "--json", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _report(proc: subprocess.Popen[str], timeout: float = 240) -> tuple[int, dict[str, Any], str]:
    stdout, stderr = proc.communicate(timeout=timeout)
    return proc.returncode, json.loads(stdout), stderr


def test_soak_of_thousands_of_mixed_calls_has_no_crash_and_no_unexpected_error() -> None:
    code, report, stderr = _report(_soak("--calls", "3000", "--rss-period", "0.5"))

    assert code == 0, stderr
    assert report["calls"] >= 3000
    assert report["errors"] == {}, report["error_examples"]
    assert report["crashes"] == []
    assert report["server_log_errors"] == []
    actions = {name for name in dir(Worker) if name.startswith(("grpc_", "rest_", "stow_"))}
    actions |= {name for name in dir(Worker) if name.startswith(("qido", "wado_", "delete_"))}
    assert actions <= set(report["calls_by_action"]), actions - set(report["calls_by_action"])
    assert report["ended_early"] > 0  # deadlines and dropped downloads did happen
    assert report["rss_mb"] and all(mb > 20 for _, mb in report["rss_mb"])


def test_soak_counts_a_server_crash_with_its_stacks_and_goes_on() -> None:
    proc = _soak("--duration", "6", "--concurrency", "4")
    assert proc.stderr is not None
    first = proc.stderr.readline()
    pid = re.search(r"pid (\d+)", first)
    assert pid is not None, first
    assert proc.stderr.readline().startswith("soak: workers ready")
    os.kill(int(pid[1]), signal.SIGSEGV)
    code, report, stderr = _report(proc)

    assert code == 1
    [crash] = report["crashes"]
    assert crash["exit_status"] == -signal.SIGSEGV
    assert "Fatal Python error: Segmentation fault" in crash["log_tail"]
    assert "server died (exit status -11; restarted)" in stderr
    assert report["calls"] > 0
