"""`bq://PROJECT.DATASET.TABLE` in BigQuery itself, through `google-cloud-bigquery` (the
`bigquery` extra); docs/bigquery.md, "BigQuery itself".

A write creates the table from the rows' schema, or adds the columns and record fields it lacks
(BigQuery accepts new NULLABLE and REPEATED fields, never a changed type), then loads the rows
with one load job, which is all or nothing. The dataset must exist, as for Google's export.
Not run against BigQuery here: no emulator runs in the test environment; the schema and row
conversions are tested.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time
from typing import Any, Final, TypeVar

from google.api_core import exceptions as api_errors
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from dicomstore.core.errors import DicomStoreError, FailedPrecondition, Internal, Unavailable
from dicomstore.core.model import BigQueryRow
from dicomstore.core.validation import BigQueryTableName
from dicomstore.dicom.bigquery_schema import (
    Column,
    ColumnType,
    SchemaConflict,
    merge_columns,
    union,
)

T = TypeVar("T")

#: BigQuery's standard SQL names of the legacy type names a table reports.
_TYPE_ALIASES: Final = {
    "STRING": ColumnType.STRING,
    "INTEGER": ColumnType.INTEGER,
    "INT64": ColumnType.INTEGER,
    "FLOAT": ColumnType.FLOAT,
    "FLOAT64": ColumnType.FLOAT,
    "DATE": ColumnType.DATE,
    "TIME": ColumnType.TIME,
    "TIMESTAMP": ColumnType.TIMESTAMP,
    "RECORD": ColumnType.RECORD,
    "STRUCT": ColumnType.RECORD,
}


def schema_fields(columns: Sequence[Column]) -> list[bigquery.SchemaField]:
    """`columns` as a BigQuery table schema."""
    return [
        bigquery.SchemaField(
            column.name,
            column.type.value,
            mode="REPEATED" if column.repeated else "NULLABLE",
            fields=schema_fields(column.fields),
        )
        for column in columns
    ]


def columns_of(fields: Sequence[bigquery.SchemaField]) -> dict[str, Column | None]:
    """A table's schema as columns by name; None for a field this schema never makes (another
    type, or REQUIRED)."""
    return {field.name: _column(field) for field in fields}


def _column(field: bigquery.SchemaField) -> Column | None:
    column_type = _TYPE_ALIASES.get(str(field.field_type).upper())
    if column_type is None or field.mode not in ("NULLABLE", "REPEATED"):
        return None
    fields = tuple(_column(child) for child in field.fields)
    if any(child is None for child in fields):
        return None
    return Column(field.name, column_type, field.mode == "REPEATED", tuple(f for f in fields if f))


def json_row(row: BigQueryRow) -> dict[str, Any]:
    """A row as the JSON a load job reads: dates and times in ISO 8601, non-finite floats as
    the strings BigQuery takes for them."""
    return {name: _json_value(value) for name, value in row.values.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {name: _json_value(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_json_value(item) for item in value]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def client_for(project: str, endpoint: str | None = None) -> bigquery.Client:
    """A client billing `project`; with `endpoint` (an emulator), anonymous and sent there."""
    if endpoint is None:
        return bigquery.Client(project=project)
    return bigquery.Client(
        project=project,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": endpoint},
    )


class BigQueryApiTable:
    """One BigQuery table; implements `dicomstore.core.ports.BigQueryTable`."""

    def __init__(self, client: bigquery.Client, name: BigQueryTableName) -> None:
        self._client = client
        self._ref = bigquery.TableReference(
            bigquery.DatasetReference(name.project, name.dataset), name.table
        )
        self._uri = f"bq://{name.project}.{name.dataset}.{name.table}"
        self._lock = threading.Lock()

    async def is_empty(self) -> bool:
        return await self._run(self._is_empty)

    async def write(self, rows: Sequence[BigQueryRow], *, truncate: bool) -> None:
        await self._run(lambda: self._write(rows, truncate))

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)

    async def _run(self, work: Callable[[], T]) -> T:
        return await asyncio.to_thread(self._locked, work)

    def _locked(self, work: Callable[[], T]) -> T:
        with self._lock:
            try:
                return work()
            except DicomStoreError:
                raise
            except SchemaConflict as exc:
                raise FailedPrecondition(f"BigQuery table {self._uri}: {exc}") from exc
            except api_errors.GoogleAPICallError as exc:
                raise self._domain_error(exc) from exc
            except OSError as exc:  # the connection failed
                raise Unavailable(f"BigQuery could not be reached: {exc}") from exc

    def _table(self) -> bigquery.Table | None:
        try:
            return self._client.get_table(self._ref)
        except api_errors.NotFound:
            return None

    def _is_empty(self) -> bool:
        table = self._table()
        return table is None or (not table.num_rows and table.streaming_buffer is None)

    def _write(self, rows: Sequence[BigQueryRow], truncate: bool) -> None:
        wanted = union(row.columns for row in rows)
        table = self._table()
        if table is None:
            if not rows:
                return
            self._client.create_table(bigquery.Table(self._ref, schema=schema_fields(wanted)))
        else:
            self._widen(table, wanted)
        if not rows:
            if truncate:
                self._client.query(f"TRUNCATE TABLE `{self._ref}`").result()
            return
        disposition = (
            bigquery.WriteDisposition.WRITE_TRUNCATE
            if truncate
            else bigquery.WriteDisposition.WRITE_APPEND
        )
        config = bigquery.LoadJobConfig(
            write_disposition=disposition,
            source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
        )
        job = self._client.load_table_from_json(
            [json_row(row) for row in rows], self._ref, job_config=config
        )
        job.result()

    def _widen(self, table: bigquery.Table, wanted: tuple[Column, ...]) -> None:
        existing = columns_of(table.schema)
        foreign = sorted(name for name, column in existing.items() if column is None)
        clash = [name for name in foreign if any(c.name == name for c in wanted)]
        if clash:
            raise FailedPrecondition(
                f"BigQuery table {self._uri}: column {clash[0]} has a type that Google's DICOM"
                " schema never gives it"
            )
        known = [column for column in existing.values() if column is not None]
        merged = merge_columns(known, wanted)
        if list(merged) == known:
            return
        # Keep the foreign fields as they are; append what is new, widen what grew.
        by_name = {column.name: column for column in merged}
        schema = [
            schema_fields([by_name[field.name]])[0] if field.name in by_name else field
            for field in table.schema
        ]
        schema += schema_fields([c for c in merged if c.name not in existing])
        table.schema = schema
        self._client.update_table(table, ["schema"])

    def _domain_error(self, exc: api_errors.GoogleAPICallError) -> DicomStoreError:
        if isinstance(exc, api_errors.NotFound):
            return FailedPrecondition(
                f"BigQuery dataset of {self._uri} not found; create it before exporting"
            )
        if isinstance(exc, api_errors.Forbidden | api_errors.Unauthorized):
            return FailedPrecondition(f"BigQuery refused access to {self._uri}: {exc.message}")
        if isinstance(exc, api_errors.BadRequest):
            return FailedPrecondition(f"BigQuery refused the rows for {self._uri}: {exc.message}")
        if isinstance(
            exc,
            api_errors.ServiceUnavailable
            | api_errors.TooManyRequests
            | api_errors.InternalServerError,
        ):
            return Unavailable(f"BigQuery is unavailable: {exc.message}")
        return Internal(f"BigQuery failed for {self._uri}: {type(exc).__name__}")
