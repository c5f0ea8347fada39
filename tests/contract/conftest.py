"""Adapters under contract: each port's suite runs once per adapter listed here.

To put a new adapter under contract, add it to `CATALOGS`, `BLOB_STORES` or `BIGQUERY_TABLES`;
the suites must then pass unchanged. Each entry builds a fresh, unopened adapter over storage
rooted at a test's tmp_path, so building a second one over the same root is a restart.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from dicomstore.blobs.local import LocalBlobStore
from dicomstore.catalog.sqlite import SqliteCatalog
from dicomstore.core.ports import BigQueryTable, BlobStore, Catalog
from dicomstore.core.validation import parse_bigquery_table_uri
from dicomstore.destinations.bigquery_duckdb import DuckDbBigQuery

PutBlob = Callable[[int], Awaitable[None]]


CATALOGS: dict[str, Callable[[Path], Catalog]] = {
    "sqlite": lambda root: SqliteCatalog(root / "catalog.sqlite3"),
}
BLOB_STORES: dict[str, Callable[[Path], BlobStore]] = {
    "local": lambda root: LocalBlobStore(root / "blobs"),
}

#: Each builds the table of a `bq://` URI over storage rooted at the given folder. The BigQuery
#: API adapter is not listed: no BigQuery emulator runs here (docs/bigquery.md).
BIGQUERY_TABLES: dict[str, Callable[[Path, str], BigQueryTable]] = {
    "duckdb": lambda root, uri: DuckDbBigQuery(root).table(parse_bigquery_table_uri(uri, "uri")),
}


@pytest.fixture(params=sorted(CATALOGS))
async def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Catalog]:
    """An opened, empty catalog of each adapter kind."""
    adapter = CATALOGS[request.param](tmp_path)
    await adapter.open()
    try:
        yield adapter
    finally:
        await adapter.close()


@pytest.fixture
def reopen(
    request: pytest.FixtureRequest, tmp_path: Path, catalog: Catalog
) -> Callable[[], Catalog]:
    """Build a new, unopened adapter of `catalog`'s kind over the same storage."""
    kind = request.node.callspec.params["catalog"]
    return lambda: CATALOGS[kind](tmp_path)


@pytest.fixture(params=sorted(BLOB_STORES))
async def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    """An opened, empty blob store of each adapter kind."""
    adapter = BLOB_STORES[request.param](tmp_path)
    await adapter.open()
    return adapter


@pytest.fixture
def put_blob(blobs: BlobStore) -> PutBlob:
    """Give a store some content in `blobs` (one small blob, key 1)."""

    async def put(store_key: int) -> None:
        await blobs.write(store_key, 1, io.BytesIO(b"DICM"))

    return put


BigQueryTables = Callable[[str], BigQueryTable]


@pytest.fixture(params=sorted(BIGQUERY_TABLES))
def bigquery_tables(request: pytest.FixtureRequest, tmp_path: Path) -> BigQueryTables:
    """Build the table of a `bq://` URI with each adapter kind, all over one root."""
    return lambda uri: BIGQUERY_TABLES[request.param](tmp_path, uri)
