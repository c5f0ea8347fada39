"""Instances in the PostgreSQL catalog (a part of `postgres.PostgresCatalog`).

Instance keys are handed out before the instance's row exists (`reserve_instance_key`), so
that its blob can be written first: from the `instance_keys` sequence, shared by every process
on the database and never reused, a block at a time (`key_blocks`). A row is
added invisible (state 0, with the owner id of the process adding it) or visible (1); invisible
rows whose process is dead are a crash's leftovers (`recover_instances`).

UID claims: transactions run concurrently here (not one writer, as in SQLite), so the study and
series rows are claimed with `INSERT ... ON CONFLICT DO NOTHING` (a concurrent claim of the same
UID waits for the first to commit, then finds its row) and read `FOR SHARE` (a delete marking
the study `deleting` waits for the instances being added, and they for it); the instance row's
UNIQUE (series_key, sop_uid) makes of concurrent stores of the same UIDs exactly one.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from dicomstore.catalog import shared
from dicomstore.catalog.key_blocks import KEY_BLOCK, KeyBlocks
from dicomstore.catalog.postgres_statements import (
    NOW_MICROS,
    Db,
    PostgresParts,
    execute,
    fetch,
    fetchrow,
    fetchval,
    find_store_key,
)
from dicomstore.core.errors import Aborted, AlreadyExists, NotFound
from dicomstore.core.model import InstanceKey, NewInstance, NewInstanceRow, StoredInstance
from dicomstore.core.names import DicomStoreName

_Add = Callable[[Db], Awaitable[None]]


class PostgresInstances(PostgresParts):
    _index_rows: Callable[[int, NewInstance], _Add]
    _instance_keys: KeyBlocks

    async def reserve_instance_key(
        self, store: DicomStoreName, *, store_key: int | None = None
    ) -> InstanceKey:
        if store_key is None:
            store_key = await self.dicom_store_key(store)
        return InstanceKey(store_key, await self._instance_keys.next())

    async def _key_block(self) -> list[int]:
        rows = await self._all(
            "SELECT nextval('instance_keys') AS key FROM generate_series(1, ?)", (KEY_BLOCK,)
        )
        return sorted(int(r["key"]) for r in rows)

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
        store_keys = sorted({row.key.store_key for row in rows} | {k.store_key for k in commit})
        # A row alone needs no savepoint: its refusal rolls the whole transaction back.
        alone = len(adds) == 1 and not commit

        async def tx(db: Db) -> list[AlreadyExists | Aborted | None]:
            for store_key in store_keys:
                await _require_store(db, store_key)
            if alone:
                await adds[0](db)
                return [None]
            outcomes: list[AlreadyExists | Aborted | None] = []
            for add in adds:
                try:
                    async with db.transaction():  # a savepoint: a refusal undoes its row alone
                        await add(db)
                except (AlreadyExists, Aborted) as exc:
                    outcomes.append(exc)
                else:
                    outcomes.append(None)
            await _make_visible(db, commit)
            return outcomes

        try:
            return await self._write(tx)
        except (AlreadyExists, Aborted) as exc:  # raised only by a row alone
            return [exc]

    def _prepare_row(self, row: NewInstanceRow, visible: bool, owner: str) -> _Add:
        """The writes that record `row` (JSON encoded now, outside the transaction); they raise
        AlreadyExists or Aborted."""
        key, instance = row.key, row.instance
        metadata = json.dumps(dict(instance.metadata), separators=(",", ":"))
        study_attributes = json.dumps(dict(instance.study_attributes))
        series_attributes = json.dumps(dict(instance.series_attributes))
        index = self._index_rows(key.instance_key, instance)

        async def add(db: Db) -> None:
            study_key = await _claim(
                db, "studies", "store_key", key.store_key, instance.study_uid, study_attributes
            )
            series_key = await _claim(
                db, "series", "study_key", study_key, instance.series_uid, series_attributes
            )
            try:
                await execute(
                    db,
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
            except asyncpg.UniqueViolationError:
                raise AlreadyExists(
                    "an instance with the same Study, Series and SOP Instance UIDs already exists",
                    resource=instance.sop_uid,
                ) from None
            await index(db)

        return add

    async def abort_instance(self, key: InstanceKey) -> None:
        await self._write(lambda db: _forget(db, key.instance_key))

    async def recover_instances(self) -> Sequence[InstanceKey]:
        async def tx(db: Db) -> list[InstanceKey]:
            # Locked: a commit of these rows (a process taken for dead that woke up) waits, then
            # finds them gone and fails; one that locked them first has made them visible.
            dead = shared.DEAD_LEFTOVERS.format(now=NOW_MICROS) + " FOR UPDATE"
            rows = await fetch(db, dead)
            for row in rows:
                await _forget(db, row["id"])
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
        rows = await self._all(
            shared.INSTANCE_SELECT + " WHERE i.state = 1 AND i.id = ANY(?::BIGINT[])",
            ([k.instance_key for k in keys],),
        )
        found = {(i := shared.stored_instance(int(r["store_key"]), r)).key: i for r in rows}
        return [found[k] for k in keys if k in found]

    async def find_instances(
        self,
        store: DicomStoreName,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
    ) -> Sequence[StoredInstance]:
        store_key = await self.dicom_store_key(store)
        sql = shared.INSTANCE_SELECT + " WHERE st.store_key = ? AND st.study_uid = ?"
        params: list[Any] = [store_key, study_uid]
        if series_uid is not None:
            sql += " AND se.series_uid = ?"
            params.append(series_uid)
        if sop_uid is not None:
            sql += " AND i.sop_uid = ?"
            params.append(sop_uid)
        rows = await self._all(sql + " AND i.state = 1 ORDER BY se.series_uid, i.sop_uid", params)
        return [shared.stored_instance(store_key, r) for r in rows]

    async def instance_metadata(self, keys: Sequence[InstanceKey]) -> Sequence[dict[str, Any]]:
        ids = [k.instance_key for k in keys]
        rows = await self._all(
            "SELECT id, metadata FROM instances WHERE id = ANY(?::BIGINT[])", (ids,)
        )
        found = {int(r["id"]): json.loads(r["metadata"]) for r in rows}
        return [found[i] for i in ids]

    async def mark_deleting(
        self, store: DicomStoreName, study_uid: str, series_uid: str | None = None
    ) -> None:
        async def tx(db: Db) -> None:
            store_key = await find_store_key(db, store)
            if series_uid is None:
                changed = await execute(db, shared.mark_deleting(False), (store_key, study_uid))
                what = f"study {study_uid}"
            else:
                params = (series_uid, store_key, study_uid)
                changed = await execute(db, shared.mark_deleting(True), params)
                what = f"series {series_uid} of study {study_uid}"
            if changed == 0:
                raise NotFound(f"{what} not found in {store}", resource=what)

        await self._write(tx)

    async def delete_instance(self, key: InstanceKey) -> None:
        await self._write(lambda db: _forget(db, key.instance_key))


async def _claim(
    db: Db, table: str, parent: str, parent_key: int, uid: str, attributes: str
) -> int:
    """The key of the study or series `uid` under its parent, creating the row if needed.

    A new row takes `attributes`; so does one left without any.
    """
    what = "study" if table == "studies" else "series"
    select = (
        f"SELECT id, deleting, attributes = '{{}}' AS bare FROM {table}"
        f" WHERE {parent} = ? AND {what}_uid = ? FOR SHARE"
    )
    row = await fetchrow(db, select, (parent_key, uid))
    if row is None:
        key = await fetchval(
            db,
            f"INSERT INTO {table} ({parent}, {what}_uid, attributes) VALUES (?, ?, ?)"
            f" ON CONFLICT ({parent}, {what}_uid) DO NOTHING RETURNING id",
            (parent_key, uid, attributes),
        )
        if key is not None:
            return int(key)
        row = await fetchrow(db, select, (parent_key, uid))  # a concurrent claim committed it
        assert row is not None
    if row["deleting"]:
        raise Aborted(f"{what} {uid} is being deleted; retry when the deletion has finished")
    if row["bare"] and attributes != "{}":
        # Rare (a row left without attributes): concurrent claims upgrading their share lock
        # may deadlock here, and are run again.
        await execute(
            db, f"UPDATE {table} SET attributes = ? WHERE id = ?", (attributes, row["id"])
        )
    return int(row["id"])


async def _require_store(db: Db, store_key: int) -> None:
    # FOR KEY SHARE: a concurrent delete of the store waits for this transaction (and the rows
    # it adds go with the store).
    found = await fetchval(
        db, "SELECT 1 FROM dicom_stores WHERE id = ? FOR KEY SHARE", (store_key,)
    )
    if found is None:
        raise NotFound("the DICOM store was deleted", resource=str(store_key))


async def _make_visible(db: Db, keys: Sequence[InstanceKey]) -> None:
    if keys:
        changed = await execute(
            db,
            "UPDATE instances SET state = 1 WHERE id = ANY(?::BIGINT[]) AND state = 0",
            ([k.instance_key for k in keys],),
        )
        if changed < len(set(keys)):
            raise shared.leftovers_taken()


async def _forget(db: Db, instance_key: int) -> None:
    """Delete an instance row, then its series and study if they are left empty."""
    row = await fetchrow(db, shared.FORGET_KEYS, (instance_key,))
    if row is None:
        return
    await execute(db, shared.FORGET_INSTANCE, (instance_key,))
    # Locked first: an instance being added to the series (which holds it FOR SHARE) commits
    # before the emptiness test, a statement later, sees it; one added after waits for this.
    await execute(db, "SELECT 1 FROM series WHERE id = ? FOR UPDATE", (row["series_key"],))
    await execute(db, shared.FORGET_SERIES, (row["series_key"], row["series_key"]))
    await execute(db, "SELECT 1 FROM studies WHERE id = ? FOR UPDATE", (row["study_key"],))
    await execute(db, shared.FORGET_STUDY, (row["study_key"], row["study_key"]))
