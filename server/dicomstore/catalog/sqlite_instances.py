"""Instances in the SQLite catalog (a part of `sqlite.SqliteCatalog`).

Instance keys are handed out before the instance's row exists (`reserve_instance_key`), so that
its blob can be written first. They come from the catalog, `KEY_BLOCK` at a time: a transaction
moves the AUTOINCREMENT counter of `instances` (`sqlite_sequence`) past the block, so keys are
never reused and the processes sharing the catalog (`--workers`) never hand out the same one.
A row is added invisible (state 0, with the owner id of the process adding it) or visible (1);
invisible rows whose process is dead are a crash's leftovers (`recover_instances`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from dicomstore.catalog import shared
from dicomstore.catalog.key_blocks import KEY_BLOCK, KeyBlocks
from dicomstore.catalog.sqlite_statements import (
    NOW_MICROS,
    SqliteParts,
    find_store_key,
    scalar,
)
from dicomstore.core.errors import Aborted, AlreadyExists, NotFound
from dicomstore.core.model import InstanceKey, NewInstance, NewInstanceRow, StoredInstance
from dicomstore.core.names import DicomStoreName


class SqliteInstances(SqliteParts):
    _instance_keys: KeyBlocks
    _index_rows: Callable[[int, NewInstance], Callable[[sqlite3.Connection], None]]

    async def reserve_instance_key(
        self, store: DicomStoreName, *, store_key: int | None = None
    ) -> InstanceKey:
        if store_key is None:
            store_key = await self.dicom_store_key(store)
        return InstanceKey(store_key, await self._instance_keys.next())

    async def _key_block(self) -> range:
        first = await self._write(_take_key_block)
        return range(first, first + KEY_BLOCK)

    async def add_instance(
        self,
        key: InstanceKey,
        instance: NewInstance,
        blob_size: int,
        *,
        visible: bool,
        owner: str = "",
    ) -> None:
        (refusal,) = await self.add_instances(
            [NewInstanceRow(key, instance, blob_size)], visible=visible, owner=owner
        )
        if refusal is not None:
            raise refusal

    async def add_instances(
        self,
        rows: Sequence[NewInstanceRow],
        *,
        visible: bool,
        commit: Sequence[InstanceKey] = (),
        owner: str = "",
    ) -> list[AlreadyExists | Aborted | None]:
        adds = [self._prepare_row(row, visible, owner) for row in rows]
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
        self, row: NewInstanceRow, visible: bool, owner: str
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
                    shared.INSERT_INSTANCE,
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
                        None if visible or not owner else owner,
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
            rows = db.execute(shared.DEAD_LEFTOVERS.format(now=NOW_MICROS)).fetchall()
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
            shared.INSTANCE_SELECT + " WHERE i.store_key = ? AND i.state = 1 AND i.id > ?"
            " ORDER BY i.id LIMIT ?",
            (store_key, after, limit),
        )
        return [shared.stored_instance(store_key, r) for r in rows]

    async def instances_by_key(self, keys: Sequence[InstanceKey]) -> Sequence[StoredInstance]:
        found: dict[InstanceKey, StoredInstance] = {}
        for start in range(0, len(keys), 500):
            batch = keys[start : start + 500]
            marks = ", ".join("?" * len(batch))
            rows = await self._all(
                shared.INSTANCE_SELECT + f" WHERE i.state = 1 AND i.id IN ({marks})",
                [k.instance_key for k in batch],
            )
            for row in rows:
                instance = shared.stored_instance(int(row["store_key"]), row)
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
        sql = (
            shared.INSTANCE_SELECT + " WHERE st.store_key = ? AND st.study_uid = ? AND i.state = 1"
        )
        params: list[Any] = [store_key, study_uid]
        if series_uid is not None:
            sql += " AND se.series_uid = ?"
            params.append(series_uid)
        if sop_uid is not None:
            sql += " AND i.sop_uid = ?"
            params.append(sop_uid)
        rows = await self._all(sql + " ORDER BY se.series_uid, i.sop_uid", params)
        return [shared.stored_instance(store_key, r) for r in rows]

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
            store_key = find_store_key(db, store)
            if series_uid is None:
                cursor = db.execute(shared.mark_deleting(False), (store_key, study_uid))
                what = f"study {study_uid}"
            else:
                cursor = db.execute(shared.mark_deleting(True), (series_uid, store_key, study_uid))
                what = f"series {series_uid} of study {study_uid}"
            if cursor.rowcount == 0:
                raise NotFound(f"{what} not found in {store}", resource=what)

        await self._write(tx)

    async def delete_instance(self, key: InstanceKey) -> None:
        await self._write(lambda db: _forget(db, key.instance_key))


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


def _take_key_block(db: sqlite3.Connection) -> int:
    """Move the instances' AUTOINCREMENT counter past `KEY_BLOCK` keys; the first of them."""
    last = scalar(db, "SELECT seq FROM sqlite_sequence WHERE name = 'instances'", ())
    if last is None:
        last = scalar(db, "SELECT coalesce(max(id), 0) FROM instances", ())
        db.execute(
            "INSERT INTO sqlite_sequence (name, seq) VALUES ('instances', ?)",
            (last + KEY_BLOCK,),
        )
    else:
        db.execute(
            "UPDATE sqlite_sequence SET seq = ? WHERE name = 'instances'", (last + KEY_BLOCK,)
        )
    return int(last) + 1


def _require_store(db: sqlite3.Connection, store_key: int) -> None:
    if scalar(db, "SELECT 1 FROM dicom_stores WHERE id = ?", (store_key,)) is None:
        raise NotFound("the DICOM store was deleted", resource=str(store_key))


def _make_visible(db: sqlite3.Connection, keys: Sequence[InstanceKey]) -> None:
    cursor = db.executemany(
        "UPDATE instances SET state = 1 WHERE id = ? AND state = 0",
        [(k.instance_key,) for k in keys],
    )
    if cursor.rowcount < len(set(keys)):
        raise shared.leftovers_taken()


def _forget(db: sqlite3.Connection, instance_key: int) -> None:
    """Delete an instance row, then its series and study if they are left empty."""
    row = db.execute(shared.FORGET_KEYS, (instance_key,)).fetchone()
    if row is None:
        return
    db.execute(shared.FORGET_INSTANCE, (instance_key,))
    db.execute(shared.FORGET_SERIES, (row["series_key"], row["series_key"]))
    db.execute(shared.FORGET_STUDY, (row["study_key"], row["study_key"]))
