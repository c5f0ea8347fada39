"""The catalog on PostgreSQL (`--catalog postgresql://...`): a pool of asyncpg connections.

Unlike SQLite, PostgreSQL runs write transactions concurrently: each write is its own
transaction on a connection of the pool (PostgreSQL commits concurrent transactions together
with one WAL flush, the group commit SQLite's writer thread does by hand), so a failing write
fails alone; within a write, each row of `add_instances` has a savepoint of its own. Two
transactions that deadlock or fail to serialise are run again (`_RETRIES`). A write whose
caller stops waiting (cancelled) still runs to its end, and the writes that follow wait for
it: a caller that must undo a write it will not acknowledge queues the undo after it, as with
SQLite's writer queue. Committed means durable by the server's settings (`synchronous_commit`
on, PostgreSQL's default).

The schema is versioned (`schema_version`, one row): migrations are the numbered .sql files of
`postgres_migrations`, applied in one transaction each under an advisory lock, so that processes
starting together migrate once. The catalog is one class made of a part per aggregate, as the
SQLite catalog is; its faults become domain errors here (`postgres_errors`); at start-up an
unreachable or refusing server is one FailedPrecondition naming the URL (without password).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, Final
from urllib.parse import urlsplit

import asyncpg
from asyncpg import Record

from dicomstore.catalog import postgres_errors
from dicomstore.catalog.key_blocks import KeyBlocks
from dicomstore.catalog.postgres_instances import PostgresInstances
from dicomstore.catalog.postgres_operations import PostgresOperations
from dicomstore.catalog.postgres_search import PostgresSearch
from dicomstore.catalog.postgres_statements import Db, T, execute, fetchval, numbered
from dicomstore.catalog.postgres_stores import PostgresStores
from dicomstore.core.errors import DicomStoreError, FailedPrecondition

#: Connections of the pool (reads and writes share them).
POOL_SIZE: Final = 10
#: How long start-up waits for the server before it fails.
CONNECT_TIMEOUT_SECONDS: Final = 10.0
#: Runs of a write that meets a deadlock or a serialisation failure, before UNAVAILABLE.
_RETRIES: Final = 5
#: The advisory lock start-up migrations hold (any number, the same for every process).
_MIGRATION_LOCK: Final = 0x6469636F6D


def redacted(url: str) -> str:
    """`url` without its password, for messages."""
    password = urlsplit(url).password
    if password is not None:
        url = url.replace(f":{password}@", ":***@", 1)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)


def _reason(exc: BaseException) -> str:
    """Why connecting failed, in a few words ("connection refused")."""
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def migrations() -> list[tuple[int, str]]:
    """(version, script) of every migration of the package, in order."""
    folder = resources.files("dicomstore.catalog") / "postgres_migrations"
    found = [
        (int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    return sorted(found)


async def _keep_session(db: asyncpg.Connection[Record]) -> None:
    """A connection's reset on its way back to the pool, after asyncpg has rolled back any open
    transaction: nothing more. The catalog leaves no session state (its only advisory lock is
    transaction-scoped; no SET, LISTEN or cursor), so asyncpg's default reset statement (unlock
    all, CLOSE ALL, UNLISTEN, RESET ALL) would be one wasted round trip per statement or
    transaction."""


class PostgresCatalog(PostgresStores, PostgresInstances, PostgresOperations, PostgresSearch):
    """`dicomstore.core.ports.Catalog` on a PostgreSQL database."""

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE) -> None:
        self._url = url
        self._pool_size = pool_size
        self._pool: asyncpg.Pool[Record] | None = None
        # Writes whose caller was cancelled while they ran: the next writes wait for them.
        self._abandoned: set[asyncio.Task[Any]] = set()
        self._instance_keys = KeyBlocks(self._key_block)

    async def open(self) -> None:
        """Connect and bring the schema up to date; FailedPrecondition naming the database
        when it cannot be reached or refuses."""
        where = redacted(self._url)
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=1,
                max_size=self._pool_size,
                timeout=CONNECT_TIMEOUT_SECONDS,
                statement_cache_size=256,
                reset=_keep_session,
            )
            async with self._pool.acquire() as db:
                await self._migrate(db)
        except DicomStoreError:
            await self.close()
            raise
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            await self.close()
            reason = _reason(exc)
            raise FailedPrecondition(f"cannot open the catalog {where}: {reason}") from exc

    async def _migrate(self, db: Db) -> None:
        known = migrations()
        async with db.transaction():
            await execute(db, "SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            current = int(await fetchval(db, "SELECT max(version) FROM schema_version") or 0)
        if known and current > known[-1][0]:
            raise FailedPrecondition(
                f"catalog {redacted(self._url)} has schema version {current}, newer than this"
                f" dicomstore ({known[-1][0]}): upgrade dicomstore"
            )
        for version, script in known:
            if version <= current:
                continue
            async with db.transaction():
                await execute(db, "SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
                done = await fetchval(db, "SELECT max(version) FROM schema_version")
                if done is not None and done >= version:
                    continue  # another process applied it meanwhile
                await db.execute(script)
                await db.execute("DELETE FROM schema_version")
                await execute(db, "INSERT INTO schema_version VALUES (?)", (version,))

    async def close(self) -> None:
        if self._abandoned:
            await asyncio.wait(self._abandoned)
        if self._pool is not None:
            await self._pool.close()
        self._pool = None

    async def _write(self, job: Callable[[Db], Awaitable[T]]) -> T:
        """Run `job` in a transaction of its own; its result once committed."""
        while self._abandoned:  # writes queued earlier by a caller who stopped waiting
            await asyncio.wait(list(self._abandoned))
        task = asyncio.ensure_future(self._transaction(job))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                self._abandoned.add(task)
                task.add_done_callback(self._abandoned.discard)
            raise

    async def _transaction(self, job: Callable[[Db], Awaitable[T]]) -> T:
        assert self._pool is not None, "catalog is not open"
        for attempt in range(1, _RETRIES + 1):
            try:
                async with self._pool.acquire() as db, db.transaction():
                    return await job(db)
            except asyncpg.TransactionRollbackError as exc:  # deadlock, serialisation failure
                if attempt == _RETRIES:
                    postgres_errors.raise_translated(exc, "writing the catalog")
                await asyncio.sleep(random.uniform(0, 0.005 * attempt))  # out of step
            except DicomStoreError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                postgres_errors.raise_translated(exc, "writing the catalog")
        raise AssertionError("unreachable")

    async def _one(self, sql: str, params: Sequence[Any]) -> Record | None:
        return next(iter(await self._all(sql, params)), None)

    async def _all(self, sql: str, params: Sequence[Any]) -> list[Record]:
        assert self._pool is not None, "catalog is not open"
        try:
            return await self._pool.fetch(numbered(sql), *params)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            postgres_errors.raise_translated(exc, "reading the catalog")

    async def setting(self, key: str, default: bytes) -> bytes:
        async def tx(db: Db) -> bytes:
            await execute(
                db,
                "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (key, default),
            )
            return bytes(await fetchval(db, "SELECT value FROM settings WHERE key = ?", (key,)))

        return await self._write(tx)
