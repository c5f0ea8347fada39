"""The search part of the Catalog port (QIDO-RS): levels, scopes, visibility, paging, matching.

Queries are built directly as `dicomstore.core.queries.Query` values, so these rules hold for any
adapter whatever the HTTP layer does; the query language itself is pinned in
`tests/unit/test_search.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from dicomstore.core.errors import NotFound
from dicomstore.core.model import Dataset, DicomStore, InstanceKey, NewInstance
from dicomstore.core.names import DatasetName, DicomStoreName
from dicomstore.core.ports import Catalog
from dicomstore.core.queries import Condition, Level, Match, MatchKind, Query

DATASET = DatasetName.parse("projects/p/locations/l/datasets/d")
STORE = DicomStoreName(DATASET, "s")
OTHER_STORE = DicomStoreName(DATASET, "t")
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def one(vr: str, value: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": [value]}


def instance(
    study: str,
    series: str,
    sop: str,
    *,
    patient: str = "Doe^John",
    patient_id: str = "P1",
    date: str = "20200105",
    modality: str = "CT",
    institution: str = "General",
) -> NewInstance:
    study_json = {
        "00080020": one("DA", date),
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": patient}]},
        "00100020": one("LO", patient_id),
        "0020000D": one("UI", study),
    }
    series_json = {"00080060": one("CS", modality), "0020000E": one("UI", series)}
    return NewInstance(
        study_uid=study,
        series_uid=series,
        sop_uid=sop,
        sop_class_uid=CT_IMAGE,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        study_attributes=study_json,
        series_attributes=series_json,
        metadata={**study_json, **series_json, "00080018": one("UI", sop)},
        attributes={
            "StudyInstanceUID": study,
            "SeriesInstanceUID": series,
            "SOPInstanceUID": sop,
            "SOPClassUID": CT_IMAGE,
            "PatientName": patient,
            "PatientID": patient_id,
            "StudyDate": date,
            "Modality": modality,
            "InstitutionName": institution,
        },
    )


# Study 1: two series (CT, MR), three instances. Study 2: one series. Study 3: one series.
CORPUS = (
    instance("1.1", "1.1.1", "1.1.1.1"),
    instance("1.1", "1.1.1", "1.1.1.2"),
    instance("1.1", "1.1.2", "1.1.2.1", modality="MR"),
    instance(
        "2.1",
        "2.1.1",
        "2.1.1.1",
        patient="Smith^Jane",
        patient_id="P2",
        date="20210310",
        institution="St Mary",
    ),
    instance("3.1", "3.1.1", "3.1.1.1", patient="Müller^Jürgen", patient_id="P3", date="20191231"),
)


@pytest.fixture
async def stores(catalog: Catalog) -> Catalog:
    await catalog.create_dataset(Dataset(DATASET))
    await catalog.create_dicom_store(DicomStore(STORE))
    await catalog.create_dicom_store(DicomStore(OTHER_STORE))
    return catalog


async def stored(
    catalog: Catalog, new: NewInstance, store: DicomStoreName = STORE, *, visible: bool = True
) -> InstanceKey:
    key = await catalog.reserve_instance_key(store)
    await catalog.add_instance(key, new, 100, visible=visible)
    return key


@pytest.fixture
async def corpus(stores: Catalog) -> list[InstanceKey]:
    return [await stored(stores, new) for new in CORPUS]


def uids(matches: Sequence[Match], level: Level) -> list[str]:
    if level is Level.STUDIES:
        return [m.study_uid for m in matches]
    if level is Level.SERIES:
        return [m.series_uid for m in matches]
    return [m.sop_uid for m in matches]


async def found(catalog: Catalog, query: Query, store: DicomStoreName = STORE) -> list[str]:
    return uids(await catalog.search(store, query), query.level)


def exact(keyword: str, value: str) -> Condition:
    return Condition(keyword, MatchKind.EXACT, (value,))


@pytest.mark.usefixtures("corpus")
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (Query(Level.STUDIES), ["1.1", "2.1", "3.1"]),
        (Query(Level.SERIES), ["1.1.1", "1.1.2", "2.1.1", "3.1.1"]),
        (Query(Level.INSTANCES), ["1.1.1.1", "1.1.1.2", "1.1.2.1", "2.1.1.1", "3.1.1.1"]),
        (Query(Level.SERIES, study_uid="1.1"), ["1.1.1", "1.1.2"]),
        (Query(Level.INSTANCES, study_uid="1.1"), ["1.1.1.1", "1.1.1.2", "1.1.2.1"]),
        (Query(Level.INSTANCES, study_uid="1.1", series_uid="1.1.1"), ["1.1.1.1", "1.1.1.2"]),
        (Query(Level.INSTANCES, study_uid="2.1", series_uid="1.1.1"), []),
        (Query(Level.STUDIES, study_uid="9.9"), []),
    ],
    ids=lambda v: repr(v)[:60] if isinstance(v, Query) else None,
)
async def test_search_returns_each_level_within_its_scope_in_stored_order(
    stores: Catalog, query: Query, expected: list[str]
) -> None:
    assert await found(stores, query) == expected


@pytest.mark.usefixtures("corpus")
@pytest.mark.parametrize(
    ("level", "conditions", "expected"),
    [
        (Level.STUDIES, [exact("PatientID", "P2")], ["2.1"]),
        (Level.STUDIES, [exact("Modality", "MR")], ["1.1"]),
        (Level.SERIES, [exact("Modality", "CT")], ["1.1.1", "2.1.1", "3.1.1"]),
        (Level.INSTANCES, [exact("SOPInstanceUID", "1.1.1.2")], ["1.1.1.2"]),
        (Level.STUDIES, [exact("PatientID", "P1"), exact("Modality", "MR")], ["1.1"]),
        # Every condition must hold on the same instance.
        (Level.SERIES, [exact("PatientID", "P1"), exact("Modality", "US")], []),
        (Level.STUDIES, [Condition("PatientID", MatchKind.ANY_OF, ("P2", "P3"))], ["2.1", "3.1"]),
        (
            Level.STUDIES,
            [Condition("StudyDate", MatchKind.RANGE, ("20200101", "20201231"))],
            ["1.1"],
        ),
        (
            Level.STUDIES,
            [Condition("StudyDate", MatchKind.RANGE, ("20200101", ""))],
            ["1.1", "2.1"],
        ),
        (
            Level.STUDIES,
            [Condition("StudyDate", MatchKind.RANGE, ("", "20200105"))],
            ["1.1", "3.1"],
        ),
        (Level.STUDIES, [Condition("PatientName", MatchKind.WILDCARD, ("S*",))], ["2.1"]),
        (Level.STUDIES, [Condition("PatientName", MatchKind.WILDCARD, ("*^J?ne",))], ["2.1"]),
        (Level.STUDIES, [Condition("PatientName", MatchKind.WILDCARD, ("s*",))], []),
        (Level.STUDIES, [Condition("PatientName", MatchKind.TOKENS, ("jo",))], ["1.1"]),
        (Level.STUDIES, [Condition("PatientName", MatchKind.TOKENS, ("ja", "zz"))], ["2.1"]),
        (Level.STUDIES, [Condition("PatientName", MatchKind.TOKENS, ("jurgen",))], ["3.1"]),
        (Level.STUDIES, [Condition("PatientName", MatchKind.TOKENS, ("ohn",))], []),
        # Keywords Google does not search on: no index of their own, tested instance by instance.
        (Level.STUDIES, [exact("InstitutionName", "St Mary")], ["2.1"]),
        (Level.STUDIES, [exact("SOPClassUID", CT_IMAGE)], ["1.1", "2.1", "3.1"]),
        (Level.INSTANCES, [exact("SOPClassUID", "1.2.3")], []),
        (
            Level.INSTANCES,
            [exact("InstitutionName", "General"), exact("PatientID", "P1")],
            ["1.1.1.1", "1.1.1.2", "1.1.2.1"],
        ),
        (Level.SERIES, [exact("SOPClassUID", CT_IMAGE), exact("Modality", "MR")], ["1.1.2"]),
        (Level.SERIES, [Condition("InstitutionName", MatchKind.RANGE, ("H", ""))], ["2.1.1"]),
        (
            Level.STUDIES,
            [Condition("InstitutionName", MatchKind.WILDCARD, ("Gen*",))],
            ["1.1", "3.1"],
        ),
    ],
)
async def test_search_keeps_what_matches_every_condition(
    stores: Catalog, level: Level, conditions: list[Condition], expected: list[str]
) -> None:
    assert await found(stores, Query(level, conditions=tuple(conditions))) == expected


@pytest.mark.usefixtures("corpus")
@pytest.mark.parametrize(
    ("limit", "offset", "expected"),
    [(2, 0, ["1.1", "2.1"]), (2, 2, ["3.1"]), (5, 1, ["2.1", "3.1"]), (1, 3, [])],
)
async def test_search_pages_with_limit_and_offset(
    stores: Catalog, limit: int, offset: int, expected: list[str]
) -> None:
    assert await found(stores, Query(Level.STUDIES, limit=limit, offset=offset)) == expected


async def test_study_results_count_visible_series_instances_and_modalities(
    stores: Catalog, corpus: list[InstanceKey]
) -> None:
    await stored(stores, instance("1.1", "1.1.3", "1.1.3.1", modality="US"), visible=False)
    first, *_ = await stores.search(STORE, Query(Level.STUDIES))
    assert (first.series_count, first.instance_count) == (2, 3)
    assert first.modalities == ("CT", "MR")
    assert first.study_attributes["00100020"] == one("LO", "P1")


async def test_series_results_carry_their_study_and_instance_count(
    stores: Catalog, corpus: list[InstanceKey]
) -> None:
    first, *_ = await stores.search(STORE, Query(Level.SERIES))
    assert (first.study_uid, first.series_uid, first.instance_count) == ("1.1", "1.1.1", 2)
    assert first.series_attributes["00080060"] == one("CS", "CT")
    assert first.study_attributes["0020000D"] == one("UI", "1.1")


async def test_instance_results_carry_the_requested_metadata(
    stores: Catalog, corpus: list[InstanceKey]
) -> None:
    query = Query(Level.INSTANCES, conditions=(exact("SOPInstanceUID", "2.1.1.1"),))
    (whole,) = await stores.search(STORE, query)
    assert (whole.study_uid, whole.series_uid, whole.sop_uid) == ("2.1", "2.1.1", "2.1.1.1")
    assert whole.metadata == CORPUS[3].metadata
    query = Query(
        Level.INSTANCES,
        conditions=(exact("SOPInstanceUID", "2.1.1.1"),),
        attributes=("00080018", "00080060", "00280010"),
    )
    (picked,) = await stores.search(STORE, query)
    # An adapter may return only the attributes asked for; those it returns are the stored ones.
    for tag in ("00080018", "00080060"):
        assert picked.metadata[tag] == whole.metadata[tag]
    assert "00280010" not in picked.metadata


@pytest.mark.google_behaviour("qido-consistency")
async def test_search_ignores_invisible_instances(stores: Catalog) -> None:
    await stored(stores, instance("4.1", "4.1.1", "4.1.1.1", patient_id="P4"), visible=False)
    for level in Level:
        assert await found(stores, Query(level)) == []
        query = Query(level, conditions=(exact("PatientID", "P4"),))
        assert await found(stores, query) == []


async def test_study_whose_matching_instance_is_invisible_is_not_found(
    stores: Catalog, corpus: list[InstanceKey]
) -> None:
    await stored(stores, instance("1.1", "1.1.1", "1.1.1.9", modality="US"), visible=False)
    assert await found(stores, Query(Level.STUDIES, conditions=(exact("Modality", "US"),))) == []


@pytest.mark.google_behaviour("qido-consistency")
async def test_deleted_and_aborted_instances_leave_the_index(
    stores: Catalog, corpus: list[InstanceKey]
) -> None:
    await stores.delete_instance(corpus[3])
    aborted = await stored(stores, instance("5.1", "5.1.1", "5.1.1.1"), visible=False)
    await stores.abort_instance(aborted)
    assert await found(stores, Query(Level.STUDIES, conditions=(exact("PatientID", "P2"),))) == []
    assert await found(stores, Query(Level.STUDIES)) == ["1.1", "3.1"]
    # The same UIDs can be stored again and are found again.
    await stored(stores, CORPUS[3])
    assert await found(stores, Query(Level.STUDIES, conditions=(exact("PatientID", "P2"),))) == [
        "2.1"
    ]


async def test_a_study_is_found_by_the_values_of_its_visible_instances_only(
    stores: Catalog, corpus: list[InstanceKey]
) -> None:
    """Studies searches read study-level values once per study; a value only a deleted or an
    invisible instance of the study carried finds nothing, at once and after more writes."""
    odd = await stored(
        stores, instance("1.1", "1.1.1", "1.1.1.7", patient="Odd^One", date="20010101")
    )
    await stored(stores, instance("1.1", "1.1.3", "1.1.3.1", patient_id="P8"), visible=False)
    prefix = Condition("PatientName", MatchKind.WILDCARD, ("Odd*",))
    dates = Condition("StudyDate", MatchKind.RANGE, ("20000101", "20021231"))
    for condition in (prefix, dates):
        assert await found(stores, Query(Level.STUDIES, conditions=(condition,))) == ["1.1"]
    await stores.delete_instance(odd)
    for condition in (prefix, dates, exact("PatientID", "P8")):
        assert await found(stores, Query(Level.STUDIES, conditions=(condition,))) == []
    # Another instance of the study with the value finds it again.
    await stored(stores, instance("1.1", "1.1.1", "1.1.1.8", patient="Odd^Two"))
    assert await found(stores, Query(Level.STUDIES, conditions=(prefix,))) == ["1.1"]


async def test_search_stays_within_its_store(stores: Catalog, corpus: list[InstanceKey]) -> None:
    await stored(stores, instance("1.1", "1.1.1", "1.1.1.1", patient_id="P9"), OTHER_STORE)
    assert await found(stores, Query(Level.INSTANCES), OTHER_STORE) == ["1.1.1.1"]
    assert await found(stores, Query(Level.STUDIES, conditions=(exact("PatientID", "P9"),))) == []
    assert await found(stores, Query(Level.STUDIES, conditions=(exact("PatientID", "P1"),))) == [
        "1.1"
    ]


async def test_search_in_a_missing_store_is_not_found(stores: Catalog) -> None:
    with pytest.raises(NotFound):
        await stores.search(DicomStoreName(DATASET, "missing"), Query(Level.STUDIES))
