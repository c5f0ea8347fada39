"""The reads of operations, the same SQL on SQLite and PostgreSQL (a part of both catalogs, like
`store_reads`; their writes differ)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from dicomstore.catalog import shared
from dicomstore.core.model import Operation
from dicomstore.core.names import DatasetName, OperationName

_DONE = {None: "", True: " AND o.end_time IS NOT NULL", False: " AND o.end_time IS NULL"}


class OperationReads:
    _one: Callable[[str, Sequence[Any]], Awaitable[Any]]
    _all: Callable[[str, Sequence[Any]], Awaitable[list[Any]]]

    async def get_operation(self, name: OperationName) -> Operation:
        row = await self._one(
            shared.OPERATION_SELECT + shared.OPERATION_BY_NAME, shared.operation_params(name)
        )
        if row is None:
            raise shared.operation_not_found(name)
        return shared.operation(row)

    async def list_operations(
        self, dataset: DatasetName, *, done: bool | None, after: str, limit: int
    ) -> Sequence[Operation]:
        rows = await self._all(
            shared.OPERATION_SELECT
            + " WHERE d.location = ? AND d.dataset_id = ? AND o.operation_id > ?"
            + _DONE[done]
            + " ORDER BY o.operation_id LIMIT ?",
            (str(dataset.location), dataset.dataset_id, after, limit),
        )
        return [shared.operation(r) for r in rows]

    async def unfinished_operations(self) -> Sequence[Operation]:
        rows = await self._all(
            shared.OPERATION_SELECT + " WHERE o.end_time IS NULL ORDER BY o.create_time", ()
        )
        return [shared.operation(r) for r in rows]
