"""Rows of Google's DICOM BigQuery schema built from DICOM JSON (dicomstore.dicom.bigquery)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

import pytest
from pydicom import dcmread
from tests.unit.dicom.dicomfiles import data_file

from dicomstore.dicom.bigquery import bigquery_row, file_meta_json
from dicomstore.dicom.bigquery_schema import BigQueryRow, Column, ColumnType
from dicomstore.dicom.dicomjson import to_dicom_json

UPDATED = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
S, INT, F = ColumnType.STRING, ColumnType.INTEGER, ColumnType.FLOAT
D, T, TS, R = ColumnType.DATE, ColumnType.TIME, ColumnType.TIMESTAMP, ColumnType.RECORD


def row_of(metadata: dict[str, Any], **kwargs: Any) -> BigQueryRow:
    return bigquery_row(metadata, blob_size=1234, updated=UPDATED, **kwargs)


def column(row: BigQueryRow, name: str) -> Column:
    return next(c for c in row.columns if c.name == name)


def dropped(row: BigQueryRow) -> list[tuple[str, str]]:
    return [(d["TagName"], d["TagReference"]) for d in row.values["DroppedTags"]]


@pytest.mark.google_behaviour("bigquery-vr-types")
@pytest.mark.parametrize(
    ("tag", "vr", "value", "keyword", "column_type", "expected"),
    [
        ("00400241", "AE", "STATION1", "PerformedStationAETitle", S, "STATION1"),
        ("00101010", "AS", "042Y", "PatientAge", S, "042Y"),
        ("00080060", "CS", "CT", "Modality", S, "CT"),
        ("00080070", "LO", "Acme", "Manufacturer", S, "Acme"),
        ("001021B0", "LT", "long text", "AdditionalPatientHistory", S, "long text"),
        ("00080050", "SH", "A123", "AccessionNumber", S, "A123"),
        ("00080081", "ST", "1 Main St", "InstitutionAddress", S, "1 Main St"),
        ("00080119", "UC", "X" * 70, "LongCodeValue", S, "X" * 70),
        ("00080018", "UI", "1.2.3", "SOPInstanceUID", S, "1.2.3"),
        ("00081190", "UR", "http://a/b", "RetrieveURL", S, "http://a/b"),
        ("0040A160", "UT", "text", "TextValue", S, "text"),
        ("00180050", "DS", 2.5, "SliceThickness", S, "2.5"),
        ("00200013", "IS", 7, "InstanceNumber", S, "7"),
        ("00080020", "DA", "20240131", "StudyDate", D, date(2024, 1, 31)),
        ("00080030", "TM", "101112.5", "StudyTime", T, time(10, 11, 12, 500000)),
        ("00080030", "TM", "10", "StudyTime", T, time(10)),
        (
            "0008002A",
            "DT",
            "20240131101112.25+0100",
            "AcquisitionDateTime",
            TS,
            datetime(2024, 1, 31, 9, 11, 12, 250000, tzinfo=UTC),
        ),
        ("00089459", "FL", 29.97, "RecommendedDisplayFrameRateInFloat", F, 29.97),
        ("00189087", "FD", 1000, "DiffusionBValue", F, 1000.0),
        ("00209167", "AT", "00280010", "FunctionalGroupPointer", INT, 0x00280010),
        ("00186020", "SL", -5, "ReferencePixelX0", INT, -5),
        ("00189219", "SS", -3, "TagAngleSecondAxis", INT, -3),
        ("00186016", "UL", 4000000000, "RegionFlags", INT, 4000000000),
        ("00280010", "US", 512, "Rows", INT, 512),
    ],
)
def test_column_type_follows_the_vr(
    tag: str, vr: str, value: Any, keyword: str, column_type: ColumnType, expected: Any
) -> None:
    row = row_of({tag: {"vr": vr, "Value": [value]}})
    assert column(row, keyword) == Column(keyword, column_type)
    assert row.values[keyword] == expected
    assert dropped(row) == []


@pytest.mark.google_behaviour("bigquery-vr-types")
@pytest.mark.parametrize(
    ("tag", "vr", "values", "keyword", "column_type", "expected"),
    [
        ("00080008", "CS", ["ORIGINAL", "PRIMARY"], "ImageType", S, ["ORIGINAL", "PRIMARY"]),
        ("00280030", "DS", [0.5, 0.25], "PixelSpacing", S, ["0.5", "0.25"]),
        ("00720082", "SV", [-(2**40), 1], "SelectorSVValue", INT, [-(2**40), 1]),
        ("00720083", "UV", [2**40], "SelectorUVValue", INT, [2**40]),
        ("00280009", "AT", ["00185050"], "FrameIncrementPointer", INT, [0x00185050]),
    ],
)
def test_element_whose_vm_is_not_1_is_a_repeated_column(
    tag: str, vr: str, values: list[Any], keyword: str, column_type: ColumnType, expected: Any
) -> None:
    row = row_of({tag: {"vr": vr, "Value": values}})
    assert column(row, keyword) == Column(keyword, column_type, repeated=True)
    assert row.values[keyword] == expected


def test_empty_element_gets_a_typed_null_column() -> None:
    row = row_of({"00080020": {"vr": "DA"}, "00080008": {"vr": "CS"}})
    assert column(row, "StudyDate") == Column("StudyDate", D)
    assert row.values["StudyDate"] is None
    assert row.values["ImageType"] == []
    assert dropped(row) == []


@pytest.mark.google_behaviour("bigquery-person-name")
def test_person_name_is_a_record_of_groups_of_components() -> None:
    name = {"Alphabetic": "Yamada^Tarou^^Dr^Jr", "Ideographic": "山田^太郎", "Phonetic": "やまだ"}
    row = row_of({"00100010": {"vr": "PN", "Value": [name]}})
    record = column(row, "PatientName")
    assert record.type is R and not record.repeated
    assert [g.name for g in record.fields] == ["Alphabetic", "Ideographic", "Phonetic"]
    assert [p.name for p in record.fields[0].fields] == [
        "FamilyName",
        "GivenName",
        "MiddleName",
        "NamePrefix",
        "NameSuffix",
    ]
    value = row.values["PatientName"]
    assert value["Alphabetic"] == {
        "FamilyName": "Yamada",
        "GivenName": "Tarou",
        "MiddleName": None,
        "NamePrefix": "Dr",
        "NameSuffix": "Jr",
    }
    assert value["Ideographic"]["GivenName"] == "太郎"
    assert value["Phonetic"]["FamilyName"] == "やまだ"


@pytest.mark.google_behaviour("bigquery-person-name")
def test_person_name_with_only_alphabetic_has_null_other_groups() -> None:
    row = row_of({"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe"}]}})
    assert row.values["PatientName"]["Ideographic"] is None
    assert row.values["PatientName"]["Alphabetic"]["FamilyName"] == "Doe"


@pytest.mark.google_behaviour("bigquery-person-name")
def test_multi_valued_person_name_is_a_repeated_record() -> None:
    names = [{"Alphabetic": "A^B"}, {"Alphabetic": "C^D"}]
    row = row_of({"00081070": {"vr": "PN", "Value": names}})  # OperatorsName, VM 1-n
    assert column(row, "OperatorsName").repeated
    assert [n["Alphabetic"]["GivenName"] for n in row.values["OperatorsName"]] == ["B", "D"]


@pytest.mark.google_behaviour("bigquery-sequences-and-private")
def test_sequence_is_a_repeated_record_of_its_items_fields() -> None:
    image_ref = {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]}}
    series = [
        {"0020000E": {"vr": "UI", "Value": ["1.2"]}},
        {
            "0020000E": {"vr": "UI", "Value": ["1.3"]},
            "00081140": {"vr": "SQ", "Value": [image_ref]},
        },
    ]
    row = row_of({"00081115": {"vr": "SQ", "Value": series}})  # ReferencedSeriesSequence
    sequence = column(row, "ReferencedSeriesSequence")
    assert sequence.type is R and sequence.repeated
    assert [f.name for f in sequence.fields] == ["SeriesInstanceUID", "ReferencedImageSequence"]
    nested = sequence.fields[1]
    assert nested.repeated and nested.fields == (Column("ReferencedSOPClassUID", S),)
    items = row.values["ReferencedSeriesSequence"]
    assert items[0] == {"SeriesInstanceUID": "1.2"}
    assert items[1]["ReferencedImageSequence"] == [
        {"ReferencedSOPClassUID": "1.2.840.10008.5.1.4.1.1.2"}
    ]


@pytest.mark.google_behaviour("bigquery-schema-columns")
def test_empty_sequence_gets_no_column() -> None:
    row = row_of({"00081115": {"vr": "SQ"}, "00081140": {"vr": "SQ", "Value": [{}]}})
    names = {c.name for c in row.columns}
    assert "ReferencedSeriesSequence" not in names
    assert "ReferencedImageSequence" not in names


@pytest.mark.google_behaviour("bigquery-sequences-and-private")
@pytest.mark.parametrize(
    ("attribute", "keyword", "tag"),
    [
        ({"vr": "OW", "BulkDataURI": "http://x/bulkdata/7FE00010"}, "PixelData", "7FE00010"),
        ({"vr": "OB", "InlineBinary": "AAE="}, "ICCProfile", "00282000"),
        ({"vr": "OF", "InlineBinary": "AACAPw=="}, "FloatPixelData", "7FE00008"),
        ({"vr": "UN", "InlineBinary": "AAE="}, "Modality", "00080060"),
    ],
)
def test_binary_and_bulk_data_are_dropped_and_listed(
    attribute: dict[str, Any], keyword: str, tag: str
) -> None:
    row = row_of({tag: attribute})
    assert keyword not in {c.name for c in row.columns}
    assert dropped(row) == [(keyword, tag)]
    assert column(row, "DroppedTags") == Column(
        "DroppedTags",
        R,
        repeated=True,
        fields=(Column("TagName", S), Column("TagReference", S)),
    )


@pytest.mark.parametrize(
    ("tag", "vr", "values", "keyword"),
    [
        ("00080020", "DA", ["20241301"], "StudyDate"),
        ("00080020", "DA", ["yesterday"], "StudyDate"),
        ("00080030", "TM", ["251000"], "StudyTime"),
        ("0008002A", "DT", ["2024013110111"], "AcquisitionDateTime"),
        ("00189087", "FD", ["lots"], "DiffusionBValue"),
        ("00280010", "US", [1, 2], "Rows"),  # VM 1 in the dictionary
        ("00720083", "UV", [2**64 - 1], "SelectorUVValue"),  # beyond INT64
        ("00280009", "AT", [None, "00185050"], "FrameIncrementPointer"),  # no NULL in arrays
    ],
)
def test_value_that_is_not_of_its_type_is_null_and_dropped(
    tag: str, vr: str, values: list[Any], keyword: str
) -> None:
    row = row_of({tag: {"vr": vr, "Value": values}})
    assert row.values[keyword] in (None, [])
    assert dropped(row) == [(keyword, tag)]


def test_empty_value_inside_a_text_list_is_an_empty_string() -> None:
    row = row_of({"00280030": {"vr": "DS", "Value": [None, 0.5]}})
    assert row.values["PixelSpacing"] == ["", "0.5"]
    assert dropped(row) == []


def test_text_element_of_vm_1_with_several_values_keeps_them_joined() -> None:
    row = row_of({"00080060": {"vr": "CS", "Value": ["CT", "PT"]}})
    assert row.values["Modality"] == "CT\\PT"


@pytest.mark.google_behaviour("bigquery-sequences-and-private")
def test_dropped_tag_inside_a_sequence_names_its_path() -> None:
    item = {"00080020": {"vr": "DA", "Value": ["bad"]}, "00081150": {"vr": "UI", "Value": ["1"]}}
    row = row_of({"00081115": {"vr": "SQ", "Value": [{}, item]}})
    assert dropped(row) == [("StudyDate", "00081115/1/00080020")]
    assert row.values["ReferencedSeriesSequence"][1]["StudyDate"] is None


@pytest.mark.google_behaviour("bigquery-sequences-and-private")
def test_private_sequence_is_a_tag_column_and_private_elements_go_to_other_elements() -> None:
    item = {"00291010": {"vr": "LO", "Value": ["inner"]}, "00080060": {"vr": "CS", "Value": ["MR"]}}
    row = row_of(
        {
            "00290010": {"vr": "LO", "Value": ["ACME 1.0"]},
            "00291020": {"vr": "SQ", "Value": [item]},
            "00291030": {"vr": "DS", "Value": [1.5, 2]},
            "00291040": {"vr": "OB", "InlineBinary": "AAE="},
        }
    )
    assert row.values["OtherElements"] == [
        {"Tag": "00290010", "Data": ["ACME 1.0"]},
        {"Tag": "00291030", "Data": ["1.5", "2"]},
    ]
    assert row.values["Tag_00291020"] == [
        {"Modality": "MR", "OtherElements": [{"Tag": "00291010", "Data": ["inner"]}]}
    ]
    assert dropped(row) == [("00291040", "00291040")]


@pytest.mark.google_behaviour("bigquery-bookkeeping-columns")
def test_bookkeeping_columns_close_the_row() -> None:
    row = row_of({"00080060": {"vr": "CS", "Value": ["CT"]}}, storage_class="ARCHIVE")
    assert [c.name for c in row.columns] == [
        "Modality",
        "DroppedTags",
        "Type",
        "LastUpdated",
        "StorageClass",
        "BlobStorageSize",
    ]
    assert [c.type for c in row.columns[-4:]] == [S, TS, S, INT]
    assert row.values["Type"] == "INSERT"
    assert row.values["LastUpdated"] == UPDATED
    assert row.values["StorageClass"] == "ARCHIVE"
    assert row.values["BlobStorageSize"] == 1234


@pytest.mark.google_behaviour("bigquery-include-source-store")
def test_source_store_column_only_when_asked() -> None:
    store = "projects/p/locations/l/datasets/d/dicomStores/s"
    row = row_of({}, source_store=store)
    assert column(row, "SourceDicomStore") == Column("SourceDicomStore", S)
    assert row.values["SourceDicomStore"] == store
    assert "SourceDicomStore" not in {c.name for c in row_of({}).columns}


@pytest.mark.google_behaviour("bigquery-schema-columns")
def test_file_meta_elements_are_columns_first() -> None:
    meta = file_meta_json(
        transfer_syntax_uid="1.2.840.10008.1.2.1", sop_class_uid="1.2.3", sop_instance_uid="4.5"
    )
    row = row_of({"00080060": {"vr": "CS", "Value": ["CT"]}}, file_meta=meta)
    assert [c.name for c in row.columns[:4]] == [
        "MediaStorageSOPClassUID",
        "MediaStorageSOPInstanceUID",
        "TransferSyntaxUID",
        "Modality",
    ]
    assert row.values["TransferSyntaxUID"] == "1.2.840.10008.1.2.1"


def test_datetime_without_offset_is_in_the_timezone_offset_from_utc() -> None:
    row = row_of(
        {
            "00080201": {"vr": "SH", "Value": ["-0500"]},
            "0008002A": {"vr": "DT", "Value": ["20240131100000"]},
        }
    )
    assert row.values["AcquisitionDateTime"] == datetime(2024, 1, 31, 15, tzinfo=UTC)


def test_second_element_of_a_repeating_group_is_dropped() -> None:
    row = row_of({"60000010": {"vr": "US", "Value": [8]}, "60020010": {"vr": "US", "Value": [9]}})
    assert row.values["OverlayRows"] == 8
    assert dropped(row) == [("OverlayRows", "60020010")]


def test_real_file_row_holds_its_identifiers_and_drops_its_pixels() -> None:
    dataset = dcmread(data_file("CT_small.dcm"))
    row = row_of(to_dicom_json(dataset, lambda path: f"bulk/{path}"))
    assert row.values["SOPInstanceUID"] == dataset.SOPInstanceUID
    assert row.values["PatientName"]["Alphabetic"]["FamilyName"] == "CompressedSamples"
    assert row.values["StudyDate"] == date(2004, 1, 19)
    assert ("PixelData", "7FE00010") in dropped(row)
    assert [item["PatientID"] for item in row.values["OtherPatientIDsSequence"]] == [
        "ABCD1234",
        "1234ABCD",
    ]
