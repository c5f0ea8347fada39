"""Protobuf messages <-> domain values, shared by the gRPC servicers and the REST transcoder."""

from __future__ import annotations

from datetime import datetime

from google.cloud.healthcare.v1 import operation_pb2
from google.cloud.healthcare.v1.dataset import dataset_pb2
from google.cloud.healthcare.v1.dicom import dicom_pb2
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, descriptor_pool, json_format, message_factory, timestamp_pb2
from google.rpc import status_pb2

from dicomstore.core.exports import GcsDestination
from dicomstore.core.model import (
    BigQueryDestination,
    BigQuerySchema,
    Dataset,
    DicomStore,
    DicomStoreConfig,
    DicomStoreMetrics,
    NotificationConfig,
    Operation,
    OperationError,
    OperationResponse,
    StreamConfig,
    WriteDisposition,
)

_TYPE_PREFIX = "type.googleapis.com/"


def dataset_to_proto(dataset: Dataset) -> dataset_pb2.Dataset:
    return dataset_pb2.Dataset(name=str(dataset.name), time_zone=dataset.time_zone)


def bigquery_from_proto(dest: dicom_pb2.BigQueryDestination) -> BigQueryDestination:
    schema = {
        "schema_flattened": BigQuerySchema.FLATTENED,
        "schema_json": BigQuerySchema.JSON,
        None: BigQuerySchema.UNSPECIFIED,
    }[dest.WhichOneof("schema")]
    return BigQueryDestination(
        table_uri=dest.table_uri,
        force=dest.force,
        write_disposition=WriteDisposition(dest.write_disposition),
        include_source_store=dest.include_source_store,
        schema=schema,
    )


def bigquery_to_proto(dest: BigQueryDestination) -> dicom_pb2.BigQueryDestination:
    message = dicom_pb2.BigQueryDestination(
        table_uri=dest.table_uri,
        force=dest.force,
        write_disposition=dest.write_disposition.value,  # type: ignore[arg-type]
        include_source_store=dest.include_source_store,
    )
    if dest.schema is BigQuerySchema.FLATTENED:
        message.schema_flattened.SetInParent()
    elif dest.schema is BigQuerySchema.JSON:
        message.schema_json.SetInParent()
    return message


def store_config_from_proto(store: dicom_pb2.DicomStore) -> DicomStoreConfig:
    return DicomStoreConfig(
        labels=dict(store.labels),
        notification_config=(
            NotificationConfig(
                store.notification_config.pubsub_topic,
                store.notification_config.send_for_bulk_import,
            )
            if store.HasField("notification_config")
            else None
        ),
        notification_configs=tuple(c.pubsub_topic for c in store.notification_configs),
        stream_configs=tuple(
            StreamConfig(
                bigquery_from_proto(s.bigquery_destination)
                if s.HasField("bigquery_destination")
                else None
            )
            for s in store.stream_configs
        ),
    )


def store_to_proto(store: DicomStore) -> dicom_pb2.DicomStore:
    config = store.config
    message = dicom_pb2.DicomStore(
        name=str(store.name),
        labels=dict(config.labels),
        notification_configs=[
            dicom_pb2.DicomNotificationConfig(pubsub_topic=t) for t in config.notification_configs
        ],
        stream_configs=[
            dicom_pb2.StreamConfig(bigquery_destination=bigquery_to_proto(s.bigquery_destination))
            if s.bigquery_destination
            else dicom_pb2.StreamConfig()
            for s in config.stream_configs
        ],
    )
    if config.notification_config is not None:
        message.notification_config.pubsub_topic = config.notification_config.pubsub_topic
        message.notification_config.send_for_bulk_import = (
            config.notification_config.send_for_bulk_import
        )
    return message


def metrics_to_proto(metrics: DicomStoreMetrics) -> dicom_pb2.DicomStoreMetrics:
    return dicom_pb2.DicomStoreMetrics(
        name=str(metrics.name),
        study_count=metrics.study_count,
        series_count=metrics.series_count,
        instance_count=metrics.instance_count,
        structured_storage_size_bytes=metrics.structured_storage_size_bytes,
        blob_storage_size_bytes=metrics.blob_storage_size_bytes,
    )


def export_destination_from_proto(
    request: dicom_pb2.ExportDicomDataRequest,
) -> GcsDestination | BigQueryDestination | None:
    which = request.WhichOneof("destination")
    if which == "gcs_destination":
        gcs = request.gcs_destination
        return GcsDestination(gcs.uri_prefix, gcs.mime_type)
    if which == "bigquery_destination":
        return bigquery_from_proto(request.bigquery_destination)
    return None


def blob_storage_class_name(request: dicom_pb2.ImportDicomDataRequest) -> str:
    value = request.blob_storage_settings.blob_storage_class
    return "" if value == 0 else dicom_pb2.BlobStorageSettings.BlobStorageClass.Name(value)


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _response(response: OperationResponse) -> any_pb2.Any:
    descriptor = descriptor_pool.Default().FindMessageTypeByName(response.type_name)
    message = message_factory.GetMessageClass(descriptor)()
    json_format.ParseDict(dict(response.fields), message)
    return _pack(message)


def _status(error: OperationError) -> status_pb2.Status:
    status = status_pb2.Status(code=int(error.code), message=error.message)
    if error.samples:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(error.details_type)
        details = message_factory.GetMessageClass(descriptor)()
        for sample in error.samples:
            details.sample_errors.add(  # type: ignore[attr-defined]
                resource=sample.resource,
                error=status_pb2.Status(code=int(sample.code), message=sample.message),
            )
        status.details.append(_pack(details))
    return status


def operation_to_proto(operation: Operation) -> operations_pb2.Operation:
    counter = operation.counter
    metadata = operation_pb2.OperationMetadata(
        api_method_name=operation.api_method_name,
        create_time=_timestamp(operation.create_time),
        cancel_requested=operation.cancel_requested,
        counter=operation_pb2.ProgressCounter(
            success=counter.success,
            failure=counter.failure,
            pending=counter.pending,
            secondary_success=counter.secondary_success,
            secondary_failure=counter.secondary_failure,
        ),
        logs_url=operation.logs_url,
    )
    if operation.end_time is not None:
        metadata.end_time.CopyFrom(_timestamp(operation.end_time))
    message = operations_pb2.Operation(
        name=str(operation.name), done=operation.done, metadata=_pack(metadata)
    )
    if operation.error is not None:
        message.error.CopyFrom(_status(operation.error))
    elif operation.response is not None:
        message.response.CopyFrom(_response(operation.response))
    return message
