"""Start-up recovery over a real SQLite catalog and a real blob folder."""

from __future__ import annotations

import io

from dicomstore.blobs.local import LocalBlobStore
from dicomstore.catalog.sqlite import SqliteCatalog
from dicomstore.core.model import Dataset, DicomStore, InstanceKey, NewInstance
from dicomstore.core.names import DatasetName, DicomStoreName
from dicomstore.core.recovery import recover

DATASET = DatasetName.parse("projects/p/locations/l/datasets/d")
STORE = DicomStoreName(DATASET, "s")


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
