"""Adapters under contract: each port's suite runs once per adapter listed here.

To put a new adapter under contract, add it to `CATALOGS`, `BLOB_STORES`, `CLOUD_STORAGES` or
`BIGQUERY_TABLES`; the suites must then pass unchanged. Each catalog, blob store or table entry
builds a fresh, unopened adapter over storage rooted at a test's tmp_path, so building a second
one over the same root is a restart; each Cloud Storage entry an adapter and the name of a new,
empty bucket.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests import postgres
from tests.fake_gcs import create_bucket
from tests.postgres import postgres_cluster  # noqa: F401  (the fixture the PostgreSQL catalog needs)

from dicomstore.blobs.local import LocalBlobStore
from dicomstore.catalog.postgres import PostgresCatalog
from dicomstore.catalog.sqlite import SqliteCatalog
from dicomstore.core.ports import BigQueryTable, BlobStore, Catalog, CloudStorage
from dicomstore.core.validation import parse_bigquery_table_uri
from dicomstore.destinations.bigquery_duckdb import DuckDbBigQuery
from dicomstore.destinations.gcs_api import GcsApiStorage
from dicomstore.destinations.gcs_local import LocalCloudStorage

PutBlob = Callable[[int], Awaitable[None]]


CATALOGS: dict[str, Callable[[Path], Catalog]] = {
    "sqlite": lambda root: SqliteCatalog(root / "catalog.sqlite3"),
    # A database of the session's cluster per test (tests/postgres.py).
    "postgresql": lambda root: PostgresCatalog(postgres.database_url(root)),
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
    if request.param == "postgresql":
        request.getfixturevalue("postgres_cluster")
    adapter = CATALOGS[request.param](tmp_path)
    await adapter.open()
    try:
        yield adapter
    finally:
        await adapter.close()
        postgres.drop_database(tmp_path)


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


#: Objects per listing page of the Cloud Storage adapters under contract: small, so that the
#: suites list across pages.
LISTING_PAGE = 3


@dataclass(frozen=True)
class BucketUnderTest:
    """A fresh, empty bucket `name` of an adapter under contract."""

    storage: CloudStorage
    name: str


def _local_bucket(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[CloudStorage, str]:
    root = tmp_path / "data" / "gcs"
    (root / "contract-bucket").mkdir(parents=True)
    return LocalCloudStorage(root, page_size=LISTING_PAGE), "contract-bucket"


def new_emulator_bucket(url: str) -> str:
    """Create a bucket of a new name in the emulator at `url` (one emulator serves every test
    of the session); return its name."""
    name = f"contract-{uuid.uuid4().hex[:16]}"
    create_bucket(url, name)
    return name


def _api_bucket(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[CloudStorage, str]:
    url: str = request.getfixturevalue("fake_gcs_url")
    return GcsApiStorage(url, anonymous=True, page_size=LISTING_PAGE), new_emulator_bucket(url)


CLOUD_STORAGES: dict[str, Callable[[Path, pytest.FixtureRequest], tuple[CloudStorage, str]]] = {
    "local": _local_bucket,
    "fake-gcs-server": _api_bucket,
}


@pytest.fixture(params=sorted(CLOUD_STORAGES))
async def bucket(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BucketUnderTest]:
    """An empty bucket of each Cloud Storage adapter; the adapter is closed after the test."""
    storage, name = CLOUD_STORAGES[request.param](tmp_path, request)
    try:
        yield BucketUnderTest(storage, name)
    finally:
        await storage.close()


BigQueryTables = Callable[[str], BigQueryTable]


@pytest.fixture(params=sorted(BIGQUERY_TABLES))
def bigquery_tables(request: pytest.FixtureRequest, tmp_path: Path) -> BigQueryTables:
    """Build the table of a `bq://` URI with each adapter kind, all over one root."""
    return lambda uri: BIGQUERY_TABLES[request.param](tmp_path, uri)
