"""Instance keys taken from the catalog a block at a time, handed out in the order asked for (a
part of both catalogs: SQLite moves its AUTOINCREMENT counter past a block, PostgreSQL takes a
block of its sequence). Keys are never reused, and the processes sharing a catalog never hand
out the same: within a process they grow in the order instances arrive; across processes, by
block."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

#: Instance keys a process takes from the catalog at once (one round trip per block).
KEY_BLOCK: Final = 32


class KeyBlocks:
    def __init__(self, refill: Callable[[], Awaitable[Iterable[int]]]) -> None:
        """`refill` takes the next block from the catalog: its keys, in increasing order."""
        self._refill = refill
        self._keys: collections.deque[int] = collections.deque()
        self._lock = asyncio.Lock()

    async def next(self) -> int:
        # One refill at a time, the others waiting in line (asyncio's lock is first come, first
        # served): keys follow the order the reservations arrived in, and no block is wasted.
        async with self._lock:
            if not self._keys:
                self._keys.extend(await self._refill())
            return self._keys.popleft()
