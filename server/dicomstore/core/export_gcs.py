"""ExportDicomData to Cloud Storage: each instance of a store (or of its filter file) becomes the
object `{uriPrefix}/{study}/{series}/{instance}.dcm`, overwriting one already there.

Reference: GcsDestination in Google's RPC reference and its Cloud Storage export how-to
(docs/cloud-storage.md). A slash is appended to a prefix without one. With no `mimeType` (or
`application/dicom; transfer-syntax=*`, or the transfer syntax an instance is stored in) the
stored bytes are written. Otherwise the pixel workers make what the MIME type names, as WADO-RS
would answer it:
- `application/dicom; transfer-syntax=X`: the instance transcoded to X, `{instance}.dcm`;
- `application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1` (native, decoded) or `=*`
  (as stored): the Pixel Data frame by frame, no extension;
- `image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50` and `image/png`: each frame rendered
  (a "consumer" image), `.jpg` / `.png`.
Frame by frame means `{instance}` for a single frame, `{instance}/{n}` for each frame of a
multi-frame instance. An instance that cannot be made so (no Pixel Data, an impossible
transcode) fails alone with the reason, never a fake success.

Instances are written `UPLOADS` at a time; after each group the counter moves, the group's
failures go to the operation's log, and a cancellation is honoured. A fault of the destination
itself (no such bucket, permission denied, unreachable) ends the operation.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Final, TypeVar

from dicomstore.core.errors import Code, DicomStoreError, NotFound
from dicomstore.core.instance_pixels import InstancePixels
from dicomstore.core.model import OperationLogEntry, ProgressCounter, StoredInstance
from dicomstore.core.names import DicomStoreName
from dicomstore.core.operations import JobContext
from dicomstore.core.ports import BlobStore, Catalog, CloudStorage, PixelWork
from dicomstore.core.resource_paths import ResourcePath, parse_resource_paths
from dicomstore.core.uris import GcsUri, parse_gcs_uri
from dicomstore.dicom.pixel_encode import NATIVE_FRAME, STORED_FRAME
from dicomstore.dicom.render import RenderOptions

T = TypeVar("T")

#: Instances listed, written and counted together.
GROUP: Final = 64
#: Objects written at the same time.
UPLOADS: Final = 8
#: The largest filter file read (it is parsed whole, before anything is exported).
MAX_FILTER_BYTES: Final = 64 << 20
STORED_BYTES: Final = frozenset({"", "application/dicom; transfer-syntax=*"})
DICOM: Final = "application/dicom"
OCTET_STREAM: Final = "application/octet-stream"
#: The object name's extension of each per-frame MIME type (GcsDestination.mime_type).
FRAME_EXTENSIONS: Final = {OCTET_STREAM: "", "image/jpeg": ".jpg", "image/png": ".png"}
#: Bytes of a transcoded instance held in memory before its spool file goes to disk.
SPOOL_BYTES: Final = 8 << 20
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
        pixels: PixelWork,
        context: JobContext,
        store: DicomStoreName,
    ) -> None:
        self._catalog = catalog
        self._blobs = blobs
        self._storage = storage
        self._pixels = InstancePixels(blobs, pixels)
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
            except _InstanceFailed as exc:
                return OperationLogEntry(instance_path(instance), exc.code, exc.message)
            except DicomStoreError as exc:
                if exc.code in DESTINATION_FAULTS and not isinstance(exc, _InstanceGone):
                    raise
                return OperationLogEntry(instance_path(instance), exc.code, exc.message)
        return None

    async def _export(self, instance: StoredInstance) -> None:
        kind, _, syntax = self._mime_type.partition("; transfer-syntax=")
        name = (
            f"{self._destination.object}{instance.study_uid}/{instance.series_uid}"
            f"/{instance.sop_uid}"
        )
        try:
            as_stored = kind == DICOM and syntax == instance.transfer_syntax_uid
            if self._mime_type in STORED_BYTES or as_stored:
                await self._upload_blob(instance, f"{name}.dcm")
            elif kind == DICOM:
                await self._upload_transcoded(instance, syntax, f"{name}.dcm")
            else:
                await self._upload_frames(instance, kind, syntax, name)
        except FileNotFoundError as exc:
            raise _InstanceGone(f"{instance_path(instance)} was deleted during the export") from exc

    async def _upload_blob(self, instance: StoredInstance, name: str) -> None:
        try:
            source = await self._blobs.open_file(instance.key.store_key, instance.key.instance_key)
        except NotFound as exc:
            raise _InstanceGone(f"{instance_path(instance)} was deleted during the export") from exc
        with source:
            await self._storage.upload(self._destination.bucket, name, source, DICOM)

    async def _upload_transcoded(self, instance: StoredInstance, syntax: str, name: str) -> None:
        with tempfile.SpooledTemporaryFile(SPOOL_BYTES) as spool:
            async for piece in await _instance_work(self._pixels.transcoded(instance, syntax)):
                await asyncio.to_thread(spool.write, piece)
            spool.seek(0)
            await self._storage.upload(self._destination.bucket, name, spool, DICOM)  # type: ignore[arg-type]

    async def _upload_frames(
        self, instance: StoredInstance, kind: str, syntax: str, name: str
    ) -> None:
        frames = instance.number_of_frames
        if frames == 0:
            raise _InstanceFailed(
                Code.INVALID_ARGUMENT, f"{instance_path(instance)} has no Pixel Data"
            )
        extension = FRAME_EXTENSIONS[kind]
        for number in range(1, frames + 1):
            if kind == OCTET_STREAM:
                media = STORED_FRAME if syntax == "*" else NATIVE_FRAME
                data = await _instance_work(self._pixels.frame(instance, number, media))
            else:
                options = RenderOptions(kind)
                data = await _instance_work(self._pixels.render(instance, number, options))
            object_name = f"{name}/{number}{extension}" if frames > 1 else f"{name}{extension}"
            await self._storage.upload(
                self._destination.bucket, object_name, io.BytesIO(data), kind
            )


async def _instance_work(work: Awaitable[T]) -> T:
    """Pixel work whose errors, whatever their code, are this instance's failure alone."""
    try:
        return await work
    except DicomStoreError as exc:
        raise _InstanceFailed(exc.code, exc.message) from None


class _InstanceFailed(Exception):
    """This instance could not be exported; others may be."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _InstanceGone(DicomStoreError):
    code = Code.NOT_FOUND
