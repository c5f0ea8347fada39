"""What the PostgreSQL catalog's parts share: placeholders numbered for PostgreSQL, the
statements every transaction may run, and the connection methods each part is given.

The catalog (`postgres.PostgresCatalog`) is one class made of parts, one per aggregate, as the
SQLite catalog is: `postgres_stores`, `postgres_instances`, `postgres_operations` and
`postgres_search`. Each part runs its reads with `_one` / `_all` and its transactions with
`_write`, which the catalog defines; a transaction is an async function of a pooled connection.
SQL text is written with SQLite's `?` placeholders, so that text both catalogs run is written
once (`shared`); `_one`, `_all` and the functions below number them (`$1`, `$2`, ...).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from asyncpg import Record

from dicomstore.catalog import shared
from dicomstore.core.errors import NotFound
from dicomstore.core.names import DatasetName, DicomStoreName

T = TypeVar("T")
if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    #: A connection of the pool, lent to one transaction or read.
    Db: TypeAlias = PoolConnectionProxy[Record]
else:
    Db = Any

#: The current time, as the catalog stores times (microseconds since the epoch, UTC).
NOW_MICROS = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT"


@functools.lru_cache(maxsize=1024)
def numbered(sql: str) -> str:
    """`sql` with its `?` placeholders numbered as PostgreSQL's `$1`, `$2`, ... (no `?` of the
    catalog's SQL is inside a literal)."""
    parts = sql.split("?")
    return parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], 1))


async def fetch(db: Db, sql: str, params: Sequence[Any] = ()) -> list[Record]:
    return await db.fetch(numbered(sql), *params)


async def fetchrow(db: Db, sql: str, params: Sequence[Any] = ()) -> Record | None:
    return await db.fetchrow(numbered(sql), *params)


async def fetchval(db: Db, sql: str, params: Sequence[Any] = ()) -> Any:
    return await db.fetchval(numbered(sql), *params)


async def execute(db: Db, sql: str, params: Sequence[Any] = ()) -> int:
    """Run a statement; the number of rows it changed."""
    status = await db.execute(numbered(sql), *params)
    count = status.rsplit(" ", 1)[-1]
    return int(count) if count.isdigit() else 0


class PostgresParts:
    """The connection methods `PostgresCatalog` gives its parts."""

    _one: Callable[[str, Sequence[Any]], Awaitable[Record | None]]
    _all: Callable[[str, Sequence[Any]], Awaitable[list[Record]]]
    dicom_store_key: Callable[[DicomStoreName], Awaitable[int]]

    async def _write(self, job: Callable[[Db], Awaitable[T]]) -> T:
        raise NotImplementedError  # PostgresCatalog's


async def find_dataset_key(db: Db, name: DatasetName) -> int:
    key = await fetchval(
        db,
        shared.DATASET_KEY,
        (str(name.location), name.dataset_id),
    )
    if key is None:
        raise NotFound(f"dataset {name} not found", resource=str(name))
    return int(key)


async def find_store_key(db: Db, name: DicomStoreName) -> int:
    key = await fetchval(
        db,
        shared.STORE_KEY,
        (str(name.dataset.location), name.dataset.dataset_id, name.store_id),
    )
    if key is None:
        raise NotFound(f"DICOM store {name} not found", resource=str(name))
    return int(key)
