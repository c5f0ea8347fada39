"""ImportDicomData: copy DICOM instances from Cloud Storage into a store, as an operation.

Reference: ImportDicomDataRequest in Google's RPC reference and its import how-to
(docs/cloud-storage.md). The objects the source
URI names (wildcards `*`, `**`, `?`, `dicomstore.core.uris`) are listed as a stream and
downloaded `concurrency` at a time; each goes through the ingest path STOW-RS takes
(`IngestBatch`), and each group of `GROUP` objects becomes visible in one transaction, after
which the operation's counter moves and the group's failures are written to its log. An
instance already stored with the same bytes is left alone and counted as a success; the same
UIDs with other bytes, an object that is not DICOM, and one larger than `--max-instance-bytes`
are failures naming the object. The job is idempotent: after a crash it runs again from the
start, and what it had imported counts as success.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import tempfile
from collections.abc import AsyncGenerator
from typing import BinaryIO, Final, cast

from dicomstore.core.errors import Code, DicomStoreError, NotFound, invalid
from dicomstore.core.ingest import PENDING_ROWS, IngestBatch
from dicomstore.core.instances import Ingested, Instances
from dicomstore.core.model import (
    Job,
    Operation,
    OperationError,
    OperationLogEntry,
    OperationResponse,
    ProgressCounter,
    StorageObject,
)
from dicomstore.core.names import DicomStoreName
from dicomstore.core.operations import JobContext, Operations
from dicomstore.core.ports import Catalog, CloudStorage
from dicomstore.core.uris import GcsUri, matching_objects, parse_import_source
from dicomstore.dicom.reasons import FailureReason

METHOD = "google.cloud.healthcare.v1.dicom.DicomService.ImportDicomData"
JOB = "import_dicom_data"
BLOB_STORAGE_CLASSES = ("", "STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE")
ERROR_DETAILS = "google.cloud.healthcare.v1.dicom.ImportDicomDataErrorDetails"
RESPONSE = OperationResponse("google.cloud.healthcare.v1.dicom.ImportDicomDataResponse")
#: Objects made visible together, then counted; at most the rows a batch keeps in memory.
GROUP: Final = PENDING_ROWS
#: An object up to this size is downloaded into memory, a larger one into a spooled file.
IN_MEMORY_BYTES: Final = 1 << 20


class Imports:
    def __init__(
        self,
        catalog: Catalog,
        operations: Operations,
        instances: Instances,
        storage: CloudStorage,
        *,
        max_instance_bytes: int,
        concurrency: int,
    ) -> None:
        self._catalog = catalog
        self._operations = operations
        self._instances = instances
        self._storage = storage
        self._max_instance_bytes = max_instance_bytes
        self._concurrency = concurrency
        operations.register(JOB, self._run)

    async def start(self, name: str, gcs_uri: str, blob_storage_class: str) -> Operation:
        store = DicomStoreName.parse(name)
        uri = parse_import_source(gcs_uri, "gcs_source.uri")
        if blob_storage_class not in BLOB_STORAGE_CLASSES:
            raise invalid(
                "blob_storage_settings.blob_storage_class",
                f"must be one of {', '.join(c for c in BLOB_STORAGE_CLASSES if c)}",
            )
        await self._catalog.get_dicom_store(store)
        job = Job(JOB, {"store": str(store), "uri": str(uri), "storage_class": blob_storage_class})
        return await self._operations.start(store.dataset, METHOD, job, logged=True)

    async def _run(self, context: JobContext) -> OperationResponse | OperationError:
        store = DicomStoreName.parse(context.args["store"])
        source = parse_import_source(context.args["uri"], "gcs_source.uri")
        store_key = await self._instances.store_key(store)
        batch = IngestBatch(self._instances, store, store_key, keep_identical=True)
        run = _ImportRun(
            self._storage, batch, context, source, self._max_instance_bytes, self._concurrency
        )
        await run.all_objects()
        if run.total == 0:
            raise NotFound(f"no object matches {source}", resource=str(source))
        if run.failure:
            return context.item_errors(run.failure, run.total, "objects", ERROR_DETAILS)
        return RESPONSE


class _ImportRun:
    """One run of an import job: objects downloaded ahead, ingested in order, group by group."""

    def __init__(
        self,
        storage: CloudStorage,
        batch: IngestBatch,
        context: JobContext,
        source: GcsUri,
        max_instance_bytes: int,
        concurrency: int,
    ) -> None:
        self._storage = storage
        self._batch = batch
        self._context = context
        self._source = source
        self._max_instance_bytes = max_instance_bytes
        self._concurrency = concurrency
        # The objects of the batch's group in the order offered, each with the code of the
        # error that kept it from being offered, if any.
        self._offered: list[tuple[str, Code | None]] = []
        self._downloads: collections.deque[tuple[str, asyncio.Task[BinaryIO | DicomStoreError]]] = (
            collections.deque()
        )
        self.total = 0
        self.success = 0
        self.failure = 0

    async def all_objects(self) -> None:
        try:
            async with contextlib.aclosing(self._listing()) as listing:
                async for found in listing:
                    self.total += 1
                    if len(self._downloads) >= self._concurrency:
                        await self._offer_oldest()
                    download = asyncio.ensure_future(self._download(found))
                    self._downloads.append((found.name, download))
            while self._downloads:
                await self._offer_oldest()
            await self._commit()
        except BaseException:
            for _, task in self._downloads:
                task.cancel()
            downloaded = [task for _, task in self._downloads]
            for outcome in await asyncio.gather(*downloaded, return_exceptions=True):
                if isinstance(outcome, io.IOBase | tempfile.SpooledTemporaryFile):
                    outcome.close()
            await asyncio.shield(self._batch.abandon())
            raise

    async def _listing(self) -> AsyncGenerator[StorageObject, None]:
        async for found in matching_objects(self._storage, self._source):
            yield found

    async def _download(self, found: StorageObject) -> BinaryIO | DicomStoreError:
        """The object's bytes in a seekable file, or the error that kept them from us (the
        object vanished, or is too large); a fault of the storage itself is raised."""
        sink: BinaryIO = (
            io.BytesIO()
            if found.size <= IN_MEMORY_BYTES
            # Closed by whoever ends up with it: `_offer_oldest`, or the except clauses below.
            else cast(BinaryIO, tempfile.SpooledTemporaryFile(max_size=IN_MEMORY_BYTES))  # noqa: SIM115
        )
        try:
            await self._storage.download(
                self._source.bucket, found.name, sink, limit=self._max_instance_bytes
            )
        except DicomStoreError as exc:
            sink.close()
            if exc.code in (Code.NOT_FOUND, Code.INVALID_ARGUMENT):
                return exc
            raise
        except BaseException:
            sink.close()
            raise
        sink.seek(0)
        return sink

    async def _offer_oldest(self) -> None:
        name, task = self._downloads.popleft()
        downloaded = await task
        uri = f"gs://{self._source.bucket}/{name}"
        if isinstance(downloaded, DicomStoreError):
            self._offered.append((uri, downloaded.code))
            await self._batch.add_failure(
                Ingested(failure=FailureReason.PROCESSING_FAILURE, detail=downloaded.message)
            )
        else:
            self._offered.append((uri, None))
            with downloaded:
                if isinstance(downloaded, io.BytesIO):
                    await self._batch.add_in_memory(downloaded.getvalue())
                else:
                    await self._batch.add(downloaded)
        if len(self._batch) >= GROUP:
            await self._commit()
            await self._context.check_cancelled()

    async def _commit(self) -> None:
        results = await self._batch.commit()
        offered, self._offered = self._offered, []
        failures = [
            OperationLogEntry(uri, code or _code(result), result.detail)
            for (uri, code), result in zip(offered, results, strict=True)
            if not result.stored
        ]
        self.failure += len(failures)
        self.success += len(results) - len(failures)
        await self._context.log(failures)
        pending = self.total - self.success - self.failure
        await self._context.progress(ProgressCounter(self.success, self.failure, pending))


def _code(result: Ingested) -> Code:
    """The canonical code of an instance the ingest path refused."""
    if result.failure == FailureReason.PROCESSING_FAILURE and result.sop_uid:
        return Code.ALREADY_EXISTS  # its UIDs are stored, with other bytes (or being deleted)
    return Code.INVALID_ARGUMENT
