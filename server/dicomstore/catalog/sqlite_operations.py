"""Long-running operations and their logs in the SQLite catalog (a part of
`sqlite.SqliteCatalog`)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime

from dicomstore.catalog import records, shared
from dicomstore.catalog.operation_reads import OperationReads
from dicomstore.catalog.sqlite_statements import NOW_MICROS, SqliteParts, find_dataset_key
from dicomstore.core.errors import AlreadyExists, Code
from dicomstore.core.model import Operation, OperationLogEntry
from dicomstore.core.names import OperationName


class SqliteOperations(OperationReads, SqliteParts):
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

        def tx(db: sqlite3.Connection) -> None:
            values = columns | {"dataset_key": find_dataset_key(db, operation.name.dataset)}
            marks = ["?"] * len(values)
            if owner:  # the lease's expiry, on the catalog's clock
                values["lease_expiry"] = _micros(lease_seconds)
                marks.append(f"{NOW_MICROS} + ?")
            try:
                db.execute(
                    f"INSERT INTO operations ({', '.join(values)}) VALUES ({', '.join(marks)})",
                    list(values.values()),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(
                    f"operation {operation.name} already exists", resource=str(operation.name)
                ) from None

        await self._write(tx)

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
            return shared.operation(_operation_row(db, name))

        return await self._write(tx)

    async def claim_operation(self, name: OperationName, owner: str, lease_seconds: float) -> bool:
        def tx(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                f"UPDATE operations SET lease_owner = ?, lease_expiry = {NOW_MICROS} + ?"
                " WHERE end_time IS NULL AND (lease_owner IS NULL OR lease_owner = ?"
                f" OR lease_expiry <= {NOW_MICROS}) AND id ="
                " (SELECT o.id FROM operations o JOIN datasets d ON d.id = o.dataset_key"
                + _OPERATION_BY_NAME
                + ")",
                (owner, _micros(lease_seconds), owner, *_operation_params(name)),
            )
            return cursor.rowcount == 1

        return await self._write(tx)

    async def renew_lease(self, name: OperationName, owner: str, lease_seconds: float) -> bool:
        def tx(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                f"UPDATE operations SET lease_expiry = {NOW_MICROS} + ?"
                " WHERE end_time IS NULL AND lease_owner = ? AND id ="
                " (SELECT o.id FROM operations o JOIN datasets d ON d.id = o.dataset_key"
                + _OPERATION_BY_NAME
                + ")",
                (_micros(lease_seconds), owner, *_operation_params(name)),
            )
            return cursor.rowcount == 1

        return await self._write(tx)

    async def release_leases(self, owner: str | None = None) -> None:
        def tx(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE operations SET lease_owner = NULL, lease_expiry = NULL"
                " WHERE end_time IS NULL AND lease_owner IS NOT NULL"
                + ("" if owner is None else " AND lease_owner = ?"),
                () if owner is None else (owner,),
            )

        await self._write(tx)

    async def unclaimed_operations(self) -> Sequence[Operation]:
        rows = await self._all(
            _OPERATION_SELECT + " WHERE o.end_time IS NULL AND (o.lease_owner IS NULL"
            f" OR o.lease_expiry <= {NOW_MICROS}) ORDER BY o.create_time",
            (),
        )
        return [_operation(r) for r in rows]

    async def heartbeat(self, owner: str, lease_seconds: float) -> None:
        sql = shared.HEARTBEAT.format(now=NOW_MICROS)
        await self._write(lambda db: db.execute(sql, (owner, _micros(lease_seconds))))

    async def end_process(self, owner: str) -> None:
        def tx(db: sqlite3.Connection) -> None:
            db.execute(shared.END_PROCESS, (owner,))
            db.execute(
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
        def tx(db: sqlite3.Connection) -> None:
            key = _operation_row(db, name)["id"]
            db.execute("DELETE FROM operation_log WHERE operation_key = ?", (key,))

        await self._write(tx)


# The SQL and row building the PostgreSQL catalog runs too (`shared`), under this module's names.
_OPERATION_SELECT = shared.OPERATION_SELECT
_OPERATION_BY_NAME = shared.OPERATION_BY_NAME
_operation_params = shared.operation_params
_operation = shared.operation


def _operation_row(db: sqlite3.Connection, name: OperationName) -> sqlite3.Row:
    row: sqlite3.Row | None = db.execute(
        shared.OPERATION_SELECT + shared.OPERATION_BY_NAME, shared.operation_params(name)
    ).fetchone()
    if row is None:
        raise shared.operation_not_found(name)
    return row


def _micros(seconds: float) -> int:
    """A lease's length as the catalog counts time (microseconds)."""
    return round(seconds * 1_000_000)
