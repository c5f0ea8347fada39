"""google.cloud.healthcare.v1.dataset.DatasetService."""

from __future__ import annotations

from google.cloud.healthcare.v1.dataset import dataset_pb2
from google.longrunning import operations_pb2
from google.protobuf import empty_pb2

from dicomstore.api import convert
from dicomstore.core.datasets import Datasets


class DatasetServiceHandlers:
    def __init__(self, datasets: Datasets) -> None:
        self._datasets = datasets

    async def CreateDataset(
        self, request: dataset_pb2.CreateDatasetRequest
    ) -> operations_pb2.Operation:
        operation = await self._datasets.create(
            request.parent, request.dataset_id, request.dataset.time_zone
        )
        return convert.operation_to_proto(operation)

    async def GetDataset(self, request: dataset_pb2.GetDatasetRequest) -> dataset_pb2.Dataset:
        return convert.dataset_to_proto(await self._datasets.get(request.name))

    async def ListDatasets(
        self, request: dataset_pb2.ListDatasetsRequest
    ) -> dataset_pb2.ListDatasetsResponse:
        page = await self._datasets.list(request.parent, request.page_size, request.page_token)
        return dataset_pb2.ListDatasetsResponse(
            datasets=[convert.dataset_to_proto(d) for d in page.items],
            next_page_token=page.next_page_token,
        )

    async def PatchDataset(self, request: dataset_pb2.PatchDatasetRequest) -> dataset_pb2.Dataset:
        dataset = await self._datasets.patch(
            request.dataset.name, request.dataset.time_zone, list(request.update_mask.paths)
        )
        return convert.dataset_to_proto(dataset)

    async def DeleteDataset(self, request: dataset_pb2.DeleteDatasetRequest) -> empty_pb2.Empty:
        await self._datasets.delete(request.name)
        return empty_pb2.Empty()
