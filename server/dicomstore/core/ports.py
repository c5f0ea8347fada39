"""Ports: the interfaces the core needs from storage, implemented by adapters.

Each port has one contract test suite (`tests/contract/`) that every adapter must pass unchanged:
SQLite now, PostgreSQL later for the catalog; local disk or Cloud Storage for blobs.
Adapters translate their driver's exceptions into `dicomstore.core.errors` at their boundary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from dicomstore.core.errors import Aborted, AlreadyExists
from dicomstore.core.model import (
    BigQueryRow,
    Dataset,
    DicomStore,
    DicomStoreMetrics,
    InstanceKey,
    NewInstance,
    NewInstanceRow,
    Operation,
    OperationLogEntry,
    StorageObject,
    StoredInstance,
)
from dicomstore.core.names import DatasetName, DicomStoreName, LocationName, OperationName
from dicomstore.core.queries import Match, Query
from dicomstore.dicom.render import RenderOptions
from dicomstore.dicom.transcode import Plan


class Catalog(Protocol):
    """The index of datasets, stores, instances and operations.

    Listing methods return items in a stable order (ascending id) strictly after `after`, so a page
    token only needs to remember the last id it returned.
    """

    async def open(self) -> None:
        """Connect and apply pending schema migrations."""

    async def close(self) -> None: ...

    async def setting(self, key: str, default: bytes) -> bytes:
        """The value stored under `key`, storing `default` first if there is none (atomically)."""

    # Datasets
    async def create_dataset(self, dataset: Dataset) -> None:
        """Raise AlreadyExists when the id is taken."""

    async def get_dataset(self, name: DatasetName) -> Dataset:
        """Raise NotFound when missing."""

    async def list_datasets(
        self, location: LocationName, *, after: str, limit: int
    ) -> Sequence[Dataset]: ...

    async def update_dataset(self, dataset: Dataset) -> None:
        """Raise NotFound when missing."""

    async def delete_dataset(self, name: DatasetName) -> Sequence[int]:
        """Delete the dataset with its stores, instances and operations; return the store keys.

        Raise NotFound when missing.
        """

    # DICOM stores
    async def create_dicom_store(self, store: DicomStore) -> None:
        """Raise NotFound when the dataset is missing, AlreadyExists when the id is taken."""

    async def get_dicom_store(self, name: DicomStoreName) -> DicomStore:
        """Raise NotFound when missing."""

    async def dicom_store_key(self, name: DicomStoreName) -> int:
        """The store's internal key (blob keys derive from it; a key is never reused).

        Raise NotFound when missing.
        """

    async def list_dicom_stores(
        self, dataset: DatasetName, *, after: str, limit: int
    ) -> Sequence[DicomStore]: ...

    async def update_dicom_store(self, store: DicomStore) -> None:
        """Replace the store's labels and configuration. Raise NotFound when missing."""

    async def delete_dicom_store(self, name: DicomStoreName) -> int:
        """Delete the store and its instances; return its key. Raise NotFound when missing."""

    async def dicom_store_keys(self) -> set[int]:
        """Keys of every existing store (for removing orphan blobs at start-up)."""

    async def dicom_store_metrics(self, name: DicomStoreName) -> DicomStoreMetrics:
        """Counts and byte totals of the store's visible instances. Raise NotFound if missing."""

    # Instances: the blob is written under a reserved key, then the row is added (visible at
    # once, or invisible until `add_instances` commits it); a row never exists without its blob.
    async def reserve_instance_key(
        self, store: DicomStoreName, *, store_key: int | None = None
    ) -> InstanceKey:
        """A key no instance has ever had, for an instance of `store` whose blob is written
        before its row is added. Raise NotFound when the store is missing. `store_key` is the
        store's key when the caller has looked it up (an ingest batch does, once): it is not
        looked up again, and a store deleted meanwhile refuses the row."""

    async def add_instance(
        self,
        key: InstanceKey,
        instance: NewInstance,
        blob_size: int,
        *,
        visible: bool,
        owner: str = "",
    ) -> None:
        """Record an instance whose blob is durable, claiming its Study/Series/SOP Instance UIDs;
        invisible until committed by `add_instances` unless `visible`, and then owned by the
        process `owner` (see `recover_instances`). The one-row form of `add_instances`, which
        raises the row's refusal.

        Raise NotFound when the store is gone, AlreadyExists when an instance with the same
        three UIDs exists (visible or not), Aborted when its study or series is being deleted.
        """

    async def add_instances(
        self,
        rows: Sequence[NewInstanceRow],
        *,
        visible: bool,
        commit: Sequence[InstanceKey] = (),
        owner: str = "",
    ) -> list[AlreadyExists | Aborted | None]:
        """Record instances whose blobs are durable, all in one transaction, as `add_instance`
        does one; also make the invisible instances `commit` visible in that transaction.

        Returns, for each row, None when it was recorded or the AlreadyExists or Aborted error
        that refused it (the others are recorded all the same). Raise NotFound when a store is
        gone, Unavailable when an instance of `commit` is no longer there (recovery removed it:
        its process was taken for dead): then nothing is recorded.
        """

    async def abort_instance(self, key: InstanceKey) -> None:
        """Forget an instance (visible or not); an absent one is not an error."""

    async def recover_instances(self) -> Sequence[InstanceKey]:
        """Remove the instances left invisible by dead processes (a crash): those whose owner
        holds no unexpired liveness lease (`heartbeat`), or that have no owner; return their
        keys. Never an instance a live process is storing."""

    async def instance_keys(self, store_key: int) -> set[int]:
        """Keys of every instance row of a store (for removing orphan blobs)."""

    async def list_instances(
        self, store: DicomStoreName, *, after: int, limit: int
    ) -> Sequence[StoredInstance]:
        """Visible instances of the store with an instance key above `after`, by key, `limit` at
        most (export walks a store with it). Raise NotFound when the store is missing."""

    async def instances_by_key(self, keys: Sequence[InstanceKey]) -> Sequence[StoredInstance]:
        """The visible instances among `keys`, in their order; the others are left out."""

    async def find_instances(
        self,
        store: DicomStoreName,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
    ) -> Sequence[StoredInstance]:
        """Visible instances of a study, series or one instance, ordered by series then SOP UID.

        Raise NotFound when the store is missing; an empty result means no such resource.
        """

    async def instance_metadata(self, keys: Sequence[InstanceKey]) -> Sequence[dict[str, Any]]:
        """The DICOM JSON (without bulk data) of each instance, in the order of `keys`."""

    async def mark_deleting(
        self, store: DicomStoreName, study_uid: str, series_uid: str | None = None
    ) -> None:
        """Flag a study or series as being deleted: it takes no new instances from now on.

        Raise NotFound when the store, study or series is missing.
        """

    async def delete_instance(self, key: InstanceKey) -> None:
        """Remove an instance row (its blob is removed after); drop its series and study rows
        once they are empty. Deleting an absent instance is not an error."""

    async def search(self, store: DicomStoreName, query: Query) -> Sequence[Match]:
        """Visible studies, series or instances (`query.level`) within `query`'s study and
        series, matching every condition on at least one visible instance; in the order they
        were first stored, `query.limit` at most after skipping `query.offset` (QIDO-RS,
        PS3.18 10.6; matching rules in `dicomstore.dicom.qido`).

        A study or series with no visible instance is never returned. Raise NotFound when the
        store is missing.
        """

    # Operations
    async def create_operation(
        self, operation: Operation, *, owner: str = "", lease_seconds: float = 0
    ) -> None:
        """Raise NotFound when the dataset is missing, AlreadyExists on a duplicate id.

        With an `owner`, the operation is created claimed by it for `lease_seconds` (as
        `claim_operation` would claim it), so that no other process takes it meanwhile.
        """

    async def get_operation(self, name: OperationName) -> Operation:
        """Raise NotFound when missing."""

    async def list_operations(
        self, dataset: DatasetName, *, done: bool | None, after: str, limit: int
    ) -> Sequence[Operation]: ...

    async def update_operation(self, operation: Operation) -> None:
        """Persist progress, cancellation or the outcome; a cancellation once requested stays
        requested (a job writing its progress does not undo it). Raise NotFound when missing."""

    async def request_cancel(self, name: OperationName) -> Operation:
        """Set cancel_requested on an unfinished operation; return the operation as stored."""

    async def unfinished_operations(self) -> Sequence[Operation]:
        """Operations not done, oldest first (to resume or fail them at start-up)."""

    # Operation leases: exactly one process runs an unfinished operation, the one holding its
    # lease. An owner is an opaque id unique to a process's life; lease times are counted on the
    # catalog's clock (so that processes on several machines agree), in seconds from now.
    async def claim_operation(self, name: OperationName, owner: str, lease_seconds: float) -> bool:
        """Give `owner` the lease of an unfinished operation until `lease_seconds` from now, if
        no other owner holds an unexpired lease on it (never claimed, released, or expired);
        in one transaction, so that of processes claiming at once exactly one gets it. True
        when `owner` holds the lease now (claiming again what it holds renews it); False when
        another owner does, or the operation is done or missing."""

    async def renew_lease(self, name: OperationName, owner: str, lease_seconds: float) -> bool:
        """Extend `owner`'s lease to `lease_seconds` from now. False, changing nothing, when
        `owner` no longer holds it (it expired and another owner claimed it) or the operation
        is done or missing: the caller must stop running it."""

    async def release_leases(self, owner: str | None = None) -> None:
        """Give up the leases `owner` holds (a process shutting down), or every lease with
        None (at start-up, when no other process runs), so that the operations are claimable at
        once."""

    async def unclaimed_operations(self) -> Sequence[Operation]:
        """Unfinished operations no unexpired lease holds, oldest first: what a process may
        claim and run (those of a process that died, once their lease expired)."""

    # Process liveness: every process renews a lease under its owner id (the one its
    # operation leases carry) while it runs; recovery removes only what dead processes left.
    async def heartbeat(self, owner: str, lease_seconds: float) -> None:
        """Mark the process `owner` alive until `lease_seconds` from now (created or renewed)."""

    async def end_process(self, owner: str) -> None:
        """Mark the process `owner` dead at once (it stopped, or it is known to be gone): its
        liveness lease and its operation leases are released."""

    async def processes(self) -> dict[str, float]:
        """Every process that has a liveness lease, expired or not (until `end_process`):
        owner -> seconds the lease has left, negative once it has expired."""

    async def add_operation_log(
        self, name: OperationName, entries: Sequence[OperationLogEntry]
    ) -> None:
        """Append error entries to an operation's log, numbered on from the last one and
        timed now. Raise NotFound when the operation is missing."""

    async def operation_log(
        self, name: OperationName, *, after: int, limit: int
    ) -> Sequence[OperationLogEntry]:
        """The operation's log entries numbered after `after`, in order, `limit` at most.
        Raise NotFound when the operation is missing."""

    async def clear_operation_log(self, name: OperationName) -> None:
        """Remove every entry of the operation's log (a resumed job writes it anew)."""


class BlobStore(Protocol):
    """Durable bytes of instances, keyed by internal ids, never by UIDs."""

    async def open(self) -> None:
        """Prepare the storage (and check it can be reached); nothing is removed, so that any
        number of processes may open it while others write."""

    async def remove_leftovers(self) -> None:
        """Discard what writes of processes that are gone left on this machine (partial files,
        local copies); never what a running process is writing or reading."""

    async def write(self, store_key: int, instance_key: int, source: BinaryIO) -> int:
        """Copy `source` into the blob; when this returns the blob is complete and durable.

        Returns the size in bytes. A blob is either absent or complete, never partial.
        """

    def read(self, store_key: int, instance_key: int) -> AsyncIterator[bytes]:
        """The blob's bytes, in bounded chunks; NotFound (on the first read) if absent."""

    async def read_range(self, store_key: int, instance_key: int, start: int, size: int) -> bytes:
        """`size` bytes from byte `start` (fewer at the blob's end); NotFound if absent."""

    async def open_file(self, store_key: int, instance_key: int) -> BinaryIO:
        """The blob as a seekable read-only file, to be read in a thread (pydicom parses it):
        reads fetch only the ranges they need. NotFound if absent; the caller closes it."""

    def local_file(self, store_key: int, instance_key: int) -> AbstractAsyncContextManager[Path]:
        """A file on this machine holding the blob while the context lasts, for readers in
        other processes (the pixel workers): the blob itself, or a copy. NotFound if absent."""

    async def delete(self, store_key: int, instance_key: int) -> None:
        """Remove one blob; removing an absent blob is not an error."""

    async def instance_keys(self, store_key: int) -> set[int]:
        """Keys of the complete blobs of a store (for recovery)."""

    async def instance_ages(self, store_key: int) -> dict[int, float]:
        """The complete blobs of a store: key -> seconds since it was written (for recovery,
        which leaves young blobs without a row to the writes they belong to)."""

    async def remove_dicom_store(self, store_key: int) -> None:
        """Remove every blob of a store; removing an absent store is not an error."""

    async def dicom_store_keys(self) -> set[int]:
        """Keys of the stores that have blobs."""

    async def close(self) -> None: ...


class CloudStorage(Protocol):
    """Objects of Cloud Storage buckets (`gs://BUCKET/OBJECT`), read by import and written by
    export: files under the data dir by default, the GCS JSON API when an endpoint is set.

    Bucket and object names reach an adapter already checked by `dicomstore.core.uris`; an
    adapter still refuses (InvalidArgument) any name that would leave its bucket. A missing
    bucket or object is NotFound; a refusal of the service (permissions, quota) is
    FailedPrecondition; the service unreachable is Unavailable.
    """

    async def open(self) -> None:
        """Prepare the storage; discard what uploads a crash interrupted left behind."""

    def list_objects(self, bucket: str, prefix: str) -> AsyncIterator[StorageObject]:
        """The bucket's objects whose names start with `prefix`, in lexicographic order of
        name, streamed a page at a time (memory does not grow with the number of objects)."""

    async def download(self, bucket: str, name: str, sink: BinaryIO, *, limit: int) -> int:
        """Copy the object's bytes into `sink`; return their number. An object larger than
        `limit` bytes raises ObjectTooLarge (a partial copy may be left in `sink`)."""

    async def upload(self, bucket: str, name: str, source: BinaryIO, content_type: str) -> None:
        """Create or overwrite the object with the bytes of `source` (from its position)."""

    async def close(self) -> None: ...


class PixelWork(Protocol):
    """Decoding, transcoding and rendering of stored instances, given a local file of their
    blob (`BlobStore.local_file`), run away from the event loop (`dicomstore.pixel_workers`).
    Errors are the core's: an impossible transcode or a bad frame number InvalidArgument,
    undecodable data or a request over the memory limit FailedPrecondition, a worker lost
    Unavailable."""

    async def frame(self, path: str, number: int, media: str, stored_syntax: str = "") -> bytes:
        """Frame `number` (from 1) as `media` (see `pixel_jobs.frame`); `stored_syntax`, the
        instance's, when known."""

    async def render(self, path: str, number: int, options: RenderOptions) -> bytes: ...

    async def check_transcode(self, paths: list[str], target: str) -> None:
        """Raise for the first instance that cannot be transcoded to `target`."""

    async def transcode_head(self, path: str, target: str) -> tuple[Plan, bytes]:
        """The transcoded body up to and including its first piece (`dicom.transcode.head`)."""

    async def transcode_frames(self, path: str, plan: Plan, start: int, stop: int) -> bytes:
        """Pieces `start` to `stop - 1` of the transcoded Pixel Data."""


class BigQueryTable(Protocol):
    """One BigQuery table (`bq://PROJECT.DATASET.TABLE`) that export and streaming write rows
    of DICOM metadata to: a DuckDB database under the data dir by default, BigQuery when an
    endpoint is set. Rows are built by `dicomstore.dicom.bigquery` (Google's DICOM schema)."""

    async def is_empty(self) -> bool:
        """True when the table does not exist or has no row."""

    async def write(self, rows: Sequence[BigQueryRow], *, truncate: bool) -> None:
        """Append `rows` (after removing every existing row when `truncate`), creating the
        table and adding the columns the rows bring that it lacks, in one transaction."""

    async def close(self) -> None: ...
