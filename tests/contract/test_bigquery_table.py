"""The contract of the BigQueryTable port (dicomstore.core.ports.BigQueryTable), then what is
particular to the embedded DuckDB tables: their columns, schema changes, and the example
queries of Google's export how-to run unchanged but for the table name."""

from __future__ import annotations

import asyncio
import re
import sys
from asyncio.subprocess import PIPE
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pydicom
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from tests.contract.conftest import BigQueryTables
from tests.unit.dicom.dicomfiles import data_file

from dicomstore.core.bigquery_dispositions import check_destination, write_plan
from dicomstore.core.errors import FailedPrecondition, Unavailable
from dicomstore.core.model import WriteDisposition
from dicomstore.core.validation import BigQueryTableName, parse_bigquery_table_uri
from dicomstore.destinations.bigquery_duckdb import DuckDbBigQuery, DuckDbTable
from dicomstore.dicom.bigquery import bigquery_row
from dicomstore.dicom.bigquery_schema import BigQueryRow
from dicomstore.dicom.dicomjson import to_dicom_json

URI = "bq://my-project.exports.dicom_metadata"
UPDATED = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def ct_instance(**attributes: Any) -> Dataset:
    """CT_small.dcm with `attributes` set (keyword to value)."""
    dataset = dcmread(data_file("CT_small.dcm"))
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    return dataset


def row(dataset: Dataset, **kwargs: Any) -> BigQueryRow:
    return bigquery_row(
        to_dicom_json(dataset, lambda path: f"bulk/{path}"),
        blob_size=kwargs.pop("blob_size", 100),
        updated=UPDATED,
        **kwargs,
    )


def metadata_row(metadata: dict[str, Any]) -> BigQueryRow:
    return bigquery_row(metadata, blob_size=1, updated=UPDATED)


# The port


async def test_missing_table_is_empty(bigquery_tables: BigQueryTables) -> None:
    assert await bigquery_tables(URI).is_empty()


async def test_written_table_is_not_empty(bigquery_tables: BigQueryTables) -> None:
    table = bigquery_tables(URI)
    await table.write([row(ct_instance())], truncate=False)
    assert not await table.is_empty()
    await table.close()


async def test_truncate_with_no_rows_empties_the_table(bigquery_tables: BigQueryTables) -> None:
    table = bigquery_tables(URI)
    await table.write([row(ct_instance())], truncate=False)
    await table.write([], truncate=True)
    assert await table.is_empty()


async def test_tables_of_one_dataset_are_apart(bigquery_tables: BigQueryTables) -> None:
    await bigquery_tables(URI).write([row(ct_instance())], truncate=False)
    assert await bigquery_tables("bq://my-project.exports.other").is_empty()
    assert await bigquery_tables("bq://other-project.exports.dicom_metadata").is_empty()


@pytest.mark.google_behaviour("bigquery-write-disposition")
@pytest.mark.parametrize(
    ("disposition", "force", "outcome"),
    [
        (WriteDisposition.WRITE_DISPOSITION_UNSPECIFIED, False, "refused"),
        (WriteDisposition.WRITE_EMPTY, False, "refused"),
        (WriteDisposition.WRITE_DISPOSITION_UNSPECIFIED, True, "replaced"),
        (WriteDisposition.WRITE_TRUNCATE, False, "replaced"),
        (WriteDisposition.WRITE_APPEND, True, "appended"),
    ],
)
async def test_write_disposition_on_a_table_with_rows(
    tmp_path: Path, disposition: WriteDisposition, force: bool, outcome: str
) -> None:
    table = duckdb_table(tmp_path)
    await table.write([row(ct_instance(SOPInstanceUID="1.1"))], truncate=False)
    plan = write_plan(disposition, force)
    try:
        check_destination(plan, empty=await table.is_empty(), table_uri=URI)
    except FailedPrecondition:
        assert outcome == "refused"
    else:
        await table.write([row(ct_instance(SOPInstanceUID="2.2"))], truncate=plan.truncate)
    expected = {"refused": ["1.1"], "replaced": ["2.2"], "appended": ["1.1", "2.2"]}[outcome]
    assert select(table, "SELECT SOPInstanceUID FROM {t} ORDER BY 1") == [(u,) for u in expected]


@pytest.mark.google_behaviour("bigquery-write-disposition")
async def test_write_empty_accepts_an_existing_empty_table(tmp_path: Path) -> None:
    table = duckdb_table(tmp_path)
    await table.write([row(ct_instance())], truncate=False)
    await table.write([], truncate=True)
    check_destination(write_plan(WriteDisposition.WRITE_EMPTY, False), empty=True, table_uri=URI)
    await table.write([row(ct_instance(SOPInstanceUID="3.3"))], truncate=False)
    assert select(table, "SELECT SOPInstanceUID FROM {t}") == [("3.3",)]


# The embedded DuckDB tables


def duckdb_table(root: Path, uri: str = URI) -> DuckDbTable:
    return DuckDbBigQuery(root).table(parse_bigquery_table_uri(uri, "uri"))


def select(table: DuckDbTable, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run `sql`, with `{t}` standing for the table, in a connection of its own."""
    qualified = f'"{table.dataset}"."{table.table}"'
    with duckdb.connect(str(table.path), read_only=True) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        return connection.execute(sql.replace("{t}", qualified), list(params)).fetchall()


@pytest.mark.google_behaviour("bigquery-table-uri")
async def test_database_is_a_duckdb_file_per_project(tmp_path: Path) -> None:
    table = duckdb_table(tmp_path)
    await table.write([row(ct_instance())], truncate=False)
    assert table.path == tmp_path / "bigquery" / "my-project.duckdb"
    assert select(table, "SELECT current_database()") == [("my-project",)]


async def test_missing_table_is_empty_without_creating_a_file(tmp_path: Path) -> None:
    table = duckdb_table(tmp_path)
    assert await table.is_empty()
    assert not table.path.exists()


@pytest.mark.google_behaviour("bigquery-vr-types")
async def test_columns_are_typed_as_google_types_them(tmp_path: Path) -> None:
    table = duckdb_table(tmp_path)
    await table.write([row(ct_instance(), source_store="projects/p/dicomStores/s")], truncate=False)
    types = dict(select(table, "SELECT column_name, data_type FROM information_schema.columns"))
    assert types["StudyDate"] == "DATE"
    assert types["StudyTime"] == "TIME"
    assert types["Rows"] == "BIGINT"
    assert types["SliceLocation"] == "VARCHAR"  # DS is STRING
    assert types["ImageType"] == "VARCHAR[]"
    assert types["PatientName"].startswith("STRUCT(Alphabetic STRUCT(FamilyName VARCHAR")
    assert types["LastUpdated"] == "TIMESTAMP WITH TIME ZONE"
    assert types["SourceDicomStore"] == "VARCHAR"
    assert types["DroppedTags"] == "STRUCT(TagName VARCHAR, TagReference VARCHAR)[]"
    assert [c.name for c in await table.columns()] == list(types)


@pytest.mark.google_behaviour("bigquery-person-name", "bigquery-sequences-and-private")
async def test_bigquery_paths_and_unnest_read_records_and_sequences(tmp_path: Path) -> None:
    table = duckdb_table(tmp_path)
    await table.write([row(ct_instance())], truncate=False)
    assert select(table, "SELECT PatientName.Alphabetic.FamilyName FROM {t}") == [
        ("CompressedSamples",)
    ]
    ids = "SELECT item.PatientID FROM {t}, UNNEST(OtherPatientIDsSequence) AS item ORDER BY 1"
    assert select(table, ids) == [("1234ABCD",), ("ABCD1234",)]
    dropped = "SELECT d.TagName FROM {t}, UNNEST(DroppedTags) AS d WHERE d.TagReference = ?"
    assert select(table, dropped, "7FE00010") == [("PixelData",)]


@pytest.mark.google_behaviour("bigquery-schema-columns")
async def test_later_rows_add_the_columns_they_bring(tmp_path: Path) -> None:
    table = duckdb_table(tmp_path)
    await table.write([metadata_row({"00080060": {"vr": "CS", "Value": ["CT"]}})], truncate=False)
    later = {
        "00080060": {"vr": "CS", "Value": ["MR"]},
        "00081030": {"vr": "LO", "Value": ["Brain"]},
        "00080008": {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY"]},
    }
    await table.write([metadata_row(later)], truncate=False)
    query = "SELECT Modality, StudyDescription, ImageType FROM {t} ORDER BY Modality"
    assert select(table, query) == [
        ("CT", None, []),
        ("MR", "Brain", ["ORIGINAL", "PRIMARY"]),
    ]


async def test_sequence_item_with_a_new_keyword_widens_its_record(tmp_path: Path) -> None:
    table = duckdb_table(tmp_path)

    def series(*items: dict[str, Any]) -> BigQueryRow:
        return metadata_row({"00081115": {"vr": "SQ", "Value": list(items)}})

    await table.write([series({"0020000E": {"vr": "UI", "Value": ["1.1"]}})], truncate=False)
    nested = {"00081140": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["9"]}}]}}
    await table.write(
        [series({"0020000E": {"vr": "UI", "Value": ["2.2"]}, **nested})], truncate=False
    )
    query = (
        "SELECT s.SeriesInstanceUID, s.ReferencedImageSequence"
        " FROM {t}, UNNEST(ReferencedSeriesSequence) AS s ORDER BY 1"
    )
    assert select(table, query) == [
        ("1.1", None),
        ("2.2", [{"ReferencedSOPInstanceUID": "9"}]),
    ]


async def test_one_write_of_items_with_different_keywords(tmp_path: Path) -> None:
    table = duckdb_table(tmp_path)
    items = [{"0020000E": {"vr": "UI", "Value": ["1"]}}, {"00081155": {"vr": "UI", "Value": ["9"]}}]
    await table.write([metadata_row({"00081115": {"vr": "SQ", "Value": items}})], truncate=False)
    assert select(table, "SELECT ReferencedSeriesSequence FROM {t}") == [
        (
            [
                {"SeriesInstanceUID": "1", "ReferencedSOPInstanceUID": None},
                {"SeriesInstanceUID": None, "ReferencedSOPInstanceUID": "9"},
            ],
        )
    ]


@pytest.mark.parametrize("other_type", ["VARCHAR", "INTEGER"])
async def test_column_of_another_type_refuses_the_write(tmp_path: Path, other_type: str) -> None:
    table = duckdb_table(tmp_path)
    await table.write([row(ct_instance())], truncate=False)
    with duckdb.connect(str(table.path)) as connection:
        qualified = f'"{table.dataset}"."{table.table}"'
        connection.execute(f"ALTER TABLE {qualified} ADD COLUMN Unrelated INT")
        connection.execute(f"ALTER TABLE {qualified} ALTER Rows SET DATA TYPE {other_type}")
    with pytest.raises(FailedPrecondition, match="column Rows"):
        await table.write([row(ct_instance(SOPInstanceUID="5.5"))], truncate=True)
    assert select(table, "SELECT count(*) FROM {t}") == [(1,)]


async def test_unicode_table_name_with_spaces_and_dashes(tmp_path: Path) -> None:
    table = duckdb_table(tmp_path, "bq://example.com:proj.data_set.Tâble des études-1")
    await table.write([row(ct_instance())], truncate=False)
    assert select(table, "SELECT count(*) FROM {t}") == [(1,)]
    assert table.path.name == "example.com:proj.duckdb"


async def test_names_are_quoted_whatever_they_hold(tmp_path: Path) -> None:
    name = BigQueryTableName("p", 'd"s', 't"; DROP TABLE x; --')
    table = DuckDbBigQuery(tmp_path).table(name)
    await table.write([row(ct_instance())], truncate=False)
    assert select(table, 'SELECT count(*) FROM "d""s"."t""; DROP TABLE x; --"') == [(1,)]


async def test_file_held_by_another_process_is_unavailable(tmp_path: Path) -> None:
    table = duckdb_table(tmp_path)
    await table.write([row(ct_instance())], truncate=False)
    hold = (
        f"import duckdb, sys; c = duckdb.connect({str(table.path)!r}); print('held', flush=True);"
        " sys.stdin.read()"
    )
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", hold, stdin=PIPE, stdout=PIPE
    )
    try:
        assert holder.stdout is not None and (await holder.stdout.readline()).strip() == b"held"
        with pytest.raises(Unavailable, match="in use by another process"):
            await table.write([row(ct_instance())], truncate=False)
    finally:
        await asyncio.wait_for(holder.communicate(b""), timeout=30)
    await table.write([row(ct_instance(SOPInstanceUID="6.6"))], truncate=False)
    assert select(table, "SELECT count(*) FROM {t}") == [(2,)]


# Google's example queries (export how-to, "Querying and analyzing DICOM data in BigQuery"),
# verbatim; `duckdb_sql` only rewrites the table reference and drops BigQuery's `#standardSQL`.

SEARCH_BY_PATIENT = """#standardSQL
SELECT CONCAT('/dicomWeb/studies/', StudyInstanceUID, '/series/', SeriesInstanceUID, '/instances/', SOPInstanceUID) as DICOMwebPath
FROM `chc-nih-chest-xray.nih_chest_xray.nih_chest_xray`
WHERE PatientID = '19045';"""  # noqa: E501

LATEST_STUDIES = """#standardSQL
SELECT
  MIN(CONCAT(StudyDate, ' ', StudyTime)) as StudyDateTime, MIN(PatientID) as PatientID, StudyInstanceUID, COUNT(*) as InstanceCount
FROM
  `bigquery-public-data.idc_v5.dicom_metadata` AS dicom
GROUP BY StudyInstanceUID
ORDER BY StudyDateTime DESC
LIMIT 10;"""  # noqa: E501

FILTER_FILE_LINES = """SELECT CONCAT ('/studies/', StudyInstanceUID, '/series/', SeriesInstanceUID, '/instances/', SOPInstanceUID) FROM [PROJECT_ID:BIGQUERY_DATASET.BIGQUERY_TABLE]"""  # noqa: E501


def duckdb_sql(bigquery_sql: str) -> str:
    """A BigQuery query as DuckDB runs it: `project.dataset.table` in backquotes (standard
    SQL) or `[project:dataset.table]` (legacy SQL) becomes `"project"."dataset"."table"`."""

    def reference(project: str, dataset: str, table: str) -> str:
        return ".".join(f'"{part}"' for part in (project, dataset, table))

    sql = "\n".join(line for line in bigquery_sql.splitlines() if line != "#standardSQL")
    sql = re.sub(r"`([^`.]+)\.([^`.]+)\.([^`.]+)`", lambda m: reference(*m.groups()), sql)
    return re.sub(r"\[([^\]:]+):([^\].]+)\.([^\].]+)\]", lambda m: reference(*m.groups()), sql)


def query(table: DuckDbTable, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(table.path), read_only=True) as connection:
        return connection.execute(duckdb_sql(sql)).fetchall()


@pytest.mark.google_behaviour("bigquery-example-queries")
async def test_export_guide_query_search_by_patient(tmp_path: Path) -> None:
    table = duckdb_table(tmp_path, "bq://chc-nih-chest-xray.nih_chest_xray.nih_chest_xray")
    rows = [
        row(ct_instance(PatientID=patient, StudyInstanceUID=study, SOPInstanceUID=sop))
        for patient, study, sop in [("19045", "1.1", "1.1.1"), ("777", "2.1", "2.1.1")]
    ]
    await table.write(rows, truncate=False)
    series = ct_instance().SeriesInstanceUID
    assert query(table, SEARCH_BY_PATIENT) == [
        (f"/dicomWeb/studies/1.1/series/{series}/instances/1.1.1",)
    ]


@pytest.mark.google_behaviour("bigquery-example-queries")
async def test_export_guide_query_latest_studies(tmp_path: Path) -> None:
    table = duckdb_table(tmp_path, "bq://bigquery-public-data.idc_v5.dicom_metadata")
    instances = [
        ("C3L-01924", "1.9", "20210711", "003822", "1.9.1"),
        ("C3L-01924", "1.9", "20210711", "003822", "1.9.2"),
        ("C3L-02513", "1.8", "20210710", "233113", "1.8.1"),
        ("C3L-02515", "1.7", "20210710", "213000.5", "1.7.1"),
        ("C3L-02515", "1.7", "20210710", "223516", "1.7.2"),
    ]
    await table.write(
        [
            row(
                ct_instance(
                    PatientID=p, StudyInstanceUID=s, StudyDate=d, StudyTime=t, SOPInstanceUID=u
                )
            )
            for p, s, d, t, u in instances
        ],
        truncate=False,
    )
    assert query(table, LATEST_STUDIES) == [
        ("2021-07-11 00:38:22", "C3L-01924", "1.9", 2),
        ("2021-07-10 23:31:13", "C3L-02513", "1.8", 1),
        ("2021-07-10 21:30:00.5", "C3L-02515", "1.7", 2),
    ]


@pytest.mark.google_behaviour("bigquery-example-queries")
async def test_export_guide_query_filter_file_lines(tmp_path: Path) -> None:
    table = duckdb_table(tmp_path, "bq://my-project.exports.dicom_metadata")
    await table.write([row(ct_instance(SOPInstanceUID="4.5.6"))], truncate=False)
    dataset = ct_instance()
    placeholders = {"PROJECT_ID": "my-project", "BIGQUERY_DATASET": "exports"}
    sql = FILTER_FILE_LINES
    for placeholder, name in {**placeholders, "BIGQUERY_TABLE": "dicom_metadata"}.items():
        sql = sql.replace(placeholder, name)
    assert query(table, sql) == [
        (f"/studies/{dataset.StudyInstanceUID}/series/{dataset.SeriesInstanceUID}/instances/4.5.6",)
    ]


# Every readable pydicom test file


def pydicom_test_files() -> Iterator[Path]:
    root = Path(pydicom.__file__).parent / "data" / "test_files"
    yield from sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in ("", ".dcm"))


def readable_rows() -> list[tuple[str, BigQueryRow]]:
    rows = []
    for path in pydicom_test_files():
        try:
            dataset = dcmread(path, defer_size=4096)
            metadata = to_dicom_json(dataset, lambda tag_path: f"bulk/{tag_path}")
        except Exception:  # "every file that parses": the others are not DICOM
            continue
        rows.append((path.name, metadata_row(metadata)))
    return rows


async def test_every_readable_pydicom_test_file_round_trips(tmp_path: Path) -> None:
    rows = readable_rows()
    assert len(rows) > 50
    table = duckdb_table(tmp_path)
    named = [BigQueryRow(r.columns, {**r.values, "StorageClass": name}) for name, r in rows]
    for start in range(0, len(named), 25):  # each write brings new columns and wider records
        await table.write(named[start : start + 25], truncate=False)
    found = select(table, "SELECT StorageClass, SOPInstanceUID FROM {t} ORDER BY 1")
    expected = sorted((name, built.values.get("SOPInstanceUID")) for name, built in rows)
    assert found == expected
    assert select(table, "SELECT count(*) FROM {t} WHERE StudyDate IS NOT NULL")[0][0] > 20
