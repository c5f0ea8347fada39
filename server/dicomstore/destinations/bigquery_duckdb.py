"""The embedded BigQuery: `bq://PROJECT.DATASET.TABLE` as table TABLE of schema DATASET in the
DuckDB database `DATA_DIR/bigquery/PROJECT.duckdb` (docs/bigquery.md).

Each call opens the database file, works in one transaction and closes it, holding a lock per
file so that one process's writers take turns, and an advisory lock on `FILE.lock` so that the
processes of `--workers` take turns too (DuckDB refuses a second process a file open for
writing): between calls the file is free for the `duckdb` CLI or another program to read.
DuckDB is synchronous, so the work runs in a worker thread.

Schema changes follow the rows: a column they bring is added (ALTER TABLE ADD COLUMN; a
REPEATED one defaults to an empty list), and a RECORD column that gains fields (a sequence item
with a new keyword) is altered to the wider STRUCT type (ALTER COLUMN SET DATA TYPE): DuckDB
casts a STRUCT to a STRUCT by field name, so existing rows keep their values and read NULL in
the new fields. A column whose type the rows contradict (a table made by someone else) is a
FAILED_PRECONDITION and nothing is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Final, TypeVar

import duckdb

from dicomstore.core.errors import (
    DicomStoreError,
    FailedPrecondition,
    Internal,
    Unavailable,
    insufficient_storage,
    storage_fault,
)
from dicomstore.core.model import BigQueryRow
from dicomstore.core.validation import BigQueryTableName
from dicomstore.destinations.duckdb_types import (
    column_of,
    conformed,
    nests_a_list,
    quoted,
    sql_type,
)
from dicomstore.dicom.bigquery_schema import Column, SchemaConflict, merge_columns, union

T = TypeVar("T")


class DuckDbBigQuery:
    """The embedded BigQuery of one data dir: hands out tables and their per-file locks."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "bigquery"
        self._locks: dict[Path, threading.Lock] = {}
        self._guard = threading.Lock()

    def database_path(self, project: str) -> Path:
        """Where a project's tables live (a domain-scoped project keeps its `:`)."""
        return self.root / f"{project}.duckdb"

    def table(self, name: BigQueryTableName) -> DuckDbTable:
        """The table `bq://{name.project}.{name.dataset}.{name.table}` (created on first write)."""
        path = self.database_path(name.project)
        with self._guard:
            lock = self._locks.setdefault(path, threading.Lock())
        return DuckDbTable(path, name.dataset, name.table, lock)


class DuckDbTable:
    """One table of the embedded BigQuery; implements `dicomstore.core.ports.BigQueryTable`."""

    def __init__(self, path: Path, dataset: str, table: str, lock: threading.Lock) -> None:
        self.path = path
        self.dataset = dataset
        self.table = table
        self._lock = lock
        self._qualified = f"{quoted(dataset)}.{quoted(table)}"

    async def is_empty(self) -> bool:
        """True when the database, the schema or the table is missing, or the table has no row."""
        return await self._run(self._is_empty, "reading a BigQuery table")

    async def write(self, rows: Sequence[BigQueryRow], *, truncate: bool) -> None:
        """Append `rows` (after deleting every row when `truncate`) in one transaction, creating
        the schema and table and widening its columns as the rows need."""
        await self._run(lambda: self._write(rows, truncate), "writing a BigQuery table")

    async def columns(self) -> tuple[Column, ...]:
        """The table's columns as BigQuery sees them (empty when it is missing); a column of a
        type this schema never makes is left out."""
        return await self._run(self._columns, "reading a BigQuery table")

    async def close(self) -> None:
        """Nothing to release: every call closes the database file it opened."""

    async def _run(self, work: Callable[[], T], doing: str) -> T:
        return await asyncio.to_thread(self._locked, work, doing)

    def _locked(self, work: Callable[[], T], doing: str) -> T:
        with self._lock, _process_lock(self.path):
            try:
                return work()
            except DicomStoreError:
                raise
            except OSError as exc:
                raise storage_fault(exc, doing) from exc
            except SchemaConflict as exc:
                raise FailedPrecondition(
                    f"BigQuery table {self.dataset}.{self.table}: {exc}"
                ) from exc
            except duckdb.Error as exc:
                raise _domain_error(exc, doing) from exc

    def _is_empty(self) -> bool:
        if not self.path.exists():
            return True
        with duckdb.connect(str(self.path), read_only=True) as connection:
            if not self._exists(connection):
                return True
            found = connection.execute(f"SELECT 1 FROM {self._qualified} LIMIT 1").fetchone()
            return found is None

    def _columns(self) -> tuple[Column, ...]:
        if not self.path.exists():
            return ()
        with duckdb.connect(str(self.path), read_only=True) as connection:
            return tuple(self._known_columns(connection).values())

    def _write(self, rows: Sequence[BigQueryRow], truncate: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        wanted = union(row.columns for row in rows)
        with duckdb.connect(str(self.path)) as connection:
            connection.begin()
            try:
                columns = self._prepare(connection, wanted)
                if truncate and columns:
                    connection.execute(f"DELETE FROM {self._qualified}")
                if rows:
                    self._insert(connection, columns, rows)
                connection.commit()
            except BaseException:
                connection.rollback()
                raise

    def _prepare(
        self, connection: duckdb.DuckDBPyConnection, wanted: tuple[Column, ...]
    ) -> tuple[Column, ...]:
        """Create or widen the table to hold `wanted`; return its columns (none when there is
        neither a table nor a column to make one)."""
        if not self._exists(connection):
            if not wanted:
                return ()
            connection.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted(self.dataset)}")
            definitions = ", ".join(_definition(column) for column in wanted)
            connection.execute(f"CREATE TABLE {self._qualified} ({definitions})")
            return wanted
        existing = self._known_columns(connection)
        foreign = self._all_column_names(connection) - existing.keys()
        clash = sorted(foreign & {column.name for column in wanted})
        if clash:
            raise FailedPrecondition(
                f"BigQuery table {self.dataset}.{self.table}: column {clash[0]} has a type"
                " that Google's DICOM schema never gives it"
            )
        merged = merge_columns(existing.values(), wanted)
        for column in merged:
            old = existing.get(column.name)
            if old is None:
                connection.execute(
                    f"ALTER TABLE {self._qualified} ADD COLUMN {_definition(column)}"
                )
            elif old != column:
                connection.execute(
                    f"ALTER TABLE {self._qualified} ALTER COLUMN {quoted(column.name)}"
                    f" SET DATA TYPE {sql_type(column)}"
                )
        return merged

    def _insert(
        self,
        connection: duckdb.DuckDBPyConnection,
        columns: tuple[Column, ...],
        rows: Sequence[BigQueryRow],
    ) -> None:
        """Insert through a JSON file that DuckDB reads with the columns' types: binding rows
        one by one (`executemany`) costs ~5 ms per row of ~90 columns, reading the file a few
        microseconds. A column a row lacks reads as NULL, a REPEATED one as an empty list."""
        names = ", ".join(quoted(column.name) for column in columns)
        read = ", ".join(
            f"coalesce({quoted(c.name)}, [])" if c.repeated else quoted(c.name) for c in columns
        )
        types = ", ".join(
            f"{_sql_text(column.name)}: {_sql_text(sql_type(column))}" for column in columns
        )
        nesting = tuple(column for column in columns if nests_a_list(column))
        with tempfile.NamedTemporaryFile("w", suffix=".json", encoding="utf-8") as array:
            array.write(_JSON.encode([_json_values(row, nesting) for row in rows]))
            array.flush()
            connection.execute(
                f"INSERT INTO {self._qualified} ({names}) SELECT {read} FROM read_json("
                f"{_sql_text(array.name)}, format = 'array', columns = {{{types}}})"
            )

    def _exists(self, connection: duckdb.DuckDBPyConnection) -> bool:
        found = connection.execute(
            "SELECT 1 FROM information_schema.tables"
            " WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ?",
            [self.dataset, self.table],
        ).fetchone()
        return found is not None

    def _known_columns(self, connection: duckdb.DuckDBPyConnection) -> dict[str, Column]:
        if not self._exists(connection):
            return {}
        relation = connection.sql(f"SELECT * FROM {self._qualified} LIMIT 0")
        known = (column_of(n, t) for n, t in zip(relation.columns, relation.types, strict=True))
        return {column.name: column for column in known if column is not None}

    def _all_column_names(self, connection: duckdb.DuckDBPyConnection) -> set[str]:
        return set(connection.sql(f"SELECT * FROM {self._qualified} LIMIT 0").columns)


def _definition(column: Column) -> str:
    default = " DEFAULT []" if column.repeated else ""
    return f"{quoted(column.name)} {sql_type(column)}{default}"


def _domain_error(exc: duckdb.Error, doing: str) -> DicomStoreError:
    """The domain error of a DuckDB failure: a file held by another process is UNAVAILABLE
    (retry once it lets go), a full disk RESOURCE_EXHAUSTED, anything else INTERNAL."""
    text = str(exc)
    if isinstance(exc, duckdb.IOException) and "lock" in text.lower():
        return Unavailable(
            f"the embedded BigQuery database is in use by another process ({doing});"
            " retry once it is closed"
        )
    if "No space left" in text or "Disk quota" in text:
        return insufficient_storage(doing)
    return Internal(f"the embedded BigQuery database failed while {doing}: {type(exc).__name__}")


def _sql_text(text: str) -> str:
    """`text` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _json_values(row: BigQueryRow, nesting: tuple[Column, ...]) -> Mapping[str, Any]:
    """The row's values as written to JSON (a dict): those of the columns in `nesting`
    conformed."""
    nested = {c.name: conformed(row.values[c.name], c) for c in nesting if c.name in row.values}
    if nested or not isinstance(row.values, dict):
        return {**row.values, **nested}
    return row.values


def _json_scalar(value: object) -> str:
    """Dates, times and instants as the ISO 8601 text DuckDB reads into DATE, TIME and
    TIMESTAMPTZ."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    raise TypeError(f"no JSON form for {type(value).__name__}")


#: NaN and Infinity are written as such: DuckDB reads them.
_JSON: Final = json.JSONEncoder(check_circular=False, default=_json_scalar)


@contextlib.contextmanager
def _process_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path`.lock, shared by every process of this data dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
