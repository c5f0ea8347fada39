"""Long-running operations, their leases and their logs in the PostgreSQL catalog (a part of
`postgres.PostgresCatalog`).

A lease's expiry is counted on the database's clock, as SQLite's is on the catalog's, so that
processes on several machines agree; concurrent claims of one operation are decided by its row
lock: the second waits for the first and then finds the lease taken.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from dicomstore.catalog import records, shared
from dicomstore.catalog.operation_reads import OperationReads
from dicomstore.catalog.postgres_statements import (
    NOW_MICROS,
    Db,
    PostgresParts,
    execute,
    fetchrow,
    fetchval,
    find_dataset_key,
)
from dicomstore.core.errors import AlreadyExists, Code
from dicomstore.core.model import Operation, OperationLogEntry
from dicomstore.core.names import OperationName

#: The key of an operation, by name (`shared.operation_params`).
_OPERATION_KEY = (
    "SELECT o.id FROM operations o JOIN datasets d ON d.id = o.dataset_key"
    + shared.OPERATION_BY_NAME
)


class PostgresOperations(OperationReads, PostgresParts):
    async def create_operation(
        self, operation: Operation, *, owner: str = "", lease_seconds: float = 0
    ) -> None:
        columns = records.operation_columns(operation) | {
            "operation_id": operation.name.operation_id,
            "api_method_name": operation.api_method_name,
            "create_time": records.micros(operation.create_time),
            "job_kind": operation.job.kind,
            "job_args": json.dumps(dict(operation.job.args), sort_keys=True),
        }
        if owner:
            columns["lease_owner"] = owner

        async def tx(db: Db) -> None:
            values = columns | {"dataset_key": await find_dataset_key(db, operation.name.dataset)}
            marks = ["?"] * len(values)
            if owner:  # the lease's expiry, on the database's clock
                values["lease_expiry"] = _micros(lease_seconds)
                marks.append(f"{NOW_MICROS} + ?")
            try:
                await execute(
                    db,
                    f"INSERT INTO operations ({', '.join(values)}) VALUES ({', '.join(marks)})",
                    list(values.values()),
                )
            except asyncpg.UniqueViolationError:
                raise AlreadyExists(
                    f"operation {operation.name} already exists", resource=str(operation.name)
                ) from None

        await self._write(tx)

    async def update_operation(self, operation: Operation) -> None:
        columns = records.operation_columns(operation)
        # A job persisting its progress must not undo a cancellation requested meanwhile.
        assignments = ", ".join(
            f"{c} = GREATEST({c}, ?)" if c == "cancel_requested" else f"{c} = ?" for c in columns
        )

        async def tx(db: Db) -> None:
            key = await _operation_key(db, operation.name)
            await execute(
                db, f"UPDATE operations SET {assignments} WHERE id = ?", [*columns.values(), key]
            )

        await self._write(tx)

    async def request_cancel(self, name: OperationName) -> Operation:
        async def tx(db: Db) -> Operation:
            row = await fetchrow(
                db,
                "UPDATE operations SET cancel_requested = CASE WHEN end_time IS NULL THEN 1"
                " ELSE cancel_requested END WHERE id = (" + _OPERATION_KEY + ") RETURNING id",
                shared.operation_params(name),
            )
            if row is None:
                raise shared.operation_not_found(name)
            found = await fetchrow(db, shared.OPERATION_SELECT + " WHERE o.id = ?", (row["id"],))
            return shared.operation(found)

        return await self._write(tx)

    async def claim_operation(self, name: OperationName, owner: str, lease_seconds: float) -> bool:
        async def tx(db: Db) -> bool:
            changed = await execute(
                db,
                f"UPDATE operations SET lease_owner = ?, lease_expiry = {NOW_MICROS} + ?"
                " WHERE end_time IS NULL AND (lease_owner IS NULL OR lease_owner = ?"
                f" OR lease_expiry <= {NOW_MICROS}) AND id = (" + _OPERATION_KEY + ")",
                (owner, _micros(lease_seconds), owner, *shared.operation_params(name)),
            )
            return changed == 1

        return await self._write(tx)

    async def renew_lease(self, name: OperationName, owner: str, lease_seconds: float) -> bool:
        async def tx(db: Db) -> bool:
            changed = await execute(
                db,
                f"UPDATE operations SET lease_expiry = {NOW_MICROS} + ?"
                " WHERE end_time IS NULL AND lease_owner = ? AND id = (" + _OPERATION_KEY + ")",
                (_micros(lease_seconds), owner, *shared.operation_params(name)),
            )
            return changed == 1

        return await self._write(tx)

    async def release_leases(self, owner: str | None = None) -> None:
        async def tx(db: Db) -> None:
            await execute(
                db,
                "UPDATE operations SET lease_owner = NULL, lease_expiry = NULL"
                " WHERE end_time IS NULL AND lease_owner IS NOT NULL"
                + ("" if owner is None else " AND lease_owner = ?"),
                () if owner is None else (owner,),
            )

        await self._write(tx)

    async def unclaimed_operations(self) -> Sequence[Operation]:
        rows = await self._all(
            shared.OPERATION_SELECT + " WHERE o.end_time IS NULL AND (o.lease_owner IS NULL"
            f" OR o.lease_expiry <= {NOW_MICROS}) ORDER BY o.create_time",
            (),
        )
        return [shared.operation(r) for r in rows]

    async def heartbeat(self, owner: str, lease_seconds: float) -> None:
        sql = shared.HEARTBEAT.format(now=NOW_MICROS)

        async def tx(db: Db) -> None:
            await execute(db, sql, (owner, _micros(lease_seconds)))

        await self._write(tx)

    async def end_process(self, owner: str) -> None:
        async def tx(db: Db) -> None:
            await execute(db, shared.END_PROCESS, (owner,))
            await execute(
                db,
                "UPDATE operations SET lease_owner = NULL, lease_expiry = NULL"
                " WHERE end_time IS NULL AND lease_owner = ?",
                (owner,),
            )

        await self._write(tx)

    async def processes(self) -> dict[str, float]:
        rows = await self._all(shared.PROCESSES.format(now=NOW_MICROS), ())
        return {r["owner"]: r["remaining"] / 1_000_000 for r in rows}

    async def add_operation_log(
        self, name: OperationName, entries: Sequence[OperationLogEntry]
    ) -> None:
        time = records.micros(datetime.now(UTC))

        async def tx(db: Db) -> None:
            # The row lock numbers concurrent appends one after the other.
            key = await _operation_key(db, name, lock=True)
            last = await fetchval(
                db,
                "SELECT coalesce(max(seq), 0) FROM operation_log WHERE operation_key = ?",
                (key,),
            )
            await db.executemany(
                "INSERT INTO operation_log (operation_key, seq, time, resource, code, message)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
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
            + shared.OPERATION_BY_NAME
            + " AND l.seq > ? ORDER BY l.seq LIMIT ?",
            (*shared.operation_params(name), after, limit),
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
        async def tx(db: Db) -> None:
            key = await _operation_key(db, name)
            await execute(db, "DELETE FROM operation_log WHERE operation_key = ?", (key,))

        await self._write(tx)


async def _operation_key(db: Db, name: OperationName, *, lock: bool = False) -> int:
    key = await fetchval(
        db,
        _OPERATION_KEY + (" FOR UPDATE OF o" if lock else ""),
        shared.operation_params(name),
    )
    if key is None:
        raise shared.operation_not_found(name)
    return int(key)


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)
