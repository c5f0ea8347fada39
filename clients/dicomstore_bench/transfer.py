"""The timed long-running operations of `dicomstore-transfer-bench`, over gRPC to one running
`dicomstore serve`: ImportDicomData and ExportDicomData (to Cloud Storage, to BigQuery), each
timed from the call to the moment GetOperation says it is done, with the server's peak resident
memory over that span, its counters, and a count of what arrived where it went.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Final, Self

import duckdb
import grpc
from google.cloud.healthcare.v1 import operation_pb2 as healthcare_operation_pb2
from google.cloud.healthcare.v1.dataset import dataset_pb2, dataset_pb2_grpc
from google.cloud.healthcare.v1.dicom import dicom_pb2, dicom_pb2_grpc
from google.longrunning import operations_pb2, operations_pb2_grpc

from dicomstore_bench.load import MB, RssSampler, cpu_seconds
from dicomstore_bench.servers import DICOMSTORE_STORE, ServeProcess

LOCATION = "projects/bench/locations/local"
POLL_S = 0.02
OPERATION_WAIT_S = 3600.0
#: Canonical code number -> name (grpc.StatusCode's values are (number, text) tuples).
CODE_NAMES: Final = MappingProxyType({code.value[0]: code.name for code in grpc.StatusCode})


@dataclass(frozen=True)
class Outcome:
    """One operation: its counters, wall time, bytes moved, the server's peak RSS, and what the
    benchmark found at the destination afterwards (instances, objects or rows)."""

    success: int = 0
    failure: int = 0
    seconds: float = math.nan
    bytes: int = 0
    rss_mb: float = math.nan
    cpu_s: float = math.nan  # the server's CPU time (user + system, all threads) over it
    found: int | None = None
    error: str = ""  # the operation's error (code: message), when it ended with one
    unavailable: str = ""  # why it could not be measured

    @property
    def per_s(self) -> float:
        return self.success / self.seconds if self.seconds else math.nan

    @property
    def mb_per_s(self) -> float:
        return self.bytes / MB / self.seconds if self.bytes and self.seconds else math.nan

    @property
    def cpu_ms_per_item(self) -> float:
        return 1000 * self.cpu_s / self.success if self.success else math.nan


class StoreClient:
    """gRPC to one `dicomstore serve`, whose store `bench` of dataset `bench` it creates."""

    def __init__(self, serve: ServeProcess) -> None:
        self.serve = serve
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{serve.grpc_port}")
        self.dicom = dicom_pb2_grpc.DicomServiceStub(self.channel)
        self.operations = operations_pb2_grpc.OperationsStub(self.channel)

    async def __aenter__(self) -> Self:
        datasets = dataset_pb2_grpc.DatasetServiceStub(self.channel)
        await datasets.CreateDataset(
            dataset_pb2.CreateDatasetRequest(parent=LOCATION, dataset_id="bench")
        )
        await self.dicom.CreateDicomStore(
            dicom_pb2.CreateDicomStoreRequest(
                parent=f"{LOCATION}/datasets/bench", dicom_store_id="bench"
            )
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()

    async def instance_count(self) -> int:
        metrics = await self.dicom.GetDicomStoreMetrics(
            dicom_pb2.GetDicomStoreMetricsRequest(name=DICOMSTORE_STORE)
        )
        return metrics.instance_count

    async def import_from(self, uri: str) -> Outcome:
        request = dicom_pb2.ImportDicomDataRequest(
            name=DICOMSTORE_STORE, gcs_source=dicom_pb2.GcsSource(uri=uri)
        )
        return await self._timed(self.dicom.ImportDicomData(request))

    async def export_to_gcs(self, uri_prefix: str) -> Outcome:
        destination = dicom_pb2.GcsDestination(uri_prefix=uri_prefix)
        request = dicom_pb2.ExportDicomDataRequest(
            name=DICOMSTORE_STORE, gcs_destination=destination
        )
        return await self._timed(self.dicom.ExportDicomData(request))

    async def export_to_bigquery(self, table_uri: str) -> Outcome:
        destination = dicom_pb2.BigQueryDestination(table_uri=table_uri)
        request = dicom_pb2.ExportDicomDataRequest(
            name=DICOMSTORE_STORE, bigquery_destination=destination
        )
        return await self._timed(self.dicom.ExportDicomData(request))

    async def _timed(self, call: Awaitable[operations_pb2.Operation]) -> Outcome:
        assert self.serve.pid is not None
        pid = self.serve.pid
        with RssSampler({"dicomstore": pid}) as rss:
            cpu, began = cpu_seconds(pid), time.perf_counter()
            try:
                operation = await call
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    return Outcome(unavailable=f"UNIMPLEMENTED: {exc.details()}")
                raise
            operation = await self._done(operation)
            seconds, cpu = time.perf_counter() - began, cpu_seconds(pid) - cpu
        metadata = healthcare_operation_pb2.OperationMetadata()
        operation.metadata.Unpack(metadata)
        outcome = Outcome(
            success=metadata.counter.success,
            failure=metadata.counter.failure,
            seconds=seconds,
            rss_mb=rss.peak_mb("dicomstore", "start"),
            cpu_s=cpu,
        )
        if operation.HasField("error"):
            code, message = operation.error.code, operation.error.message
            name = CODE_NAMES.get(code, str(code))
            if code == grpc.StatusCode.UNIMPLEMENTED.value[0]:
                return Outcome(unavailable=f"{name}: {message}")
            return replace(outcome, error=f"{name}: {message}")
        return outcome

    async def _done(self, operation: operations_pb2.Operation) -> operations_pb2.Operation:
        deadline = time.monotonic() + OPERATION_WAIT_S
        while not operation.done:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{operation.name} not done within {OPERATION_WAIT_S:.0f} s")
            await asyncio.sleep(POLL_S)
            operation = await self.operations.GetOperation(
                operations_pb2.GetOperationRequest(name=operation.name)
            )
        return operation


def objects_under(folder: Path) -> tuple[int, int]:
    """(files, bytes) below `folder`: what an export wrote to the embedded Cloud Storage."""
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    return len(files), sum(p.stat().st_size for p in files)


def duckdb_rows(database: Path, dataset: str, table: str) -> int | None:
    """Rows of the embedded BigQuery table, or None when the database or table is missing."""
    if not database.is_file():
        return None
    with contextlib.closing(duckdb.connect(str(database), read_only=True)) as connection:
        try:
            row = connection.execute(f'SELECT count(*) FROM "{dataset}"."{table}"').fetchone()
        except duckdb.CatalogException:
            return None
    return int(row[0]) if row else None
