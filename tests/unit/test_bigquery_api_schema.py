"""The pure parts of the BigQuery API table (dicomstore.destinations.bigquery_api): schema and
row conversion. Its API calls are not exercised: no BigQuery emulator runs here."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time

from google.cloud import bigquery
from pydicom import dcmread
from tests.unit.dicom.dicomfiles import data_file

from dicomstore.destinations.bigquery_api import columns_of, json_row, schema_fields
from dicomstore.dicom.bigquery import bigquery_row
from dicomstore.dicom.bigquery_schema import BigQueryRow, Column, ColumnType
from dicomstore.dicom.dicomjson import to_dicom_json


def ct_row() -> BigQueryRow:
    metadata = to_dicom_json(dcmread(data_file("CT_small.dcm")), lambda p: p)
    return bigquery_row(metadata, blob_size=1, updated=datetime(2025, 1, 1, tzinfo=UTC))


def test_schema_fields_carry_types_modes_and_nested_fields() -> None:
    fields = {field.name: field for field in schema_fields(ct_row().columns)}
    assert (fields["StudyDate"].field_type, fields["StudyDate"].mode) == ("DATE", "NULLABLE")
    assert (fields["ImageType"].field_type, fields["ImageType"].mode) == ("STRING", "REPEATED")
    name = fields["PatientName"]
    assert (name.field_type, name.mode) == ("RECORD", "NULLABLE")
    assert [f.name for f in name.fields] == ["Alphabetic", "Ideographic", "Phonetic"]
    assert name.fields[0].fields[0].name == "FamilyName"
    assert (fields["DroppedTags"].field_type, fields["DroppedTags"].mode) == ("RECORD", "REPEATED")
    assert fields["LastUpdated"].field_type == "TIMESTAMP"


def test_table_schema_reads_back_as_the_same_columns() -> None:
    columns = ct_row().columns
    assert tuple(c for c in columns_of(schema_fields(columns)).values()) == columns


def test_standard_sql_type_names_read_as_the_legacy_ones() -> None:
    fields = [
        bigquery.SchemaField("a", "INT64"),
        bigquery.SchemaField("b", "FLOAT64", mode="REPEATED"),
        bigquery.SchemaField("c", "STRUCT", fields=[bigquery.SchemaField("d", "STRING")]),
    ]
    assert columns_of(fields) == {
        "a": Column("a", ColumnType.INTEGER),
        "b": Column("b", ColumnType.FLOAT, repeated=True),
        "c": Column("c", ColumnType.RECORD, fields=(Column("d", ColumnType.STRING),)),
    }


def test_fields_this_schema_never_makes_are_foreign() -> None:
    fields = [
        bigquery.SchemaField("geo", "GEOGRAPHY"),
        bigquery.SchemaField("must", "STRING", mode="REQUIRED"),
        bigquery.SchemaField("r", "RECORD", fields=[bigquery.SchemaField("n", "NUMERIC")]),
    ]
    assert columns_of(fields) == {"geo": None, "must": None, "r": None}


def test_json_row_is_json_with_iso_dates_and_named_non_finite_floats() -> None:
    row = BigQueryRow(
        (),
        {
            "StudyDate": date(2024, 1, 31),
            "StudyTime": time(10, 11, 12, 500000),
            "LastUpdated": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
            "Values": [float("nan"), float("inf"), -float("inf"), 1.5],
            "Seq": [{"When": date(2000, 1, 1)}],
        },
    )
    converted = json_row(row)
    assert json.loads(json.dumps(converted, allow_nan=False)) == {
        "StudyDate": "2024-01-31",
        "StudyTime": "10:11:12.500000",
        "LastUpdated": "2025-01-02T03:04:05+00:00",
        "Values": ["NaN", "Infinity", "-Infinity", 1.5],
        "Seq": [{"When": "2000-01-01"}],
    }
