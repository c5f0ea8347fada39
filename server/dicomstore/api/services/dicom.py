"""google.cloud.healthcare.v1.dicom.DicomService."""

from __future__ import annotations

from google.cloud.healthcare.v1.dicom import dicom_pb2
from google.longrunning import operations_pb2
from google.protobuf import empty_pb2

from dicomstore.api import convert
from dicomstore.core.exports import Exports
from dicomstore.core.imports import Imports
from dicomstore.core.stores import DicomStores


class DicomServiceHandlers:
    def __init__(self, stores: DicomStores, imports: Imports, exports: Exports) -> None:
        self._stores = stores
        self._imports = imports
        self._exports = exports

    async def CreateDicomStore(
        self, request: dicom_pb2.CreateDicomStoreRequest
    ) -> dicom_pb2.DicomStore:
        store = await self._stores.create(
            request.parent,
            request.dicom_store_id,
            convert.store_config_from_proto(request.dicom_store),
        )
        return convert.store_to_proto(store)

    async def DeleteDicomStore(self, request: dicom_pb2.DeleteDicomStoreRequest) -> empty_pb2.Empty:
        await self._stores.delete(request.name)
        return empty_pb2.Empty()

    async def ExportDicomData(
        self, request: dicom_pb2.ExportDicomDataRequest
    ) -> operations_pb2.Operation:
        operation = await self._exports.start(
            request.name,
            convert.export_destination_from_proto(request),
            request.filter_config.resource_paths_gcs_uri,
        )
        return convert.operation_to_proto(operation)

    async def GetDicomStore(self, request: dicom_pb2.GetDicomStoreRequest) -> dicom_pb2.DicomStore:
        return convert.store_to_proto(await self._stores.get(request.name))

    async def GetDicomStoreMetrics(
        self, request: dicom_pb2.GetDicomStoreMetricsRequest
    ) -> dicom_pb2.DicomStoreMetrics:
        return convert.metrics_to_proto(await self._stores.metrics(request.name))

    async def ImportDicomData(
        self, request: dicom_pb2.ImportDicomDataRequest
    ) -> operations_pb2.Operation:
        operation = await self._imports.start(
            request.name, request.gcs_source.uri, convert.blob_storage_class_name(request)
        )
        return convert.operation_to_proto(operation)

    async def ListDicomStores(
        self, request: dicom_pb2.ListDicomStoresRequest
    ) -> dicom_pb2.ListDicomStoresResponse:
        page = await self._stores.list(
            request.parent, request.filter, request.page_size, request.page_token
        )
        return dicom_pb2.ListDicomStoresResponse(
            dicom_stores=[convert.store_to_proto(s) for s in page.items],
            next_page_token=page.next_page_token,
        )

    async def UpdateDicomStore(
        self, request: dicom_pb2.UpdateDicomStoreRequest
    ) -> dicom_pb2.DicomStore:
        store = await self._stores.update(
            request.dicom_store.name,
            convert.store_config_from_proto(request.dicom_store),
            list(request.update_mask.paths),
        )
        return convert.store_to_proto(store)
