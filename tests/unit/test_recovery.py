"""Start-up recovery over a real SQLite catalog and a real blob folder."""

from __future__ import annotations

import io

from dicomstore.blobs.local import LocalBlobStore
from dicomstore.catalog.sqlite import SqliteCatalog
from dicomstore.core.model import Dataset, DicomStore, NewInstance
from dicomstore.core.names import DatasetName, DicomStoreName
from dicomstore.core.recovery import recover

DATASET = DatasetName.parse("projects/p/locations/l/datasets/d")
STORE = DicomStoreName(DATASET, "s")


def instance(sop: str) -> NewInstance:
    return NewInstance("1.2", "1.2.3", sop, "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")


async def test_recover_removes_uncommitted_rows_and_unowned_blobs(
    catalog: SqliteCatalog, blobs: LocalBlobStore
) -> None:
    await catalog.create_dataset(Dataset(DATASET))
    await catalog.create_dicom_store(DicomStore(STORE))
    committed = await catalog.begin_instance(STORE, instance("1.1"))
    await blobs.write(committed.store_key, committed.instance_key, io.BytesIO(b"kept"))
    await catalog.commit_instance(committed, 4)
    # Crashed after the blob was written, before the commit.
    uncommitted = await catalog.begin_instance(STORE, instance("1.2"))
    await blobs.write(uncommitted.store_key, uncommitted.instance_key, io.BytesIO(b"lost"))
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
    key = await catalog.begin_instance(STORE, instance("1.1"))
    await blobs.write(key.store_key, key.instance_key, io.BytesIO(b"kept"))
    await catalog.commit_instance(key, 4)
    await recover(catalog, blobs)
    await recover(catalog, blobs)
    assert await blobs.instance_keys(key.store_key) == {key.instance_key}
