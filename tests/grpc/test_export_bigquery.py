"""ExportDicomData to BigQuery, embedded as DuckDB files under DATA_DIR/bigquery, through a real
gRPC server: rows, schema columns, write dispositions and `force`, the source store column."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import duckdb
import grpc
import pytest
from google.cloud.healthcare.v1.dicom import dicom_pb2, dicom_pb2_grpc
from google.longrunning import operations_pb2, operations_pb2_grpc

from dicomstore.app import App
from dicomstore.core import export_bigquery
from dicomstore.core.errors import FailedPrecondition
from dicomstore.core.model import BigQueryRow
from dicomstore.destinations.bigquery_duckdb import DuckDbTable
from tests.grpc.transfers import finished, metadata, stow
from tests.unit.dicom.dicomfiles import data_file, new_instance, part10

# The stub over an aio channel: mypy-protobuf declares it for type checkers only.
Stub: TypeAlias = "dicom_pb2_grpc.DicomServiceAsyncStub"
Operations: TypeAlias = operations_pb2_grpc.OperationsStub
TABLE = "bq://bench-project.dicom.instances"
Disposition = dicom_pb2.BigQueryDestination.WriteDisposition


@pytest.fixture
async def store(app: App, dicom: Stub, dataset: str) -> str:
    """A store of four generated instances and CT_small.dcm."""
    created = await dicom.CreateDicomStore(
        dicom_pb2.CreateDicomStoreRequest(parent=dataset, dicom_store_id="s")
    )
    bodies = [
        part10(
            new_instance(
                StudyInstanceUID="1.2.3",
                SeriesInstanceUID="1.2.3.4",
                SOPInstanceUID=f"1.2.3.4.{n}",
                PatientName=f"Doe^Jane{n}",
            )
        )
        for n in range(4)
    ]
    await stow(app, created.name, *bodies, data_file("CT_small.dcm").read_bytes())
    return created.name


async def export(
    dicom: Stub, operations: Operations, store: str, **fields: Any
) -> operations_pb2.Operation:
    destination = dicom_pb2.BigQueryDestination(table_uri=TABLE, **fields)
    request = dicom_pb2.ExportDicomDataRequest(name=store, bigquery_destination=destination)
    return await finished(operations, (await dicom.ExportDicomData(request)).name)


def query(app: App, sql: str) -> list[tuple[Any, ...]]:
    path = app.settings.data_dir / "bigquery" / "bench-project.duckdb"
    with duckdb.connect(str(path), read_only=True) as db:
        return db.execute(sql).fetchall()


def row_count(app: App) -> int:
    ((count,),) = query(app, "SELECT count(*) FROM dicom.instances")
    return int(count)


@pytest.mark.google_behaviour("bigquery-schema-columns", "bigquery-bookkeeping-columns")
async def test_each_instance_is_a_row_in_googles_schema(
    app: App, dicom: Stub, operations: Operations, store: str
) -> None:
    operation = await export(dicom, operations, store)
    assert not operation.HasField("error"), operation.error
    assert metadata(operation).counter.success == 5
    names = query(
        app,
        "SELECT PatientName.Alphabetic.FamilyName, PatientName.Alphabetic.GivenName"
        " FROM dicom.instances WHERE StudyInstanceUID = '1.2.3' ORDER BY SOPInstanceUID",
    )
    assert names == [("Doe", f"Jane{n}") for n in range(4)]
    ((syntax, size),) = query(
        app,
        "SELECT TransferSyntaxUID, BlobStorageSize FROM dicom.instances"
        " WHERE StudyInstanceUID <> '1.2.3'",
    )
    assert syntax == "1.2.840.10008.1.2.1"
    assert size == len(data_file("CT_small.dcm").read_bytes())


@pytest.mark.google_behaviour("bigquery-write-disposition")
@pytest.mark.parametrize(
    ("fields", "rows_after", "refused"),
    [
        ({}, 5, True),  # WRITE_EMPTY by default
        ({"write_disposition": Disposition.WRITE_EMPTY}, 5, True),
        ({"force": False}, 5, True),
        ({"write_disposition": Disposition.WRITE_APPEND}, 10, False),
        ({"write_disposition": Disposition.WRITE_TRUNCATE}, 5, False),
        ({"force": True}, 5, False),
        # force is ignored once a disposition is set
        ({"force": True, "write_disposition": Disposition.WRITE_APPEND}, 10, False),
        ({"force": True, "write_disposition": Disposition.WRITE_EMPTY}, 5, True),
    ],
)
async def test_a_second_export_follows_the_write_disposition(
    app: App,
    dicom: Stub,
    operations: Operations,
    store: str,
    fields: dict[str, Any],
    rows_after: int,
    refused: bool,
) -> None:
    await export(dicom, operations, store)
    second = await export(dicom, operations, store, **fields)
    if refused:
        assert second.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        assert "not empty" in second.error.message
    else:
        assert not second.HasField("error"), second.error
    assert row_count(app) == rows_after


@pytest.mark.google_behaviour("bigquery-write-disposition")
async def test_write_empty_accepts_an_empty_table(
    app: App, dicom: Stub, operations: Operations, store: str
) -> None:
    await export(dicom, operations, store)
    path = app.settings.data_dir / "bigquery" / "bench-project.duckdb"
    with duckdb.connect(str(path)) as db:
        db.execute("DELETE FROM dicom.instances")
    second = await export(dicom, operations, store)
    assert not second.HasField("error"), second.error
    assert row_count(app) == 5


@pytest.mark.google_behaviour("bigquery-include-source-store")
async def test_include_source_store_names_the_store_in_each_row(
    app: App, dicom: Stub, operations: Operations, store: str
) -> None:
    await export(dicom, operations, store, include_source_store=True)
    assert query(app, "SELECT DISTINCT SourceDicomStore FROM dicom.instances") == [(store,)]


@pytest.mark.google_behaviour("bigquery-schema-json")
async def test_the_json_schema_is_refused_at_once(dicom: Stub, store: str) -> None:
    destination = dicom_pb2.BigQueryDestination(table_uri=TABLE, schema_json=dicom_pb2.SchemaJSON())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await dicom.ExportDicomData(
            dicom_pb2.ExportDicomDataRequest(name=store, bigquery_destination=destination)
        )
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "schema_json" in (refused.value.details() or "")


async def test_groups_are_written_in_turn_each_row_once(
    app: App, dicom: Stub, operations: Operations, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_bigquery, "ROWS", 2)  # groups of 2, 2 and 1 instances
    await export(dicom, operations, store)
    truncate = Disposition.WRITE_TRUNCATE
    operation = await export(dicom, operations, store, write_disposition=truncate)
    assert not operation.HasField("error"), operation.error
    assert metadata(operation).counter.success == 5
    counted = "SELECT count(DISTINCT SOPInstanceUID), count(*) FROM dicom.instances"
    assert query(app, counted) == [(5, 5)]


async def test_a_failed_write_ends_the_export_with_its_error(
    app: App, dicom: Stub, operations: Operations, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_bigquery, "ROWS", 2)
    write = DuckDbTable.write
    writes = 0

    async def second_fails(
        self: DuckDbTable, rows: Sequence[BigQueryRow], *, truncate: bool
    ) -> None:
        nonlocal writes
        writes += 1
        if writes == 2:
            raise FailedPrecondition("the second write is refused")
        await write(self, rows, truncate=truncate)

    monkeypatch.setattr(DuckDbTable, "write", second_fails)
    operation = await export(dicom, operations, store)
    assert operation.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "second write" in operation.error.message
    assert metadata(operation).counter.success == 2
    assert row_count(app) == 2
