"""The catalog on SQLite: one writer connection, a few reader connections, WAL.

SQLite allows one writer at a time. Writes are transactions run by `SqliteWriter` on its own
thread, each a plain function of the connection, committed in groups; readers are aiosqlite
connections that run concurrently and see only committed transactions (WAL snapshots).
`synchronous=FULL`: a committed transaction survives a power cut, not only a process crash.

The catalog is one class made of a part per aggregate (`sqlite_stores`, `sqlite_instances`,
`sqlite_operations`, `sqlite_search`); this module opens the connections, migrates the schema
and runs the parts' reads and transactions.

SQLite's faults (a full disk, a catalog locked by another process, a read-only or damaged file,
an I/O error) become domain errors at this boundary (`sqlite_errors`); at start-up they name the
catalog's path.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Final

import aiosqlite

from dicomstore.catalog.key_blocks import KeyBlocks
from dicomstore.catalog.sqlite_instances import SqliteInstances
from dicomstore.catalog.sqlite_operations import SqliteOperations
from dicomstore.catalog.sqlite_search import SqliteSearch
from dicomstore.catalog.sqlite_statements import T, raise_translated, scalar
from dicomstore.catalog.sqlite_stores import SqliteStores
from dicomstore.catalog.sqlite_writer import SqliteWriter
from dicomstore.core.errors import (
    FailedPrecondition,
    storage_fault,
)

_NOW_MICROS = "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)"

_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
)
#: How long a statement waits for a lock another connection holds before it fails UNAVAILABLE.
BUSY_TIMEOUT_SECONDS: Final = 10.0


def _pragmas(busy_timeout: float) -> tuple[str, ...]:
    return (*_PRAGMAS, f"PRAGMA busy_timeout={round(busy_timeout * 1000)}")


def _connect(path: Path, busy_timeout: float, *, check_same_thread: bool) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread)
    db.row_factory = sqlite3.Row
    try:
        for pragma in _pragmas(busy_timeout):
            db.execute(pragma)
    except BaseException:
        db.close()
        raise
    return db


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("dicomstore.catalog") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(found)


class SqliteCatalog(SqliteStores, SqliteInstances, SqliteOperations, SqliteSearch):
    """`dicomstore.core.ports.Catalog` on one SQLite file."""

    def __init__(
        self, path: Path, *, readers: int = 2, busy_timeout: float = BUSY_TIMEOUT_SECONDS
    ) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._reader_count = readers
        self._writer: SqliteWriter | None = None
        self._readers: list[aiosqlite.Connection] = []
        self._next_reader = itertools.cycle([0])
        self._instance_keys = KeyBlocks(self._key_block)

    async def _connect_reader(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self._path, isolation_level=None)
        db.row_factory = aiosqlite.Row
        try:
            for pragma in _pragmas(self._busy_timeout):
                await db.execute(pragma)
        except BaseException:
            await db.close()
            raise
        return db

    async def open(self) -> None:
        """Open (creating if needed) the catalog and bring its schema up to date; a fault is a
        domain error naming the catalog's path."""
        doing = f"opening the catalog {self._path}"
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            connection = await asyncio.to_thread(self._open_writer)
            self._writer = SqliteWriter(connection)
            self._writer.start()
            while len(self._readers) < self._reader_count:
                self._readers.append(await self._connect_reader())
        except OSError as exc:
            raise storage_fault(exc, doing) from exc
        except sqlite3.Error as exc:
            raise_translated(exc, doing)
        self._next_reader = itertools.cycle(range(self._reader_count))

    def _open_writer(self) -> sqlite3.Connection:
        db = _connect(self._path, self._busy_timeout, check_same_thread=False)
        try:
            self._migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    async def close(self) -> None:
        for db in self._readers:
            await db.close()
        if self._writer is not None:
            await self._writer.close()
        self._readers, self._writer = [], None

    def _migrate(self, db: sqlite3.Connection) -> None:
        current = int(scalar(db, "PRAGMA user_version", ()) or 0)
        known = _migrations()
        if known and current > known[-1][0]:
            raise FailedPrecondition(
                f"catalog {self._path} has schema version {current}, newer than this dicomstore "
                f"({known[-1][0]}): upgrade dicomstore"
            )
        for version, script in known:
            if version <= current:
                continue
            # executescript commits first; the script and the version bump go in one transaction.
            db.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={version};\nCOMMIT;")

    @property
    def _reader(self) -> aiosqlite.Connection:
        return self._readers[next(self._next_reader)]

    async def _write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        assert self._writer is not None, "catalog is not open"
        try:
            return await self._writer.run(job)
        except sqlite3.Error as exc:
            raise_translated(exc, "writing the catalog")

    # execute_fetchall is one trip to the connection's thread; execute + fetch + close are three.

    async def _one(self, sql: str, params: Sequence[Any]) -> sqlite3.Row | None:
        return next(iter(await self._all(sql, params)), None)

    async def _all(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise_translated(exc, "reading the catalog")

    async def setting(self, key: str, default: bytes) -> bytes:
        def tx(db: sqlite3.Connection) -> bytes:
            db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (key, default),
            )
            return bytes(scalar(db, "SELECT value FROM settings WHERE key = ?", (key,)))

        return await self._write(tx)
