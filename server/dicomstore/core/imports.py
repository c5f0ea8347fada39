"""ImportDicomData: copy DICOM instances from Cloud Storage into a store, as an operation.

Reference: ImportDicomDataRequest (seed 003; seed 002 for the how-to). The request is validated
and the operation persisted now; the data movement itself is not built yet, so the operation ends
with UNIMPLEMENTED inside the Operation (never a fake success).
"""

from __future__ import annotations

from dicomstore.core.errors import Unimplemented, invalid
from dicomstore.core.model import Job, Operation, OperationResponse
from dicomstore.core.names import DicomStoreName
from dicomstore.core.operations import JobContext, Operations
from dicomstore.core.ports import Catalog
from dicomstore.core.uris import parse_import_source

METHOD = "google.cloud.healthcare.v1.dicom.DicomService.ImportDicomData"
JOB = "import_dicom_data"
BLOB_STORAGE_CLASSES = ("", "STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE")


class Imports:
    def __init__(self, catalog: Catalog, operations: Operations) -> None:
        self._catalog = catalog
        self._operations = operations
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
        return await self._operations.start(store.dataset, METHOD, job)

    async def _run(self, context: JobContext) -> OperationResponse:
        raise Unimplemented(
            f"importing from Cloud Storage ({context.args['uri']}) is not implemented yet"
        )
