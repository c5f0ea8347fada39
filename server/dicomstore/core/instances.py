"""DICOM instances of a store: ingest (STOW-RS and import), lookup, and delete.

Reference: Google's DICOM conformance statement and DICOMweb how-to (seed 001): deleting a study
or series returns a long-running operation (`DicomWebService.DeleteStudy` / `DeleteSeries`)
during which the study or series takes no new instances; deleting an instance returns `{}`.
Store metrics follow every change because they are computed from the catalog.
"""

from __future__ import annotations

from collections.abc import Sequence

from dicomstore.core.errors import NotFound
from dicomstore.core.model import Job, Operation, OperationResponse, ProgressCounter, StoredInstance
from dicomstore.core.names import DicomStoreName
from dicomstore.core.operations import EMPTY, JobContext, Operations
from dicomstore.core.ports import BlobStore, Catalog

DELETE_STUDY_METHOD = "google.cloud.healthcare.v1.dicomweb.DicomWebService.DeleteStudy"
DELETE_SERIES_METHOD = "google.cloud.healthcare.v1.dicomweb.DicomWebService.DeleteSeries"
DELETE_JOB = "delete_dicom_resources"


def _describe(study_uid: str, series_uid: str | None, sop_uid: str | None) -> str:
    if sop_uid is not None:
        return f"instance {sop_uid} of series {series_uid} of study {study_uid}"
    if series_uid is not None:
        return f"series {series_uid} of study {study_uid}"
    return f"study {study_uid}"


class Instances:
    def __init__(self, catalog: Catalog, blobs: BlobStore, operations: Operations) -> None:
        self._catalog = catalog
        self._blobs = blobs
        self._operations = operations
        operations.register(DELETE_JOB, self._run_delete)

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
        """Delete a study or series as an operation; it takes no new instances from now on."""
        await self._catalog.mark_deleting(store, study_uid, series_uid)
        method = DELETE_STUDY_METHOD if series_uid is None else DELETE_SERIES_METHOD
        args = {"store": str(store), "study": study_uid, "series": series_uid}
        return await self._operations.start(store.dataset, method, Job(DELETE_JOB, args))

    async def _run_delete(self, context: JobContext) -> OperationResponse:
        # Idempotent: after a restart it deletes what is left.
        store = DicomStoreName.parse(context.args["store"])
        try:
            found = await self._catalog.find_instances(
                store, context.args["study"], context.args["series"]
            )
        except NotFound:  # the store itself was deleted meanwhile
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
