"""Field rules of datasets and DICOM stores (dicomstore.core.validation)."""

from __future__ import annotations

import pytest

from dicomstore.core.errors import InvalidArgument
from dicomstore.core.validation import (
    BigQueryTableName,
    parse_bigquery_table_uri,
    validate_bigquery_table_uri,
    validate_dataset_id,
    validate_dicom_store_id,
    validate_labels,
    validate_pubsub_topic,
    validate_time_zone,
)

KEY_RULE = r"[\p{Ll}\p{Lo}][\p{Ll}\p{Lo}\p{N}_-]{0,62}"


@pytest.mark.google_behaviour("label-rules")
@pytest.mark.parametrize(
    "labels",
    [
        {},
        {"env": "prod"},
        {"env": ""},
        {"ключ": "значение"},  # Cyrillic lower case (Ll)
        {"ラベル": "値"},  # Katakana and CJK (Lo)
        {"über": "grün"},
        {"a": "x_y-z"},
        {"k9_-": "0123"},
        {"a" * 63: "b" * 63},
        {"ü" * 63: "ü" * 63},  # 63 characters, 126 bytes
        {f"k{i}": "v" for i in range(64)},
    ],
)
def test_labels_accepted_when_valid(labels: dict[str, str]) -> None:
    validate_labels(labels)


@pytest.mark.google_behaviour("label-rules")
@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"Env": "prod"}, f'labels: key "Env" must match {KEY_RULE}'),
        ({"1env": "x"}, f'labels: key "1env" must match {KEY_RULE}'),
        ({"_env": "x"}, f'labels: key "_env" must match {KEY_RULE}'),
        ({"": "x"}, f'labels: key "" must match {KEY_RULE}'),
        ({"a" * 64: "x"}, f'labels: key "{"a" * 64}" must match {KEY_RULE}'),
        ({"a.b": "x"}, f'labels: key "a.b" must match {KEY_RULE}'),
        # ー (U+30FC) is a modifier letter (Lm), which the rule leaves out.
        ({"キー": "x"}, f'labels: key "キー" must match {KEY_RULE}'),
        (
            {"鍵" * 63: "x"},
            f'labels: key "{"鍵" * 63}" must be at most 128 bytes of UTF-8 (is 189)',
        ),
        (
            {"env": "Prod"},
            r'labels: value of key "env" must be empty or match [\p{Ll}\p{Lo}\p{N}_-]{0,63}',
        ),
        (
            {"env": "a b"},
            r'labels: value of key "env" must be empty or match [\p{Ll}\p{Lo}\p{N}_-]{0,63}',
        ),
        (
            {"env": "x" * 64},
            r'labels: value of key "env" must be empty or match [\p{Ll}\p{Lo}\p{N}_-]{0,63}',
        ),
        (
            {"env": "値" * 43},
            'labels: value of key "env" must be at most 128 bytes of UTF-8 (is 129)',
        ),
        (
            {f"k{i}": "v" for i in range(65)},
            "labels: at most 64 labels are allowed (got 65)",
        ),
    ],
)
def test_labels_rejected_when_rule_broken(labels: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_labels(labels)
    assert caught.value.message == message
    assert caught.value.field == "labels"


def test_labels_error_names_given_field_when_nested() -> None:
    with pytest.raises(InvalidArgument, match=r'^dicom_store\.labels: key "X"') as caught:
        validate_labels({"X": ""}, "dicom_store.labels")
    assert caught.value.field == "dicom_store.labels"


@pytest.mark.google_behaviour("dataset-id-rules")
@pytest.mark.parametrize("value", ["ds", "my-dataset_1.v2", "données", "a" * 256])
def test_dataset_id_accepted_when_valid(value: str) -> None:
    validate_dataset_id(value)


@pytest.mark.google_behaviour("dataset-id-rules")
@pytest.mark.parametrize("value", ["", "a" * 257, "a/b", "a b", "a:b", "ds?x", ".", ".."])
def test_dataset_id_rejected_when_rule_broken(value: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^dataset_id: ") as caught:
        validate_dataset_id(value)
    assert caught.value.field == "dataset_id"


@pytest.mark.google_behaviour("store-id")
@pytest.mark.parametrize("value", ["store", "My Store (2024)!", "ünï-cødé", "s" * 256, "a.b"])
def test_dicom_store_id_accepted_when_valid(value: str) -> None:
    validate_dicom_store_id(value)


@pytest.mark.google_behaviour("store-id")
@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("", "must not be empty"),
        ("s" * 257, "must be at most 256 characters (is 257)"),
        ("a/b", "must not contain '/'"),
        ("a\nb", "must not contain control characters"),
        ("a\x7fb", "must not contain control characters"),
        ("..", "is not a usable URL path segment"),
    ],
)
def test_dicom_store_id_rejected_when_rule_broken(value: str, rule: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^dicom_store_id: ") as caught:
        validate_dicom_store_id(value)
    assert caught.value.message.endswith(rule)


@pytest.mark.parametrize("value", ["", "UTC", "America/New_York", "Europe/Berlin", "Asia/Tokyo"])
def test_time_zone_accepted_when_empty_or_iana(value: str) -> None:
    validate_time_zone(value)


@pytest.mark.parametrize(
    "value",
    ["Mars/Olympus", "utc", "America/New York", "../../etc/passwd", "/etc/localtime", "localtime"],
)
def test_time_zone_rejected_when_not_iana(value: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^dataset\.time_zone: .* IANA") as caught:
        validate_time_zone(value)
    assert caught.value.field == "dataset.time_zone"


@pytest.mark.google_behaviour("store-config-fields")
@pytest.mark.parametrize(
    "value",
    [
        "",
        "projects/my-project/topics/dicom-events",
        "projects/example.com:my-project/topics/t_1.a~b+c%20",
        "projects/p/topics/" + "t" * 255,
    ],
)
def test_pubsub_topic_accepted_when_valid(value: str) -> None:
    validate_pubsub_topic(value, "notification_config.pubsub_topic")


@pytest.mark.google_behaviour("store-config-fields")
@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("my-topic", "must be of the form projects/PROJECT/topics/TOPIC"),
        ("projects/p/topics/", "must be of the form projects/PROJECT/topics/TOPIC"),
        ("projects/p/topics/a/b", "must be of the form projects/PROJECT/topics/TOPIC"),
        ("projects/p/subscriptions/s", "must be of the form projects/PROJECT/topics/TOPIC"),
        ("projects/My_Project/topics/topic", 'project "My_Project" must be a project id'),
        ("projects/p/topics/ab", 'topic "ab" must match'),
        ("projects/p/topics/1topic", 'topic "1topic" must match'),
        ("projects/p/topics/" + "t" * 256, "must match"),
        ("projects/p/topics/top ic", 'topic "top ic" must match'),
        ("projects/p/topics/google-topic", 'topic "google-topic" must not start with "goog"'),
    ],
)
def test_pubsub_topic_rejected_when_rule_broken(value: str, rule: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_pubsub_topic(value, "notification_config.pubsub_topic")
    assert caught.value.field == "notification_config.pubsub_topic"
    assert caught.value.message.startswith("notification_config.pubsub_topic: ")
    assert rule in caught.value.message


@pytest.mark.google_behaviour("bigquery-table-uri")
@pytest.mark.parametrize(
    "value",
    [
        "bq://my-project.my_dataset.my_table",
        "bq://example.com:my-project.dicom_ds.instances",
        "bq://p.d.table with spaces-and-dashes",
        "bq://p.d.表_テーブル",
        "bq://p.d." + "t" * 1024,
    ],
)
def test_bigquery_table_uri_accepted_when_valid(value: str) -> None:
    validate_bigquery_table_uri(value, "stream_configs[0].bigquery_destination.table_uri")


@pytest.mark.google_behaviour("bigquery-table-uri")
@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("", "must be of the form bq://PROJECT.DATASET.TABLE"),
        ("my-project.ds.table", "must be of the form bq://PROJECT.DATASET.TABLE"),
        ("bq://project.table", "must be of the form bq://PROJECT.DATASET.TABLE"),
        ("bq://My-Project.ds.table", 'project "My-Project" must be a project id'),
        ("bq://a.b.ds.table", 'project "a.b" must be a project id'),
        ("bq://p.my-dataset.table", 'dataset "my-dataset" must match [A-Za-z0-9_]{1,1024}'),
        ("bq://p..table", 'dataset "" must match'),
        ("bq://p.ds.", 'table "" must be 1-1024 bytes'),
        ("bq://p.ds.tab/le", "must be 1-1024 bytes"),
        ("bq://p.ds." + "表" * 342, "must be 1-1024 bytes"),  # 1,026 bytes
        ("bq://p.d." + "t" * 1992, "must be at most 2000 characters (is 2001)"),
    ],
)
def test_bigquery_table_uri_rejected_when_rule_broken(value: str, rule: str) -> None:
    field = "stream_configs[0].bigquery_destination.table_uri"
    with pytest.raises(InvalidArgument) as caught:
        validate_bigquery_table_uri(value, field)
    assert caught.value.field == field
    assert rule in caught.value.message


def test_bigquery_table_uri_parses_into_its_parts() -> None:
    name = parse_bigquery_table_uri("bq://example.com:my-proj.data_set.Tâble 1", "table_uri")
    assert name == BigQueryTableName("example.com:my-proj", "data_set", "Tâble 1")


def test_bigquery_table_uri_parse_rejects_what_validation_rejects() -> None:
    with pytest.raises(InvalidArgument, match="table_uri"):
        parse_bigquery_table_uri("bq://p.d", "table_uri")
