"""The catalog on SQLite through aiosqlite: one writer connection, a few reader connections, WAL.

SQLite allows one writer at a time, so writes are serialised by an asyncio lock on the writer
connection (each in one `BEGIN IMMEDIATE` transaction); readers run concurrently on their own
connections and see only committed transactions (WAL snapshots). `synchronous=FULL`: a committed
transaction survives a power cut, not only a process crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

from dicomstore.catalog import records
from dicomstore.catalog.sqlite_search import SqliteSearch
from dicomstore.core.errors import Aborted, AlreadyExists, FailedPrecondition, NotFound
from dicomstore.core.model import (
    Dataset,
    DicomStore,
    DicomStoreMetrics,
    InstanceKey,
    NewInstance,
    Operation,
    StoredInstance,
)
from dicomstore.core.names import DatasetName, DicomStoreName, LocationName, OperationName

_NOW_MICROS = "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)"

_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=10000",
)


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("dicomstore.catalog") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(found)


class SqliteCatalog(SqliteSearch):
    """`dicomstore.core.ports.Catalog` on one SQLite file."""

    def __init__(self, path: Path, *, readers: int = 2) -> None:
        self._path = path
        self._reader_count = readers
        self._writer: aiosqlite.Connection | None = None
        self._readers: list[aiosqlite.Connection] = []
        self._next_reader = itertools.cycle([0])
        self._write_lock = asyncio.Lock()

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self._path, isolation_level=None)
        db.row_factory = aiosqlite.Row
        for pragma in _PRAGMAS:
            await db.execute(pragma)
        return db

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect()
        await self._migrate(self._writer)
        self._readers = [await self._connect() for _ in range(self._reader_count)]
        self._next_reader = itertools.cycle(range(self._reader_count))

    async def close(self) -> None:
        for db in [*self._readers, *([self._writer] if self._writer else [])]:
            await db.close()
        self._readers, self._writer = [], None

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        async with db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        current = int(row[0]) if row else 0
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
            await db.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={version};\nCOMMIT;"
            )

    @property
    def _reader(self) -> aiosqlite.Connection:
        return self._readers[next(self._next_reader)]

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        assert self._writer is not None, "catalog is not open"
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            await self._writer.execute("COMMIT")

    # execute_fetchall is one trip to the connection's thread; execute + fetch + close are three.

    async def _one(self, sql: str, params: Sequence[Any]) -> sqlite3.Row | None:
        rows = await self._reader.execute_fetchall(sql, params)
        return next(iter(rows), None)

    async def _all(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        return list(await self._reader.execute_fetchall(sql, params))

    @staticmethod
    async def _scalar(db: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> Any:
        rows = list(await db.execute_fetchall(sql, params))
        return rows[0][0] if rows else None

    async def setting(self, key: str, default: bytes) -> bytes:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (key, default),
            )
            value = await self._scalar(db, "SELECT value FROM settings WHERE key = ?", (key,))
        return bytes(value)

    # Datasets

    async def _dataset_key(self, db: aiosqlite.Connection, name: DatasetName) -> int:
        key = await self._scalar(
            db,
            "SELECT id FROM datasets WHERE location = ? AND dataset_id = ?",
            (str(name.location), name.dataset_id),
        )
        if key is None:
            raise NotFound(f"dataset {name} not found", resource=str(name))
        return int(key)

    async def create_dataset(self, dataset: Dataset) -> None:
        async with self._transaction() as db:
            try:
                await db.execute(
                    "INSERT INTO datasets (location, dataset_id, time_zone, create_time)"
                    f" VALUES (?, ?, ?, {_NOW_MICROS})",
                    (str(dataset.name.location), dataset.name.dataset_id, dataset.time_zone),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(
                    f"dataset {dataset.name} already exists", resource=str(dataset.name)
                ) from None

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
        async with self._transaction() as db:
            key = await self._dataset_key(db, dataset.name)
            await db.execute(
                "UPDATE datasets SET time_zone = ? WHERE id = ?", (dataset.time_zone, key)
            )

    async def delete_dataset(self, name: DatasetName) -> Sequence[int]:
        async with self._transaction() as db:
            key = await self._dataset_key(db, name)
            rows = await db.execute_fetchall(
                "SELECT id FROM dicom_stores WHERE dataset_key = ?", (key,)
            )
            store_keys = [int(r[0]) for r in rows]
            await db.execute("DELETE FROM datasets WHERE id = ?", (key,))
        return store_keys

    # DICOM stores

    async def create_dicom_store(self, store: DicomStore) -> None:
        async with self._transaction() as db:
            key = await self._dataset_key(db, store.name.dataset)
            try:
                await db.execute(
                    "INSERT INTO dicom_stores (dataset_key, store_id, config, create_time)"
                    f" VALUES (?, ?, ?, {_NOW_MICROS})",
                    (
                        key,
                        store.name.store_id,
                        records.store_config_json(store.config),
                    ),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(
                    f"DICOM store {store.name} already exists", resource=str(store.name)
                ) from None

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
        return int((await self._store_row(name))["id"])

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

    async def _store_key(self, db: aiosqlite.Connection, name: DicomStoreName) -> int:
        key = await self._scalar(
            db,
            "SELECT s.id FROM dicom_stores s JOIN datasets d ON d.id = s.dataset_key"
            " WHERE d.location = ? AND d.dataset_id = ? AND s.store_id = ?",
            (str(name.dataset.location), name.dataset.dataset_id, name.store_id),
        )
        if key is None:
            raise NotFound(f"DICOM store {name} not found", resource=str(name))
        return int(key)

    async def update_dicom_store(self, store: DicomStore) -> None:
        async with self._transaction() as db:
            key = await self._store_key(db, store.name)
            await db.execute(
                "UPDATE dicom_stores SET config = ? WHERE id = ?",
                (records.store_config_json(store.config), key),
            )

    async def delete_dicom_store(self, name: DicomStoreName) -> int:
        async with self._transaction() as db:
            key = await self._store_key(db, name)
            await db.execute("DELETE FROM dicom_stores WHERE id = ?", (key,))
        return key

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

    async def _claim(
        self,
        db: aiosqlite.Connection,
        table: str,
        parent: str,
        parent_key: int,
        uid: str,
        what: str,
    ) -> int:
        """The key of the study or series `uid` under its parent, creating the row if needed."""
        await db.execute(
            f"INSERT INTO {table} ({parent}, {what}_uid) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (parent_key, uid),
        )
        rows = list(
            await db.execute_fetchall(
                f"SELECT id, deleting FROM {table} WHERE {parent} = ? AND {what}_uid = ?",
                (parent_key, uid),
            )
        )
        if rows[0]["deleting"]:
            raise Aborted(f"{what} {uid} is being deleted; retry when the deletion has finished")
        return int(rows[0]["id"])

    async def begin_instance(self, store: DicomStoreName, instance: NewInstance) -> InstanceKey:
        metadata = json.dumps(dict(instance.metadata), separators=(",", ":"))
        async with self._transaction() as db:
            store_key = await self._store_key(db, store)
            study_key = await self._claim(
                db, "studies", "store_key", store_key, instance.study_uid, "study"
            )
            series_key = await self._claim(
                db, "series", "study_key", study_key, instance.series_uid, "series"
            )
            try:
                cursor = await db.execute(
                    "INSERT INTO instances (series_key, store_key, sop_uid, sop_class_uid,"
                    " transfer_syntax_uid, number_of_frames, metadata, structured_size)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        series_key,
                        store_key,
                        instance.sop_uid,
                        instance.sop_class_uid,
                        instance.transfer_syntax_uid,
                        instance.number_of_frames,
                        metadata,
                        len(metadata.encode()),
                    ),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(
                    "an instance with the same Study, Series and SOP Instance UIDs already exists",
                    resource=instance.sop_uid,
                ) from None
            assert cursor.lastrowid is not None
            await self._index_instance(db, cursor.lastrowid, instance)
            await db.execute(
                "UPDATE studies SET attributes = ? WHERE id = ? AND attributes = '{}'",
                (json.dumps(dict(instance.study_attributes)), study_key),
            )
            await db.execute(
                "UPDATE series SET attributes = ? WHERE id = ? AND attributes = '{}'",
                (json.dumps(dict(instance.series_attributes)), series_key),
            )
        assert cursor.lastrowid is not None
        return InstanceKey(store_key, cursor.lastrowid)

    async def commit_instance(self, key: InstanceKey, blob_size: int) -> None:
        await self.commit_instances([(key, blob_size)])

    async def commit_instances(self, items: Sequence[tuple[InstanceKey, int]]) -> None:
        async with self._transaction() as db:
            await db.executemany(
                "UPDATE instances SET state = 1, blob_size = ? WHERE id = ?",
                [(size, key.instance_key) for key, size in items],
            )

    async def _forget(self, db: aiosqlite.Connection, instance_key: int) -> None:
        rows = list(
            await db.execute_fetchall(
                "SELECT series_key, se.study_key FROM instances i JOIN series se"
                " ON se.id = i.series_key WHERE i.id = ?",
                (instance_key,),
            )
        )
        await db.execute("DELETE FROM instances WHERE id = ?", (instance_key,))
        for row in rows:
            await db.execute(
                "DELETE FROM series WHERE id = ? AND NOT EXISTS"
                " (SELECT 1 FROM instances WHERE series_key = ?)",
                (row["series_key"], row["series_key"]),
            )
            await db.execute(
                "DELETE FROM studies WHERE id = ? AND NOT EXISTS"
                " (SELECT 1 FROM series WHERE study_key = ?)",
                (row["study_key"], row["study_key"]),
            )

    async def abort_instance(self, key: InstanceKey) -> None:
        async with self._transaction() as db:
            await self._forget(db, key.instance_key)

    async def recover_instances(self) -> Sequence[InstanceKey]:
        async with self._transaction() as db:
            rows = list(
                await db.execute_fetchall("SELECT id, store_key FROM instances WHERE state = 0", ())
            )
            for row in rows:
                await self._forget(db, row["id"])
        return [InstanceKey(int(r["store_key"]), int(r["id"])) for r in rows]

    async def instance_keys(self, store_key: int) -> set[int]:
        rows = await self._all("SELECT id FROM instances WHERE store_key = ?", (store_key,))
        return {int(r[0]) for r in rows}

    async def find_instances(
        self,
        store: DicomStoreName,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
    ) -> Sequence[StoredInstance]:
        store_key = await self.dicom_store_key(store)
        sql = (
            "SELECT i.id, i.sop_uid, i.sop_class_uid, i.transfer_syntax_uid, i.number_of_frames,"
            " i.blob_size, se.series_uid FROM instances i JOIN series se ON se.id = i.series_key"
            " JOIN studies st ON st.id = se.study_key"
            " WHERE st.store_key = ? AND st.study_uid = ? AND i.state = 1"
        )
        params: list[Any] = [store_key, study_uid]
        if series_uid is not None:
            sql += " AND se.series_uid = ?"
            params.append(series_uid)
        if sop_uid is not None:
            sql += " AND i.sop_uid = ?"
            params.append(sop_uid)
        rows = await self._all(sql + " ORDER BY se.series_uid, i.sop_uid", params)
        return [
            StoredInstance(
                key=InstanceKey(store_key, int(r["id"])),
                study_uid=study_uid,
                series_uid=r["series_uid"],
                sop_uid=r["sop_uid"],
                sop_class_uid=r["sop_class_uid"],
                transfer_syntax_uid=r["transfer_syntax_uid"],
                number_of_frames=int(r["number_of_frames"]),
                blob_size=int(r["blob_size"]),
            )
            for r in rows
        ]

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
        async with self._transaction() as db:
            store_key = await self._store_key(db, store)
            if series_uid is None:
                cursor = await db.execute(
                    "UPDATE studies SET deleting = 1 WHERE store_key = ? AND study_uid = ?",
                    (store_key, study_uid),
                )
                what = f"study {study_uid}"
            else:
                cursor = await db.execute(
                    "UPDATE series SET deleting = 1 WHERE series_uid = ? AND study_key ="
                    " (SELECT id FROM studies WHERE store_key = ? AND study_uid = ?)",
                    (series_uid, store_key, study_uid),
                )
                what = f"series {series_uid} of study {study_uid}"
            if cursor.rowcount == 0:
                raise NotFound(f"{what} not found in {store}", resource=what)

    async def delete_instance(self, key: InstanceKey) -> None:
        async with self._transaction() as db:
            await self._forget(db, key.instance_key)

    # Operations

    _OP_SELECT = (
        "SELECT o.*, d.location, d.dataset_id FROM operations o JOIN datasets d"
        " ON d.id = o.dataset_key"
    )

    @staticmethod
    def _operation(row: sqlite3.Row) -> Operation:
        location = LocationName.parse(row["location"])
        name = OperationName(DatasetName(location, row["dataset_id"]), row["operation_id"])
        return records.operation(name, row)

    async def create_operation(self, operation: Operation) -> None:
        columns = records.operation_columns(operation)
        async with self._transaction() as db:
            key = await self._dataset_key(db, operation.name.dataset)
            columns |= {
                "dataset_key": key,
                "operation_id": operation.name.operation_id,
                "api_method_name": operation.api_method_name,
                "create_time": records.micros(operation.create_time),
                "job_kind": operation.job.kind,
                "job_args": json.dumps(dict(operation.job.args), sort_keys=True),
            }
            try:
                await db.execute(
                    f"INSERT INTO operations ({', '.join(columns)})"
                    f" VALUES ({', '.join('?' for _ in columns)})",
                    list(columns.values()),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(
                    f"operation {operation.name} already exists", resource=str(operation.name)
                ) from None

    async def _operation_row(self, db: aiosqlite.Connection, name: OperationName) -> sqlite3.Row:
        rows = list(
            await db.execute_fetchall(
                self._OP_SELECT
                + " WHERE d.location = ? AND d.dataset_id = ? AND o.operation_id = ?",
                (str(name.dataset.location), name.dataset.dataset_id, name.operation_id),
            )
        )
        row = rows[0] if rows else None
        if row is None:
            raise NotFound(f"operation {name} not found", resource=str(name))
        return row

    async def get_operation(self, name: OperationName) -> Operation:
        return self._operation(await self._operation_row(self._reader, name))

    async def list_operations(
        self, dataset: DatasetName, *, done: bool | None, after: str, limit: int
    ) -> Sequence[Operation]:
        state = {None: "", True: " AND o.end_time IS NOT NULL", False: " AND o.end_time IS NULL"}
        rows = await self._all(
            self._OP_SELECT
            + " WHERE d.location = ? AND d.dataset_id = ? AND o.operation_id > ?"
            + state[done]
            + " ORDER BY o.operation_id LIMIT ?",
            (str(dataset.location), dataset.dataset_id, after, limit),
        )
        return [self._operation(r) for r in rows]

    async def update_operation(self, operation: Operation) -> None:
        columns = records.operation_columns(operation)
        async with self._transaction() as db:
            row = await self._operation_row(db, operation.name)
            await db.execute(
                f"UPDATE operations SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?",
                [*columns.values(), row["id"]],
            )

    async def request_cancel(self, name: OperationName) -> Operation:
        async with self._transaction() as db:
            row = await self._operation_row(db, name)
            await db.execute(
                "UPDATE operations SET cancel_requested = 1 WHERE id = ? AND end_time IS NULL",
                (row["id"],),
            )
            return self._operation(await self._operation_row(db, name))

    async def unfinished_operations(self) -> Sequence[Operation]:
        rows = await self._all(
            self._OP_SELECT + " WHERE o.end_time IS NULL ORDER BY o.create_time", ()
        )
        return [self._operation(r) for r in rows]
