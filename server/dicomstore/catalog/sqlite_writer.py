"""The catalog's one writer: a sqlite3 connection on its own thread, committing in groups.

A write transaction is a plain function of the connection, queued from the event loop and run
on the writer thread in one trip. (Through aiosqlite every statement is a trip of its own, about
60 µs of CPU each.)

Group commit: functions queued while a transaction runs or commits go together into the next
one, each inside its own SAVEPOINT (a function alone needs none: its transaction is rolled back
if it raises). A function that raises is rolled back alone and its caller
gets the exception; the others commit together, with one fsync of the WAL. Every caller learns
its result only once that COMMIT has returned, so an acknowledged write is durable; if the
COMMIT itself fails, every function of the group fails with its error; so does every function
of a group whose transaction SQLite rolled back on its own (it does on a full disk or an I/O
error in the middle of a transaction, as https://www.sqlite.org/lang_transaction.html says).
The writer thread outlives any failure: a ROLLBACK that fails too is not allowed to stop it.

A function runs even if its caller stops waiting (cancelled): callers that must undo a write
they will not acknowledge queue the undo after it, and the queue keeps the order.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]

#: At most this many functions share one transaction.
MAX_GROUP: Final = 256
_STOP: Final = object()


class SqliteWriter:
    """Runs write transactions on `connection` (in autocommit mode) from its own thread."""

    def __init__(self, connection: sqlite3.Connection, *, name: str = "catalog-writer") -> None:
        self._connection = connection
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    async def run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run `job(connection)` in a transaction; its result once the transaction committed."""
        assert self._loop is not None, "writer is not started"
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put((job, future))
        return await future

    async def close(self) -> None:
        """Finish the queued transactions, then stop the thread and close the connection."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            await asyncio.to_thread(self._thread.join)
        self._connection.close()

    def _serve(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            group = []
            while item is not _STOP:
                group.append(item)
                if len(group) == MAX_GROUP:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            stopping = item is _STOP
            if group:
                outcomes = self._transaction(group)
                assert self._loop is not None
                self._loop.call_soon_threadsafe(_deliver, outcomes)

    def _transaction(self, group: list[tuple[Job, asyncio.Future[Any]]]) -> list[_Outcome]:
        db = self._connection
        outcomes: list[_Outcome] = []
        # A job alone needs no savepoint: if it fails, the transaction is rolled back. (Each
        # statement saved is a GIL hand-off with the event loop.)
        alone = len(group) == 1
        try:
            db.execute("BEGIN IMMEDIATE")
            for job, future in group:
                if not alone:
                    db.execute("SAVEPOINT job")
                try:
                    result = job(db)
                except Exception as exc:
                    if alone or not db.in_transaction:  # the whole transaction is gone
                        raise
                    db.execute("ROLLBACK TO job")
                    outcomes.append((future, None, exc))
                else:
                    outcomes.append((future, result, None))
                if not alone:
                    db.execute("RELEASE job")
            db.execute("COMMIT")
        except Exception as exc:  # BEGIN, a savepoint, COMMIT or a lone job failed: nothing written
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # the callers learn of `exc`
                    db.execute("ROLLBACK")
            return [(future, None, exc) for _, future in group]
        return outcomes


def _deliver(outcomes: list[_Outcome]) -> None:
    for future, result, error in outcomes:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
