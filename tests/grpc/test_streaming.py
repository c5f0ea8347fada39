"""Streaming to BigQuery (`streamConfigs`): instances stored by STOW-RS or import afterwards
appear as rows in each configured table (DuckDB, embedded); a failing table never fails a
request and is caught up once it works again."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import TypeAlias

import duckdb
import grpc
import pytest
from google.cloud.healthcare.v1.dicom import dicom_pb2, dicom_pb2_grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import field_mask_pb2

from dicomstore.app import App
from dicomstore.core.streaming import NOT_STREAMED_S
from tests.grpc.transfers import generated, stow

pytestmark = pytest.mark.google_behaviour("bigquery-streaming")

# The stub over an aio channel: mypy-protobuf declares it for type checkers only.
Stub: TypeAlias = "dicom_pb2_grpc.DicomServiceAsyncStub"
LIVE = "bq://stream-project.dicom.live"
AUDIT = "bq://stream-project.audit.copy"


def instance(number: int) -> bytes:
    return generated("1.2.5", "1.2.5.1", number)


async def streamed_store(dicom: Stub, dataset: str) -> str:
    store = dicom_pb2.DicomStore(
        stream_configs=[
            dicom_pb2.StreamConfig(
                bigquery_destination=dicom_pb2.BigQueryDestination(table_uri=LIVE)
            ),
            dicom_pb2.StreamConfig(
                bigquery_destination=dicom_pb2.BigQueryDestination(
                    table_uri=AUDIT, include_source_store=True
                )
            ),
        ]
    )
    created = await dicom.CreateDicomStore(
        dicom_pb2.CreateDicomStoreRequest(parent=dataset, dicom_store_id="s", dicom_store=store)
    )
    return created.name


def database(app: App) -> Path:
    return app.settings.data_dir / "bigquery" / "stream-project.duckdb"


def rows(app: App, table: str, columns: str = "SOPInstanceUID") -> list[tuple[object, ...]]:
    try:
        # Not read-only: the server's own connection (same process) has the default settings.
        with duckdb.connect(str(database(app))) as db:
            return db.execute(f"SELECT {columns} FROM {table} ORDER BY 1").fetchall()
    except (duckdb.IOException, duckdb.CatalogException):
        return []  # not written yet, or being written


async def eventually(app: App, table: str, count: int, within: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while len(rows(app, table)) < count:
        assert asyncio.get_running_loop().time() < deadline, rows(app, table)
        await asyncio.sleep(0.1)


async def test_stored_and_imported_instances_become_rows_of_every_stream_table(
    app: App, dicom: Stub, dataset: str, channel: grpc.aio.Channel
) -> None:
    store = await streamed_store(dicom, dataset)
    await stow(app, store, instance(1), instance(2), instance(3))
    await eventually(app, "dicom.live", 3)
    bucket = app.settings.data_dir / "gcs" / "inbox"
    bucket.mkdir(parents=True)
    for n in (4, 5):
        (bucket / f"{n}.dcm").write_bytes(instance(n))
    (bucket / "3.dcm").write_bytes(instance(3))  # already stored: no second row
    await dicom.ImportDicomData(
        dicom_pb2.ImportDicomDataRequest(
            name=store, gcs_source=dicom_pb2.GcsSource(uri="gs://inbox/*")
        )
    )
    await eventually(app, "dicom.live", 5)
    await eventually(app, "audit.copy", 5)
    await asyncio.sleep(0.5)
    assert [r[0] for r in rows(app, "dicom.live")] == [f"1.2.5.1.{n}" for n in range(1, 6)]
    assert set(rows(app, "audit.copy", "SourceDicomStore")) == {(store,)}


async def test_a_failing_table_never_fails_a_request_and_catches_up(
    app: App, dicom: Stub, dataset: str, channel: grpc.aio.Channel
) -> None:
    store = await streamed_store(dicom, dataset)
    database(app).mkdir(parents=True)  # a folder where the database file goes: writes fail
    await stow(app, store, instance(1), instance(2))
    operations = operations_pb2_grpc.OperationsStub(channel)
    listed = await operations.ListOperations(operations_pb2.ListOperationsRequest(name=dataset))
    assert listed is not None  # the server keeps answering
    await asyncio.sleep(0.5)
    shutil.rmtree(database(app))
    await eventually(app, "dicom.live", 2)
    await eventually(app, "audit.copy", 2)


async def test_a_stream_added_later_takes_the_instances_stored_after_it(
    app: App, dicom: Stub, dataset: str
) -> None:
    store = (
        await dicom.CreateDicomStore(
            dicom_pb2.CreateDicomStoreRequest(parent=dataset, dicom_store_id="later")
        )
    ).name
    await stow(app, store, instance(1))  # streams nowhere: not a row anywhere
    await dicom.UpdateDicomStore(
        dicom_pb2.UpdateDicomStoreRequest(
            dicom_store=dicom_pb2.DicomStore(
                name=store,
                stream_configs=[
                    dicom_pb2.StreamConfig(
                        bigquery_destination=dicom_pb2.BigQueryDestination(table_uri=LIVE)
                    )
                ],
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["stream_configs"]),
        )
    )
    await asyncio.sleep(NOT_STREAMED_S)
    await stow(app, store, instance(2))
    await eventually(app, "dicom.live", 1)
    await asyncio.sleep(0.5)
    assert rows(app, "dicom.live") == [("1.2.5.1.2",)]
