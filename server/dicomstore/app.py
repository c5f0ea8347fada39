"""The composition root: Settings -> adapters -> core -> both transports, in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import uvicorn
from google.cloud.healthcare.v1.dataset import dataset_pb2
from google.cloud.healthcare.v1.dicom import dicom_pb2
from google.longrunning import operations_pb2
from starlette.applications import Starlette

from dicomstore import startup
from dicomstore.api.grpc.server import GrpcServer
from dicomstore.api.rest import operation_logs
from dicomstore.api.rest.app import create_app
from dicomstore.api.rest.dicomweb import dicomweb_routes
from dicomstore.api.rest.dicomweb.context import DicomWebContext
from dicomstore.api.rest.forwarded import ForwardedOrigin
from dicomstore.api.services.datasets import DatasetServiceHandlers
from dicomstore.api.services.dicom import DicomServiceHandlers
from dicomstore.api.services.operations import OperationsHandlers
from dicomstore.blobs.choice import blob_store
from dicomstore.catalog.choice import catalog_for
from dicomstore.config import Settings
from dicomstore.core.datasets import Datasets
from dicomstore.core.exports import Exports
from dicomstore.core.imports import Imports
from dicomstore.core.instance_pixels import InstancePixels
from dicomstore.core.instances import Instances
from dicomstore.core.operations import Operations
from dicomstore.core.paging import PageTokens
from dicomstore.core.policy import POLICIES
from dicomstore.core.ports import CloudStorage
from dicomstore.core.processes import new_owner
from dicomstore.core.recovery import Janitor, recover
from dicomstore.core.search import Search
from dicomstore.core.stores import DicomStores
from dicomstore.core.streaming import Streaming
from dicomstore.destinations.bigquery import bigquery_tables
from dicomstore.destinations.gcs import cloud_storage
from dicomstore.logs import AccessLog
from dicomstore.pixel_workers import PixelWorkers

log = logging.getLogger("dicomstore")

# How long an idle HTTP connection stays open. Clients reuse a pooled connection until their own
# idle limit (httpx: 5 s, requests: none); a server that closes first races a request sent just
# then, which fails with the connection reset. 75 s is nginx's default.
HTTP_KEEP_ALIVE_S = 75


class _HttpServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The application owns SIGTERM/SIGINT: it drains both transports together.
        yield


def _bind(settings: Settings, *, worker: bool = False) -> socket.socket:
    """Check what start-up needs before anything is created: a usable data directory, both
    ports free. The HTTP socket, bound; FailedPrecondition naming the path or address
    otherwise. A `worker` shares its ports with the other workers, which its supervisor
    checked and reserved."""
    check_data_dir(settings)
    sock = startup.bind(settings.host, settings.http_port, "HTTP", reuse_port=worker)
    if worker:
        return sock
    try:
        startup.check_port(settings.host, settings.grpc_port, "gRPC")
    except BaseException:
        sock.close()
        raise
    return sock


_SIDECARS = ("-wal", "-shm")  # SQLite's files beside the catalog in WAL mode


def check_data_dir(settings: Settings) -> None:
    """The data directory, the catalog's files and the blob folder are usable (see startup)."""
    startup.check_data_dir(
        settings.data_dir,
        files=[settings.catalog_path, *(Path(f"{settings.catalog_path}{s}") for s in _SIDECARS)],
        folders=[settings.blob_dir],
    )


class App:
    """One dicomstore server: build with Settings, `start()`, then `stop()`.

    A `worker` is one of the processes of `--workers` (`dicomstore.supervisor`): it shares its
    ports and data directory with the others, and leaves start-up recovery to its supervisor,
    which ran it before any worker started; its `Janitor` removes what a worker that died left.
    """

    def __init__(self, settings: Settings, *, worker: bool = False) -> None:
        self.settings = settings
        self.worker = worker
        self.catalog = catalog_for(settings.catalog, settings.catalog_path)
        self.blobs = blob_store(
            settings.blobs, settings.data_dir, settings.gcs_endpoint, os.environ
        )
        self.pixels = PixelWorkers(settings.pixel_processes, settings.pixel_memory_limit)
        self._serving = False
        self._http: _HttpServer | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self.grpc: GrpcServer | None = None
        self.http_app: Starlette | None = None  # the ASGI app uvicorn serves (tests use it too)
        self.operations: Operations | None = None
        self.owner = new_owner()  # this process's id in the catalog's leases
        self.janitor: Janitor | None = None
        self.storage: CloudStorage | None = None
        self.streaming: Streaming | None = None
        self.grpc_port = 0
        self.http_port = 0

    async def start(self) -> None:
        """Serve both transports. Start-up faults (an unusable data directory, a port in use)
        are FailedPrecondition, raised before anything is created."""
        try:
            await self._start()
        except BaseException:
            await self._shutdown()
            raise

    async def _start(self) -> None:
        settings = self.settings
        self._sock = sock = _bind(settings, worker=self.worker)
        credentials = self._credentials()  # unreadable certificate files: before any creation
        await self.catalog.open()
        await self.blobs.open()
        # The liveness lease comes first: from then on no other process removes what this one
        # writes (core.recovery).
        self.janitor = Janitor(self.catalog, self.blobs, self.owner)
        await self.janitor.start()
        if not self.worker:
            await recover(self.catalog, self.blobs, self.owner)
        tokens = PageTokens(await self.catalog.setting("page_token_key", os.urandom(32)))
        self.http_port = sock.getsockname()[1]
        operations = Operations(
            self.catalog,
            tokens,
            concurrency=settings.operation_workers,
            logs_base_url=settings.public_url or _own_url(settings.host, self.http_port),
            owner=self.owner,
        )
        self.operations = operations
        stores = DicomStores(self.catalog, self.blobs, tokens)
        datasets = Datasets(self.catalog, self.blobs, operations, tokens)
        tables = bigquery_tables(settings.data_dir, settings.bigquery_endpoint or None)
        self.streaming = Streaming(self.catalog, tables)
        self.streaming.start()
        # Every job's owner is built before `resume`, which runs the jobs a crash interrupted.
        instances = Instances(self.catalog, self.blobs, operations, on_stored=self.streaming.stored)
        self.storage = cloud_storage(settings.data_dir, settings.gcs_endpoint or None, os.environ)
        await self.storage.open()
        imports = Imports(
            self.catalog,
            operations,
            instances,
            self.storage,
            max_instance_bytes=settings.max_instance_bytes,
            concurrency=settings.import_concurrency,
        )
        exports = Exports(self.catalog, operations, self.blobs, self.storage, tables, self.pixels)
        await operations.resume()

        services = [
            (
                dicom_pb2.DESCRIPTOR.services_by_name["DicomService"],
                DicomServiceHandlers(stores, imports, exports),
            ),
            (
                dataset_pb2.DESCRIPTOR.services_by_name["DatasetService"],
                DatasetServiceHandlers(datasets),
            ),
            (
                operations_pb2.DESCRIPTOR.services_by_name["Operations"],
                OperationsHandlers(operations),
            ),
        ]
        access_log = AccessLog.for_settings(
            settings.log_level, settings.log_format, pid=self.worker
        )
        self.grpc = GrpcServer(
            services,
            address=startup.address(settings.host, settings.grpc_port),
            access_log=access_log,
            credentials=credentials,
            reuse_port=self.worker,
        )
        self.grpc_port = self.grpc.port
        dicomweb = DicomWebContext(
            instances=instances,
            search=Search(self.catalog),
            stores=stores,
            policy=POLICIES[settings.dicomweb_mode],
            max_instance_bytes=settings.max_instance_bytes,
            pixels=InstancePixels(self.blobs, self.pixels),
            public_url=settings.public_url,
        )
        self.http_app = create_app(
            lambda: self._serving,
            services,
            access_log,
            extra_routes=[*dicomweb_routes(dicomweb), *operation_logs.routes(operations)],
            cors_origins=settings.cors_origins,
        )
        config = uvicorn.Config(
            ForwardedOrigin(self.http_app, settings.forwarded_allow_ips),
            # ForwardedOrigin applies uvicorn's proxy headers itself, for trusted peers only.
            proxy_headers=False,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(settings.shutdown_grace),
            timeout_keep_alive=HTTP_KEEP_ALIVE_S,
        )
        self._http = _HttpServer(config)
        await self.grpc.start()
        self._http_task = asyncio.get_running_loop().create_task(self._http.serve(sockets=[sock]))
        while not self._http.started:
            if self._http_task.done():
                await self._http_task
                raise OSError(f"HTTP server did not start on {settings.host}:{settings.http_port}")
            await asyncio.sleep(0.01)
        self._serving = True
        log.info(
            # A worker's supervisor logs "serving" once every worker is ready.
            "worker serving" if self.worker else "serving",
            extra={
                "grpc_port": self.grpc_port,
                "http_port": self.http_port,
                "host": settings.host,
                "data_dir": str(settings.data_dir),
                # The loop that runs, which may differ from --event-loop when uvloop is missing.
                "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
            },
        )

    def _credentials(self) -> grpc.ServerCredentials | None:
        cert, key = self.settings.tls_cert, self.settings.tls_key
        if cert is None or key is None:
            return None
        return grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])

    async def stop(self) -> None:
        """Refuse new work, let in-flight calls finish within the grace period, close storage."""
        await self._shutdown()
        log.info("stopped")

    async def _shutdown(self) -> None:
        self._serving = False
        grace = self.settings.shutdown_grace
        if self.grpc is not None:
            await self.grpc.stop(grace)
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            await self._http_task
        elif self._sock is not None:  # never handed to uvicorn
            self._sock.close()
        if self.operations is not None:
            await self.operations.close()
        if self.streaming is not None:
            await self.streaming.close()
        if self.janitor is not None:
            await self.janitor.close()
        await self.pixels.close()
        if self.storage is not None:
            await self.storage.close()
        await self.blobs.close()
        await self.catalog.close()


def _own_url(host: str, port: int) -> str:
    """The base URL of the HTTP port, for links the server writes without --public-url."""
    if host in ("", "0.0.0.0", "::"):
        host = "localhost"
    return f"http://{startup.address(host, port)}"


async def serve(settings: Settings, *, worker_pipe: int | None = None) -> None:
    """Run until SIGTERM or SIGINT, then drain and return.

    With `worker_pipe`, this process is a worker of `--workers`: it writes `ready` to that pipe
    once it serves, and stops as on SIGTERM if its supervisor goes away."""
    app = App(settings, worker=worker_pipe is not None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    orphaned: asyncio.Task[None] | None = None
    if worker_pipe is not None:
        os.write(worker_pipe, b"ready\n")
        orphaned = loop.create_task(_watch_supervisor(os.getppid(), stop))
    await stop.wait()
    if orphaned is not None:
        orphaned.cancel()
    log.info("shutting down", extra={"grace_seconds": settings.shutdown_grace})
    await app.stop()


async def _watch_supervisor(supervisor: int, stop: asyncio.Event) -> None:
    """Stop when the supervisor has died (this process was given to another parent): nobody
    would stop it otherwise."""
    while os.getppid() == supervisor:  # noqa: ASYNC110 (no event tells of a parent's death)
        await asyncio.sleep(1.0)
    log.error("the supervisor is gone; stopping")
    stop.set()
