"""Start-up recovery over a real SQLite catalog and a real blob folder."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import time

from dicomstore.blobs.local import LocalBlobStore
from dicomstore.catalog.sqlite import SqliteCatalog
from dicomstore.core.model import Dataset, DicomStore, InstanceKey, NewInstance
from dicomstore.core.names import DatasetName, DicomStoreName
from dicomstore.core.processes import new_owner
from dicomstore.core.recovery import ORPHAN_AGE_S, Janitor, recover

DATASET = DatasetName.parse("projects/p/locations/l/datasets/d")
STORE = DicomStoreName(DATASET, "s")
STORE_KEY = 1  # the key of the first store created


def instance(sop: str) -> NewInstance:
    return NewInstance("1.2", "1.2.3", sop, "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")


async def stored(
    catalog: SqliteCatalog, blobs: LocalBlobStore, sop: str, *, visible: bool
) -> InstanceKey:
    """An instance stored as ingest does: the blob under a reserved key, then the row."""
    key = await catalog.reserve_instance_key(STORE)
    await blobs.write(key.store_key, key.instance_key, io.BytesIO(sop.encode()))
    await catalog.add_instance(key, instance(sop), len(sop), visible=visible)
    return key


async def test_recover_removes_invisible_rows_and_unowned_blobs(
    catalog: SqliteCatalog, blobs: LocalBlobStore
) -> None:
    await catalog.create_dataset(Dataset(DATASET))
    await catalog.create_dicom_store(DicomStore(STORE))
    committed = await stored(catalog, blobs, "1.1", visible=True)
    # Crashed before its request was acknowledged: an invisible row, its blob written.
    await stored(catalog, blobs, "1.2", visible=False)
    # Crashed after the blob was written, before its row was added.
    reserved = await catalog.reserve_instance_key(STORE)
    await blobs.write(reserved.store_key, reserved.instance_key, io.BytesIO(b"no row"))
    # A blob without any row, and the folder of a store that no longer exists.
    await blobs.write(committed.store_key, 999_999, io.BytesIO(b"orphan"))
    await blobs.write(committed.store_key + 50, 1, io.BytesIO(b"orphan store"))

    await recover(catalog, blobs)

    assert await blobs.instance_keys(committed.store_key) == {committed.instance_key}
    assert await blobs.dicom_store_keys() == {committed.store_key}
    assert await catalog.instance_keys(committed.store_key) == {committed.instance_key}
    assert (await catalog.dicom_store_metrics(STORE)).instance_count == 1


async def test_recover_on_clean_state_changes_nothing(
    catalog: SqliteCatalog, blobs: LocalBlobStore
) -> None:
    await catalog.create_dataset(Dataset(DATASET))
    await catalog.create_dicom_store(DicomStore(STORE))
    key = await stored(catalog, blobs, "1.1", visible=True)
    await recover(catalog, blobs)
    await recover(catalog, blobs)
    assert await blobs.instance_keys(key.store_key) == {key.instance_key}


# Several processes share the catalog and the blobs: recovery removes only what dead ones left.

OTHER = "elsewhere:7:aaaa"  # a process of another machine


def dead_owner() -> str:
    """The owner id of a process of this machine that has ended."""
    child = subprocess.Popen(["true"])
    child.wait()
    machine, _, rest = new_owner().partition(":")
    return f"{machine}:{child.pid}:{rest.split(':')[1]}"


def age(blobs: LocalBlobStore, key: InstanceKey, seconds: float) -> None:
    path = blobs.local_path(key.store_key, key.instance_key)
    then = time.time() - seconds
    os.utime(path, (then, then))


async def test_recover_leaves_a_live_process_its_rows_and_young_blobs(
    catalog: SqliteCatalog, blobs: LocalBlobStore
) -> None:
    await catalog.create_dataset(Dataset(DATASET))
    await catalog.create_dicom_store(DicomStore(STORE))
    await catalog.heartbeat(OTHER, 60)
    staged = await catalog.reserve_instance_key(STORE)
    await blobs.write(staged.store_key, staged.instance_key, io.BytesIO(b"staged"))
    await catalog.add_instance(staged, instance("1.1"), 6, visible=False, owner=OTHER)
    young = await catalog.reserve_instance_key(STORE)  # written, its row not added yet
    await blobs.write(young.store_key, young.instance_key, io.BytesIO(b"young"))
    old = await catalog.reserve_instance_key(STORE)  # a blob whose writer died long ago
    await blobs.write(old.store_key, old.instance_key, io.BytesIO(b"old"))
    age(blobs, old, ORPHAN_AGE_S + 60)

    await recover(catalog, blobs, "me:1:bbbb")

    assert await blobs.instance_keys(STORE_KEY) == {staged.instance_key, young.instance_key}
    assert await catalog.instance_keys(STORE_KEY) == {staged.instance_key}


async def test_recover_ends_the_processes_of_this_machine_that_are_gone(
    catalog: SqliteCatalog, blobs: LocalBlobStore
) -> None:
    await catalog.create_dataset(Dataset(DATASET))
    await catalog.create_dicom_store(DicomStore(STORE))
    gone = dead_owner()
    await catalog.heartbeat(gone, 60)  # killed a moment ago: its lease has not expired
    key = await catalog.reserve_instance_key(STORE)
    await blobs.write(key.store_key, key.instance_key, io.BytesIO(b"staged"))
    await catalog.add_instance(key, instance("1.1"), 6, visible=False, owner=gone)
    orphan = await catalog.reserve_instance_key(STORE)
    await blobs.write(orphan.store_key, orphan.instance_key, io.BytesIO(b"young"))

    await recover(catalog, blobs, "me:1:bbbb")

    assert await catalog.processes() == {}
    assert await catalog.instance_keys(STORE_KEY) == set()
    # Nobody else alive: a blob without a row is garbage, however young.
    assert await blobs.instance_keys(STORE_KEY) == set()


async def test_janitor_removes_a_dead_process_leftovers_while_running(
    catalog: SqliteCatalog, blobs: LocalBlobStore
) -> None:
    await catalog.create_dataset(Dataset(DATASET))
    await catalog.create_dicom_store(DicomStore(STORE))
    janitor = Janitor(catalog, blobs, "me:1:bbbb", lease_s=0.3, sweep_s=0.2)
    await janitor.start()
    await catalog.heartbeat(OTHER, 0.3)  # then killed: never renewed
    key = await catalog.reserve_instance_key(STORE)
    await blobs.write(key.store_key, key.instance_key, io.BytesIO(b"staged"))
    await catalog.add_instance(key, instance("1.1"), 6, visible=False, owner=OTHER)
    for _ in range(50):
        await asyncio.sleep(0.1)
        if not await catalog.instance_keys(STORE_KEY):
            break
    assert await catalog.instance_keys(STORE_KEY) == set()
    assert await blobs.instance_keys(STORE_KEY) == set()
    assert (await catalog.processes())["me:1:bbbb"] > 0  # its own lease, kept
    await janitor.close()
    assert "me:1:bbbb" not in await catalog.processes()
