"""QIDO-RS search in the core: the query language per mode, matching over real SQLite, results.

Instances are stored through the one ingest path from generated Part 10 files; every matching
rule runs twice, once with each SQLite plan (a selective condition read from the index, or rows
walked in order and each tested), which must agree. The last part checks, without timing
anything, that a selective search does not read more of the catalog as the store grows.
"""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from collections.abc import Iterator
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import CTImageStorage, SecondaryCaptureImageStorage
from tests.unit.dicom.dicomfiles import new_instance, part10

from dicomstore.blobs.local import LocalBlobStore
from dicomstore.catalog import sqlite_search, study_values
from dicomstore.catalog.sqlite import SqliteCatalog
from dicomstore.core.errors import InvalidArgument
from dicomstore.core.instances import Instances
from dicomstore.core.model import Dataset, DicomStore, NewInstance
from dicomstore.core.names import DatasetName, DicomStoreName
from dicomstore.core.operations import Operations
from dicomstore.core.paging import PageTokens
from dicomstore.core.policy import GOOGLE, STANDARD, DicomWebPolicy
from dicomstore.core.queries import Level, MatchKind
from dicomstore.core.search import Search, parse_request
from dicomstore.dicom import qido

DATASET = DatasetName.parse("projects/p/locations/l/datasets/d")
STORE = DicomStoreName(DATASET, "s")
Params = list[tuple[str, str]]

# --- the query language (no I/O) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("attribute_id", "keyword", "tag", "vr"),
    [
        ("PatientName", "PatientName", "00100010", "PN"),
        ("00100010", "PatientName", "00100010", "PN"),
        ("0020000d", "StudyInstanceUID", "0020000D", "UI"),
        ("00280106", "SmallestImagePixelValue", "00280106", "US"),
        ("00091097", "", "00091097", "UN"),
    ],
)
def test_attribute_ids_are_keywords_or_tags(
    attribute_id: str, keyword: str, tag: str, vr: str
) -> None:
    assert qido.attribute(attribute_id) == qido.Attribute(keyword, tag, vr)


@pytest.mark.parametrize("attribute_id", ["patientname", "(0010,0010)", "0010001", "Foo", ""])
def test_other_attribute_ids_name_nothing(attribute_id: str) -> None:
    assert qido.attribute(attribute_id) is None


@pytest.mark.google_behaviour("qido-fuzzy-matching")
@pytest.mark.parametrize(
    ("name", "tokens"),
    [
        ("John^Doe", ["john", "doe"]),
        ("Sally Zhang", ["sally", "zhang"]),
        ("Müller^Jürgen-Karl^^Dr.", ["muller", "jurgen", "karl", "dr"]),
        (
            "Yamada^Tarou=山田^太郎=やまだ^たろう",
            ["yamada", "tarou", "山田", "太郎", "やまた", "たろう"],
        ),
        ("\uff2a\uff2f\uff28\uff2e", ["john"]),  # fullwidth JOHN
        ("^ ^", []),
    ],
)
def test_names_are_tokenised_and_normalised(name: str, tokens: list[str]) -> None:
    assert qido.name_tokens(name) == tokens


def test_index_entries_split_values_and_keep_a_name_s_alphabetic_group() -> None:
    entries = qido.index_entries(
        {
            "SpecificCharacterSet": "ISO 2022 IR 6\\ISO 2022 IR 87",
            "PatientName": "Yamada^Tarou^^=山田^太郎==",
            "ReferringPhysicianName": "Doe^Ann^^^",
            "Modality": "CT",
        }
    )
    assert entries == [
        ("Modality", "CT"),
        ("PatientName", "Yamada^Tarou"),
        ("PatientName", "Yamada^Tarou=山田^太郎"),
        ("ReferringPhysicianName", "Doe^Ann"),
        ("SpecificCharacterSet", "ISO 2022 IR 6"),
        ("SpecificCharacterSet", "ISO 2022 IR 87"),
    ]


def conditions(params: Params, policy: DicomWebPolicy = GOOGLE) -> list[tuple[Any, ...]]:
    query = parse_request(Level.STUDIES, params, policy).query
    return [(c.keyword, c.kind, c.values) for c in query.conditions]


@pytest.mark.parametrize(
    ("params", "policy", "expected"),
    [
        ([("StudyDate", "20200105")], GOOGLE, [("StudyDate", MatchKind.EXACT, ("20200105",))]),
        (
            [("StudyDate", "20200101-20200131")],
            GOOGLE,
            [("StudyDate", MatchKind.RANGE, ("20200101", "20200131"))],
        ),
        ([("StudyDate", "20200101-")], GOOGLE, [("StudyDate", MatchKind.RANGE, ("20200101", ""))]),
        ([("StudyDate", "-20200101")], GOOGLE, [("StudyDate", MatchKind.RANGE, ("", "20200101"))]),
        (
            [("PatientName", "Doe^John^^")],
            GOOGLE,
            [("PatientName", MatchKind.EXACT, ("Doe^John",))],
        ),
        ([("PatientName", "Doe*")], GOOGLE, [("PatientName", MatchKind.EXACT, ("Doe*",))]),
        ([("PatientName", "Doe*")], STANDARD, [("PatientName", MatchKind.WILDCARD, ("Doe*",))]),
        ([("PatientName", "*")], STANDARD, []),
        ([("PatientName", "*")], GOOGLE, [("PatientName", MatchKind.EXACT, ("*",))]),
        ([("PatientID", "")], GOOGLE, []),
        (
            [("PatientName", "John Doe"), ("fuzzymatching", "true")],
            GOOGLE,
            [("PatientName", MatchKind.TOKENS, ("john", "doe"))],
        ),
        (
            [("PatientName", "Doe"), ("fuzzymatching", "false")],
            GOOGLE,
            [("PatientName", MatchKind.EXACT, ("Doe",))],
        ),
        (
            [("PatientID", "Doe"), ("fuzzymatching", "TRUE")],
            GOOGLE,
            [("PatientID", MatchKind.EXACT, ("Doe",))],
        ),
        (
            [("StudyInstanceUID", "1.2,1.3")],
            GOOGLE,
            [("StudyInstanceUID", MatchKind.EXACT, ("1.2,1.3",))],
        ),
        (
            [("0020000D", "1.2,1.3\\1.4")],
            STANDARD,
            [("StudyInstanceUID", MatchKind.ANY_OF, ("1.2", "1.3", "1.4"))],
        ),
        ([("ModalitiesInStudy", "CT")], STANDARD, [("Modality", MatchKind.EXACT, ("CT",))]),
        ([("InstanceNumber", "007")], STANDARD, [("InstanceNumber", MatchKind.EXACT, ("7",))]),
        (
            [("StudyTime", "0800-1200")],
            STANDARD,
            [("StudyTime", MatchKind.RANGE, ("0800", "1200"))],
        ),
        ([("AccessionNumber", " A1 ")], GOOGLE, [("AccessionNumber", MatchKind.EXACT, ("A1",))]),
    ],
)
def test_matching_keys_become_conditions(
    params: Params, policy: DicomWebPolicy, expected: list[tuple[Any, ...]]
) -> None:
    assert conditions(params, policy) == expected


@pytest.mark.google_behaviour("qido-unsupported-key")
@pytest.mark.parametrize(
    ("level", "params", "policy", "field"),
    [
        (Level.INSTANCES, [("SOPClassUID", "1.2")], GOOGLE, "SOPClassUID"),
        (Level.STUDIES, [("Modality", "CT")], GOOGLE, "Modality"),
        (Level.STUDIES, [("SeriesInstanceUID", "1.2")], GOOGLE, "SeriesInstanceUID"),
        (Level.SERIES, [("SOPInstanceUID", "1.2")], GOOGLE, "SOPInstanceUID"),
        (Level.STUDIES, [("ModalitiesInStudy", "CT")], GOOGLE, "ModalitiesInStudy"),
        (Level.STUDIES, [("TimezoneOffsetFromUTC", "+0100")], GOOGLE, "TimezoneOffsetFromUTC"),
        (Level.STUDIES, [("00080060", "CT")], GOOGLE, "00080060"),
        (Level.STUDIES, [("Manufacturer", "ACME")], STANDARD, "Manufacturer"),
        (Level.STUDIES, [("PatientsName", "x")], STANDARD, "PatientsName"),
        (Level.STUDIES, [("RequestAttributesSequence.StudyID", "x")], STANDARD, None),
        (Level.STUDIES, [("includefield", "AvailableTransferSyntaxUID")], GOOGLE, "includefield"),
        (Level.STUDIES, [("includefield", "00083002")], STANDARD, "includefield"),
        (Level.STUDIES, [("includefield", "StudyDescription,Nope")], GOOGLE, "includefield"),
        (Level.STUDIES, [("limit", "0")], GOOGLE, "limit"),
        (Level.STUDIES, [("limit", "-5")], GOOGLE, "limit"),
        (Level.STUDIES, [("limit", "ten")], GOOGLE, "limit"),
        (Level.STUDIES, [("limit", "10"), ("limit", "20")], GOOGLE, "limit"),
        (Level.STUDIES, [("offset", "-1")], GOOGLE, "offset"),
        (Level.STUDIES, [("offset", "1000001")], GOOGLE, "offset"),
        (Level.STUDIES, [("fuzzymatching", "yes")], GOOGLE, "fuzzymatching"),
        (Level.STUDIES, [("PatientID", "a"), ("00100020", "b")], GOOGLE, "00100020"),
        (Level.STUDIES, [("StudyDate", "2020-01-01")], GOOGLE, "StudyDate"),
        (Level.STUDIES, [("StudyDate", "20200230")], GOOGLE, "StudyDate"),
        (Level.STUDIES, [("StudyDate", "20200201-20200101")], GOOGLE, "StudyDate"),
        (Level.STUDIES, [("StudyDate", "-")], GOOGLE, "StudyDate"),
        (Level.STUDIES, [("StudyDate", "2020*")], STANDARD, "StudyDate"),
        (Level.STUDIES, [("StudyInstanceUID", "1.2.*")], STANDARD, "StudyInstanceUID"),
        (Level.STUDIES, [("StudyTime", "2500")], STANDARD, "StudyTime"),
        (Level.INSTANCES, [("InstanceNumber", "one")], STANDARD, "InstanceNumber"),
    ],
)
def test_bad_parameters_are_invalid_arguments_naming_them(
    level: Level, params: Params, policy: DicomWebPolicy, field: str | None
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_request(level, params, policy)
    name = field or params[0][0]
    assert raised.value.field == name
    assert name in raised.value.message


@pytest.mark.google_behaviour("qido-limit-offset")
@pytest.mark.parametrize(
    ("level", "params", "limit", "offset"),
    [
        (Level.STUDIES, [], 100, 0),
        (Level.SERIES, [], 100, 0),
        (Level.INSTANCES, [], 1000, 0),
        (Level.STUDIES, [("limit", "5000"), ("offset", "1000000")], 5000, 1_000_000),
        (Level.STUDIES, [("limit", "5001")], 5000, 0),
        (Level.SERIES, [("limit", "999999")], 5000, 0),
        (Level.INSTANCES, [("limit", "50001")], 50000, 0),
    ],
)
def test_limit_defaults_per_level_and_is_lowered_to_its_maximum(
    level: Level, params: Params, limit: int, offset: int
) -> None:
    query = parse_request(level, params, GOOGLE).query
    assert (query.limit, query.offset) == (limit, offset)


@pytest.mark.google_behaviour("qido-searchable-keys")
def test_every_searchable_google_key_is_accepted_by_keyword_and_by_tag() -> None:
    assert GOOGLE.searchable_keys is not None
    for level in Level:
        for keyword in GOOGLE.searchable_keys[level.value]:
            attr = qido.attribute(keyword)
            assert attr is not None
            for key in (keyword, attr.tag):
                parse_request(level, [(key, "20200101")], GOOGLE)


# --- results --------------------------------------------------------------------------------


def tags_of(level: Level, params: Params | None = None, **scope: str) -> list[str]:
    return list(parse_request(level, params or [], GOOGLE, **scope).selection.tags)


@pytest.mark.google_behaviour("qido-default-attributes")
def test_default_attributes_follow_the_level_and_the_scope() -> None:
    study = qido.DEFAULT_TAGS[Level.STUDIES]
    series = qido.DEFAULT_TAGS[Level.SERIES]
    assert tags_of(Level.STUDIES) == list(study)
    in_study = tags_of(Level.SERIES, study_uid="1.2")
    assert in_study == list(series)
    everywhere = set(tags_of(Level.SERIES))
    assert set(series) <= everywhere
    assert {"0020000D", "00100010", "00080056"} <= everywhere
    assert qido.NUMBER_OF_STUDY_RELATED_SERIES not in everywhere
    in_series = tags_of(Level.INSTANCES, study_uid="1.2", series_uid="1.2.3")
    assert in_series == list(qido.DEFAULT_TAGS[Level.INSTANCES])
    in_study_instances = set(tags_of(Level.INSTANCES, study_uid="1.2"))
    assert "0020000E" in in_study_instances
    assert "0020000D" not in in_study_instances
    assert qido.NUMBER_OF_SERIES_RELATED_INSTANCES not in in_study_instances


@pytest.mark.google_behaviour("qido-includefield")
def test_includefield_and_matching_keys_add_attributes() -> None:
    tags = tags_of(
        Level.STUDIES,
        [("includefield", "StudyDescription,00101010"), ("includefield", "00091097")],
    )
    assert tags[-3:] == ["00081030", "00101010", "00091097"]
    assert tags_of(Level.INSTANCES, [("Modality", "CT")], study_uid="1", series_uid="2")[-1] == (
        "00080060"
    )


# --- searching over real SQLite ---------------------------------------------------------------

SC = SecondaryCaptureImageStorage
STUDIES = {
    "1.2.1": dict(PatientName="Doe^John", PatientID="P1", StudyDate="20200105", Modality="CT"),
    "1.2.2": dict(PatientName="Smith^Jane", PatientID="P2", StudyDate="20200220", Modality="MR"),
    "1.2.3": dict(PatientName="Müller^Jürgen", PatientID="P3", StudyDate="20191231", Modality="CT"),
    "1.2.4": dict(
        PatientName="Yamada^Tarou=山田^太郎", PatientID="P4", StudyDate="20210101", Modality="US"
    ),
}


@pytest.fixture(params=["index-driven", "row-walking"])
def plan(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both SQLite plans: read a condition's matches from the index, or test rows in order."""
    driving = request.param == "index-driven"
    monkeypatch.setattr(sqlite_search, "_drive", lambda *_: driving)
    return str(request.param)


@pytest.fixture
async def instances(catalog: SqliteCatalog, blobs: LocalBlobStore) -> Instances:
    await catalog.create_dataset(Dataset(DATASET))
    await catalog.create_dicom_store(DicomStore(STORE))
    return Instances(catalog, blobs, Operations(catalog, PageTokens(b"k" * 32), concurrency=1))


@pytest.fixture
async def stored(instances: Instances) -> Instances:
    for study, attributes in STUDIES.items():
        for number in (1, 2):
            ds = new_instance(
                StudyInstanceUID=study,
                SeriesInstanceUID=f"{study}.1",
                SOPInstanceUID=f"{study}.1.{number}",
                SOPClassUID=CTImageStorage if number == 1 else SC,
                SpecificCharacterSet="ISO_IR 192",
                AccessionNumber=f"A{study[-1]}",
                InstanceNumber=number,
                SeriesNumber=3,
                Manufacturer="ACME",
                **attributes,
            )
            result = await instances.ingest(STORE, io.BytesIO(part10(ds)))
            assert result.stored, result.detail
    return instances


async def search(
    catalog: SqliteCatalog, level: Level, params: Params, policy: DicomWebPolicy = GOOGLE
) -> list[dict[str, Any]]:
    return await Search(catalog).search(STORE, parse_request(level, params, policy))


def study_uids(results: list[dict[str, Any]]) -> list[str]:
    return [r["0020000D"]["Value"][0] for r in results]


@pytest.mark.usefixtures("stored", "plan")
@pytest.mark.parametrize(
    ("params", "policy", "expected"),
    [
        ([], GOOGLE, ["1.2.1", "1.2.2", "1.2.3", "1.2.4"]),
        ([("StudyDate", "20200105")], GOOGLE, ["1.2.1"]),
        ([("StudyDate", "20200101-20200229")], GOOGLE, ["1.2.1", "1.2.2"]),
        ([("StudyDate", "20200106-")], GOOGLE, ["1.2.2", "1.2.4"]),
        ([("StudyDate", "-20200105")], GOOGLE, ["1.2.1", "1.2.3"]),
        ([("PatientName", "Doe^John")], GOOGLE, ["1.2.1"]),
        ([("PatientName", "Doe^John^^")], GOOGLE, ["1.2.1"]),
        ([("PatientName", "doe^john")], GOOGLE, []),
        ([("PatientName", "Yamada^Tarou")], GOOGLE, ["1.2.4"]),
        ([("PatientName", "jo"), ("fuzzymatching", "true")], GOOGLE, ["1.2.1"]),
        ([("PatientName", "Do"), ("fuzzymatching", "true")], GOOGLE, ["1.2.1"]),
        ([("PatientName", "John Doe"), ("fuzzymatching", "true")], GOOGLE, ["1.2.1"]),
        ([("PatientName", "ohn"), ("fuzzymatching", "true")], GOOGLE, []),
        ([("PatientName", "JÜRG"), ("fuzzymatching", "true")], GOOGLE, ["1.2.3"]),
        ([("PatientName", "山田"), ("fuzzymatching", "true")], GOOGLE, ["1.2.4"]),
        ([("PatientName", "Doe*")], GOOGLE, []),
        ([("PatientName", "Doe*")], STANDARD, ["1.2.1"]),
        ([("PatientName", "*ll*")], STANDARD, ["1.2.3"]),
        ([("PatientName", "D?e^J*")], STANDARD, ["1.2.1"]),
        ([("PatientID", "P2")], GOOGLE, ["1.2.2"]),
        ([("00100020", "P2")], GOOGLE, ["1.2.2"]),
        ([("AccessionNumber", "A3")], GOOGLE, ["1.2.3"]),
        ([("StudyInstanceUID", "1.2.1,1.2.2")], GOOGLE, []),
        ([("StudyInstanceUID", "1.2.1,1.2.2")], STANDARD, ["1.2.1", "1.2.2"]),
        ([("ModalitiesInStudy", "CT")], STANDARD, ["1.2.1", "1.2.3"]),
        ([("SOPClassUID", SC), ("PatientID", "P4")], STANDARD, ["1.2.4"]),
        ([("PatientID", "P1"), ("StudyDate", "20200105")], GOOGLE, ["1.2.1"]),
        ([("PatientID", "P1"), ("StudyDate", "20200106-")], GOOGLE, []),
        ([("limit", "2"), ("offset", "1")], GOOGLE, ["1.2.2", "1.2.3"]),
        ([("offset", "4")], GOOGLE, []),
    ],
)
async def test_studies_match_the_query(
    catalog: SqliteCatalog, params: Params, policy: DicomWebPolicy, expected: list[str]
) -> None:
    assert study_uids(await search(catalog, Level.STUDIES, params, policy)) == expected


@pytest.mark.usefixtures("stored", "plan")
@pytest.mark.parametrize(
    ("level", "params", "expected"),
    [
        (Level.SERIES, [("Modality", "CT")], ["1.2.1.1", "1.2.3.1"]),
        (Level.SERIES, [("Modality", "CT"), ("StudyDate", "20200101-")], ["1.2.1.1"]),
        (Level.SERIES, [("SeriesInstanceUID", "1.2.2.1")], ["1.2.2.1"]),
        (Level.INSTANCES, [("SOPInstanceUID", "1.2.4.1.2")], ["1.2.4.1.2"]),
        (Level.INSTANCES, [("PatientID", "P3")], ["1.2.3.1.1", "1.2.3.1.2"]),
        (Level.INSTANCES, [("Modality", "US"), ("limit", "1"), ("offset", "1")], ["1.2.4.1.2"]),
    ],
)
async def test_series_and_instances_match_the_query(
    catalog: SqliteCatalog, level: Level, params: Params, expected: list[str]
) -> None:
    tag = "0020000E" if level is Level.SERIES else "00080018"
    found = [r[tag]["Value"][0] for r in await search(catalog, level, params)]
    assert found == expected


@pytest.mark.google_behaviour("qido-default-attributes", "qido-missing-attributes")
@pytest.mark.usefixtures("stored")
async def test_study_results_have_the_default_attributes_and_computed_ones(
    catalog: SqliteCatalog,
) -> None:
    (result,) = await search(catalog, Level.STUDIES, [("PatientID", "P1")])
    assert list(result) == sorted(qido.DEFAULT_TAGS[Level.STUDIES])
    assert result["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}
    assert result["00080050"] == {"vr": "SH", "Value": ["A1"]}
    assert result["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}
    assert result["00080061"] == {"vr": "CS", "Value": ["CT"]}
    assert result["00201206"] == {"vr": "IS", "Value": [1]}
    assert result["00201208"] == {"vr": "IS", "Value": [2]}
    # Missing default attributes are present with their VR only
    # (docs/google-behaviour.md#qido-missing-attributes).
    for tag, vr in [("00080030", "TM"), ("00080090", "PN"), ("00100030", "DA"), ("00200010", "SH")]:
        assert result[tag] == {"vr": vr}


@pytest.mark.google_behaviour("qido-default-attributes")
@pytest.mark.usefixtures("stored")
async def test_series_and_instance_results_have_their_level_s_attributes(
    catalog: SqliteCatalog,
) -> None:
    (series,) = await search(catalog, Level.SERIES, [("SeriesInstanceUID", "1.2.1.1")])
    assert series["00080060"] == {"vr": "CS", "Value": ["CT"]}
    assert series["00201209"] == {"vr": "IS", "Value": [2]}
    assert series["00400275"] == {"vr": "SQ"}
    assert series["0020000D"]["Value"] == ["1.2.1"]  # not scoped to a study: study attributes
    (instance,) = await search(catalog, Level.INSTANCES, [("SOPInstanceUID", "1.2.1.1.2")])
    assert instance["00080016"] == {"vr": "UI", "Value": [SC]}
    assert instance["00200013"] == {"vr": "IS", "Value": [2]}
    assert instance["00280010"] == {"vr": "US"}
    assert instance["00280008"] == {"vr": "IS"}
    assert "00201209" not in instance


@pytest.mark.google_behaviour("qido-includefield")
@pytest.mark.usefixtures("stored")
async def test_includefield_all_adds_every_attribute_of_the_level(
    catalog: SqliteCatalog,
) -> None:
    params = [("PatientID", "P4"), ("includefield", "all")]
    (study,) = await search(catalog, Level.STUDIES, params)
    assert "00080060" not in study  # Modality: a series attribute
    assert "00080070" not in study  # Manufacturer: an instance attribute
    (series,) = await search(catalog, Level.SERIES, params)
    assert series["00200011"] == {"vr": "IS", "Value": [3]}
    assert "00200011" not in (await search(catalog, Level.SERIES, params[:1]))[0]
    instance, _ = await search(catalog, Level.INSTANCES, params)
    assert instance["00080070"] == {"vr": "LO", "Value": ["ACME"]}
    picked, _ = await search(catalog, Level.INSTANCES, params[:1])
    assert "00080070" not in picked
    assert {t: v for t, v in instance.items() if t in picked} == picked


# --- storage of the index ------------------------------------------------------------------


def count_rows(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


async def test_index_rows_go_with_their_instance(
    catalog: SqliteCatalog, stored: Instances, tmp_path: Path
) -> None:
    path = tmp_path / "catalog.sqlite3"
    assert count_rows(path, "instance_attributes") > 0
    assert count_rows(path, "person_name_tokens") > 0
    for study in STUDIES:
        for number in (1, 2):
            await stored.delete_instance(STORE, study, f"{study}.1", f"{study}.1.{number}")
    assert count_rows(path, "instance_attributes") == 0
    assert count_rows(path, "person_name_tokens") == 0


def apply_migrations(path: Path, upto: int) -> None:
    folder = resources.files("dicomstore.catalog") / "migrations"
    scripts = sorted(e.name for e in folder.iterdir() if e.name.endswith(".sql"))
    with sqlite3.connect(path) as db:
        for name in scripts:
            version = int(name.split("_", 1)[0])
            if version <= upto:
                db.executescript((folder / name).read_text(encoding="utf-8"))
                db.execute(f"PRAGMA user_version={version}")


async def test_instances_stored_before_the_index_existed_are_indexed(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    apply_migrations(path, 2)
    metadata = {
        "00080020": {"vr": "DA", "Value": ["20200105"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John^^", "Ideographic": "ド"}]},
        "00100020": {"vr": "LO", "Value": ["P1"]},
        "00200013": {"vr": "IS", "Value": [7]},
    }
    with sqlite3.connect(path) as db:
        db.executescript(
            "INSERT INTO datasets VALUES (1, 'projects/p/locations/l', 'd', 'UTC', 0);"
            "INSERT INTO dicom_stores VALUES (1, 1, 's', '{}', 0);"
            "INSERT INTO studies (id, store_key, study_uid) VALUES (1, 1, '1.2');"
            "INSERT INTO series (id, study_key, series_uid) VALUES (1, 1, '1.2.3');"
        )
        db.execute(
            "INSERT INTO instances (series_key, store_key, sop_uid, sop_class_uid,"
            " transfer_syntax_uid, metadata, structured_size, state)"
            " VALUES (1, 1, '1.2.3.4', '1.2', '1.2.840.10008.1.2.1', ?, 10, 1)",
            (json.dumps(metadata),),
        )
    catalog = SqliteCatalog(path)
    await catalog.open()
    try:
        for params, policy in [
            ([("PatientID", "P1")], GOOGLE),
            ([("PatientName", "Doe^John")], GOOGLE),
            ([("PatientName", "jo"), ("fuzzymatching", "true")], GOOGLE),
            ([("StudyDate", "20200101-20200131")], GOOGLE),
            ([("InstanceNumber", "7")], STANDARD),
        ]:
            assert len(await search(catalog, Level.INSTANCES, params, policy)) == 1, params
    finally:
        await catalog.close()


# --- work does not grow with the store (no timing) ---------------------------------------


def synthetic(n: int) -> Iterator[NewInstance]:
    """Studies of one series of four instances; a patient per study; CT and MR alternate."""
    for i in range(n):
        study, series, sop = f"1.9.{i // 4}", f"1.9.{i // 4}.1", f"1.9.{i // 4}.1.{i % 4}"
        name = f"Family{i // 4:04d}^Given{i % 7}"
        attributes = {
            "StudyInstanceUID": study,
            "SeriesInstanceUID": series,
            "SOPInstanceUID": sop,
            "PatientID": f"P{i // 4}",
            "PatientName": name,
            "StudyDate": f"{date(2020, 1, 1) + timedelta(days=i // 4):%Y%m%d}",
            "Modality": ("CT", "MR")[i % 2],
            "AccessionNumber": f"A{i // 4}",
        }
        study_json = {"0020000D": {"vr": "UI", "Value": [study]}}
        yield NewInstance(
            study, series, sop, SC, "1.2.840.10008.1.2.1", 1, study_json, {}, {}, attributes
        )


async def grow(catalog: SqliteCatalog, instances: Iterator[NewInstance], n: int) -> None:
    """Add `n` instances, concurrently: they commit in groups."""

    async def add(new: NewInstance) -> None:
        key = await catalog.reserve_instance_key(STORE)
        await catalog.add_instance(key, new, 10, visible=True)

    await asyncio.gather(*(add(new) for _, new in zip(range(n), instances, strict=False)))


SELECTIVE: list[tuple[Level, Params, dict[str, str]]] = [
    (Level.STUDIES, [("PatientID", "P3")], {}),
    # The studies searches of the benchmark's mix (a week of studies, a name prefix matching
    # every study or one), read through `study_values`.
    (Level.STUDIES, [("StudyDate", "20200301-20200307")], {}),
    (Level.STUDIES, [("PatientName", "Family*")], {}),
    (Level.STUDIES, [("PatientName", "Family0007*")], {}),
    (Level.STUDIES, [("AccessionNumber", "A5")], {}),
    (Level.STUDIES, [("PatientName", "family0003"), ("fuzzymatching", "true")], {}),
    (Level.STUDIES, [("limit", "10")], {}),
    (Level.STUDIES, [("StudyDate", "20200105-20200107")], {}),
    (Level.SERIES, [("Modality", "CT"), ("limit", "10")], {}),
    (Level.SERIES, [], {"study_uid": "1.9.2"}),
    (Level.INSTANCES, [("SOPInstanceUID", "1.9.7.1.2")], {}),
    (Level.INSTANCES, [], {"study_uid": "1.9.7", "series_uid": "1.9.7.1"}),
    (Level.INSTANCES, [("limit", "10")], {}),
]


async def test_searches_read_no_more_of_a_store_ten_times_larger(
    catalog: SqliteCatalog, instances: Instances
) -> None:
    """SQLite virtual-machine steps (in hundreds, counted by a progress handler) stand in for
    time: a search that scans the store would take ten times as many at ten times the size."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    source = synthetic(4000)
    used: list[list[int]] = []
    for added in (400, 3600):
        await grow(catalog, source, added)
        for reader in catalog._readers:
            await reader.set_progress_handler(count, 100)
        used.append([])
        for level, params, scope in SELECTIVE:
            steps = 0
            found = await Search(catalog).search(
                STORE, parse_request(level, params, STANDARD, **scope)
            )
            assert found, params
            used[-1].append(steps)
    # Choosing a plan counts up to sqrt(limit x store size) index entries, so work may grow by
    # sqrt(10) at most; reading every instance would grow it tenfold.
    for (level, params, _), small, large in zip(SELECTIVE, *used, strict=True):
        assert large <= small * 10**0.5 + 5, (level, params, small, large)
        if level is Level.STUDIES and params and params[0][0] in study_values.STUDY_KEYWORDS:
            # Flat: a walk or a drive reads about one page of studies at any size.
            assert large <= small * 1.5 + 5, (level, params, small, large)
