"""The servers a benchmark measures, each a subprocess on loopback with its own storage:
`dicomstore serve` (with dataset `bench` and store `bench` created over REST), Orthanc with its
DICOMweb plugin (Debian packages `orthanc`, `orthanc-dicomweb`), and a trivial HTTP server of
static bodies, the loopback baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import multiprocessing
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

DICOMSTORE_STORE = "projects/bench/locations/local/datasets/bench/dicomStores/bench"
SERVE_READY_S = 60.0
ORTHANC_PLUGIN_PATHS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
)


@dataclass(frozen=True)
class Target:
    """One DICOMweb server under test."""

    name: str
    root: str  # the DICOMweb root URL, without a trailing slash
    pid: int
    stow_single_part: bool  # single-part application/dicom STOW; else a one-part multipart
    wado_single_part: bool  # serves an instance as single-part application/dicom
    version: str


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer {url} within 60 s:\n{log.read_text()}")


@contextlib.contextmanager
def server_process(command: list[str], log: Path, what: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` with its output in `log`; SIGTERM it on exit, showing the log's end when it
    did not exit cleanly."""
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.returncode not in (0, -signal.SIGTERM):
            tail = log.read_text(errors="replace")[-4000:]
            print(f"{what} exited with {proc.returncode}:\n{tail}", file=sys.stderr)


@contextlib.contextmanager
def dicomstore_server(tmp: Path, extra: Sequence[str] = ()) -> Iterator[Target]:
    """`dicomstore serve` on its own data dir, with dataset `bench` and store `bench`; `extra`
    flags are added to its command line (`--workers 2`)."""
    port, log = free_port(), tmp / "dicomstore.log"
    command = [sys.executable, "-m", "dicomstore.cli", "serve", "--grpc-port", "0"]
    command += ["--http-port", str(port), "--data-dir", str(tmp / "dicomstore")]
    command += ["--log-level", "warning", *extra]
    with server_process(command, log, "dicomstore") as proc:
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/healthz", proc, log, "dicomstore")
        location = f"{base}/v1/projects/bench/locations/local"
        for url in (
            f"{location}/datasets?datasetId=bench",
            f"{location}/datasets/bench/dicomStores?dicomStoreId=bench",
        ):
            reply = httpx.post(url, json={}, timeout=30)
            if reply.status_code != 200:
                raise RuntimeError(f"POST {url}: {reply.status_code} {reply.text}")
        version = importlib.metadata.version("dicomstore")
        root = f"{base}/v1/{DICOMSTORE_STORE}/dicomWeb"
        yield Target("dicomstore", root, proc.pid, True, True, version)


class ServeProcess:
    """`dicomstore serve` on a data directory, as a child process that the long-running commands
    (the soak, the crash trials) watch, kill and start again on the same ports and data."""

    def __init__(
        self, data_dir: Path, log: Path, extra: Sequence[str] = (), *, core_dumps: bool = False
    ) -> None:
        self.data_dir = data_dir
        self.log = log
        self.extra = list(extra)
        self.core_dumps = core_dumps
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def returncode(self) -> int | None:
        """None while it runs (or before it started), else its exit status."""
        return self.proc.returncode if self.proc is not None else None

    def _no_core_limit(self) -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    async def start(self) -> float:
        """Start it and wait until /healthz answers: the seconds it took (recovery included)."""
        command = ["-m", "dicomstore.cli", "serve", "--data-dir", str(self.data_dir)]
        command += ["--grpc-port", str(self.grpc_port), "--http-port", str(self.http_port)]
        command += ["--log-level", "warning", *self.extra]
        began = time.monotonic()
        with self.log.open("ab") as sink:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *command,
                stdout=sink,
                stderr=subprocess.STDOUT,
                preexec_fn=self._no_core_limit if self.core_dumps else None,
            )
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() - began < SERVE_READY_S:
                if self.proc.returncode is not None:
                    raise RuntimeError(
                        f"dicomstore exited with {self.proc.returncode}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.base}/healthz")).status_code == 200:
                        return time.monotonic() - began
                await asyncio.sleep(0.02)
        raise RuntimeError(f"dicomstore did not answer /healthz within {SERVE_READY_S:.0f} s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)

    async def wait(self) -> None:
        if self.proc is not None:
            await asyncio.wait_for(self.proc.wait(), 30)

    async def stop(self) -> int | None:
        """SIGTERM, as an operator stops it; SIGKILL if it has not exited within 30 s. The exit
        status, or None if it had already exited (its status is `returncode`)."""
        if self.proc is None or self.proc.returncode is not None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            return await self.proc.wait()

    def log_tail(self, chars: int = 6000) -> str:
        """The end of the server's log: from its last fatal error report (faulthandler's header
        and every thread's stack, which grow with the threads) when there is one, else the last
        `chars` characters."""
        text = self.log.read_text(errors="replace")
        fatal = text.rfind("Fatal Python error")
        if fatal != -1:
            return text[fatal : fatal + 4 * chars]
        return text[-chars:]


def find_orthanc(binary: str | None, plugin: str | None) -> tuple[str, str] | str:
    """(Orthanc binary, DICOMweb plugin) or the reason they are not usable."""
    if binary:
        found = shutil.which(binary)
        if not found:
            return f"Orthanc is missing: {binary} is not an executable"
    else:
        found = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin")
    if not found:
        return "Orthanc is missing: not installed (apt-get install orthanc orthanc-dicomweb)"
    candidates = [plugin] if plugin else list(ORTHANC_PLUGIN_PATHS)
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return found, candidate
    return f"Orthanc is missing its DICOMweb plugin ({', '.join(map(str, candidates))})"


@contextlib.contextmanager
def orthanc_server(
    tmp: Path,
    binary: str,
    plugin: str,
    *,
    name: str = "orthanc",
    dicomweb_servers: Mapping[str, Mapping[str, Any]] | None = None,
) -> Iterator[Target]:
    """Orthanc with its DICOMweb plugin on loopback, no DICOM listener, no authentication;
    storage and index in `tmp/NAME`, configuration `tmp/NAME.json`, log `tmp/NAME.log`.

    `dicomweb_servers` are the remote DICOMweb servers its DICOMweb client knows (the plugin's
    `DicomWeb.Servers`: name -> {"Url": ..., ...}).
    """
    port, log = free_port(), tmp / f"{name}.log"
    storage = tmp / name
    storage.mkdir()
    config = {
        "Name": name,
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "StorageCompression": False,
        "HttpPort": port,
        "HttpCompressionEnabled": False,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "KeepAlive": True,
        "Plugins": [plugin],
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": False,
            "Servers": dict(dicomweb_servers or {}),
        },
    }
    config_path = tmp / f"{name}.json"
    config_path.write_text(json.dumps(config, indent=2))
    with server_process([binary, str(config_path)], log, "Orthanc") as proc:
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/system", proc, log, "Orthanc")
        system = httpx.get(f"{base}/system", timeout=10).json()
        web = httpx.get(f"{base}/plugins/dicom-web", timeout=10)
        if web.status_code != 200:
            raise RuntimeError(f"Orthanc did not load its DICOMweb plugin:\n{log.read_text()}")
        version = f"{system.get('Version', '?')} + DICOMweb {web.json().get('Version', '?')}"
        yield Target("orthanc", f"{base}/dicom-web", proc.pid, False, False, version)


def _loopback_serve(conn: Connection, bodies: dict[str, int]) -> None:
    """The baseline server: HTTP/1.1 keep-alive, any GET of /<name> returns a static body."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    blobs = {
        f"/{name}".encode(): random.Random(size).randbytes(size) for name, size in bodies.items()
    }

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                blob = blobs.get(head.split(b" ", 2)[1], b"")
                writer.write(
                    b"HTTP/1.1 %d OK\r\nContent-Type: application/octet-stream\r\n"
                    b"Content-Length: %d\r\n\r\n" % (200 if blob else 404, len(blob))
                )
                view = memoryview(blob)
                for start in range(0, len(view), 1 << 20):
                    writer.write(view[start : start + (1 << 20)])
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        conn.send(server.sockets[0].getsockname()[1])
        async with server:
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)

    run_async(serve())


@contextlib.contextmanager
def loopback_server(bodies: dict[str, int]) -> Iterator[str]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_loopback_serve, args=(child, bodies), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(60):
            raise RuntimeError("the loopback HTTP server did not start")
        yield f"http://127.0.0.1:{parent.recv()}"
    finally:
        with contextlib.suppress(OSError):
            parent.send(None)
        proc.join(10)
        if proc.is_alive():
            proc.terminate()


def run_async(main: Awaitable[Any]) -> Any:
    """Run the coroutine `main` on uvloop when it is installed, else on asyncio."""

    async def wrapped() -> Any:
        return await main

    try:
        import uvloop
    except ImportError:
        return asyncio.run(wrapped())
    return uvloop.run(wrapped())
