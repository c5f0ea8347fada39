"""Unit-test fixtures: a real SQLite catalog and a real blob folder under tmp_path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dicomstore.blobs.local import LocalBlobStore
from dicomstore.catalog.sqlite import SqliteCatalog


@pytest.fixture
async def catalog(tmp_path: Path) -> AsyncIterator[SqliteCatalog]:
    """An open, empty catalog (test modules may override it to add datasets)."""
    catalog = SqliteCatalog(tmp_path / "catalog.sqlite3")
    await catalog.open()
    try:
        yield catalog
    finally:
        await catalog.close()


@pytest.fixture
def blob_root(tmp_path: Path) -> Path:
    return tmp_path / "blobs"


@pytest.fixture
async def blobs(blob_root: Path) -> LocalBlobStore:
    store = LocalBlobStore(blob_root)
    await store.open()
    return store
