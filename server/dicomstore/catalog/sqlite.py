"""The catalog on SQLite: one writer connection, a few reader connections, WAL.

SQLite allows one writer at a time. Writes are transactions run by `SqliteWriter` on its own
thread, each a plain function of the connection (`_tx_*` below), committed in groups; readers
are aiosqlite connections that run concurrently and see only committed transactions (WAL
snapshots). `synchronous=FULL`: a committed transaction survives a power cut, not only a
process crash.

Instance keys are handed out before the instance's row exists (`reserve_instance_key`), so that
its blob can be written first: from a counter that starts above every key ever used
(`sqlite_sequence` of the AUTOINCREMENT key), so keys are never reused.

SQLite's faults (a full disk, a catalog locked by another process, a read-only or damaged file,
an I/O error) become domain errors at this boundary (`sqlite_errors`); at start-up they name the
catalog's path.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

import aiosqlite

from dicomstore.catalog import records, sqlite_errors
from dicomstore.catalog.sqlite_search import SqliteSearch
from dicomstore.catalog.sqlite_writer import SqliteWriter
from dicomstore.core.errors import (
    Aborted,
    AlreadyExists,
    Code,
    DicomStoreError,
    FailedPrecondition,
    NotFound,
    storage_fault,
)
from dicomstore.core.model import (
    Dataset,
    DicomStore,
    DicomStoreMetrics,
    InstanceKey,
    NewInstance,
    NewInstanceRow,
    Operation,
    OperationLogEntry,
    StoredInstance,
)
from dicomstore.core.names import DatasetName, DicomStoreName, LocationName, OperationName

T = TypeVar("T")

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


class SqliteCatalog(SqliteSearch):
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
        self._last_instance_key = 0
        # Keys of stores looked up, forgotten when their store or dataset is deleted.
        self._store_keys: dict[DicomStoreName, int] = {}
        self._store_deletions = 0

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
            _raise_translated(exc, doing)
        self._next_reader = itertools.cycle(range(self._reader_count))

    def _open_writer(self) -> sqlite3.Connection:
        db = _connect(self._path, self._busy_timeout, check_same_thread=False)
        try:
            self._migrate(db)
            self._last_instance_key = int(
                _scalar(
                    db,
                    "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence"
                    " WHERE name = 'instances'), 0), COALESCE((SELECT MAX(id) FROM instances), 0))",
                    (),
                )
            )
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
        current = int(_scalar(db, "PRAGMA user_version", ()) or 0)
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
            _raise_translated(exc, "writing the catalog")

    # execute_fetchall is one trip to the connection's thread; execute + fetch + close are three.

    async def _one(self, sql: str, params: Sequence[Any]) -> sqlite3.Row | None:
        return next(iter(await self._all(sql, params)), None)

    async def _all(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            _raise_translated(exc, "reading the catalog")

    async def setting(self, key: str, default: bytes) -> bytes:
        def tx(db: sqlite3.Connection) -> bytes:
            db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (key, default),
            )
            return bytes(_scalar(db, "SELECT value FROM settings WHERE key = ?", (key,)))

        return await self._write(tx)

    # Datasets

    async def create_dataset(self, dataset: Dataset) -> None:
        def tx(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    "INSERT INTO datasets (location, dataset_id, time_zone, create_time)"
                    f" VALUES (?, ?, ?, {_NOW_MICROS})",
                    (str(dataset.name.location), dataset.name.dataset_id, dataset.time_zone),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(
                    f"dataset {dataset.name} already exists", resource=str(dataset.name)
                ) from None

        await self._write(tx)

    async def get_dataset(self, name: DatasetName) -> Dataset:
        row = await self._one(
            "SELECT time_zone FROM datasets WHERE location = ? AND dataset_id = ?",
            (str(name.location), name.dataset_id),
        )
        if row is None:
            raise NotFound(f"dataset {name} not found", resource=str(name))
        return Dataset(name, row["time_zone"])

    async def list_datasets(
        self, location: LocationName, *, after: str, limit: int
    ) -> Sequence[Dataset]:
        rows = await self._all(
            "SELECT dataset_id, time_zone FROM datasets WHERE location = ? AND dataset_id > ?"
            " ORDER BY dataset_id LIMIT ?",
            (str(location), after, limit),
        )
        return [Dataset(DatasetName(location, r["dataset_id"]), r["time_zone"]) for r in rows]

    async def update_dataset(self, dataset: Dataset) -> None:
        def tx(db: sqlite3.Connection) -> None:
            key = _dataset_key(db, dataset.name)
            db.execute("UPDATE datasets SET time_zone = ? WHERE id = ?", (dataset.time_zone, key))

        await self._write(tx)

    async def delete_dataset(self, name: DatasetName) -> Sequence[int]:
        def tx(db: sqlite3.Connection) -> list[int]:
            key = _dataset_key(db, name)
            rows = db.execute("SELECT id FROM dicom_stores WHERE dataset_key = ?", (key,))
            store_keys = [int(r[0]) for r in rows]
            db.execute("DELETE FROM datasets WHERE id = ?", (key,))
            return store_keys

        try:
            return await self._write(tx)
        finally:
            self._forget_store_keys(lambda store: store.dataset == name)

    # DICOM stores

    async def create_dicom_store(self, store: DicomStore) -> None:
        config = records.store_config_json(store.config)

        def tx(db: sqlite3.Connection) -> None:
            key = _dataset_key(db, store.name.dataset)
            try:
                db.execute(
                    "INSERT INTO dicom_stores (dataset_key, store_id, config, create_time)"
                    f" VALUES (?, ?, ?, {_NOW_MICROS})",
                    (key, store.name.store_id, config),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(
                    f"DICOM store {store.name} already exists", resource=str(store.name)
                ) from None

        await self._write(tx)

    _STORE_SELECT = (
        "SELECT s.id, s.store_id, s.config FROM dicom_stores s"
        " JOIN datasets d ON d.id = s.dataset_key WHERE d.location = ? AND d.dataset_id = ?"
    )

    async def _store_row(self, name: DicomStoreName) -> sqlite3.Row:
        row = await self._one(
            self._STORE_SELECT + " AND s.store_id = ?",
            (str(name.dataset.location), name.dataset.dataset_id, name.store_id),
        )
        if row is None:
            raise NotFound(f"DICOM store {name} not found", resource=str(name))
        return row

    async def get_dicom_store(self, name: DicomStoreName) -> DicomStore:
        row = await self._store_row(name)
        return records.dicom_store(name, row["config"])

    async def dicom_store_key(self, name: DicomStoreName) -> int:
        key = self._store_keys.get(name)
        if key is None:
            deletions = self._store_deletions
            key = int((await self._store_row(name))["id"])
            if deletions == self._store_deletions:  # else the store may be gone already
                self._store_keys[name] = key
        return key

    def _forget_store_keys(self, deleted: Callable[[DicomStoreName], bool]) -> None:
        self._store_deletions += 1
        for name in [name for name in self._store_keys if deleted(name)]:
            del self._store_keys[name]

    async def list_dicom_stores(
        self, dataset: DatasetName, *, after: str, limit: int
    ) -> Sequence[DicomStore]:
        rows = await self._all(
            self._STORE_SELECT + " AND s.store_id > ? ORDER BY s.store_id LIMIT ?",
            (str(dataset.location), dataset.dataset_id, after, limit),
        )
        return [
            records.dicom_store(DicomStoreName(dataset, r["store_id"]), r["config"]) for r in rows
        ]

    async def update_dicom_store(self, store: DicomStore) -> None:
        config = records.store_config_json(store.config)

        def tx(db: sqlite3.Connection) -> None:
            key = _store_key(db, store.name)
            db.execute("UPDATE dicom_stores SET config = ? WHERE id = ?", (config, key))

        await self._write(tx)

    async def delete_dicom_store(self, name: DicomStoreName) -> int:
        def tx(db: sqlite3.Connection) -> int:
            key = _store_key(db, name)
            db.execute("DELETE FROM dicom_stores WHERE id = ?", (key,))
            return key

        try:
            return await self._write(tx)
        finally:
            self._forget_store_keys(lambda store: store == name)

    async def dicom_store_keys(self) -> set[int]:
        return {int(r[0]) for r in await self._all("SELECT id FROM dicom_stores", ())}

    async def dicom_store_metrics(self, name: DicomStoreName) -> DicomStoreMetrics:
        key = int((await self._store_row(name))["id"])
        row = await self._one(
            "SELECT COUNT(DISTINCT se.study_key) AS studies,"
            " COUNT(DISTINCT i.series_key) AS series, COUNT(*) AS instances,"
            " COALESCE(SUM(i.structured_size), 0) AS structured,"
            " COALESCE(SUM(i.blob_size), 0) AS blob"
            " FROM instances i JOIN series se ON se.id = i.series_key"
            " WHERE i.store_key = ? AND i.state = 1",
            (key,),
        )
        assert row is not None
        return DicomStoreMetrics(
            name=name,
            study_count=row["studies"],
            series_count=row["series"],
            instance_count=row["instances"],
            structured_storage_size_bytes=row["structured"],
            blob_storage_size_bytes=row["blob"],
        )

    # Instances

    async def reserve_instance_key(self, store: DicomStoreName) -> InstanceKey:
        store_key = await self.dicom_store_key(store)
        self._last_instance_key += 1
        return InstanceKey(store_key, self._last_instance_key)

    async def add_instance(
        self, key: InstanceKey, instance: NewInstance, blob_size: int, *, visible: bool
    ) -> None:
        (refusal,) = await self.add_instances(
            [NewInstanceRow(key, instance, blob_size)], visible=visible
        )
        if refusal is not None:
            raise refusal

    async def add_instances(
        self,
        rows: Sequence[NewInstanceRow],
        *,
        visible: bool,
        commit: Sequence[InstanceKey] = (),
    ) -> list[AlreadyExists | Aborted | None]:
        adds = [self._prepare_row(row, visible) for row in rows]
        store_keys = {row.key.store_key for row in rows} | {key.store_key for key in commit}
        # A row alone needs no savepoint: its refusal rolls the whole transaction back. (Each
        # statement saved is a GIL hand-off with the event loop.)
        alone = len(adds) == 1 and not commit

        def tx(db: sqlite3.Connection) -> list[AlreadyExists | Aborted | None]:
            for store_key in store_keys:
                _require_store(db, store_key)
            if alone:
                adds[0](db)
                return [None]
            outcomes: list[AlreadyExists | Aborted | None] = []
            for add in adds:
                db.execute("SAVEPOINT instance")
                try:
                    add(db)
                except (AlreadyExists, Aborted) as exc:
                    db.execute("ROLLBACK TO instance")
                    outcomes.append(exc)
                else:
                    outcomes.append(None)
                db.execute("RELEASE instance")
            _make_visible(db, commit)
            return outcomes

        try:
            return await self._write(tx)
        except (AlreadyExists, Aborted) as exc:  # raised only by a row alone
            return [exc]

    def _prepare_row(
        self, row: NewInstanceRow, visible: bool
    ) -> Callable[[sqlite3.Connection], None]:
        """The writes that record `row` (JSON encoded now, outside the writer's transaction);
        they raise AlreadyExists or Aborted."""
        key, instance = row.key, row.instance
        metadata = json.dumps(dict(instance.metadata), separators=(",", ":"))
        study_attributes = json.dumps(dict(instance.study_attributes))
        series_attributes = json.dumps(dict(instance.series_attributes))
        index = self._index_rows(key.instance_key, instance)

        def add(db: sqlite3.Connection) -> None:
            study_key = _claim(
                db, "studies", "store_key", key.store_key, instance.study_uid, study_attributes
            )
            series_key = _claim(
                db, "series", "study_key", study_key, instance.series_uid, series_attributes
            )
            try:
                db.execute(
                    "INSERT INTO instances (id, series_key, store_key, sop_uid, sop_class_uid,"
                    " transfer_syntax_uid, number_of_frames, metadata, structured_size,"
                    " blob_size, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        key.instance_key,
                        series_key,
                        key.store_key,
                        instance.sop_uid,
                        instance.sop_class_uid,
                        instance.transfer_syntax_uid,
                        instance.number_of_frames,
                        metadata,
                        len(metadata.encode()),
                        row.blob_size,
                        int(visible),
                    ),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(
                    "an instance with the same Study, Series and SOP Instance UIDs already exists",
                    resource=instance.sop_uid,
                ) from None
            index(db)

        return add

    async def abort_instance(self, key: InstanceKey) -> None:
        await self._write(lambda db: _forget(db, key.instance_key))

    async def recover_instances(self) -> Sequence[InstanceKey]:
        def tx(db: sqlite3.Connection) -> list[InstanceKey]:
            rows = db.execute("SELECT id, store_key FROM instances WHERE state = 0").fetchall()
            for row in rows:
                _forget(db, row["id"])
            return [InstanceKey(int(r["store_key"]), int(r["id"])) for r in rows]

        return await self._write(tx)

    async def instance_keys(self, store_key: int) -> set[int]:
        rows = await self._all("SELECT id FROM instances WHERE store_key = ?", (store_key,))
        return {int(r[0]) for r in rows}

    async def list_instances(
        self, store: DicomStoreName, *, after: int, limit: int
    ) -> Sequence[StoredInstance]:
        store_key = await self.dicom_store_key(store)
        rows = await self._all(
            _INSTANCE_SELECT + " WHERE i.store_key = ? AND i.state = 1 AND i.id > ?"
            " ORDER BY i.id LIMIT ?",
            (store_key, after, limit),
        )
        return [_stored_instance(store_key, r) for r in rows]

    async def instances_by_key(self, keys: Sequence[InstanceKey]) -> Sequence[StoredInstance]:
        found: dict[InstanceKey, StoredInstance] = {}
        for start in range(0, len(keys), 500):
            batch = keys[start : start + 500]
            marks = ", ".join("?" * len(batch))
            rows = await self._all(
                _INSTANCE_SELECT + f" WHERE i.state = 1 AND i.id IN ({marks})",
                [k.instance_key for k in batch],
            )
            for row in rows:
                instance = _stored_instance(int(row["store_key"]), row)
                found[instance.key] = instance
        return [found[k] for k in keys if k in found]

    async def find_instances(
        self,
        store: DicomStoreName,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
    ) -> Sequence[StoredInstance]:
        store_key = await self.dicom_store_key(store)
        sql = _INSTANCE_SELECT + " WHERE st.store_key = ? AND st.study_uid = ? AND i.state = 1"
        params: list[Any] = [store_key, study_uid]
        if series_uid is not None:
            sql += " AND se.series_uid = ?"
            params.append(series_uid)
        if sop_uid is not None:
            sql += " AND i.sop_uid = ?"
            params.append(sop_uid)
        rows = await self._all(sql + " ORDER BY se.series_uid, i.sop_uid", params)
        return [_stored_instance(store_key, r) for r in rows]

    async def instance_metadata(self, keys: Sequence[InstanceKey]) -> Sequence[dict[str, Any]]:
        found: dict[int, dict[str, Any]] = {}
        ids = [k.instance_key for k in keys]
        for start in range(0, len(ids), 500):
            batch = ids[start : start + 500]
            rows = await self._all(
                f"SELECT id, metadata FROM instances WHERE id IN ({','.join('?' * len(batch))})",
                batch,
            )
            found |= {int(r["id"]): json.loads(r["metadata"]) for r in rows}
        return [found[i] for i in ids]

    async def mark_deleting(
        self, store: DicomStoreName, study_uid: str, series_uid: str | None = None
    ) -> None:
        def tx(db: sqlite3.Connection) -> None:
            store_key = _store_key(db, store)
            if series_uid is None:
                cursor = db.execute(
                    "UPDATE studies SET deleting = 1 WHERE store_key = ? AND study_uid = ?",
                    (store_key, study_uid),
                )
                what = f"study {study_uid}"
            else:
                cursor = db.execute(
                    "UPDATE series SET deleting = 1 WHERE series_uid = ? AND study_key ="
                    " (SELECT id FROM studies WHERE store_key = ? AND study_uid = ?)",
                    (series_uid, store_key, study_uid),
                )
                what = f"series {series_uid} of study {study_uid}"
            if cursor.rowcount == 0:
                raise NotFound(f"{what} not found in {store}", resource=what)

        await self._write(tx)

    async def delete_instance(self, key: InstanceKey) -> None:
        await self._write(lambda db: _forget(db, key.instance_key))

    # Operations

    async def create_operation(self, operation: Operation) -> None:
        columns = records.operation_columns(operation) | {
            "operation_id": operation.name.operation_id,
            "api_method_name": operation.api_method_name,
            "create_time": records.micros(operation.create_time),
            "job_kind": operation.job.kind,
            "job_args": json.dumps(dict(operation.job.args), sort_keys=True),
        }

        def tx(db: sqlite3.Connection) -> None:
            values = columns | {"dataset_key": _dataset_key(db, operation.name.dataset)}
            try:
                db.execute(
                    f"INSERT INTO operations ({', '.join(values)})"
                    f" VALUES ({', '.join('?' for _ in values)})",
                    list(values.values()),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(
                    f"operation {operation.name} already exists", resource=str(operation.name)
                ) from None

        await self._write(tx)

    async def get_operation(self, name: OperationName) -> Operation:
        row = await self._one(_OPERATION_SELECT + _OPERATION_BY_NAME, _operation_params(name))
        if row is None:
            raise _operation_not_found(name)
        return _operation(row)

    async def list_operations(
        self, dataset: DatasetName, *, done: bool | None, after: str, limit: int
    ) -> Sequence[Operation]:
        state = {None: "", True: " AND o.end_time IS NOT NULL", False: " AND o.end_time IS NULL"}
        rows = await self._all(
            _OPERATION_SELECT
            + " WHERE d.location = ? AND d.dataset_id = ? AND o.operation_id > ?"
            + state[done]
            + " ORDER BY o.operation_id LIMIT ?",
            (str(dataset.location), dataset.dataset_id, after, limit),
        )
        return [_operation(r) for r in rows]

    async def update_operation(self, operation: Operation) -> None:
        columns = records.operation_columns(operation)

        def tx(db: sqlite3.Connection) -> None:
            row = _operation_row(db, operation.name)
            # A job persisting its progress must not undo a cancellation requested meanwhile.
            assignments = ", ".join(
                f"{c} = max({c}, ?)" if c == "cancel_requested" else f"{c} = ?" for c in columns
            )
            db.execute(
                f"UPDATE operations SET {assignments} WHERE id = ?",
                [*columns.values(), row["id"]],
            )

        await self._write(tx)

    async def request_cancel(self, name: OperationName) -> Operation:
        def tx(db: sqlite3.Connection) -> Operation:
            row = _operation_row(db, name)
            db.execute(
                "UPDATE operations SET cancel_requested = 1 WHERE id = ? AND end_time IS NULL",
                (row["id"],),
            )
            return _operation(_operation_row(db, name))

        return await self._write(tx)

    async def unfinished_operations(self) -> Sequence[Operation]:
        rows = await self._all(
            _OPERATION_SELECT + " WHERE o.end_time IS NULL ORDER BY o.create_time", ()
        )
        return [_operation(r) for r in rows]

    async def add_operation_log(
        self, name: OperationName, entries: Sequence[OperationLogEntry]
    ) -> None:
        time = records.micros(datetime.now(UTC))

        def tx(db: sqlite3.Connection) -> None:
            key = _operation_row(db, name)["id"]
            (last,) = db.execute(
                "SELECT coalesce(max(seq), 0) FROM operation_log WHERE operation_key = ?", (key,)
            ).fetchone()
            db.executemany(
                "INSERT INTO operation_log (operation_key, seq, time, resource, code, message)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (key, last + n, time, e.resource, int(e.code), e.message)
                    for n, e in enumerate(entries, 1)
                ],
            )

        await self._write(tx)

    async def operation_log(
        self, name: OperationName, *, after: int, limit: int
    ) -> Sequence[OperationLogEntry]:
        await self.get_operation(name)  # NotFound
        rows = await self._all(
            "SELECT l.* FROM operation_log l JOIN operations o ON o.id = l.operation_key"
            " JOIN datasets d ON d.id = o.dataset_key"
            + _OPERATION_BY_NAME
            + " AND l.seq > ? ORDER BY l.seq LIMIT ?",
            (*_operation_params(name), after, limit),
        )
        return [
            OperationLogEntry(
                resource=r["resource"],
                code=Code(r["code"]),
                message=r["message"],
                time=records.moment(r["time"]),
                seq=r["seq"],
            )
            for r in rows
        ]

    async def clear_operation_log(self, name: OperationName) -> None:
        def tx(db: sqlite3.Connection) -> None:
            key = _operation_row(db, name)["id"]
            db.execute("DELETE FROM operation_log WHERE operation_key = ?", (key,))

        await self._write(tx)


_INSTANCE_SELECT = (
    "SELECT i.id, i.store_key, i.sop_uid, i.sop_class_uid, i.transfer_syntax_uid,"
    " i.number_of_frames, i.blob_size, se.series_uid, st.study_uid FROM instances i"
    " JOIN series se ON se.id = i.series_key JOIN studies st ON st.id = se.study_key"
)


def _stored_instance(store_key: int, row: sqlite3.Row) -> StoredInstance:
    return StoredInstance(
        key=InstanceKey(store_key, int(row["id"])),
        study_uid=row["study_uid"],
        series_uid=row["series_uid"],
        sop_uid=row["sop_uid"],
        sop_class_uid=row["sop_class_uid"],
        transfer_syntax_uid=row["transfer_syntax_uid"],
        number_of_frames=int(row["number_of_frames"]),
        blob_size=int(row["blob_size"]),
    )


def _raise_translated(exc: sqlite3.Error, doing: str) -> NoReturn:
    """Raise the domain error of a storage fault, else `exc` itself (a bug: a generic
    INTERNAL)."""
    error: DicomStoreError | None = sqlite_errors.translate(exc, doing)
    if error is None:
        raise exc
    raise error from exc


# Statements shared by transactions, run on the writer's connection.


def _scalar(db: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Any:
    row = db.execute(sql, params).fetchone()
    return row[0] if row else None


def _dataset_key(db: sqlite3.Connection, name: DatasetName) -> int:
    key = _scalar(
        db,
        "SELECT id FROM datasets WHERE location = ? AND dataset_id = ?",
        (str(name.location), name.dataset_id),
    )
    if key is None:
        raise NotFound(f"dataset {name} not found", resource=str(name))
    return int(key)


def _store_key(db: sqlite3.Connection, name: DicomStoreName) -> int:
    key = _scalar(
        db,
        "SELECT s.id FROM dicom_stores s JOIN datasets d ON d.id = s.dataset_key"
        " WHERE d.location = ? AND d.dataset_id = ? AND s.store_id = ?",
        (str(name.dataset.location), name.dataset.dataset_id, name.store_id),
    )
    if key is None:
        raise NotFound(f"DICOM store {name} not found", resource=str(name))
    return int(key)


def _claim(
    db: sqlite3.Connection, table: str, parent: str, parent_key: int, uid: str, attributes: str
) -> int:
    """The key of the study or series `uid` under its parent, creating the row if needed.

    A new row takes `attributes`; so does one left without any.
    """
    what = "study" if table == "studies" else "series"
    row = db.execute(
        f"SELECT id, deleting, attributes = '{{}}' FROM {table}"
        f" WHERE {parent} = ? AND {what}_uid = ?",
        (parent_key, uid),
    ).fetchone()
    if row is None:
        cursor = db.execute(
            f"INSERT INTO {table} ({parent}, {what}_uid, attributes) VALUES (?, ?, ?)",
            (parent_key, uid, attributes),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid
    if row[1]:
        raise Aborted(f"{what} {uid} is being deleted; retry when the deletion has finished")
    if row[2]:
        db.execute(f"UPDATE {table} SET attributes = ? WHERE id = ?", (attributes, row[0]))
    return int(row[0])


def _require_store(db: sqlite3.Connection, store_key: int) -> None:
    if _scalar(db, "SELECT 1 FROM dicom_stores WHERE id = ?", (store_key,)) is None:
        raise NotFound("the DICOM store was deleted", resource=str(store_key))


def _make_visible(db: sqlite3.Connection, keys: Sequence[InstanceKey]) -> None:
    db.executemany("UPDATE instances SET state = 1 WHERE id = ?", [(k.instance_key,) for k in keys])


def _forget(db: sqlite3.Connection, instance_key: int) -> None:
    """Delete an instance row, then its series and study if they are left empty."""
    row = db.execute(
        "SELECT series_key, se.study_key FROM instances i JOIN series se"
        " ON se.id = i.series_key WHERE i.id = ?",
        (instance_key,),
    ).fetchone()
    if row is None:
        return
    db.execute("DELETE FROM instances WHERE id = ?", (instance_key,))
    db.execute(
        "DELETE FROM series WHERE id = ? AND NOT EXISTS"
        " (SELECT 1 FROM instances WHERE series_key = ?)",
        (row["series_key"], row["series_key"]),
    )
    db.execute(
        "DELETE FROM studies WHERE id = ? AND NOT EXISTS"
        " (SELECT 1 FROM series WHERE study_key = ?)",
        (row["study_key"], row["study_key"]),
    )


_OPERATION_SELECT = (
    "SELECT o.*, d.location, d.dataset_id FROM operations o JOIN datasets d ON d.id = o.dataset_key"
)
_OPERATION_BY_NAME = " WHERE d.location = ? AND d.dataset_id = ? AND o.operation_id = ?"


def _operation_params(name: OperationName) -> tuple[str, str, str]:
    return (str(name.dataset.location), name.dataset.dataset_id, name.operation_id)


def _operation_not_found(name: OperationName) -> NotFound:
    return NotFound(f"operation {name} not found", resource=str(name))


def _operation_row(db: sqlite3.Connection, name: OperationName) -> sqlite3.Row:
    row: sqlite3.Row | None = db.execute(
        _OPERATION_SELECT + _OPERATION_BY_NAME, _operation_params(name)
    ).fetchone()
    if row is None:
        raise _operation_not_found(name)
    return row


def _operation(row: sqlite3.Row) -> Operation:
    location = LocationName.parse(row["location"])
    name = OperationName(DatasetName(location, row["dataset_id"]), row["operation_id"])
    return records.operation(name, row)
