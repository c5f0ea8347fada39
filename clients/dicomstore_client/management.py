"""The management client over gRPC: datasets, DICOM stores, metrics, import, export and
operations, against dicomstore or Google's `healthcare.googleapis.com:443`.

    with ManagementClient(project="demo", location="local", dataset="hospital") as client:
        client.create_store("ct", labels={"modality": "ct"})
        operation = client.import_dicom("ct", "gs://scans/**.dcm")
        done = client.wait(operation, on_progress=print)

Every RPC failure is raised as a `ClientError`; an operation that ends with an error as an
`OperationError` (its subclass). `AsyncManagementClient` (`management_async`) is the same over
grpc.aio.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.cloud.healthcare.v1.dataset import dataset_pb2, dataset_pb2_grpc
from google.cloud.healthcare.v1.dicom import dicom_pb2, dicom_pb2_grpc
from google.longrunning import operations_pb2_grpc

from dicomstore_client.connection import Connection
from dicomstore_client.errors import from_rpc_error
from dicomstore_client.messages import Requests, routing_metadata
from dicomstore_client.names import Scope
from dicomstore_client.operations import Poll, ProgressCallback, outcome, response_of

DEFAULT_TIMEOUT = 60.0

Request = TypeVar("Request")
Response = TypeVar("Response")


class ManagementClient:
    """A sync client; `project`, `location` and `dataset` default to their DICOMSTORE_* twins,
    the connection to `Connection.from_env()`. `timeout` bounds each RPC, in seconds."""

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
        self._channel = self.connection.channel()
        self._datasets = dataset_pb2_grpc.DatasetServiceStub(self._channel)
        self._dicom = dicom_pb2_grpc.DicomServiceStub(self._channel)
        self._operations = operations_pb2_grpc.OperationsStub(self._channel)

    def _call(
        self, method: grpc.UnaryUnaryMultiCallable[Request, Response], request: Request
    ) -> Response:
        try:
            return method(
                request,
                metadata=self.connection.grpc_metadata() + routing_metadata(request),
                timeout=self.timeout,
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    # Datasets

    def create_dataset(self, dataset: str, *, time_zone: str | None = None) -> dataset_pb2.Dataset:
        """Create the dataset and wait for CreateDataset's operation: the new Dataset."""
        request = self._requests.create_dataset(dataset, time_zone)
        operation = self.wait(self._call(self._datasets.CreateDataset, request))
        return response_of(operation, dataset_pb2.Dataset)

    def get_dataset(self, dataset: str | None = None) -> dataset_pb2.Dataset:
        return self._call(self._datasets.GetDataset, self._requests.get_dataset(dataset))

    def list_datasets(self) -> list[dataset_pb2.Dataset]:
        """Every dataset of the project and location, all pages."""
        datasets: list[dataset_pb2.Dataset] = []
        token = ""
        while True:
            page = self._call(self._datasets.ListDatasets, self._requests.list_datasets(token))
            datasets.extend(page.datasets)
            token = page.next_page_token
            if not token:
                return datasets

    def update_dataset(self, dataset: str | None = None, *, time_zone: str) -> dataset_pb2.Dataset:
        return self._call(
            self._datasets.PatchDataset, self._requests.patch_dataset(dataset, time_zone)
        )

    def delete_dataset(self, dataset: str | None = None) -> None:
        self._call(self._datasets.DeleteDataset, self._requests.delete_dataset(dataset))

    # DICOM stores

    def create_store(
        self,
        store: str,
        *,
        labels: Mapping[str, str] | None = None,
        pubsub_topic: str | None = None,
        stream_tables: Sequence[str] | None = None,
    ) -> dicom_pb2.DicomStore:
        request = self._requests.create_store(store, labels, pubsub_topic, stream_tables)
        return self._call(self._dicom.CreateDicomStore, request)

    def get_store(self, store: str) -> dicom_pb2.DicomStore:
        return self._call(self._dicom.GetDicomStore, self._requests.get_store(store))

    def list_stores(
        self, dataset: str | None = None, *, filter: str | None = None
    ) -> list[dicom_pb2.DicomStore]:
        """Every store of the dataset (matching `filter`, Google's syntax), all pages."""
        stores: list[dicom_pb2.DicomStore] = []
        token = ""
        while True:
            request = self._requests.list_stores(dataset, filter, token)
            page = self._call(self._dicom.ListDicomStores, request)
            stores.extend(page.dicom_stores)
            token = page.next_page_token
            if not token:
                return stores

    def update_store(
        self,
        store: str,
        *,
        labels: Mapping[str, str] | None = None,
        pubsub_topic: str | None = None,
        stream_tables: Sequence[str] | None = None,
    ) -> dicom_pb2.DicomStore:
        """Replace the fields given (labels as a whole map); the others are left alone."""
        request = self._requests.update_store(store, labels, pubsub_topic, stream_tables)
        return self._call(self._dicom.UpdateDicomStore, request)

    def delete_store(self, store: str) -> None:
        self._call(self._dicom.DeleteDicomStore, self._requests.delete_store(store))

    def store_metrics(self, store: str) -> dicom_pb2.DicomStoreMetrics:
        return self._call(self._dicom.GetDicomStoreMetrics, self._requests.store_metrics(store))

    # Import and export: each returns the started operation; `wait` follows it.

    def import_dicom(self, store: str, gcs_uri: str) -> Any:
        return self._call(self._dicom.ImportDicomData, self._requests.import_dicom(store, gcs_uri))

    def export_to_gcs(
        self,
        store: str,
        uri_prefix: str,
        *,
        mime_type: str | None = None,
        filter_uri: str | None = None,
    ) -> Any:
        request = self._requests.export_to_gcs(store, uri_prefix, mime_type, filter_uri)
        return self._call(self._dicom.ExportDicomData, request)

    def export_to_bigquery(
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
        return self._call(self._dicom.ExportDicomData, request)

    # Operations

    def get_operation(self, operation: str) -> Any:
        return self._call(self._operations.GetOperation, self._requests.get_operation(operation))

    def list_operations(
        self, dataset: str | None = None, *, filter: str | None = None
    ) -> list[Any]:
        operations: list[Any] = []
        token = ""
        while True:
            request = self._requests.list_operations(dataset, filter, token)
            page = self._call(self._operations.ListOperations, request)
            operations.extend(page.operations)
            token = page.next_page_token
            if not token:
                return operations

    def cancel_operation(self, operation: str) -> None:
        request = self._requests.cancel_operation(operation)
        self._call(self._operations.CancelOperation, request)

    def wait(
        self,
        operation: Any,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Any:
        """Poll `operation` (an Operation or its name) until it is done, backing off from 0.1 s
        to 2 s, calling `on_progress` with each new counter. Returns the done Operation; raises
        `OperationError` if it ended with an error, `ClientError` (DEADLINE_EXCEEDED) after
        `timeout` seconds."""
        if isinstance(operation, str):
            operation = self.get_operation(operation)
        poll = Poll(operation.name, timeout, on_progress)
        while not poll.seen(operation):
            time.sleep(poll.next_delay())
            operation = self.get_operation(operation.name)
        return outcome(operation)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ManagementClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
