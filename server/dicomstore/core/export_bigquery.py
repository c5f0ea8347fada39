"""ExportDicomData to BigQuery: one row per instance in Google's DICOM schema
(`dicomstore.dicom.bigquery`), written `ROWS` at a time to the table of `bq://P.D.T`.

Reference: BigQueryDestination in Google's RPC reference and its BigQuery export how-to
(docs/bigquery.md says what we take from them): the write
disposition (and legacy `force`) decides, before any row is written, whether a table that has
rows is refused, emptied or appended to (`core.bigquery_dispositions`). The rows are built in a
thread (pure CPU) and each group is one write, while the next group's rows are built; the
counter moves after each write. Python's garbage collector is paused meanwhile
(`collector_paused`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from dicomstore.core.bigquery_dispositions import check_destination, write_plan
from dicomstore.core.model import BigQueryRow, ProgressCounter, StoredInstance, WriteDisposition
from dicomstore.core.names import DicomStoreName
from dicomstore.core.operations import JobContext
from dicomstore.core.ports import BigQueryTable, Catalog
from dicomstore.core.validation import BigQueryTableName, parse_bigquery_table_uri
from dicomstore.dicom.bigquery import bigquery_row, file_meta_json

T = TypeVar("T")

#: Instances turned into rows and written in one write.
ROWS: Final = 2000


def instance_rows(
    instances: Sequence[StoredInstance],
    metadata: Sequence[dict[str, Any]],
    *,
    source_store: str | None,
    updated: datetime,
) -> list[BigQueryRow]:
    """The BigQuery rows of `instances`, whose DICOM JSON is `metadata` (in the same order)."""
    return [
        bigquery_row(
            data,
            blob_size=instance.blob_size,
            updated=updated,
            source_store=source_store,
            file_meta=file_meta_json(
                transfer_syntax_uid=instance.transfer_syntax_uid,
                sop_class_uid=instance.sop_class_uid,
                sop_instance_uid=instance.sop_uid,
            ),
        )
        for instance, data in zip(instances, metadata, strict=True)
    ]


async def export_to_bigquery(
    catalog: Catalog,
    tables: Callable[[BigQueryTableName], BigQueryTable],
    context: JobContext,
    store: DicomStoreName,
) -> None:
    args = context.args
    table_uri = args["table_uri"]
    table = tables(parse_bigquery_table_uri(table_uri, "bigquery_destination.table_uri"))
    try:
        plan = write_plan(WriteDisposition[args["write_disposition"]], args["force"] == "true")
        check_destination(plan, empty=await table.is_empty(), table_uri=table_uri)
        source = str(store) if args["include_source_store"] == "true" else None
        truncate, done = plan.truncate, 0
        group = await catalog.list_instances(store, after=0, limit=ROWS)
        with collector_paused():
            rows = await _rows(catalog, group, source)
        while group:
            after = group[-1].key.instance_key
            following = await catalog.list_instances(store, after=after, limit=ROWS)
            with collector_paused():
                write = table.write(rows, truncate=truncate)
                rows = await _alongside(write, _rows(catalog, following, source))
            truncate = False
            done += len(group)
            group = following
            await context.progress(ProgressCounter(success=done))
            await context.check_cancelled()
        if truncate:  # WRITE_TRUNCATE of an empty store: the table is emptied all the same
            await table.write([], truncate=True)
    finally:
        await table.close()


async def _rows(
    catalog: Catalog, group: Sequence[StoredInstance], source: str | None
) -> list[BigQueryRow]:
    if not group:
        return []
    metadata = await catalog.instance_metadata([i.key for i in group])
    return await asyncio.to_thread(
        instance_rows, group, metadata, source_store=source, updated=datetime.now(UTC)
    )


async def _alongside(write: Awaitable[None], work: Awaitable[T]) -> T:
    """The result of `work`, run while `write` runs (a write mostly waits on DuckDB or the
    network, outside the GIL); both end before this returns, and the write's error comes first."""
    written, result = await asyncio.gather(write, work, return_exceptions=True)
    if isinstance(written, BaseException):
        raise written
    if isinstance(result, BaseException):
        raise result
    return result


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector (unless it is off already) for the duration.

    A group's DICOM JSON and rows are some 70 tracked containers per instance, alive until the
    group is written: the collector walked them again and again as they piled up, which was
    more than half of an export's CPU time, and can find nothing, since parsed JSON holds no
    cycle. The pause is for the whole process, so garbage made meanwhile by other work waits
    until the group is written (0.3 s for 2,000 of the benchmark's small instances).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
