"""One batch of instances on their way into a store: the lifecycle STOW-RS and import share.

A driver (the STOW-RS route reading a request body, the import job reading Cloud Storage
objects) offers instances one by one; the batch ingests them through `Instances` — up to
`in_flight` in-memory instances at once while the driver reads the next, their durable but
invisible rows recorded `PENDING_ROWS` at a time so that memory stays bounded — and then
makes them visible together (`commit`) or forgets them all (`abandon`). A batch can commit
several times (import makes each group visible as it goes); whatever a crash interrupts
before a commit is invisible, and removed by recovery (`core.recovery`).
"""

from __future__ import annotations

import asyncio
import collections
import io
from collections.abc import Sequence
from typing import BinaryIO, Final

from dicomstore.core.instances import Ingested, Instances
from dicomstore.core.model import NewInstanceRow
from dicomstore.core.names import DicomStoreName

#: A batch keeps at most about this many rows of invisible instances in memory: past it, it
#: records them (invisible still, owned by this process until recovery finds it dead). A batch
#: of at most this many (an import's group) records its instances in one transaction, visible:
#: a crash leaves none of them invisible with their UIDs claimed.
PENDING_ROWS: Final = 64
#: In-memory instances ingested at once while the driver reads the next ones.
IN_FLIGHT: Final = 4


class IngestBatch:
    """The instances of one STOW-RS request or one group of imported objects."""

    def __init__(
        self,
        instances: Instances,
        store: DicomStoreName,
        store_key: int,
        *,
        study_uid: str | None = None,
        in_flight: int = IN_FLIGHT,
        keep_identical: bool = False,
    ) -> None:
        """`store_key` is the store's key (`Instances.store_key`), looked up once per batch: a
        store deleted since refuses the rows when they are recorded. `study_uid` refuses
        instances of another study (STOW-RS `studies/{study}`); `keep_identical` counts an
        instance already stored with the same bytes as stored (and leaves the stored one alone)
        rather than failing it (import)."""
        self._instances = instances
        self._store = store
        self._store_key = store_key
        self._study_uid = study_uid
        self._in_flight_limit = in_flight
        self._identical_in = store if keep_identical else None
        self._results: list[Ingested] = []
        """In the order offered; the instances still being ingested come after."""
        self._in_flight: collections.deque[asyncio.Task[Ingested]] = collections.deque()
        self._unrecorded_rows = 0

    def __len__(self) -> int:
        """Instances offered since the last commit."""
        return len(self._results) + len(self._in_flight)

    async def add(self, source: BinaryIO, *, alone: bool = False) -> None:
        """Ingest one Part 10 instance from the seekable `source`, which the caller may close
        once this returns. `alone` marks the batch's only instance: recorded visible at once,
        a transaction fewer than staging it and committing."""
        await self._settle()
        result = await self._instances.ingest(
            self._store,
            source,
            study_uid=self._study_uid,
            commit=alone,
            store_key=self._store_key,
        )
        await self._keep(result)

    async def add_in_memory(self, data: bytes) -> None:
        """Ingest an instance held in memory while the caller goes on reading: its blob's
        syncs overlap the parsing of the next ones. At most `in_flight` at once."""
        await self._settle(keep=self._in_flight_limit - 1)
        ingest = self._instances.ingest(
            self._store,
            io.BytesIO(data),
            study_uid=self._study_uid,
            commit=False,
            store_key=self._store_key,
        )
        self._in_flight.append(asyncio.ensure_future(ingest))

    async def add_failure(self, failed: Ingested) -> None:
        """Record an instance the driver could not even offer (an unreadable part or object)."""
        await self._settle()
        self._results.append(failed)

    async def commit(self) -> list[Ingested]:
        """Make every instance offered since the last commit visible, in one transaction; their
        results, in the order offered (an instance refused at the last moment has failed)."""
        await self._settle()
        results = await self._instances.commit(self._results, keep_identical_in=self._identical_in)
        self._results = []
        self._unrecorded_rows = 0
        self._instances.notify_stored(self._store, [r.key for r in results if r.key is not None])
        return results

    async def abandon(self) -> None:
        """Forget every instance offered since the last commit, those still being ingested
        included; raise the first failure to forget one, after trying them all."""
        for task in self._in_flight:
            task.cancel()
        for outcome in await asyncio.gather(*self._in_flight, return_exceptions=True):
            if isinstance(outcome, Ingested):
                self._results.append(outcome)
        self._in_flight.clear()
        results, self._results = self._results, []
        await self._instances.abandon(results)

    async def _settle(self, keep: int = 0) -> None:
        """Wait for the instances being ingested, the oldest first, until `keep` are left."""
        while len(self._in_flight) > keep:
            try:
                result = await self._in_flight[0]
            finally:
                if self._in_flight[0].done():
                    self._in_flight.popleft()
            await self._keep(result)

    async def _keep(self, result: Ingested) -> None:
        self._results.append(result)
        if isinstance(result.pending, NewInstanceRow):
            self._unrecorded_rows += 1
            if self._unrecorded_rows > PENDING_ROWS:
                self._results = await self._instances.stage(
                    self._results, keep_identical_in=self._identical_in
                )
                self._unrecorded_rows = 0


def stored_and_failed(results: Sequence[Ingested]) -> tuple[int, int]:
    """How many of `results` were stored and how many failed."""
    stored = sum(1 for result in results if result.stored)
    return stored, len(results) - stored
