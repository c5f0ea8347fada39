"""Which catalog `--catalog` names: a PostgreSQL database by its postgresql:// URL or, by
default, the SQLite file `DATA_DIR/catalog.sqlite`."""

from __future__ import annotations

from pathlib import Path

from dicomstore.catalog.postgres import PostgresCatalog
from dicomstore.catalog.sqlite import SqliteCatalog
from dicomstore.core.ports import Catalog


def catalog_for(url: str, sqlite_path: Path) -> Catalog:
    """The unopened catalog of `--catalog` (`url`, "" for SQLite at `sqlite_path`)."""
    if url:
        return PostgresCatalog(url)
    return SqliteCatalog(sqlite_path)
