"""Local copies of blobs kept elsewhere (Cloud Storage), for readers that need a file on this
machine: the pixel workers, other processes, which open instances by path.

A blob is copied at its first `lease` and the copy is kept while any lease holds it. Copies
nobody holds are kept too, the most recently used first, up to `limit` bytes in all: a viewer
asks the frames of one instance one request at a time, and each would otherwise fetch it again.
Blobs never change once written and their keys are never reused, so a copy is never stale.

Each process (with `--workers`, several serve one data directory) keeps its copies in a folder
of its own under `root` (`PID-RANDOM`), made at its first copy and removed when it closes.
`remove_abandoned` removes the folders a crash left: those whose pid no longer runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from dicomstore.core.processes import pid_running

Key = tuple[int, int]
#: Writes the blob into the file at the given path; returns its size.
Fill = Callable[[Path], Awaitable[int]]


@dataclass
class _Copy:
    path: Path
    filled: asyncio.Future[int]
    users: int = 0
    size: int = field(default=0)


class SpoolCache:
    """Copies of blobs under `root`; those not in use at most `limit` bytes in all."""

    def __init__(self, root: Path, limit: int) -> None:
        self._root = root
        self._limit = limit
        self._folder: Path | None = None
        self._copies: OrderedDict[Key, _Copy] = OrderedDict()
        self._made = 0  # copies made: each has a name of its own, never reused

    async def remove_abandoned(self) -> None:
        """Remove the folders of processes no longer running (left by a crash)."""
        await asyncio.to_thread(_remove_abandoned, self._root)

    async def close(self) -> None:
        self._copies.clear()
        if self._folder is not None:
            folder, self._folder = self._folder, None
            await asyncio.to_thread(shutil.rmtree, folder, True)

    async def _own_folder(self) -> Path:
        if self._folder is None:
            made = await asyncio.to_thread(_make_folder, self._root)
            if self._folder is None:
                self._folder = made
            else:  # another lease made one meanwhile
                os.rmdir(made)
        return self._folder

    @contextlib.asynccontextmanager
    async def lease(self, key: Key, fill: Fill) -> AsyncIterator[Path]:
        """The copy of blob `key`, made by `fill` unless there is one; kept until released."""
        folder = await self._own_folder()
        copy = self._copies.get(key)  # no await from here until the copy is registered
        if copy is None:
            self._made += 1
            path = folder / f"{key[0]}-{key[1]}-{self._made}.dcm"
            copy = _Copy(path, asyncio.ensure_future(self._fill(key, path, fill)))
            copy.filled.add_done_callback(_retrieve)
            self._copies[key] = copy
        self._copies.move_to_end(key)
        copy.users += 1
        try:
            # Shielded: a request that goes away leaves the copy to those waiting with it.
            copy.size = await asyncio.shield(copy.filled)
            yield copy.path
        finally:
            copy.users -= 1
            await self._evict()

    async def _fill(self, key: Key, path: Path, fill: Fill) -> int:
        try:
            return await fill(path)
        except BaseException:
            self._copies.pop(key, None)
            await asyncio.to_thread(path.unlink, missing_ok=True)
            raise

    async def forget(self, key: Key) -> None:
        """Remove the copy of a deleted blob, unless a reader still holds it."""
        copy = self._copies.get(key)
        if copy is not None and copy.users == 0 and copy.filled.done():
            del self._copies[key]
            await asyncio.to_thread(copy.path.unlink, missing_ok=True)

    async def _evict(self) -> None:
        """Remove the least recently used copies nobody holds until the rest fit in `limit`."""
        idle = [
            (key, copy)
            for key, copy in self._copies.items()
            if copy.users == 0 and copy.filled.done()
        ]
        excess = sum(copy.size for _, copy in idle) - self._limit
        for key, copy in idle:
            if excess <= 0:
                break
            del self._copies[key]
            excess -= copy.size
            await asyncio.to_thread(copy.path.unlink, missing_ok=True)


def _make_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root))


def _remove_abandoned(root: Path) -> None:
    if not root.is_dir():
        return
    for folder in root.iterdir():
        pid = folder.name.partition("-")[0]
        if not pid.isdigit() or not pid_running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _retrieve(filled: asyncio.Future[int]) -> None:
    """Mark a failed fill's error as seen: every waiter got it, or none was left to."""
    if not filled.cancelled():
        filled.exception()
