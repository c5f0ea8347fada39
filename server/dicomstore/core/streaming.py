"""Streaming to BigQuery (`DicomStore.stream_configs`): every instance stored afterwards, by
STOW-RS or import, is appended as a row to each configured table, in the schema export writes.

Reference: Google's DICOM-to-BigQuery streaming how-to (docs/bigquery.md). A store's requests never
wait for it and never fail because of it: `stored` only queues the new instances' keys, and one
background task writes them, all that is queued for a table in one write. A table that cannot
be written is logged and tried again after `retry_s`, its rows kept; past `MAX_WAITING`
instances waiting for one table, the oldest are given up (and logged). The queue lives in
memory: instances stored just before a crash may not be streamed. A store found to stream
nowhere is not looked up again for `NOT_STREAMED_S`, so that streaming costs nothing per request
to the stores that do not use it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final

from dicomstore.core.errors import DicomStoreError
from dicomstore.core.export_bigquery import instance_rows
from dicomstore.core.model import BigQueryDestination, InstanceKey
from dicomstore.core.names import DicomStoreName
from dicomstore.core.ports import BigQueryTable, Catalog
from dicomstore.core.validation import BigQueryTableName, parse_bigquery_table_uri

log = logging.getLogger(__name__)

#: Instances waiting for one table before the oldest are given up.
MAX_WAITING: Final = 100_000
#: How long a store found to stream nowhere is taken not to (a streamConfigs added to it
#: applies to the instances stored from at most this many seconds later).
NOT_STREAMED_S: Final = 1.0


class Streaming:
    """Queues newly stored instances and appends their rows to the stores' stream tables."""

    def __init__(
        self,
        catalog: Catalog,
        tables: Callable[[BigQueryTableName], BigQueryTable],
        *,
        retry_s: float = 5.0,
    ) -> None:
        self._catalog = catalog
        self._tables = tables
        self._retry_s = retry_s
        self._queue: asyncio.Queue[tuple[DicomStoreName, Sequence[InstanceKey]]] = asyncio.Queue()
        # Per table: its destination, and the instances still to write to it (with their store).
        self._waiting: dict[str, collections.deque[tuple[DicomStoreName, InstanceKey]]] = {}
        self._destinations: dict[str, BigQueryDestination] = {}
        self._task: asyncio.Task[None] | None = None
        # Stores found to have no stream table, and when: their instances are not even queued.
        self._not_streamed: dict[DicomStoreName, float] = {}

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def stored(self, store: DicomStoreName, keys: Sequence[InstanceKey]) -> None:
        """Note instances a request just made visible (never blocks, never raises)."""
        seen = self._not_streamed.get(store)
        if seen is not None and time.monotonic() - seen < NOT_STREAMED_S:
            return  # known to stream nowhere: no work, not even a catalog read, per request
        if keys:
            self._queue.put_nowait((store, keys))

    async def _run(self) -> None:
        while True:
            timeout = self._retry_s if self._waiting else None
            items = []
            with contextlib.suppress(TimeoutError):  # then it is time to retry a failed table
                items.append(await asyncio.wait_for(self._queue.get(), timeout))
            try:
                while not self._queue.empty():
                    items.append(self._queue.get_nowait())
                for store, keys in items:
                    await self._route(store, keys)
                await self._write_all()
            except Exception:
                log.exception("streaming to BigQuery failed")

    async def _route(self, store: DicomStoreName, keys: Sequence[InstanceKey]) -> None:
        try:
            config = (await self._catalog.get_dicom_store(store)).config
        except DicomStoreError:
            return  # the store is gone: nothing to stream
        if any(stream.bigquery_destination for stream in config.stream_configs):
            self._not_streamed.pop(store, None)
        else:
            self._not_streamed[store] = time.monotonic()
        for stream in config.stream_configs:
            destination = stream.bigquery_destination
            if destination is None:
                continue
            uri = destination.table_uri
            self._destinations[uri] = destination
            waiting = self._waiting.setdefault(uri, collections.deque())
            waiting.extend((store, key) for key in keys)
            overflow = len(waiting) - MAX_WAITING
            if overflow > 0:
                log.error("streaming to %s gave up %d instances: too many waiting", uri, overflow)
                for _ in range(overflow):
                    waiting.popleft()

    async def _write_all(self) -> None:
        for uri in list(self._waiting):
            try:
                await self._write(uri, list(self._waiting[uri]))
            except Exception as exc:
                log.warning(
                    "streaming to %s failed (%s); %d instances wait for a retry in %.0f s",
                    uri,
                    exc,
                    len(self._waiting[uri]),
                    self._retry_s,
                )
            else:
                del self._waiting[uri]

    async def _write(self, uri: str, entries: list[tuple[DicomStoreName, InstanceKey]]) -> None:
        destination = self._destinations[uri]
        table = self._tables(parse_bigquery_table_uri(uri, "stream_configs.table_uri"))
        try:
            updated = datetime.now(UTC)
            rows = []
            stores = {key: store for store, key in entries}
            instances = await self._catalog.instances_by_key([key for _, key in entries])
            metadata = await self._catalog.instance_metadata([i.key for i in instances])
            for store in dict.fromkeys(stores.values()):
                mine = [
                    (i, m)
                    for i, m in zip(instances, metadata, strict=True)
                    if stores[i.key] == store
                ]
                source = str(store) if destination.include_source_store else None
                rows += await asyncio.to_thread(
                    instance_rows,
                    [i for i, _ in mine],
                    [m for _, m in mine],
                    source_store=source,
                    updated=updated,
                )
            await table.write(rows, truncate=False)
        finally:
            await table.close()
