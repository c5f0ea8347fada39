"""Values of the domain: datasets, DICOM stores, their configuration, metrics and operations.

Field names follow Google's RPC reference for `google.cloud.healthcare.v1` and the discovery
document `healthcare.v1.json` (docs/google-behaviour.md#proto-field-numbers); the transports
convert these to and from protobuf.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from dicomstore.core.errors import Code
from dicomstore.core.names import DatasetName, DicomStoreName, OperationName
from dicomstore.dicom import bigquery_schema


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class StorageObject:
    """A Cloud Storage object as a listing names it."""

    name: str
    size: int


#: A row of DICOM metadata for BigQuery, typed columns and their values, as
#: `dicomstore.dicom.bigquery.bigquery_row` builds it from an instance's DICOM JSON.
BigQueryRow = bigquery_schema.BigQueryRow


@dataclass(frozen=True)
class Dataset:
    name: DatasetName
    time_zone: str = "UTC"


@dataclass(frozen=True)
class NotificationConfig:
    """Legacy single Pub/Sub destination (`DicomStore.notification_config`)."""

    pubsub_topic: str = ""
    send_for_bulk_import: bool = False


class WriteDisposition(enum.Enum):
    WRITE_DISPOSITION_UNSPECIFIED = 0
    WRITE_EMPTY = 1
    WRITE_TRUNCATE = 2
    WRITE_APPEND = 3


class BigQuerySchema(enum.Enum):
    UNSPECIFIED = "unspecified"
    FLATTENED = "flattened"
    JSON = "json"


@dataclass(frozen=True)
class BigQueryDestination:
    table_uri: str = ""
    force: bool = False
    write_disposition: WriteDisposition = WriteDisposition.WRITE_DISPOSITION_UNSPECIFIED
    include_source_store: bool = False
    schema: BigQuerySchema = BigQuerySchema.UNSPECIFIED


@dataclass(frozen=True)
class StreamConfig:
    bigquery_destination: BigQueryDestination | None = None


@dataclass(frozen=True)
class DicomStoreConfig:
    """What a client sets on a DICOM store: every field of `DicomStore` but its name."""

    labels: Mapping[str, str] = field(default_factory=dict)
    notification_config: NotificationConfig | None = None
    notification_configs: tuple[str, ...] = ()
    """Pub/Sub topics of `DicomStore.notification_configs[].pubsub_topic`."""
    stream_configs: tuple[StreamConfig, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _frozen(self.labels))


@dataclass(frozen=True)
class DicomStore:
    name: DicomStoreName
    config: DicomStoreConfig = DicomStoreConfig()


@dataclass(frozen=True)
class DicomStoreMetrics:
    name: DicomStoreName
    study_count: int = 0
    series_count: int = 0
    instance_count: int = 0
    structured_storage_size_bytes: int = 0
    blob_storage_size_bytes: int = 0


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str = ""


@dataclass(frozen=True)
class ProgressCounter:
    success: int = 0
    failure: int = 0
    pending: int = 0
    secondary_success: int = 0
    secondary_failure: int = 0


@dataclass(frozen=True)
class OperationError:
    code: Code
    message: str
    details_type: str = ""
    """The full name of the message `samples` go in (`Operation.error.details`), if any."""
    samples: tuple[OperationLogEntry, ...] = ()


@dataclass(frozen=True)
class OperationResponse:
    """A finished operation's response: the API type's full name and its JSON-mapped fields."""

    type_name: str
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """What a running operation does, persisted so a restart can resume or fail it."""

    kind: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    """A long-running operation with `google.cloud.healthcare.v1.OperationMetadata`."""

    name: OperationName
    api_method_name: str
    create_time: datetime
    job: Job
    end_time: datetime | None = None
    cancel_requested: bool = False
    counter: ProgressCounter = ProgressCounter()
    logs_url: str = ""
    error: OperationError | None = None
    response: OperationResponse | None = None

    @property
    def done(self) -> bool:
        return self.end_time is not None


@dataclass(frozen=True)
class OperationLogEntry:
    """An error an operation met on one item (an object it could not import, an instance it
    could not export); the operation's logsUrl lists them."""

    resource: str
    code: Code
    message: str
    time: datetime | None = None
    """Set by the catalog when the entry is written."""
    seq: int = 0
    """Position in the operation's log, from 1; set by the catalog."""


@dataclass(frozen=True)
class NewInstance:
    """What the catalog records of an instance being stored (PS3.3 C.12.1, C.7.2.1, C.7.3.1).

    `study_attributes` and `series_attributes` are DICOM JSON objects of the attributes at those
    levels; `metadata` is the instance's DICOM JSON without bulk data; `attributes` are the
    search index values by keyword (`dicomstore.dicom.header.InstanceHeader.attributes`).
    """

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    number_of_frames: int = 1
    study_attributes: Mapping[str, Any] = field(default_factory=dict)
    series_attributes: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InstanceKey:
    """Where an instance's blob lives: internal keys, never UIDs."""

    store_key: int
    instance_key: int


@dataclass(frozen=True)
class NewInstanceRow:
    """An instance whose blob is durable under `key`, for the catalog to record."""

    key: InstanceKey
    instance: NewInstance
    blob_size: int


@dataclass(frozen=True)
class StoredInstance:
    """A visible instance as the catalog knows it."""

    key: InstanceKey
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    number_of_frames: int
    blob_size: int
