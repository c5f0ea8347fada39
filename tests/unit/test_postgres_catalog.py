"""What the PostgreSQL catalog does beyond the Catalog contract (tests/contract runs that on
it): versioned migrations, run once; a database newer than the code refused; the indexes QIDO
searches read; faults as domain errors. Against the session's cluster (tests/postgres.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from tests.postgres import (
    database_url,
    drop_database,
    postgres_cluster,  # noqa: F401  (the session's cluster)
)

from dicomstore.catalog import postgres
from dicomstore.catalog.postgres import PostgresCatalog
from dicomstore.catalog.postgres_search import like_pattern
from dicomstore.core.errors import FailedPrecondition, Unavailable
from dicomstore.core.model import Dataset
from dicomstore.core.names import DatasetName, LocationName

DATASET = Dataset(DatasetName(LocationName("p", "l"), "d"), "UTC")


@pytest.fixture
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A new, empty database, dropped after the test."""
    request.getfixturevalue("postgres_cluster")
    try:
        yield database_url(tmp_path)
    finally:
        drop_database(tmp_path)


async def query(url: str, sql: str) -> list[asyncpg.Record]:
    db = await asyncpg.connect(url)
    try:
        return await db.fetch(sql)
    finally:
        await db.close()


async def test_an_empty_database_is_migrated_to_the_last_version(url: str) -> None:
    catalog = PostgresCatalog(url)
    await catalog.open()
    await catalog.create_dataset(DATASET)
    await catalog.close()
    versions = await query(url, "SELECT version FROM schema_version")
    assert [r["version"] for r in versions] == [postgres.migrations()[-1][0]]
    tables = {r[0] for r in await query(url, "SELECT tablename FROM pg_tables")}
    assert {"instances", "instance_attributes", "person_name_tokens", "operations"} <= tables


async def test_a_second_start_runs_no_migration_again(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = PostgresCatalog(url)
    await first.open()
    await first.create_dataset(DATASET)
    await first.close()
    # Were a migration applied again, its script would fail.
    applied = [(version, "SELECT 1 / 0") for version, _ in postgres.migrations()]
    monkeypatch.setattr(postgres, "migrations", lambda: applied)
    again = PostgresCatalog(url)
    await again.open()
    try:
        assert await again.get_dataset(DATASET.name) == DATASET
    finally:
        await again.close()


async def test_a_database_newer_than_the_code_is_refused(url: str) -> None:
    catalog = PostgresCatalog(url)
    await catalog.open()
    await catalog.close()
    await query(url, "UPDATE schema_version SET version = version + 1")
    with pytest.raises(FailedPrecondition, match="newer than this dicomstore"):
        await PostgresCatalog(url).open()


async def test_searches_have_an_index_per_driving_keyword(url: str) -> None:
    catalog = PostgresCatalog(url)
    await catalog.open()
    await catalog.close()
    rows = await query(
        url, "SELECT indexdef FROM pg_indexes WHERE tablename = 'instance_attributes'"
    )
    partial = [r[0] for r in rows if "WHERE" in r[0]]
    assert len(partial) == 9, partial


async def test_a_connection_lost_mid_transaction_is_unavailable_and_the_next_write_works(
    url: str,
) -> None:
    catalog = PostgresCatalog(url)
    await catalog.open()
    try:
        with pytest.raises(Unavailable):
            await catalog._write(
                lambda db: db.execute("SELECT pg_terminate_backend(pg_backend_pid())")
            )
        await catalog.create_dataset(DATASET)
        assert await catalog.get_dataset(DATASET.name) == DATASET
    finally:
        await catalog.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        (
            "postgresql://u@/db?host=/run&password=pw&port=1",
            "postgresql://u@/db?host=/run&password=***&port=1",
        ),
        ("postgresql:///db", "postgresql:///db"),
    ],
)
def test_messages_show_the_url_without_its_password(url: str, shown: str) -> None:
    assert postgres.redacted(url) == shown


@pytest.mark.parametrize(
    ("pattern", "like"),
    [("Smith*", "Smith%"), ("?a*", "_a%"), ("50%_\\x*", "50\\%\\_\\\\x%")],
)
def test_wildcards_become_like_patterns_with_like_s_own_characters_escaped(
    pattern: str, like: str
) -> None:
    assert like_pattern(pattern) == like
