"""The management client over grpc.aio: `ManagementClient`'s methods, awaited.

async with AsyncManagementClient(project="demo", location="local", dataset="h") as client:
    operation = await client.import_dicom("ct", "gs://scans/**.dcm")
    done = await client.wait(operation, on_progress=print)
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.cloud.healthcare.v1.dataset import dataset_pb2, dataset_pb2_grpc
from google.cloud.healthcare.v1.dicom import dicom_pb2, dicom_pb2_grpc
from google.longrunning import operations_pb2_grpc

from dicomstore_client.connection import Connection
from dicomstore_client.errors import from_rpc_error
from dicomstore_client.management import DEFAULT_TIMEOUT
from dicomstore_client.messages import Requests, routing_metadata
from dicomstore_client.names import Scope
from dicomstore_client.operations import Poll, ProgressCallback, outcome, response_of

Request = TypeVar("Request")
Response = TypeVar("Response")


class AsyncManagementClient:
    """The async twin of `ManagementClient`, with the same arguments and methods."""

    def __init__(
        self,
        connection: Connection | None = None,
        *,
        project: str | None = None,
        location: str | None = None,
        dataset: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.connection = connection or Connection.from_env()
        self.scope = Scope.from_env(project=project, location=location, dataset=dataset)
        self.timeout = timeout
        self._requests = Requests(self.scope)
        self._channel = self.connection.aio_channel()
        self._datasets = dataset_pb2_grpc.DatasetServiceStub(self._channel)
        self._dicom = dicom_pb2_grpc.DicomServiceStub(self._channel)
        self._operations = operations_pb2_grpc.OperationsStub(self._channel)

    async def _call(
        self, method: grpc.aio.UnaryUnaryMultiCallable[Request, Response], request: Request
    ) -> Response:
        try:
            return await method(
                request,
                metadata=self.connection.grpc_metadata() + routing_metadata(request),
                timeout=self.timeout,
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    # Datasets

    async def create_dataset(
        self, dataset: str, *, time_zone: str | None = None
    ) -> dataset_pb2.Dataset:
        """Create the dataset and wait for CreateDataset's operation: the new Dataset."""
        request = self._requests.create_dataset(dataset, time_zone)
        operation = await self.wait(await self._call(self._datasets.CreateDataset, request))
        return response_of(operation, dataset_pb2.Dataset)

    async def get_dataset(self, dataset: str | None = None) -> dataset_pb2.Dataset:
        return await self._call(self._datasets.GetDataset, self._requests.get_dataset(dataset))

    async def list_datasets(self) -> list[dataset_pb2.Dataset]:
        """Every dataset of the project and location, all pages."""
        datasets: list[dataset_pb2.Dataset] = []
        token = ""
        while True:
            page = await self._call(
                self._datasets.ListDatasets, self._requests.list_datasets(token)
            )
            datasets.extend(page.datasets)
            token = page.next_page_token
            if not token:
                return datasets

    async def update_dataset(
        self, dataset: str | None = None, *, time_zone: str
    ) -> dataset_pb2.Dataset:
        return await self._call(
            self._datasets.PatchDataset, self._requests.patch_dataset(dataset, time_zone)
        )

    async def delete_dataset(self, dataset: str | None = None) -> None:
        await self._call(self._datasets.DeleteDataset, self._requests.delete_dataset(dataset))

    # DICOM stores

    async def create_store(
        self,
        store: str,
        *,
        labels: Mapping[str, str] | None = None,
        pubsub_topic: str | None = None,
        stream_tables: Sequence[str] | None = None,
    ) -> dicom_pb2.DicomStore:
        request = self._requests.create_store(store, labels, pubsub_topic, stream_tables)
        return await self._call(self._dicom.CreateDicomStore, request)

    async def get_store(self, store: str) -> dicom_pb2.DicomStore:
        return await self._call(self._dicom.GetDicomStore, self._requests.get_store(store))

    async def list_stores(
        self, dataset: str | None = None, *, filter: str | None = None
    ) -> list[dicom_pb2.DicomStore]:
        """Every store of the dataset (matching `filter`, Google's syntax), all pages."""
        stores: list[dicom_pb2.DicomStore] = []
        token = ""
        while True:
            request = self._requests.list_stores(dataset, filter, token)
            page = await self._call(self._dicom.ListDicomStores, request)
            stores.extend(page.dicom_stores)
            token = page.next_page_token
            if not token:
                return stores

    async def update_store(
        self,
        store: str,
        *,
        labels: Mapping[str, str] | None = None,
        pubsub_topic: str | None = None,
        stream_tables: Sequence[str] | None = None,
    ) -> dicom_pb2.DicomStore:
        """Replace the fields given (labels as a whole map); the others are left alone."""
        request = self._requests.update_store(store, labels, pubsub_topic, stream_tables)
        return await self._call(self._dicom.UpdateDicomStore, request)

    async def delete_store(self, store: str) -> None:
        await self._call(self._dicom.DeleteDicomStore, self._requests.delete_store(store))

    async def store_metrics(self, store: str) -> dicom_pb2.DicomStoreMetrics:
        return await self._call(
            self._dicom.GetDicomStoreMetrics, self._requests.store_metrics(store)
        )

    # Import and export: each returns the started operation; `wait` follows it.

    async def import_dicom(self, store: str, gcs_uri: str) -> Any:
        return await self._call(
            self._dicom.ImportDicomData, self._requests.import_dicom(store, gcs_uri)
        )

    async def export_to_gcs(
        self,
        store: str,
        uri_prefix: str,
        *,
        mime_type: str | None = None,
        filter_uri: str | None = None,
    ) -> Any:
        request = self._requests.export_to_gcs(store, uri_prefix, mime_type, filter_uri)
        return await self._call(self._dicom.ExportDicomData, request)

    async def export_to_bigquery(
        self,
        store: str,
        table_uri: str,
        *,
        write_disposition: str | None = None,
        include_source_store: bool = False,
        filter_uri: str | None = None,
    ) -> Any:
        request = self._requests.export_to_bigquery(
            store, table_uri, write_disposition, include_source_store, filter_uri
        )
        return await self._call(self._dicom.ExportDicomData, request)

    # Operations

    async def get_operation(self, operation: str) -> Any:
        return await self._call(
            self._operations.GetOperation, self._requests.get_operation(operation)
        )

    async def list_operations(
        self, dataset: str | None = None, *, filter: str | None = None
    ) -> list[Any]:
        operations: list[Any] = []
        token = ""
        while True:
            request = self._requests.list_operations(dataset, filter, token)
            page = await self._call(self._operations.ListOperations, request)
            operations.extend(page.operations)
            token = page.next_page_token
            if not token:
                return operations

    async def cancel_operation(self, operation: str) -> None:
        request = self._requests.cancel_operation(operation)
        await self._call(self._operations.CancelOperation, request)

    async def wait(
        self,
        operation: Any,
        *,
        # The same deadline as the sync wait's, ending in the same ClientError.
        timeout: float | None = None,  # noqa: ASYNC109
        on_progress: ProgressCallback | None = None,
    ) -> Any:
        """Poll `operation` (an Operation or its name) until it is done, backing off from 0.1 s
        to 2 s, calling `on_progress` with each new counter. Returns the done Operation; raises
        `OperationError` if it ended with an error, `ClientError` (DEADLINE_EXCEEDED) after
        `timeout` seconds."""
        if isinstance(operation, str):
            operation = await self.get_operation(operation)
        poll = Poll(operation.name, timeout, on_progress)
        while not poll.seen(operation):
            await asyncio.sleep(poll.next_delay())
            operation = await self.get_operation(operation.name)
        return outcome(operation)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncManagementClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
