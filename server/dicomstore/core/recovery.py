"""Start-up recovery: after a crash, nothing half-written stays visible or on disk.

An instance becomes visible only when its blob is durable (two-phase create), and a store's rows
go before its blobs. A crash between the steps leaves catalog rows that were never committed and
blobs nobody refers to; both are removed here, before the server takes requests. With
`--workers`, the supervisor runs it before it starts the workers (`dicomstore.supervisor`).
"""

from __future__ import annotations

import logging

from dicomstore.core.ports import BlobStore, Catalog

log = logging.getLogger(__name__)


async def recover(catalog: Catalog, blobs: BlobStore) -> None:
    """Run once at start-up, while no other process uses the catalog and the blobs: what it
    removes could otherwise be another process's work in progress. Every operation lease is
    released too, so that the operations the last run left unfinished resume at once."""
    await catalog.release_leases()
    for key in await catalog.recover_instances():
        await blobs.delete(key.store_key, key.instance_key)
    stores = await catalog.dicom_store_keys()
    orphan_stores = await blobs.dicom_store_keys() - stores
    for store_key in orphan_stores:
        await blobs.remove_dicom_store(store_key)
    orphan_blobs = 0
    for store_key in stores:
        unowned = await blobs.instance_keys(store_key) - await catalog.instance_keys(store_key)
        for instance_key in unowned:
            await blobs.delete(store_key, instance_key)
        orphan_blobs += len(unowned)
    if orphan_stores or orphan_blobs:
        log.info(
            "removed orphan blobs",
            extra={"stores": sorted(orphan_stores), "instances": orphan_blobs},
        )
