"""DICOM instances of a store: ingest (STOW-RS and import), lookup, and delete.

`ingest` is the one path every write takes (STOW-RS and import): parse the header, write
the blob durably under a key reserved in the catalog, then add the catalog row, which claims the
UIDs (visible at once, or with the rest of its request); on any failure the row and the blob go.
A per-instance failure (not DICOM, UID already stored, wrong study) is a result with a PS3.18
Failure Reason, not an exception.

Reference: Google's DICOM conformance statement and DICOMweb how-to
(docs/google-behaviour.md#delete-study-series, #delete-blocks-inserts and #delete-instance):
deleting a study or series returns a long-running operation (`DicomWebService.DeleteStudy` /
`DeleteSeries`) during which the study or series takes no new instances; deleting an instance
returns `{}`. Store metrics follow every change because they are computed from the catalog.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

from dicomstore.core.errors import Aborted, AlreadyExists, NotFound
from dicomstore.core.model import (
    InstanceKey,
    Job,
    NewInstance,
    NewInstanceRow,
    Operation,
    OperationResponse,
    ProgressCounter,
    StoredInstance,
)
from dicomstore.core.names import DicomStoreName
from dicomstore.core.operations import EMPTY, JobContext, Operations
from dicomstore.core.ports import BlobStore, Catalog
from dicomstore.dicom import levels
from dicomstore.dicom.header import InstanceHeader, InvalidInstance, read_header
from dicomstore.dicom.reasons import FailureReason

DELETE_STUDY_METHOD = "google.cloud.healthcare.v1.dicomweb.DicomWebService.DeleteStudy"
DELETE_SERIES_METHOD = "google.cloud.healthcare.v1.dicomweb.DicomWebService.DeleteSeries"
DELETE_JOB = "delete_dicom_resources"
#: Instances up to this size are parsed on the event loop: a thread trip costs about 60 µs of
#: CPU, a fifth of parsing a typical small instance, and 64 KiB holds too few elements for the
#: parse to hold up the loop for long. Larger ones are parsed in a thread. (Parsing while the
#: blob is written gains nothing: the writing thread waits for the GIL the parse holds.)
INLINE_PARSE_BYTES: Final = 64 << 10


@dataclass(frozen=True)
class Ingested:
    """What became of one instance offered to `ingest`; UIDs are "" when unreadable."""

    study_uid: str = ""
    series_uid: str = ""
    sop_uid: str = ""
    sop_class_uid: str = ""
    failure: int | None = None
    """A Failure Reason (0008,1197) code when the instance was not stored."""
    detail: str = ""
    already_stored: bool = False
    """Stored before, with the same bytes (import leaves it alone and counts it as stored)."""
    key: InstanceKey | None = None
    """The key of the instance this request made visible (not of an `already_stored` one)."""
    pending: NewInstanceRow | InstanceKey | None = None
    """An instance written durably but not visible yet (`commit=False`): its row, still to be
    recorded, or its key once the row is recorded invisible (`stage`)."""

    @property
    def stored(self) -> bool:
        return self.failure is None


def _new_instance(header: InstanceHeader) -> NewInstance:
    return NewInstance(
        study_uid=header.study_uid,
        series_uid=header.series_uid,
        sop_uid=header.sop_uid,
        sop_class_uid=header.sop_class_uid,
        transfer_syntax_uid=header.transfer_syntax_uid,
        number_of_frames=header.number_of_frames,
        study_attributes=levels.select(header.metadata, levels.STUDY_TAGS),
        series_attributes=levels.select(header.metadata, levels.SERIES_TAGS),
        metadata=header.metadata,
        attributes=header.attributes,
    )


def _checked(source: BinaryIO, study_uid: str | None) -> InstanceHeader | Ingested:
    """The instance's header, or the failed result of an instance that is not usable or not
    of the study `study_uid` (when given)."""
    try:
        header = read_header(source)
    except InvalidInstance as exc:
        return Ingested(failure=exc.reason, detail=exc.message)
    if study_uid is not None and header.study_uid != study_uid:
        return _failed(
            _result(header),
            FailureReason.STUDY_INSTANCE_UID_MISMATCH,
            f"the instance belongs to study {header.study_uid}, not {study_uid}",
        )
    return header


def _describe(study_uid: str, series_uid: str | None, sop_uid: str | None) -> str:
    if sop_uid is not None:
        return f"instance {sop_uid} of series {series_uid} of study {study_uid}"
    if series_uid is not None:
        return f"series {series_uid} of study {study_uid}"
    return f"study {study_uid}"


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk


class _Chunks:
    """Reads a stream of chunks of any sizes as pieces of a chosen size."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    async def take(self, size: int) -> bytes:
        """The next `size` bytes, fewer only at the end."""
        while len(self._buffer) < size:
            chunk = await anext(self._chunks, b"")
            if not chunk:
                break
            self._buffer += chunk
        piece, self._buffer = self._buffer[:size], self._buffer[size:]
        return piece


def _result(header: InstanceHeader) -> Ingested:
    return Ingested(header.study_uid, header.series_uid, header.sop_uid, header.sop_class_uid)


def _failed(result: Ingested, reason: int, detail: str) -> Ingested:
    return Ingested(
        result.study_uid, result.series_uid, result.sop_uid, result.sop_class_uid, reason, detail
    )


class Instances:
    def __init__(
        self,
        catalog: Catalog,
        blobs: BlobStore,
        operations: Operations,
        *,
        on_stored: Callable[[DicomStoreName, Sequence[InstanceKey]], None] | None = None,
    ) -> None:
        """`on_stored` hears of the instances each ingest batch makes visible (streaming)."""
        self._catalog = catalog
        self._blobs = blobs
        self._operations = operations
        self._on_stored = on_stored
        # Rows of failed requests that could not be removed then (the catalog could not be
        # written: a full disk, a lock). Invisible, but they hold their UIDs: they go before the
        # next rows are recorded, so that the request can be retried as it was.
        self._leftovers: set[InstanceKey] = set()
        operations.register(DELETE_JOB, self._run_delete, cancellable=False)

    async def ingest(
        self,
        store: DicomStoreName,
        source: BinaryIO,
        *,
        study_uid: str | None = None,
        commit: bool = True,
        store_key: int | None = None,
    ) -> Ingested:
        """Store one Part 10 instance read from the seekable `source`.

        `study_uid` is the `studies/{study}` of a STOW-RS request: an instance of another study
        fails. With `commit=False` the instance is durable but invisible until `commit` (or gone
        after `abandon`, or after a crash), and its row is recorded only then (or by `stage`):
        a request's instances appear together, in one transaction, when it is acknowledged.
        Raises NotFound only when the store itself is missing. `store_key` is the store's key
        when the caller has looked it up (`Instances.store_key`), which saves a catalog read.
        """
        size = source.seek(0, os.SEEK_END)
        source.seek(0)
        if size <= INLINE_PARSE_BYTES:
            outcome = _checked(source, study_uid)
        else:
            outcome = await asyncio.to_thread(_checked, source, study_uid)
        if isinstance(outcome, Ingested):
            return outcome
        key = await self._catalog.reserve_instance_key(store, store_key=store_key)
        source.seek(0)
        # The write runs as its own task, awaited through a shield: cancelling the ingest must
        # not cancel the wait for a write whose thread cannot be stopped.
        writing = asyncio.ensure_future(self._blobs.write(key.store_key, key.instance_key, source))
        try:
            blob_size = await asyncio.shield(writing)
            row = NewInstanceRow(key, _new_instance(outcome), blob_size)
            pending = dataclasses.replace(_result(outcome), pending=row)
            if not commit:
                return pending
            (result,) = await self.commit([pending])
            return result
        except BaseException:
            await asyncio.shield(self._discard(key, writing))
            raise

    async def store_key(self, store: DicomStoreName) -> int:
        """The catalog's key of `store`; NotFound when it is missing."""
        return await self._catalog.dicom_store_key(store)

    def notify_stored(self, store: DicomStoreName, keys: Sequence[InstanceKey]) -> None:
        """Tell `on_stored` of instances a batch made visible."""
        if self._on_stored is not None and keys:
            self._on_stored(store, keys)

    async def _discard(self, key: InstanceKey, writing: asyncio.Future[int]) -> None:
        """Forget a reserved instance once its blob write has ended: a write still running in
        its thread would otherwise put the blob back after its removal."""
        await asyncio.wait([writing])
        if not writing.cancelled():
            writing.exception()  # retrieved: the caller reports what matters
        await self._forget(key)

    async def stage(
        self, results: Sequence[Ingested], *, keep_identical_in: DicomStoreName | None = None
    ) -> list[Ingested]:
        """Record the rows that `results` still hold, invisible until `commit`, so that a large
        request does not keep them all in memory; a refused row is a failed result."""
        return await self._record_pending(results, visible=False, identical_in=keep_identical_in)

    async def commit(
        self, results: Sequence[Ingested], *, keep_identical_in: DicomStoreName | None = None
    ) -> list[Ingested]:
        """Make the pending instances of `results` visible, all in one transaction; the results,
        in which an instance refused then (its UIDs stored meanwhile, or its study being deleted)
        has failed, its blob removed.

        With `keep_identical_in` (the store), an instance refused because the store already
        holds one with the same UIDs and the same bytes is a stored result marked
        `already_stored` (import ignores duplicates); with other bytes it fails, saying so.
        """
        return await self._record_pending(results, visible=True, identical_in=keep_identical_in)

    async def _record_pending(
        self, results: Sequence[Ingested], *, visible: bool, identical_in: DicomStoreName | None
    ) -> list[Ingested]:
        rows = [r.pending for r in results if isinstance(r.pending, NewInstanceRow)]
        staged = [r.pending for r in results if isinstance(r.pending, InstanceKey)]
        if self._leftovers:
            await self._forget_leftovers()
        if not visible:
            staged = []
        if not rows and not staged:
            return list(results)
        refusals = iter(
            await self._catalog.add_instances(
                rows, visible=visible, commit=staged, owner=self._operations.owner
            )
        )
        settled = []
        for result in results:
            pending = result.pending
            if isinstance(pending, NewInstanceRow):
                refusal = next(refusals)
                if refusal is not None:
                    settled.append(await self._refused(result, pending, refusal, identical_in))
                    continue
                pending = pending.key
            settled.append(
                dataclasses.replace(
                    result, pending=None if visible else pending, key=pending if visible else None
                )
            )
        return settled

    async def _refused(
        self,
        result: Ingested,
        row: NewInstanceRow,
        refusal: AlreadyExists | Aborted,
        identical_in: DicomStoreName | None,
    ) -> Ingested:
        """The result of an instance whose row the catalog refused; its blob goes."""
        detail = refusal.message
        try:
            if identical_in is not None and isinstance(refusal, AlreadyExists):
                stored = await self._catalog.find_instances(
                    identical_in, result.study_uid, result.series_uid, result.sop_uid
                )
                if stored and await self._same_bytes(row.key, stored[0].key):
                    return dataclasses.replace(result, pending=None, already_stored=True)
                if stored:
                    detail = (
                        "an instance with the same Study, Series and SOP Instance UIDs is"
                        " already stored, with different bytes"
                    )
        finally:
            await self._blobs.delete(row.key.store_key, row.key.instance_key)
        return _failed(result, FailureReason.PROCESSING_FAILURE, detail)

    async def _same_bytes(self, one: InstanceKey, other: InstanceKey) -> bool:
        left = _Chunks(self._blobs.read(one.store_key, one.instance_key))
        right = _Chunks(self._blobs.read(other.store_key, other.instance_key))
        while True:
            a, b = await left.take(1 << 16), await right.take(1 << 16)
            if a != b:
                return False
            if not a:
                return True

    async def abandon(self, results: Sequence[Ingested]) -> None:
        """Forget the pending instances of `results` (their request failed), each even when
        forgetting another failed; then raise the first failure."""
        failures: list[Exception] = []
        for result in results:
            pending = result.pending
            if pending is not None:
                # A row may have been recorded even so: by a `stage` whose caller was cancelled.
                key = pending.key if isinstance(pending, NewInstanceRow) else pending
                try:
                    await self._forget(key)
                except Exception as exc:
                    failures.append(exc)
        if failures:
            raise failures[0]

    async def _forget(self, key: InstanceKey) -> None:
        """Remove a pending instance's row, then its blob; the blob even when the catalog
        cannot be written now (a full disk, a lock): its row, if any, is invisible, and is
        removed before the next rows are recorded (or by recovery once this process has died)."""
        try:
            await self._catalog.abort_instance(key)
        except Exception:
            self._leftovers.add(key)
            raise
        finally:
            await self._blobs.delete(key.store_key, key.instance_key)

    async def _forget_leftovers(self) -> None:
        """Remove the rows failed requests left; raise if the catalog still cannot be written
        (the write that needs it would fail the same way)."""
        for key in list(self._leftovers):
            await self._catalog.abort_instance(key)
            self._leftovers.discard(key)

    async def find(
        self,
        store: DicomStoreName,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
    ) -> Sequence[StoredInstance]:
        """The visible instances of a study, series or instance; NotFound when there are none."""
        found = await self._catalog.find_instances(store, study_uid, series_uid, sop_uid)
        if not found:
            what = _describe(study_uid, series_uid, sop_uid)
            raise NotFound(f"{what} not found in {store}", resource=what)
        return found

    async def metadata(self, found: Sequence[StoredInstance]) -> Sequence[dict[str, Any]]:
        """The DICOM JSON of each instance (bulk data as relative `bulkdata/...` URIs)."""
        return await self._catalog.instance_metadata([i.key for i in found])

    async def open(self, instance: StoredInstance) -> AsyncIterator[bytes] | None:
        """The instance's stored bytes in chunks; None if it was deleted meanwhile.

        The first chunk is read here, so a vanished blob is known before a response starts.
        """
        chunks = self._blobs.read(instance.key.store_key, instance.key.instance_key)
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = b""
        except NotFound:
            return None
        return _prepend(first, chunks)

    async def open_file(self, instance: StoredInstance) -> BinaryIO:
        """The instance's blob as a seekable file to read in a thread (`BlobStore.open_file`);
        NotFound if it was deleted meanwhile. The caller closes it."""
        return await self._blobs.open_file(instance.key.store_key, instance.key.instance_key)

    async def delete_instance(
        self, store: DicomStoreName, study_uid: str, series_uid: str, sop_uid: str
    ) -> None:
        """Delete one instance now: its row (it disappears), then its blob."""
        for instance in await self.find(store, study_uid, series_uid, sop_uid):
            await self._catalog.delete_instance(instance.key)
            await self._blobs.delete(instance.key.store_key, instance.key.instance_key)

    async def start_delete(
        self, store: DicomStoreName, study_uid: str, series_uid: str | None = None
    ) -> Operation:
        """Delete a study or series as an operation; it takes no new instances from now on.

        The operation is recorded before the study or series is marked, so that a crash can
        never leave a mark (which refuses new instances) without the operation that resumes
        at start-up and removes it with the study.
        """
        await self.find(store, study_uid, series_uid)  # NotFound before any operation exists

        async def mark() -> None:
            await self._catalog.mark_deleting(store, study_uid, series_uid)

        method = DELETE_STUDY_METHOD if series_uid is None else DELETE_SERIES_METHOD
        args = {"store": str(store), "study": study_uid, "series": series_uid}
        job = Job(DELETE_JOB, args)
        return await self._operations.start(store.dataset, method, job, prepare=mark)

    async def _run_delete(self, context: JobContext) -> OperationResponse:
        # Idempotent: after a restart it deletes what is left.
        store = DicomStoreName.parse(context.args["store"])
        study, series = context.args["study"], context.args["series"]
        try:
            # Marked again: a crash may have come between recording the operation and marking.
            await self._catalog.mark_deleting(store, study, series)
            found = await self._catalog.find_instances(store, study, series)
        except NotFound:  # the store, or what was to be deleted, is gone already
            found = []
        done = 0
        await context.progress(ProgressCounter(pending=len(found)))
        for instance in found:
            await self._catalog.delete_instance(instance.key)
            await self._blobs.delete(instance.key.store_key, instance.key.instance_key)
            done += 1
            if done % 100 == 0:
                await context.progress(ProgressCounter(success=done, pending=len(found) - done))
        await context.progress(ProgressCounter(success=done))
        return EMPTY
