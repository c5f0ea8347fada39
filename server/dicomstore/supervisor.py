"""`dicomstore serve --workers N`: a supervisor and N server processes sharing ports and data.

The supervisor checks the data directory and reserves both ports (with port 0, picking free
ones), runs start-up recovery once (`core.recovery`: what the processes of the last run left
removed, their operation leases released) while no worker runs, then starts the workers, each
a fresh interpreter (`python -m dicomstore.cli serve ... --worker-pipe FD`: spawned, never
forked, so no worker inherits grpcio's threads). Each worker binds both ports with SO_REUSEPORT,
so the kernel spreads connections over them, and writes `ready` to its pipe once it serves (or
`failed REASON` if it cannot start). The supervisor logs "serving" once every worker is ready.

A worker that dies is started again, after a pause that doubles (up to `MAX_BACKOFF_S`) while
workers keep dying young. A worker that fails `START_FAILURES` times in a row before it is ready
ends the whole: every worker is stopped and the supervisor exits 1 with the reason. On SIGTERM or
SIGINT the supervisor sends SIGTERM to every worker, waits for each to drain (its own
`--shutdown-grace`), and exits 0.

What the processes share is the data directory: the catalog (SQLite in WAL mode, safe across the
processes of one machine; each process has its own writer connection, and the writers take turns
through SQLite's lock) and the blobs. No process keeps state another could invalidate
(docs: README "Several processes").
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
import time
from typing import Any, Final

from dicomstore import config, startup
from dicomstore.blobs.choice import blob_store
from dicomstore.catalog.choice import catalog_for
from dicomstore.config import Settings
from dicomstore.core.errors import DicomStoreError
from dicomstore.core.recovery import recover

log = logging.getLogger("dicomstore")

#: Start-up failures in a row, before ready, after which a worker is given up (and the whole).
START_FAILURES: Final = 3
#: Pause before restarting a worker that died: doubled while workers die young, up to the max.
FIRST_BACKOFF_S: Final = 0.5
MAX_BACKOFF_S: Final = 10.0
#: A worker that ran this long before dying is restarted after the first pause again.
HEALTHY_S: Final = 30.0
#: Beyond its shutdown grace, how long a worker gets to exit before it is killed.
STOP_MARGIN_S: Final = 30.0


class StartFailed(Exception):
    """A worker failed at start-up `START_FAILURES` times in a row; the message says why."""


def worker_settings(settings: Settings, grpc_port: int, http_port: int) -> Settings:
    """A worker's settings: the reserved ports, and its share of the pixel processes (so that
    all the workers together run about `--pixel-processes`, by default one per core)."""
    pixels = max(1, settings.pixel_processes // settings.workers)
    return dataclasses.replace(
        settings, grpc_port=grpc_port, http_port=http_port, pixel_processes=pixels
    )


class _Worker:
    """One worker slot: the process in it now, its pipe, and its record of failures."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()
        self.reason = ""
        self.started_at = 0.0
        self.start_failures = 0
        self.backoff = FIRST_BACKOFF_S


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stopping = asyncio.Event()
        self._workers = [_Worker(n) for n in range(settings.workers)]
        self._reserved: list[socket.socket] = []
        self.grpc_port = 0
        self.http_port = 0

    def reserve_ports(self) -> None:
        """Check both ports are free, then hold them (bound with SO_REUSEPORT, never listening:
        the kernel hands connections only to the workers' listening sockets), so that a port 0
        picked here stays this server's while the workers bind it."""
        s = self.settings
        startup.check_port(s.host, s.http_port, "HTTP")
        startup.check_port(s.host, s.grpc_port, "gRPC")
        for port, transport in ((s.http_port, "HTTP"), (s.grpc_port, "gRPC")):
            self._reserved.append(startup.bind(s.host, port, transport, reuse_port=True))
        self.http_port = self._reserved[0].getsockname()[1]
        self.grpc_port = self._reserved[1].getsockname()[1]

    async def recover(self) -> None:
        """Start-up recovery, once, before any worker runs (see `core.recovery`)."""
        s = self.settings
        catalog = catalog_for(s.catalog, s.catalog_path)
        blobs = blob_store(s.blobs, s.data_dir, s.gcs_endpoint, os.environ)
        try:
            await catalog.open()
            await blobs.open()
            await recover(catalog, blobs)
        finally:
            await blobs.close()
            await catalog.close()

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT; StartFailed when a worker cannot start."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        watchers = [loop.create_task(self._watch(worker)) for worker in self._workers]
        try:
            await self._wait_ready(watchers)
            if not self._stopping.is_set():
                log.info(
                    "serving",
                    extra={
                        "grpc_port": self.grpc_port,
                        "http_port": self.http_port,
                        "host": self.settings.host,
                        "data_dir": str(self.settings.data_dir),
                        "workers": len(self._workers),
                        "pids": [w.process.pid for w in self._workers if w.process],
                    },
                )
                stopped: asyncio.Task[Any] = loop.create_task(self._stopping.wait())
                await asyncio.wait([stopped, *watchers], return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
            for watcher in watchers:
                if watcher.done():
                    watcher.result()  # StartFailed
        finally:
            if self._stopping.is_set():
                log.info("shutting down", extra={"grace_seconds": self.settings.shutdown_grace})
            self._stopping.set()
            for watcher in watchers:  # no worker is started any more
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            await self._stop_all()
            for sock in self._reserved:
                sock.close()

    async def _wait_ready(self, watchers: list[asyncio.Task[None]]) -> None:
        """Until every worker is ready or the supervisor is stopped; StartFailed meanwhile."""

        async def all_ready() -> None:
            for worker in self._workers:
                await worker.ready.wait()

        loop = asyncio.get_running_loop()
        waits: list[asyncio.Task[Any]] = [
            loop.create_task(all_ready()),
            loop.create_task(self._stopping.wait()),
        ]
        try:
            while not any(wait.done() for wait in waits):
                await asyncio.wait([*waits, *watchers], return_when=asyncio.FIRST_COMPLETED)
                for watcher in watchers:
                    if watcher.done():
                        watcher.result()  # StartFailed
        finally:
            for wait in waits:
                wait.cancel()

    async def _watch(self, worker: _Worker) -> None:
        """Keep a worker running in this slot until the supervisor stops."""
        while not self._stopping.is_set():
            await self._start(worker)
            assert worker.process is not None
            code = await worker.process.wait()
            if self._stopping.is_set():
                return
            lived = time.monotonic() - worker.started_at
            if not worker.ready.is_set():
                worker.start_failures += 1
                reason = worker.reason or f"worker exited with code {code} before serving"
                log.error(
                    "worker failed to start",
                    extra={"worker": worker.index, "code": code, "reason": reason},
                )
                if worker.start_failures >= START_FAILURES:
                    raise StartFailed(reason)
            else:
                worker.start_failures = 0
                log.error(
                    "worker died; restarting it",
                    extra={"worker": worker.index, "code": code, "lived_s": round(lived, 3)},
                )
            worker.backoff = (
                FIRST_BACKOFF_S if lived >= HEALTHY_S else min(worker.backoff * 2, MAX_BACKOFF_S)
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), worker.backoff)

    async def _start(self, worker: _Worker) -> None:
        worker.ready.clear()
        worker.reason = ""
        settings = worker_settings(self.settings, self.grpc_port, self.http_port)
        read_end, write_end = os.pipe()
        try:
            worker.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "dicomstore.cli",
                "serve",
                *config.arguments(settings),
                "--worker-pipe",
                str(write_end),
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(write_end,),
            )
        finally:
            os.close(write_end)
        worker.started_at = time.monotonic()
        asyncio.get_running_loop().create_task(self._listen(worker, read_end))

    async def _listen(self, worker: _Worker, read_end: int) -> None:
        """Read what the worker says on its pipe until it closes (the worker exited)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_end, "rb")
        )
        try:
            while line := await reader.readline():
                text = line.decode(errors="replace").strip()
                if text == "ready":
                    worker.ready.set()
                elif text.startswith("failed "):
                    worker.reason = text.removeprefix("failed ")
        finally:
            transport.close()

    async def _stop_all(self) -> None:
        """SIGTERM every worker; wait for each to drain and exit (killed past the grace)."""
        running = [w.process for w in self._workers if w.process and w.process.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = self.settings.shutdown_grace + STOP_MARGIN_S
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), deadline)
        except TimeoutError:
            for process in running:
                if process.returncode is None:
                    log.error("worker did not stop in time; killing it", extra={"pid": process.pid})
                    process.kill()
            await asyncio.gather(*(p.wait() for p in running))


async def supervise(settings: Settings) -> None:
    supervisor = Supervisor(settings)
    catalog = settings.catalog_path
    startup.check_data_dir(
        settings.data_dir,
        files=[
            catalog,
            catalog.with_name(f"{catalog.name}-wal"),
            catalog.with_name(f"{catalog.name}-shm"),
        ],
        folders=[settings.blob_dir],
    )
    for pem in (settings.tls_cert, settings.tls_key):
        if pem is not None:
            pem.read_bytes()  # unreadable: OSError naming it, before any worker starts
    supervisor.reserve_ports()
    await supervisor.recover()
    await supervisor.run()


def main(settings: Settings) -> int:
    """Run the supervisor until SIGTERM or SIGINT: 0, or 1 when it cannot start."""
    try:
        asyncio.run(supervise(settings))
    except (OSError, DicomStoreError, StartFailed) as exc:
        print(f"dicomstore: cannot start: {exc}", file=sys.stderr)
        return 1
    log.info("stopped")
    return 0
