"""IngestBatch, the lifecycle STOW-RS and import share, over real SQLite and real blobs."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.uid import UID
from tests.unit.dicom.dicomfiles import data_file
from tests.unit.test_ingest import STORE

from dicomstore.blobs.local import LocalBlobStore
from dicomstore.catalog.sqlite import SqliteCatalog
from dicomstore.core.errors import NotFound
from dicomstore.core.ingest import IN_FLIGHT, PENDING_ROWS, IngestBatch
from dicomstore.core.instances import Ingested, Instances
from dicomstore.core.model import Dataset, DicomStore
from dicomstore.core.operations import Operations
from dicomstore.core.paging import PageTokens
from dicomstore.dicom.reasons import FailureReason


@pytest.fixture
async def instances(catalog: SqliteCatalog, blobs: LocalBlobStore) -> Instances:
    await catalog.create_dataset(Dataset(STORE.dataset))
    await catalog.create_dicom_store(DicomStore(STORE))
    return Instances(catalog, blobs, Operations(catalog, PageTokens(b"k" * 32), concurrency=1))


def copy_of(name: str, sop_uid: str, *, patient: str = "") -> bytes:
    """A pydicom test file with another SOP Instance UID (and Patient ID when given)."""
    dataset = pydicom.dcmread(data_file(name))
    dataset.SOPInstanceUID = sop_uid
    dataset.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    if patient:
        dataset.PatientID = patient
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


async def visible(catalog: SqliteCatalog) -> int:
    return (await catalog.dicom_store_metrics(STORE)).instance_count


async def test_instances_appear_on_commit_in_the_order_offered(
    instances: Instances, catalog: SqliteCatalog
) -> None:
    count = PENDING_ROWS + IN_FLIGHT + 3  # past a staging of rows, with instances in flight
    batch = IngestBatch(instances, STORE, await instances.store_key(STORE))
    for n in range(count):
        await batch.add_in_memory(copy_of("CT_small.dcm", f"1.2.3.{n}"))
    await batch.add_failure(Ingested(failure=FailureReason.CANNOT_UNDERSTAND, detail="garbage"))
    assert len(batch) == count + 1
    assert await visible(catalog) == 0
    results = await batch.commit()
    assert [r.sop_uid for r in results[:-1]] == [f"1.2.3.{n}" for n in range(count)]
    assert all(r.stored for r in results[:-1]) and results[-1].detail == "garbage"
    assert await visible(catalog) == count
    assert len(batch) == 0


async def invisible(catalog: SqliteCatalog) -> int:
    rows = await catalog._all("SELECT count(*) FROM instances WHERE state = 0", ())
    return int(rows[0][0])


async def test_a_batch_of_pending_rows_at_most_is_never_recorded_invisible(
    instances: Instances, catalog: SqliteCatalog
) -> None:
    # An import's group: a process killed before its commit leaves no row claiming its UIDs
    # (with --workers no recovery runs until the next start, and the import resumes elsewhere).
    batch = IngestBatch(instances, STORE, await instances.store_key(STORE))
    for n in range(PENDING_ROWS):
        await batch.add_in_memory(copy_of("CT_small.dcm", f"1.2.7.{n}"))
    await batch.add_failure(Ingested(failure=FailureReason.CANNOT_UNDERSTAND, detail="x"))
    assert await invisible(catalog) == 0
    await batch.add_in_memory(copy_of("CT_small.dcm", "1.2.7.64"))
    await batch.add_failure(Ingested(failure=FailureReason.CANNOT_UNDERSTAND, detail="x"))
    assert await invisible(catalog) == PENDING_ROWS + 1  # a larger batch stages as it goes
    await batch.commit()
    assert await invisible(catalog) == 0


async def test_a_batch_commits_group_after_group(
    instances: Instances, catalog: SqliteCatalog
) -> None:
    batch = IngestBatch(instances, STORE, await instances.store_key(STORE))
    for group in range(3):
        for n in range(5):
            await batch.add_in_memory(copy_of("CT_small.dcm", f"1.2.{group}.{n}"))
        assert len(await batch.commit()) == 5
        assert await visible(catalog) == 5 * (group + 1)


async def test_abandon_forgets_what_was_not_committed_in_flight_included(
    instances: Instances, catalog: SqliteCatalog, blobs: LocalBlobStore
) -> None:
    batch = IngestBatch(instances, STORE, await instances.store_key(STORE))
    await batch.add_in_memory(copy_of("CT_small.dcm", "1.2.9.1"))
    await batch.commit()
    for n in range(PENDING_ROWS + 2):
        await batch.add_in_memory(copy_of("CT_small.dcm", f"1.2.8.{n}"))
    await batch.abandon()
    assert await visible(catalog) == 1
    store_key = await catalog.dicom_store_key(STORE)
    assert len(await blobs.instance_keys(store_key)) == 1
    assert len(await catalog.instance_keys(store_key)) == 1
    assert await batch.commit() == []


@pytest.mark.google_behaviour("import-duplicates")
async def test_an_identical_instance_is_kept_as_stored_when_asked(
    instances: Instances, catalog: SqliteCatalog, blobs: LocalBlobStore
) -> None:
    data = copy_of("CT_small.dcm", "1.2.5.1")
    first = IngestBatch(instances, STORE, await instances.store_key(STORE))
    await first.add_in_memory(data)
    (stored,) = await first.commit()

    again = IngestBatch(instances, STORE, await instances.store_key(STORE), keep_identical=True)
    await again.add_in_memory(data)
    await again.add_in_memory(data)  # twice in one batch: the second is identical too
    results = await again.commit()
    assert [(r.stored, r.already_stored) for r in results] == [(True, True), (True, True)]
    found = await catalog.find_instances(STORE, stored.study_uid)
    assert len(found) == 1
    assert await blobs.instance_keys(found[0].key.store_key) == {found[0].key.instance_key}


@pytest.mark.google_behaviour("import-duplicates")
async def test_same_uids_with_other_bytes_fail_saying_so_and_keep_the_stored_one(
    instances: Instances, catalog: SqliteCatalog, blobs: LocalBlobStore
) -> None:
    batch = IngestBatch(instances, STORE, await instances.store_key(STORE), keep_identical=True)
    await batch.add_in_memory(copy_of("CT_small.dcm", "1.2.6.1", patient="first"))
    await batch.commit()
    await batch.add_in_memory(copy_of("CT_small.dcm", "1.2.6.1", patient="second"))
    (result,) = await batch.commit()
    assert result.failure == FailureReason.PROCESSING_FAILURE
    assert "different bytes" in result.detail
    (found,) = await catalog.find_instances(STORE, result.study_uid)
    (metadata,) = await catalog.instance_metadata([found.key])
    assert metadata["00100020"]["Value"] == ["first"]
    assert await blobs.instance_keys(found.key.store_key) == {found.key.instance_key}


async def test_without_keep_identical_a_duplicate_fails(instances: Instances) -> None:
    data = copy_of("CT_small.dcm", "1.2.7.1")
    batch = IngestBatch(instances, STORE, await instances.store_key(STORE))
    await batch.add_in_memory(data)
    await batch.commit()
    await batch.add_in_memory(data)
    (result,) = await batch.commit()
    assert not result.stored and "already exists" in result.detail


@pytest.mark.parametrize("alone", [True, False])
async def test_add_from_a_file_is_visible_at_once_only_when_alone(
    instances: Instances, catalog: SqliteCatalog, alone: bool
) -> None:
    batch = IngestBatch(instances, STORE, await instances.store_key(STORE))
    with data_file("CT_small.dcm").open("rb") as source:
        await batch.add(source, alone=alone)
    assert await visible(catalog) == (1 if alone else 0)
    (result,) = await batch.commit()
    assert result.stored and await visible(catalog) == 1


async def test_a_store_deleted_after_the_batch_began_refuses_its_instances(
    instances: Instances, catalog: SqliteCatalog, blobs: LocalBlobStore
) -> None:
    """The batch looks the store up once: a delete meanwhile still refuses its rows, even
    when a store of the same name was created since (it has another key)."""
    store_key = await instances.store_key(STORE)
    batch = IngestBatch(instances, STORE, store_key)
    await batch.add_in_memory(copy_of("CT_small.dcm", "1.2.8.1"))
    await catalog.delete_dicom_store(STORE)
    await catalog.create_dicom_store(DicomStore(STORE))
    with pytest.raises(NotFound, match="deleted"):
        await batch.commit()
    await batch.abandon()
    assert await visible(catalog) == 0
    assert await blobs.instance_keys(store_key) == set()
