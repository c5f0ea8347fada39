"""ExportDicomData to Cloud Storage: each instance of a store (or of its filter file) becomes the
object `{uriPrefix}/{study}/{series}/{instance}.dcm`, overwriting one already there.

Reference: GcsDestination in Google's RPC reference and its Cloud Storage export how-to
(docs/cloud-storage.md). A slash is appended to a
prefix without one. With no `mimeType` (or `application/dicom; transfer-syntax=*`, or the
transfer syntax an instance is stored in) the stored bytes are written; any other MIME type
needs a transcoder this build lacks, so each instance fails with that reason, never a fake
success. Instances are written `UPLOADS` at a time; after each group the counter moves, the
group's failures go to the operation's log, and a cancellation is honoured. A fault of the
destination itself (no such bucket, permission denied, unreachable) ends the operation.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Sequence
from typing import BinaryIO, Final

from dicomstore.core.errors import Code, DicomStoreError
from dicomstore.core.model import OperationLogEntry, ProgressCounter, StoredInstance
from dicomstore.core.names import DicomStoreName
from dicomstore.core.operations import JobContext
from dicomstore.core.ports import BlobStore, Catalog, CloudStorage
from dicomstore.core.resource_paths import ResourcePath, parse_resource_paths
from dicomstore.core.uris import GcsUri, parse_gcs_uri

#: Instances listed, written and counted together.
GROUP: Final = 64
#: Objects written at the same time.
UPLOADS: Final = 8
#: The largest filter file read (it is parsed whole, before anything is exported).
MAX_FILTER_BYTES: Final = 64 << 20
STORED_BYTES: Final = frozenset({"", "application/dicom; transfer-syntax=*"})
#: Faults of the destination that no other instance would escape: they end the operation.
DESTINATION_FAULTS: Final = frozenset(
    {Code.NOT_FOUND, Code.FAILED_PRECONDITION, Code.UNAVAILABLE, Code.PERMISSION_DENIED}
)


def instance_path(instance: StoredInstance) -> str:
    """The instance's DICOMweb path, as export log entries name it."""
    return ResourcePath(instance.study_uid, instance.series_uid, instance.sop_uid).text


class GcsExport:
    """One run of an export to Cloud Storage."""

    def __init__(
        self,
        catalog: Catalog,
        blobs: BlobStore,
        storage: CloudStorage,
        context: JobContext,
        store: DicomStoreName,
    ) -> None:
        self._catalog = catalog
        self._blobs = blobs
        self._storage = storage
        self._context = context
        self._store = store
        args = context.args
        prefix = parse_gcs_uri(
            args["uri_prefix"], "gcs_destination.uri_prefix", object_required=False
        )
        folder = prefix.object
        if folder and not folder.endswith("/"):
            folder += "/"
        self._destination = GcsUri(prefix.bucket, folder)
        self._mime_type: str = args.get("mime_type", "")
        self._filter: str = args.get("filter", "")
        self._uploads = asyncio.Semaphore(UPLOADS)
        self._unmatched: list[OperationLogEntry] = []  # filter lines naming nothing
        self.total = 0
        self.success = 0
        self.failure = 0

    async def run(self) -> None:
        async for group in self._groups():
            unmatched, self._unmatched = self._unmatched, []
            outcomes = await asyncio.gather(*(self._guarded(i) for i in group))
            failed = [entry for entry in outcomes if entry is not None]
            self.total += len(group) + len(unmatched)
            self.success += len(group) - len(failed)
            self.failure += len(failed) + len(unmatched)
            failures = failed + unmatched
            await self._context.log(failures)
            await self._context.progress(ProgressCounter(self.success, self.failure))
            await self._context.check_cancelled()

    async def _groups(self) -> AsyncIterator[Sequence[StoredInstance]]:
        if not self._filter:
            after = 0
            while group := await self._catalog.list_instances(
                self._store, after=after, limit=GROUP
            ):
                yield group
                after = group[-1].key.instance_key
            return
        seen: set[int] = set()
        for path in await self._filter_paths():
            found = await self._catalog.find_instances(
                self._store, path.study_uid, path.series_uid, path.sop_uid
            )
            if not found:
                self._unmatched.append(
                    OperationLogEntry(path.text, Code.NOT_FOUND, f"{path.text} is not in the store")
                )
                yield []  # counted and logged with the next group
            fresh = [i for i in found if i.key.instance_key not in seen]
            seen.update(i.key.instance_key for i in fresh)
            for start in range(0, len(fresh), GROUP):
                yield fresh[start : start + GROUP]

    async def _filter_paths(self) -> list[ResourcePath]:
        source = parse_gcs_uri(self._filter, "filter_config.resource_paths_gcs_uri")
        sink = io.BytesIO()
        await self._storage.download(source.bucket, source.object, sink, limit=MAX_FILTER_BYTES)
        return parse_resource_paths(sink.getvalue(), str(source))

    async def _guarded(self, instance: StoredInstance) -> OperationLogEntry | None:
        """Export one instance; the log entry of its failure, if it failed."""
        async with self._uploads:
            try:
                await self._export(instance)
            except DicomStoreError as exc:
                if exc.code in DESTINATION_FAULTS and not isinstance(exc, _InstanceGone):
                    raise
                return OperationLogEntry(instance_path(instance), exc.code, exc.message)
        return None

    async def _export(self, instance: StoredInstance) -> None:
        mime = self._mime_type
        wanted = mime.partition("transfer-syntax=")[2]
        if mime not in STORED_BYTES and not (
            mime.startswith("application/dicom;") and wanted == instance.transfer_syntax_uid
        ):
            raise _NotTranscoded(
                f"exporting as {mime!r} needs transcoding from transfer syntax"
                f" {instance.transfer_syntax_uid}, which this dicomstore cannot do yet;"
                " export without mimeType to get the stored bytes"
            )
        name = (
            f"{self._destination.object}{instance.study_uid}/{instance.series_uid}"
            f"/{instance.sop_uid}.dcm"
        )
        path = self._blobs.local_path(instance.key.store_key, instance.key.instance_key)
        try:
            source: BinaryIO = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError as exc:
            raise _InstanceGone(f"{instance_path(instance)} was deleted during the export") from exc
        with source:
            await self._storage.upload(self._destination.bucket, name, source, "application/dicom")


class _NotTranscoded(DicomStoreError):
    code = Code.UNIMPLEMENTED


class _InstanceGone(DicomStoreError):
    code = Code.NOT_FOUND
