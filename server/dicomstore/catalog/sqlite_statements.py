"""What the SQLite catalog's parts share: the statements every transaction may run, the
translation of SQLite's faults, and the connection methods each part is given.

The catalog (`sqlite.SqliteCatalog`) is one class made of parts, one per aggregate:
`sqlite_stores` (datasets and DICOM stores), `sqlite_instances`, `sqlite_operations` and
`sqlite_search`. Each part runs its reads with `_one` / `_all` and its transactions with
`_write`, which the catalog defines; transactions are plain functions of the writer's
connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, TypeVar

from dicomstore.catalog import shared, sqlite_errors
from dicomstore.core.errors import DicomStoreError, NotFound
from dicomstore.core.names import DatasetName, DicomStoreName

T = TypeVar("T")

#: The current time, as the catalog stores times (microseconds since the epoch, UTC).
NOW_MICROS = "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)"


class SqliteParts:
    """The connection methods `SqliteCatalog` gives its parts."""

    _one: Callable[[str, Sequence[Any]], Awaitable[sqlite3.Row | None]]
    _all: Callable[[str, Sequence[Any]], Awaitable[list[sqlite3.Row]]]
    dicom_store_key: Callable[[DicomStoreName], Awaitable[int]]

    async def _write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError  # SqliteCatalog's


def raise_translated(exc: sqlite3.Error, doing: str) -> NoReturn:
    """Raise the domain error of a storage fault, else `exc` itself (a bug: a generic
    INTERNAL)."""
    error: DicomStoreError | None = sqlite_errors.translate(exc, doing)
    if error is None:
        raise exc
    raise error from exc


def scalar(db: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Any:
    row = db.execute(sql, params).fetchone()
    return row[0] if row else None


def find_dataset_key(db: sqlite3.Connection, name: DatasetName) -> int:
    key = scalar(
        db,
        shared.DATASET_KEY,
        (str(name.location), name.dataset_id),
    )
    if key is None:
        raise NotFound(f"dataset {name} not found", resource=str(name))
    return int(key)


def find_store_key(db: sqlite3.Connection, name: DicomStoreName) -> int:
    key = scalar(
        db,
        shared.STORE_KEY,
        (str(name.dataset.location), name.dataset.dataset_id, name.store_id),
    )
    if key is None:
        raise NotFound(f"DICOM store {name} not found", resource=str(name))
    return int(key)
