"""Field rules of the Cloud Healthcare API v1 resources, checked before anything is stored.

Each function raises `InvalidArgument` whose message names the field and the rule broken.
References (https://cloud.google.com/healthcare-api/docs/reference/rest/v1/):
`projects.locations.datasets/create` (dataset_id), `projects.locations.datasets#Dataset`
(time_zone), `projects.locations.datasets.dicomStores/create` (dicom_store_id),
`projects.locations.datasets.dicomStores#DicomStore` (labels, NotificationConfig.pubsubTopic,
StreamConfig / BigQueryDestination.tableUri).
"""

from __future__ import annotations

import functools
import json
import zoneinfo
from collections.abc import Mapping
from typing import NamedTuple

import regex

from dicomstore.core.errors import invalid

LABEL_KEY_RULE = r"[\p{Ll}\p{Lo}][\p{Ll}\p{Lo}\p{N}_-]{0,62}"
LABEL_VALUE_RULE = r"[\p{Ll}\p{Lo}\p{N}_-]{0,63}"
LABEL_MAX_BYTES = 128
LABELS_MAX_COUNT = 64
DATASET_ID_RULE = r"[\p{L}\p{N}_\-\.]{1,256}"
DICOM_STORE_ID_MAX = 256
BIGQUERY_URI_MAX = 2000

_LABEL_KEY = regex.compile(LABEL_KEY_RULE)
_LABEL_VALUE = regex.compile(LABEL_VALUE_RULE)
_DATASET_ID = regex.compile(DATASET_ID_RULE)
_CONTROL = regex.compile(r"[\x00-\x1f\x7f]")
# A project id, optionally domain-scoped ("example.com:my-project"); the dots live in the domain.
_PROJECT_RULE = r"(?:[a-z0-9][a-z0-9.-]*:)?[a-z0-9][a-z0-9-]*"
_PROJECT_MAX = 128
# https://cloud.google.com/pubsub/docs/create-topic#resource_names
_TOPIC_RULE = r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}"
_PUBSUB_TOPIC = regex.compile(r"projects/(?P<project>[^/]+)/topics/(?P<topic>[^/]+)")
_PROJECT = regex.compile(_PROJECT_RULE)
_TOPIC = regex.compile(_TOPIC_RULE)
# https://cloud.google.com/bigquery/docs/datasets#dataset-naming and
# https://cloud.google.com/bigquery/docs/tables#table_naming: a table name is up to 1,024 UTF-8
# bytes of letters, marks, numbers, connectors (_), dashes and spaces.
_BQ_DATASET_RULE = r"[A-Za-z0-9_]{1,1024}"
_BQ_TABLE_RULE = r"[\p{L}\p{M}\p{N}\p{Pc}\p{Pd}\p{Zs}]+"
_BQ_TABLE_MAX_BYTES = 1024
_BQ_DATASET = regex.compile(_BQ_DATASET_RULE)
_BQ_TABLE = regex.compile(_BQ_TABLE_RULE)
# Files in the zoneinfo directory that are not IANA zone names and depend on the host.
_NOT_ZONES = frozenset({"localtime", "posixrules"})


def _quote(value: str, limit: int = 80) -> str:
    """Quote user input for a message: escaped, and cut short so a message stays readable."""
    shown = value if len(value) <= limit else value[:limit] + "…"
    return json.dumps(shown, ensure_ascii=False)


def validate_labels(labels: Mapping[str, str], field: str = "labels") -> None:
    """Check labels against DicomStore.labels.

    Keys: 1-63 characters matching `[\\p{Ll}\\p{Lo}][\\p{Ll}\\p{Lo}\\p{N}_-]{0,62}`; values: empty
    or matching `[\\p{Ll}\\p{Lo}\\p{N}_-]{0,63}`; each at most 128 bytes of UTF-8; at most 64
    labels.
    """
    if len(labels) > LABELS_MAX_COUNT:
        raise invalid(field, f"at most {LABELS_MAX_COUNT} labels are allowed (got {len(labels)})")
    for key, value in labels.items():
        if not _LABEL_KEY.fullmatch(key):
            raise invalid(field, f"key {_quote(key)} must match {LABEL_KEY_RULE}")
        if len(key.encode()) > LABEL_MAX_BYTES:
            raise invalid(
                field,
                f"key {_quote(key)} must be at most {LABEL_MAX_BYTES} bytes of UTF-8 "
                f"(is {len(key.encode())})",
            )
        if not _LABEL_VALUE.fullmatch(value):
            raise invalid(
                field, f"value of key {_quote(key)} must be empty or match {LABEL_VALUE_RULE}"
            )
        if len(value.encode()) > LABEL_MAX_BYTES:
            raise invalid(
                field,
                f"value of key {_quote(key)} must be at most {LABEL_MAX_BYTES} bytes of UTF-8 "
                f"(is {len(value.encode())})",
            )


def validate_dataset_id(value: str) -> None:
    """Check CreateDatasetRequest.dataset_id: `[\\p{L}\\p{N}_\\-\\.]{1,256}`.

    "." and ".." match the rule but are rejected as well: the id is a URL path segment, and
    clients collapse those segments before a request leaves them.
    """
    if not _DATASET_ID.fullmatch(value):
        raise invalid("dataset_id", f"{_quote(value)} must match {DATASET_ID_RULE}")
    if value in {".", ".."}:
        raise invalid("dataset_id", f"{_quote(value)} is not a usable URL path segment")


def validate_dicom_store_id(value: str) -> None:
    """Check CreateDicomStoreRequest.dicom_store_id.

    Google allows "any string value up to 256 characters". The id ends up in resource names and
    URL paths, so it must also be non-empty, hold no "/" and no ASCII control character, and not
    be "." or "..".
    """
    field = "dicom_store_id"
    if not value:
        raise invalid(field, "must not be empty")
    if len(value) > DICOM_STORE_ID_MAX:
        raise invalid(field, f"must be at most {DICOM_STORE_ID_MAX} characters (is {len(value)})")
    if "/" in value:
        raise invalid(field, f"{_quote(value)} must not contain '/'")
    if _CONTROL.search(value):
        raise invalid(field, f"{_quote(value)} must not contain control characters")
    if value in {".", ".."}:
        raise invalid(field, f"{_quote(value)} is not a usable URL path segment")


@functools.cache
def _time_zones() -> frozenset[str]:
    # Read once: listing the zoneinfo tree walks the file system.
    return frozenset(zoneinfo.available_timezones() - _NOT_ZONES)


def validate_time_zone(value: str) -> None:
    """Check Dataset.time_zone: empty (UTC) or an IANA time zone name such as America/New_York.

    Names are looked up in the host's time zone database, so paths and host-specific entries
    ("localtime") are rejected.
    """
    if value and value not in _time_zones():
        raise invalid(
            "dataset.time_zone",
            f"{_quote(value)} must be empty or an IANA time zone name such as America/New_York",
        )


def _check_project(field: str, project: str) -> None:
    if len(project) > _PROJECT_MAX or not _PROJECT.fullmatch(project):
        raise invalid(
            field,
            f"project {_quote(project)} must be a project id, optionally domain-scoped "
            "(example.com:my-project)",
        )


def validate_pubsub_topic(value: str, field: str) -> None:
    """Check NotificationConfig.pubsub_topic: empty or `projects/{project}/topics/{topic}`.

    The topic follows Pub/Sub's resource-name rule: 3-255 characters, starting with a letter,
    of `[A-Za-z0-9-_.~+%]`, and not starting with "goog".
    """
    if not value:
        return
    match = _PUBSUB_TOPIC.fullmatch(value)
    if match is None:
        raise invalid(field, f"{_quote(value)} must be of the form projects/PROJECT/topics/TOPIC")
    _check_project(field, match["project"])
    topic: str = match["topic"]
    if not _TOPIC.fullmatch(topic):
        raise invalid(field, f"topic {_quote(topic)} must match {_TOPIC_RULE}")
    if topic.startswith("goog"):
        raise invalid(field, f'topic {_quote(topic)} must not start with "goog"')


def validate_bigquery_table_uri(value: str, field: str) -> None:
    """Check BigQueryDestination.table_uri: `bq://PROJECT.DATASET.TABLE`, at most 2000 characters.

    PROJECT is a project id, optionally domain-scoped (`example.com:my-project`); DATASET is
    `[A-Za-z0-9_]{1,1024}`; TABLE is BigQuery's table-name rule: 1-1024 bytes of UTF-8 of
    letters, marks, numbers, `_`, dashes and spaces. Neither DATASET nor TABLE holds a dot, so
    the URI splits at its last two dots.
    """
    if len(value) > BIGQUERY_URI_MAX:
        raise invalid(field, f"must be at most {BIGQUERY_URI_MAX} characters (is {len(value)})")
    parts = value.removeprefix("bq://").rsplit(".", 2)
    if not value.startswith("bq://") or len(parts) != 3:
        raise invalid(field, f"{_quote(value)} must be of the form bq://PROJECT.DATASET.TABLE")
    project, dataset, table = parts
    _check_project(field, project)
    if not _BQ_DATASET.fullmatch(dataset):
        raise invalid(field, f"dataset {_quote(dataset)} must match {_BQ_DATASET_RULE}")
    if not _BQ_TABLE.fullmatch(table) or len(table.encode()) > _BQ_TABLE_MAX_BYTES:
        raise invalid(
            field,
            f"table {_quote(table)} must be 1-{_BQ_TABLE_MAX_BYTES} bytes of letters, digits, "
            "'_', '-' and spaces",
        )


class BigQueryTableName(NamedTuple):
    """The parts of `bq://PROJECT.DATASET.TABLE`."""

    project: str
    dataset: str
    table: str


def parse_bigquery_table_uri(value: str, field: str) -> BigQueryTableName:
    """Check `value` as `validate_bigquery_table_uri` does and split it into its parts."""
    validate_bigquery_table_uri(value, field)
    project, dataset, table = value.removeprefix("bq://").rsplit(".", 2)
    return BigQueryTableName(project, dataset, table)
