"""SqliteWriter: write transactions on one thread, committed in groups, each failing alone."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from dicomstore.catalog.sqlite_writer import SqliteWriter


@pytest.fixture
async def writer(tmp_path: Path) -> AsyncIterator[SqliteWriter]:
    db = sqlite3.connect(tmp_path / "w.sqlite3", isolation_level=None, check_same_thread=False)
    db.executescript(
        "PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;"
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
        "CREATE TABLE child (id INTEGER PRIMARY KEY,"
        " parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);"
        "CREATE TABLE t (v INTEGER UNIQUE);"
    )
    writer = SqliteWriter(db)
    writer.start()
    yield writer
    await writer.close()


def rows(writer_path: Path, table: str) -> list[int]:
    with sqlite3.connect(writer_path) as db:
        return [r[0] for r in db.execute(f"SELECT * FROM {table} ORDER BY 1")]


def insert(value: int) -> Callable[[sqlite3.Connection], int]:
    def job(db: sqlite3.Connection) -> int:
        db.execute("INSERT INTO t (v) VALUES (?)", (value,))
        return value

    return job


async def grouped(
    writer: SqliteWriter, jobs: list[Callable[[sqlite3.Connection], object]]
) -> list[object]:
    """Run `jobs` as one group: the writer is held busy until all of them are queued."""
    entered, release = threading.Event(), threading.Event()

    def holding(db: sqlite3.Connection) -> bool:
        entered.set()
        return release.wait(5)

    hold = asyncio.ensure_future(writer.run(holding))
    assert await asyncio.to_thread(entered.wait, 5)  # the writer thread is inside `holding`
    runs = [asyncio.ensure_future(writer.run(job)) for job in jobs]
    await asyncio.sleep(0)  # each run's first step queues its job, in order
    release.set()
    await hold
    return await asyncio.gather(*runs, return_exceptions=True)


async def test_job_result_is_returned(writer: SqliteWriter, tmp_path: Path) -> None:
    assert await writer.run(insert(7)) == 7
    assert rows(tmp_path / "w.sqlite3", "t") == [7]


async def test_failing_job_in_a_group_is_rolled_back_alone(
    writer: SqliteWriter, tmp_path: Path
) -> None:
    def half_then_fail(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO t (v) VALUES (100)")
        db.execute("INSERT INTO t (v) VALUES (1)")  # a duplicate of the first job's value

    outcomes = await grouped(writer, [insert(1), half_then_fail, insert(2)])
    assert outcomes[0] == 1 and outcomes[2] == 2
    assert isinstance(outcomes[1], sqlite3.IntegrityError)
    assert rows(tmp_path / "w.sqlite3", "t") == [1, 2]  # 100 went with its job


async def test_failing_job_alone_is_rolled_back(writer: SqliteWriter, tmp_path: Path) -> None:
    def half_then_fail(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO t (v) VALUES (100)")
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        await writer.run(half_then_fail)
    assert await writer.run(insert(1)) == 1  # the writer goes on, outside any transaction
    assert rows(tmp_path / "w.sqlite3", "t") == [1]


async def test_failed_commit_fails_every_job_of_the_group(
    writer: SqliteWriter, tmp_path: Path
) -> None:
    def orphan_child(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO child (id, parent) VALUES (1, 42)")  # checked at COMMIT

    outcomes = await grouped(writer, [insert(1), orphan_child, insert(2)])
    assert all(isinstance(o, sqlite3.IntegrityError) for o in outcomes)
    assert rows(tmp_path / "w.sqlite3", "t") == []
    assert await writer.run(insert(3)) == 3  # the writer goes on


async def test_close_finishes_queued_jobs(writer: SqliteWriter, tmp_path: Path) -> None:
    runs = [asyncio.ensure_future(writer.run(insert(n))) for n in range(20)]
    await asyncio.sleep(0)
    await writer.close()
    assert await asyncio.gather(*runs) == list(range(20))
    assert rows(tmp_path / "w.sqlite3", "t") == list(range(20))
