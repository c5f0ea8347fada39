"""ExportDicomData: copy a store's instances to Cloud Storage or their metadata to BigQuery.

Reference: ExportDicomDataRequest, GcsDestination, BigQueryDestination, DicomFilterConfig
(Google's RPC reference and export how-tos; docs/cloud-storage.md, docs/bigquery.md). The
request is validated and the operation persisted at once; the job (`export_gcs`,
`export_bigquery`) runs in the background and is idempotent: after a crash it runs again and
overwrites what it had written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dicomstore.core import validation
from dicomstore.core.errors import Unimplemented, invalid
from dicomstore.core.export_bigquery import export_to_bigquery
from dicomstore.core.export_gcs import GcsExport
from dicomstore.core.model import (
    BigQueryDestination,
    BigQuerySchema,
    Job,
    Operation,
    OperationError,
    OperationResponse,
)
from dicomstore.core.names import DicomStoreName
from dicomstore.core.operations import JobContext, Operations
from dicomstore.core.ports import BigQueryTable, BlobStore, Catalog, CloudStorage, PixelWork
from dicomstore.core.uris import parse_gcs_uri
from dicomstore.core.validation import BigQueryTableName

METHOD = "google.cloud.healthcare.v1.dicom.DicomService.ExportDicomData"
JOB = "export_dicom_data"
ERROR_DETAILS = "google.cloud.healthcare.v1.dicom.ExportDicomDataErrorDetails"
RESPONSE = OperationResponse("google.cloud.healthcare.v1.dicom.ExportDicomDataResponse")

# GcsDestination.mime_type: the MIME types the reference lists (empty = the stored bytes).
_DICOM_SYNTAXES = (
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.110",
    "1.2.840.10008.1.2.4.111",
    "1.2.840.10008.1.2.4.112",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.8.1",
    "*",
)
MIME_TYPES = frozenset(
    [""]
    + [f"application/dicom; transfer-syntax={ts}" for ts in _DICOM_SYNTAXES]
    + [
        "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1",
        "application/octet-stream; transfer-syntax=*",
        "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50",
        "image/png",
    ]
)


def _normalise_mime(value: str) -> str:
    kind, *params = (p.strip() for p in value.split(";"))
    return "; ".join([kind.lower(), *(p.replace(" ", "") for p in params if p)])


@dataclass(frozen=True)
class GcsDestination:
    uri_prefix: str
    mime_type: str = ""


class Exports:
    def __init__(
        self,
        catalog: Catalog,
        operations: Operations,
        blobs: BlobStore,
        storage: CloudStorage,
        tables: Callable[[BigQueryTableName], BigQueryTable],
        pixels: PixelWork,
    ) -> None:
        self._pixels = pixels
        self._catalog = catalog
        self._operations = operations
        self._blobs = blobs
        self._storage = storage
        self._tables = tables
        operations.register(JOB, self._run)

    async def start(
        self,
        name: str,
        destination: GcsDestination | BigQueryDestination | None,
        filter_uri: str,
    ) -> Operation:
        store = DicomStoreName.parse(name)
        args: dict[str, str] = {"store": str(store)}
        if isinstance(destination, GcsDestination):
            field = "gcs_destination.uri_prefix"
            prefix = parse_gcs_uri(destination.uri_prefix, field, object_required=False)
            mime = _normalise_mime(destination.mime_type) if destination.mime_type else ""
            if mime not in MIME_TYPES:
                raise invalid(
                    "gcs_destination.mime_type", f"unsupported MIME type {destination.mime_type!r}"
                )
            args |= {"uri_prefix": str(prefix), "mime_type": mime}
        elif isinstance(destination, BigQueryDestination):
            field = "bigquery_destination.table_uri"
            validation.validate_bigquery_table_uri(destination.table_uri, field)
            if destination.schema is BigQuerySchema.JSON:
                raise Unimplemented(
                    "bigquery_destination.schema_json is not supported; use the flattened"
                    " schema (the default)"
                )
            args |= {
                "table_uri": destination.table_uri,
                "write_disposition": destination.write_disposition.name,
                "force": str(destination.force).lower(),
                "include_source_store": str(destination.include_source_store).lower(),
            }
        else:
            raise invalid(
                "destination", "one of gcs_destination or bigquery_destination is required"
            )
        if filter_uri:
            parse_gcs_uri(filter_uri, "filter_config.resource_paths_gcs_uri")
            args["filter"] = filter_uri
        await self._catalog.get_dicom_store(store)
        return await self._operations.start(store.dataset, METHOD, Job(JOB, args), logged=True)

    async def _run(self, context: JobContext) -> OperationResponse | OperationError:
        store = DicomStoreName.parse(context.args["store"])
        if "table_uri" in context.args:
            await export_to_bigquery(self._catalog, self._tables, context, store)
            return RESPONSE
        export = GcsExport(self._catalog, self._blobs, self._storage, self._pixels, context, store)
        await export.run()
        if export.failure:
            return context.item_errors(export.failure, export.total, "instances", ERROR_DETAILS)
        return RESPONSE
