"""Datasets: the parents of DICOM stores (google.cloud.healthcare.v1.dataset.DatasetService).

CreateDataset returns a long-running operation, as in Google's API; the dataset exists when the
call returns, so the operation is already done with the Dataset as its response.
"""

from __future__ import annotations

from collections.abc import Sequence

from dicomstore.core import paging, validation
from dicomstore.core.errors import invalid
from dicomstore.core.model import Dataset, Operation, OperationResponse, Page
from dicomstore.core.names import DatasetName, LocationName
from dicomstore.core.operations import Operations
from dicomstore.core.ports import BlobStore, Catalog

CREATE_METHOD = "google.cloud.healthcare.v1.dataset.DatasetService.CreateDataset"
DATASET_TYPE = "google.cloud.healthcare.v1.dataset.Dataset"
_UPDATABLE = ("time_zone",)


def check_update_mask(paths: Sequence[str], updatable: Sequence[str]) -> None:
    """AIP-134: the mask is required and may name only fields the client can change."""
    if not paths:
        raise invalid("update_mask", f"is required; updatable fields: {', '.join(updatable)}")
    for path in paths:
        if path not in updatable:
            raise invalid(
                "update_mask",
                f"{path!r} cannot be updated; updatable fields: {', '.join(updatable)}",
            )


def default_time_zone(value: str) -> str:
    return value or "UTC"


class Datasets:
    def __init__(
        self,
        catalog: Catalog,
        blobs: BlobStore,
        operations: Operations,
        tokens: paging.PageTokens,
    ) -> None:
        self._catalog = catalog
        self._blobs = blobs
        self._operations = operations
        self._tokens = tokens

    async def create(self, parent: str, dataset_id: str, time_zone: str) -> Operation:
        location = LocationName.parse(parent, "parent")
        validation.validate_dataset_id(dataset_id)
        validation.validate_time_zone(time_zone)
        dataset = Dataset(DatasetName(location, dataset_id), default_time_zone(time_zone))
        await self._catalog.create_dataset(dataset)
        return await self._operations.record(
            dataset.name,
            CREATE_METHOD,
            OperationResponse(
                DATASET_TYPE, {"name": str(dataset.name), "timeZone": dataset.time_zone}
            ),
        )

    async def get(self, name: str) -> Dataset:
        return await self._catalog.get_dataset(DatasetName.parse(name))

    async def list(self, parent: str, page_size: int, page_token: str) -> Page[Dataset]:
        location = LocationName.parse(parent, "parent")
        size = paging.page_size(page_size)
        scope = str(location)
        after = self._tokens.decode(page_token, scope=scope) if page_token else ""
        items = list(await self._catalog.list_datasets(location, after=after, limit=size + 1))
        if len(items) <= size:
            return Page(items)
        items = items[:size]
        return Page(items, self._tokens.encode(scope=scope, position=items[-1].name.dataset_id))

    async def patch(self, name: str, time_zone: str, update_mask: Sequence[str]) -> Dataset:
        dataset_name = DatasetName.parse(name, "dataset.name")
        check_update_mask(update_mask, _UPDATABLE)
        validation.validate_time_zone(time_zone)
        dataset = Dataset(dataset_name, default_time_zone(time_zone))
        await self._catalog.update_dataset(dataset)
        return dataset

    async def delete(self, name: str) -> None:
        """Delete the dataset and everything in it: stores, instances, blobs, operations."""
        for store_key in await self._catalog.delete_dataset(DatasetName.parse(name)):
            await self._blobs.remove_dicom_store(store_key)
