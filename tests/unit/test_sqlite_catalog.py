"""What is particular to SqliteCatalog: schema versions, migrations and the journal mode.

The behaviour every catalog shares is in tests/contract/test_catalog.py.
"""

from __future__ import annotations

import sqlite3
from importlib import resources
from pathlib import Path

import pytest

from dicomstore.catalog import sqlite_search
from dicomstore.catalog.sqlite import SqliteCatalog
from dicomstore.catalog.sqlite_search import DRIVING_KEYWORDS
from dicomstore.core.errors import FailedPrecondition
from dicomstore.core.model import Dataset
from dicomstore.core.names import DatasetName, LocationName
from dicomstore.core.queries import Condition, MatchKind

DATASET = DatasetName(LocationName("p", "l"), "d")


def latest_version() -> int:
    folder = resources.files("dicomstore.catalog") / "migrations"
    return max(int(e.name.split("_", 1)[0]) for e in folder.iterdir() if e.name.endswith(".sql"))


def pragma(path: Path, name: str) -> object:
    with sqlite3.connect(path) as db:
        return db.execute(f"PRAGMA {name}").fetchone()[0]


async def test_open_refuses_catalog_with_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite3"
    newer = latest_version() + 1
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={newer}")
    catalog = SqliteCatalog(path)
    try:
        with pytest.raises(FailedPrecondition) as caught:
            await catalog.open()
    finally:
        await catalog.close()
    assert "upgrade dicomstore" in caught.value.message
    assert str(newer) in caught.value.message
    assert pragma(path, "user_version") == newer  # the file is left as it was


async def test_open_applies_migrations_once_when_reopened(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite3"
    first = SqliteCatalog(path)
    await first.open()
    await first.create_dataset(Dataset(DATASET, "Europe/Paris"))
    await first.close()
    assert pragma(path, "user_version") == latest_version()

    second = SqliteCatalog(path)
    await second.open()  # re-running a migration would fail on its CREATE TABLE
    try:
        assert await second.get_dataset(DATASET) == Dataset(DATASET, "Europe/Paris")
    finally:
        await second.close()
    assert pragma(path, "user_version") == latest_version()


async def test_open_creates_missing_parent_folders(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "catalog.sqlite3"
    catalog = SqliteCatalog(path)
    await catalog.open()
    await catalog.close()
    assert path.is_file()


async def test_journal_mode_is_wal(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite3"
    catalog = SqliteCatalog(path)
    await catalog.open()
    try:
        assert pragma(path, "journal_mode") == "wal"
    finally:
        await catalog.close()


async def test_each_driving_keyword_has_its_value_index_and_searches_use_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "catalog.sqlite3"
    catalog = SqliteCatalog(path)
    await catalog.open()
    await catalog.close()
    with sqlite3.connect(path) as db:
        names = {
            row[0]
            for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index'"
                " AND tbl_name = 'instance_attributes' AND sql IS NOT NULL"
            )
        }
        assert names == {f"instance_attributes_{keyword}" for keyword in DRIVING_KEYWORDS}
        sql, params = sqlite_search._hits(Condition("PatientID", MatchKind.EXACT, ("P1",)))
        plan = " ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        assert "instance_attributes_PatientID" in plan, plan
