"""What the PostgreSQL catalog's search does beyond the Catalog contract (tests/contract runs
that on it): each search is one statement, two for a studies search through `study_values`
(the store's key and a page's counts are read inside them, and the page is not read when no
study has the value), and one more when nothing matches, to tell a missing store from no match
(unless the first statement found the store); pages past the first agree with the first under
both plans of a studies search. Against the session's cluster (tests/postgres.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from tests.contract.test_catalog_search import instance as contract_instance
from tests.contract.test_catalog_search import one
from tests.postgres import (
    database_url,
    drop_database,
    postgres_cluster,  # noqa: F401  (the session's cluster)
)

from dicomstore.catalog import postgres_search
from dicomstore.catalog.postgres import PostgresCatalog
from dicomstore.core.errors import NotFound
from dicomstore.core.model import Dataset, DicomStore, NewInstance
from dicomstore.core.names import DatasetName, DicomStoreName
from dicomstore.core.queries import Condition, Level, MatchKind, Query

DATASET = DatasetName.parse("projects/p/locations/l/datasets/d")
STORE = DicomStoreName(DATASET, "s")
MISSING = DicomStoreName(DATASET, "missing")
#: Patients of the studies 1 to 7, in the order they are stored (study 7 invisible).
PATIENTS = ("SMITH^A", "JONES^B", "SMITH^C", "SMITH^D", "NGUYEN^E", "SMITH^F", "DOE^G")


def instance(study: int, series: int, number: int, modality: str) -> NewInstance:
    """Instance `number` of series `series` of study `study` (UIDs 1.study.series.number)."""
    study_uid = f"1.{study}"
    return contract_instance(
        study_uid,
        f"{study_uid}.{series}",
        f"{study_uid}.{series}.{number}",
        patient=PATIENTS[study - 1],
        patient_id=f"P{study}",
        modality=modality,
    )


@pytest.fixture
async def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[PostgresCatalog]:
    """A catalog of six studies, each of a CT series of two instances and an MR one of one,
    and a seventh of one instance not visible yet."""
    request.getfixturevalue("postgres_cluster")
    catalog = PostgresCatalog(database_url(tmp_path))
    await catalog.open()
    try:
        await catalog.create_dataset(Dataset(DATASET))
        await catalog.create_dicom_store(DicomStore(STORE))
        for study in range(1, 7):
            for new in (
                instance(study, 1, 1, "CT"),
                instance(study, 1, 2, "CT"),
                instance(study, 2, 1, "MR"),
            ):
                key = await catalog.reserve_instance_key(STORE)
                await catalog.add_instance(key, new, 100, visible=True)
        key = await catalog.reserve_instance_key(STORE)
        await catalog.add_instance(key, instance(7, 1, 1, "CT"), 100, visible=False)
        yield catalog
    finally:
        await catalog.close()
        drop_database(tmp_path)


def counting(
    catalog: PostgresCatalog, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], Sequence[str]]:
    """Record the statements the catalog runs from now on; the function returns them."""
    statements: list[str] = []
    run: Callable[[str, Sequence[Any]], Awaitable[Any]] = catalog._all

    async def recorded(sql: str, params: Sequence[Any]) -> Any:
        statements.append(sql)
        return await run(sql, params)

    monkeypatch.setattr(catalog, "_all", recorded)
    return lambda: statements


def prefix(pattern: str) -> Condition:
    return Condition("PatientName", MatchKind.WILDCARD, (pattern,))


def exact(keyword: str, value: str) -> Condition:
    return Condition(keyword, MatchKind.EXACT, (value,))


SERIES_OF_4 = ("1.4", "1.4.1")


@pytest.mark.parametrize(
    ("query", "found", "statements"),
    [
        pytest.param(
            Query(Level.STUDIES, conditions=(prefix("SMITH*"),)),
            ["1.1", "1.3", "1.4", "1.6"],
            2,
            id="studies by a name prefix",
        ),
        pytest.param(
            Query(Level.STUDIES, conditions=(exact("PatientID", "P5"),)),
            ["1.5"],
            2,
            id="studies by PatientID",
        ),
        pytest.param(
            Query(Level.STUDIES, conditions=(exact("Modality", "MR"),), limit=2),
            ["1.1", "1.2"],
            1,
            id="studies by Modality",
        ),
        pytest.param(Query(Level.STUDIES, study_uid="1.2"), ["1.2"], 1, id="a study"),
        pytest.param(
            Query(Level.SERIES, study_uid="1.3", conditions=(exact("Modality", "MR"),)),
            ["1.3.2"],
            1,
            id="series of a study by Modality",
        ),
        pytest.param(
            Query(Level.INSTANCES, *SERIES_OF_4),
            ["1.4.1.1", "1.4.1.2"],
            1,
            id="instances of a series",
        ),
        pytest.param(
            Query(Level.INSTANCES, *SERIES_OF_4, attributes=("00080018",)),
            ["1.4.1.1", "1.4.1.2"],
            1,
            id="instances of a series, attributes picked",
        ),
        # Nothing found: one more, which finds the store, unless the first found it.
        pytest.param(
            Query(Level.STUDIES, conditions=(prefix("DOE*"),)), [], 2, id="no visible study"
        ),
        pytest.param(
            Query(Level.STUDIES, conditions=(prefix("ROE*"),)), [], 1, id="no study by name"
        ),
        pytest.param(
            Query(Level.STUDIES, conditions=(exact("Modality", "US"),)), [], 2, id="no study"
        ),
        pytest.param(Query(Level.SERIES, study_uid="1.9"), [], 2, id="no series"),
        pytest.param(Query(Level.INSTANCES, "1.4", "1.4.9"), [], 2, id="no instance"),
    ],
)
async def test_a_search_runs_one_statement_two_through_study_values(
    catalog: PostgresCatalog,
    monkeypatch: pytest.MonkeyPatch,
    query: Query,
    found: list[str],
    statements: int,
) -> None:
    ran = counting(catalog, monkeypatch)
    matches = await catalog.search(STORE, query)
    assert [m.sop_uid or m.series_uid or m.study_uid for m in matches] == found
    assert len(ran()) == statements, ran()


async def test_study_results_carry_the_counts_read_with_their_page(
    catalog: PostgresCatalog,
) -> None:
    for query in (
        Query(Level.STUDIES, conditions=(prefix("NGUYEN*"),)),
        Query(Level.STUDIES, study_uid="1.5"),
    ):
        (match,) = await catalog.search(STORE, query)
        assert (match.study_uid, match.series_count, match.instance_count) == ("1.5", 2, 3)
        assert match.modalities == ("CT", "MR")
        assert match.study_attributes["00100020"] == one("LO", "P5")
    (series,) = await catalog.search(STORE, Query(Level.SERIES, study_uid="1.5", limit=1))
    assert (series.series_uid, series.instance_count) == ("1.5.1", 2)
    assert series.study_attributes["00100020"] == one("LO", "P5")
    assert series.series_attributes["00080060"] == one("CS", "CT")


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(Query(Level.STUDIES, conditions=(prefix("SMITH*"),)), id="name prefix"),
        pytest.param(Query(Level.STUDIES, conditions=(exact("PatientID", "P1"),)), id="PatientID"),
        pytest.param(Query(Level.STUDIES), id="studies"),
        pytest.param(Query(Level.SERIES, study_uid="1.1"), id="series"),
        pytest.param(Query(Level.INSTANCES, *SERIES_OF_4), id="instances"),
        pytest.param(Query(Level.INSTANCES, attributes=("00080018",)), id="attributes picked"),
    ],
)
async def test_a_search_of_a_missing_store_is_not_found_whatever_its_plan(
    catalog: PostgresCatalog, query: Query
) -> None:
    with pytest.raises(NotFound):
        await catalog.search(MISSING, query)


@pytest.mark.parametrize("drive", [True, False], ids=["drive", "walk"])
@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_studies_pages_past_the_first_agree_with_the_first_under_both_plans(
    catalog: PostgresCatalog, monkeypatch: pytest.MonkeyPatch, drive: bool, limit: int
) -> None:
    """The first page's OFFSET is written into the statement, the others' are a parameter."""
    monkeypatch.setattr(postgres_search, "_drive", lambda *_: drive)
    condition = prefix("SMITH*")
    whole = await catalog.search(STORE, Query(Level.STUDIES, conditions=(condition,)))
    pages = [
        await catalog.search(
            STORE, Query(Level.STUDIES, conditions=(condition,), limit=limit, offset=offset)
        )
        for offset in range(0, len(whole) + 1, limit)
    ]
    assert [m for page in pages for m in page] == whole
    assert [m.study_uid for m in whole] == ["1.1", "1.3", "1.4", "1.6"]
