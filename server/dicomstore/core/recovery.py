"""Recovery: what crashes leave is removed, never the work in progress of a live process.

An instance becomes visible only when its blob is durable (two-phase create), and a store's rows
go before its blobs. A crash between the steps leaves invisible catalog rows, blobs no row
refers to, partial files and local copies. Several processes may share the catalog and the blobs
(`--workers`; replicas over PostgreSQL and Cloud Storage), so each is removed only once its
writer is known to be dead:

- Invisible rows carry their process's owner id; they go once that process holds no unexpired
  liveness lease (`Catalog.heartbeat`, renewed by `Janitor`), at once when it was a process of
  this machine whose pid is gone (`processes.gone_here`: then its lease is ended here).
- A blob without a row names no writer: it goes once older than `ORPHAN_AGE_S` (far longer than
  a blob waits for its row: the rest of its request), or at any age when no other process has
  a liveness lease, read after the listings (a process starting later wrote none of the blobs
  listed, since it takes its lease before it writes).
- A store's blobs go when the store is not in the catalog, read after the blobs are listed (a
  store's blobs are written only once its row exists, and store keys are never reused).
- Partial files and local copies: the blob store removes those of processes no longer running
  on this machine (`BlobStore.remove_leftovers`).

`recover` runs at start-up, before requests are taken (with `--workers`, in the supervisor
before the workers start). `Janitor` runs in every process: it renews the process's liveness
lease every `lease_s / 3` and sweeps every `SWEEP_S` (the blob listings every `ORPHAN_SWEEP_S`),
so that what a dead process left is removed without restarting the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from dicomstore.core.errors import DicomStoreError
from dicomstore.core.ports import BlobStore, Catalog
from dicomstore.core.processes import gone_here

log = logging.getLogger(__name__)

#: How long a process's liveness lease lasts without renewal.
PROCESS_LEASE_S: Final = 10.0
#: Age from which a blob without a row is removed while other processes run.
ORPHAN_AGE_S: Final = 3600.0
#: How often each process looks for dead processes' invisible rows and files.
SWEEP_S: Final = 30.0
#: How often each process lists every blob for those without a row.
ORPHAN_SWEEP_S: Final = 1800.0


async def recover(
    catalog: Catalog, blobs: BlobStore, owner: str = "", *, orphans: bool = True
) -> None:
    """Remove what dead processes left; `owner` is this process's id ("" for a process that
    writes nothing, the supervisor of `--workers`). With `orphans`, blobs without a row and the
    blobs of removed stores too (this lists every blob)."""
    for other, remaining in (await catalog.processes()).items():
        # A lease expired long ago is of a process that is certainly gone.
        if other != owner and (gone_here(other) or remaining < -ORPHAN_AGE_S):
            await catalog.end_process(other)
            log.info("process gone; its leftovers are removed", extra={"owner": other})
    await blobs.remove_leftovers()
    invisible = await catalog.recover_instances()
    for key in invisible:
        await blobs.delete(key.store_key, key.instance_key)
    if invisible:
        log.info("removed uncommitted instances", extra={"instances": len(invisible)})
    if orphans:
        await _remove_orphan_blobs(catalog, blobs, owner)


async def _remove_orphan_blobs(catalog: Catalog, blobs: BlobStore, owner: str) -> None:
    blob_stores = await blobs.dicom_store_keys()
    stores = await catalog.dicom_store_keys()
    unowned: dict[int, dict[int, float]] = {}
    for store_key in stores:
        ages = await blobs.instance_ages(store_key)
        rows = await catalog.instance_keys(store_key)
        unowned[store_key] = {key: age for key, age in ages.items() if key not in rows}
    alone = not (set(await catalog.processes()) - {owner})
    orphan_stores = blob_stores - stores
    for store_key in orphan_stores:
        await blobs.remove_dicom_store(store_key)
    orphan_blobs = 0
    for store_key, ages in unowned.items():
        for instance_key, age in ages.items():
            if alone or age >= ORPHAN_AGE_S:
                await blobs.delete(store_key, instance_key)
                orphan_blobs += 1
    if orphan_stores or orphan_blobs:
        log.info(
            "removed orphan blobs",
            extra={"stores": sorted(orphan_stores), "instances": orphan_blobs},
        )


class Janitor:
    """Keeps this process's liveness lease and removes what dead processes left, while the
    process runs (see the module doc)."""

    def __init__(
        self,
        catalog: Catalog,
        blobs: BlobStore,
        owner: str,
        *,
        lease_s: float = PROCESS_LEASE_S,
        sweep_s: float = SWEEP_S,
        orphan_sweep_s: float = ORPHAN_SWEEP_S,
    ) -> None:
        self._catalog = catalog
        self._blobs = blobs
        self._owner = owner
        self._lease_s = lease_s
        self._sweep_s = sweep_s
        self._orphan_sweep_s = orphan_sweep_s
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Take the liveness lease (before this process writes anything), then keep it."""
        await self._catalog.heartbeat(self._owner, self._lease_s)
        loop = asyncio.get_running_loop()
        # Two tasks: a long sweep (listing a bucket) must not delay the renewals.
        self._tasks = [loop.create_task(self._beat()), loop.create_task(self._sweep())]

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            try:
                await self._catalog.heartbeat(self._owner, self._lease_s)
            except Exception:  # tried again at the next beat; the loop must go on
                log.warning("liveness lease not renewed", exc_info=True)

    async def _sweep(self) -> None:
        orphans_swept = time.monotonic()
        while True:
            await asyncio.sleep(self._sweep_s)
            orphans = time.monotonic() - orphans_swept >= self._orphan_sweep_s
            try:
                await recover(self._catalog, self._blobs, self._owner, orphans=orphans)
            except Exception:  # tried again at the next sweep; the loop must go on
                log.warning("removing the leftovers of dead processes failed", exc_info=True)
                continue
            if orphans:
                orphans_swept = time.monotonic()

    async def close(self) -> None:
        """Stop, and end the liveness lease: what this process left may be removed at once."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self._catalog.end_process(self._owner)
        except DicomStoreError:  # it expires instead
            log.warning("ending the liveness lease failed", exc_info=True)
