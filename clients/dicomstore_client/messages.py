"""The request messages of the management RPCs, built from short ids or full names, shared by
the sync and the async client.

Field names, update masks (proto field paths, as gRPC takes them) and enum values are those of
Google's `google.cloud.healthcare.v1` protos, which `protos/` reproduces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from google.cloud.healthcare.v1.dataset import dataset_pb2
from google.cloud.healthcare.v1.dicom import dicom_pb2
from google.longrunning import operations_pb2
from google.protobuf import field_mask_pb2

from dicomstore_client.errors import ClientError, ExitCode
from dicomstore_client.names import Scope

WRITE_DISPOSITIONS = ("WRITE_EMPTY", "WRITE_TRUNCATE", "WRITE_APPEND")
# The fields Google's client libraries route a request by, in the order they look for them.
ROUTING_FIELDS = ("name", "parent", "dicom_store.name", "dataset.name")


def routing_metadata(request: Any) -> tuple[tuple[str, str], ...]:
    """`x-goog-request-params`, the routing header Google's own client libraries send with each
    call (google.api_core.gapic_v1.routing_header): the request's resource name."""
    for path in ROUTING_FIELDS:
        value = request
        for part in path.split("."):
            value = getattr(value, part, "")
        if value:
            return (("x-goog-request-params", urlencode({path: value}, safe="/")),)
    return ()


def store_config(
    *,
    labels: Mapping[str, str] | None = None,
    pubsub_topic: str | None = None,
    stream_tables: Sequence[str] | None = None,
) -> tuple[dicom_pb2.DicomStore, list[str]]:
    """A DicomStore holding the given fields, and the mask paths naming them."""
    store = dicom_pb2.DicomStore()
    paths = []
    if labels is not None:
        store.labels.update(labels)
        paths.append("labels")
    if pubsub_topic is not None:
        store.notification_config.pubsub_topic = pubsub_topic
        paths.append("notification_config")
    if stream_tables is not None:
        for table in stream_tables:
            store.stream_configs.add().bigquery_destination.table_uri = table
        paths.append("stream_configs")
    return store, paths


def write_disposition(name: str | None) -> int:
    if name is None:
        return 0
    if name.upper() not in WRITE_DISPOSITIONS:
        raise ClientError(
            f"write disposition {name!r} is none of {', '.join(WRITE_DISPOSITIONS)}",
            "INVALID_ARGUMENT",
            ExitCode.USAGE,
        )
    return int(dicom_pb2.BigQueryDestination.WriteDisposition.Value(name.upper()))


class Requests:
    """One method per RPC: its request message, names resolved in `scope`."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    # DatasetService

    def create_dataset(
        self, dataset: str, time_zone: str | None
    ) -> dataset_pb2.CreateDatasetRequest:
        parent, dataset_id = self.scope.dataset_name(dataset).rsplit("/datasets/", 1)
        return dataset_pb2.CreateDatasetRequest(
            parent=parent,
            dataset_id=dataset_id,
            dataset=dataset_pb2.Dataset(time_zone=time_zone or ""),
        )

    def get_dataset(self, dataset: str | None) -> dataset_pb2.GetDatasetRequest:
        return dataset_pb2.GetDatasetRequest(name=self.scope.dataset_name(dataset))

    def list_datasets(self, page_token: str) -> dataset_pb2.ListDatasetsRequest:
        return dataset_pb2.ListDatasetsRequest(
            parent=self.scope.location_name(), page_token=page_token
        )

    def patch_dataset(self, dataset: str | None, time_zone: str) -> dataset_pb2.PatchDatasetRequest:
        return dataset_pb2.PatchDatasetRequest(
            dataset=dataset_pb2.Dataset(name=self.scope.dataset_name(dataset), time_zone=time_zone),
            update_mask=field_mask_pb2.FieldMask(paths=["time_zone"]),
        )

    def delete_dataset(self, dataset: str | None) -> dataset_pb2.DeleteDatasetRequest:
        return dataset_pb2.DeleteDatasetRequest(name=self.scope.dataset_name(dataset))

    # DicomService

    def create_store(
        self,
        store: str,
        labels: Mapping[str, str] | None,
        pubsub_topic: str | None,
        stream_tables: Sequence[str] | None,
    ) -> dicom_pb2.CreateDicomStoreRequest:
        parent, store_id = self.scope.store_name(store).rsplit("/dicomStores/", 1)
        config, _ = store_config(
            labels=labels, pubsub_topic=pubsub_topic, stream_tables=stream_tables
        )
        return dicom_pb2.CreateDicomStoreRequest(
            parent=parent, dicom_store_id=store_id, dicom_store=config
        )

    def get_store(self, store: str) -> dicom_pb2.GetDicomStoreRequest:
        return dicom_pb2.GetDicomStoreRequest(name=self.scope.store_name(store))

    def list_stores(
        self, dataset: str | None, filter: str | None, page_token: str
    ) -> dicom_pb2.ListDicomStoresRequest:
        return dicom_pb2.ListDicomStoresRequest(
            parent=self.scope.dataset_name(dataset), filter=filter or "", page_token=page_token
        )

    def update_store(
        self,
        store: str,
        labels: Mapping[str, str] | None,
        pubsub_topic: str | None,
        stream_tables: Sequence[str] | None,
    ) -> dicom_pb2.UpdateDicomStoreRequest:
        config, paths = store_config(
            labels=labels, pubsub_topic=pubsub_topic, stream_tables=stream_tables
        )
        if not paths:
            raise ClientError("nothing to update", "INVALID_ARGUMENT", ExitCode.USAGE)
        config.name = self.scope.store_name(store)
        return dicom_pb2.UpdateDicomStoreRequest(
            dicom_store=config, update_mask=field_mask_pb2.FieldMask(paths=paths)
        )

    def delete_store(self, store: str) -> dicom_pb2.DeleteDicomStoreRequest:
        return dicom_pb2.DeleteDicomStoreRequest(name=self.scope.store_name(store))

    def store_metrics(self, store: str) -> dicom_pb2.GetDicomStoreMetricsRequest:
        return dicom_pb2.GetDicomStoreMetricsRequest(name=self.scope.store_name(store))

    def import_dicom(self, store: str, gcs_uri: str) -> dicom_pb2.ImportDicomDataRequest:
        return dicom_pb2.ImportDicomDataRequest(
            name=self.scope.store_name(store), gcs_source=dicom_pb2.GcsSource(uri=gcs_uri)
        )

    def export_to_gcs(
        self, store: str, uri_prefix: str, mime_type: str | None, filter_uri: str | None
    ) -> dicom_pb2.ExportDicomDataRequest:
        request = dicom_pb2.ExportDicomDataRequest(
            name=self.scope.store_name(store),
            gcs_destination=dicom_pb2.GcsDestination(
                uri_prefix=uri_prefix, mime_type=mime_type or ""
            ),
        )
        if filter_uri:
            request.filter_config.resource_paths_gcs_uri = filter_uri
        return request

    def export_to_bigquery(
        self,
        store: str,
        table_uri: str,
        disposition: str | None,
        include_source_store: bool,
        filter_uri: str | None,
    ) -> dicom_pb2.ExportDicomDataRequest:
        request = dicom_pb2.ExportDicomDataRequest(
            name=self.scope.store_name(store),
            bigquery_destination=dicom_pb2.BigQueryDestination(
                table_uri=table_uri,
                write_disposition=write_disposition(disposition),  # type: ignore[arg-type]
                include_source_store=include_source_store,
            ),
        )
        if filter_uri:
            request.filter_config.resource_paths_gcs_uri = filter_uri
        return request

    # google.longrunning.Operations (the operations of a dataset)

    def get_operation(self, operation: str) -> Any:
        return operations_pb2.GetOperationRequest(name=self.scope.operation_name(operation))

    def list_operations(self, dataset: str | None, filter: str | None, page_token: str) -> Any:
        return operations_pb2.ListOperationsRequest(
            name=self.scope.dataset_name(dataset), filter=filter or "", page_token=page_token
        )

    def cancel_operation(self, operation: str) -> Any:
        return operations_pb2.CancelOperationRequest(name=self.scope.operation_name(operation))
