"""The one ingest path, over real SQLite, real blobs and pydicom's own test files."""

from __future__ import annotations

import asyncio
import io
import threading
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from tests.unit.dicom.dicomfiles import PYDICOM_DATA, data_file

from dicomstore.blobs.local import LocalBlobStore
from dicomstore.catalog.sqlite import SqliteCatalog
from dicomstore.core.instances import Instances
from dicomstore.core.model import Dataset, DicomStore, NewInstanceRow
from dicomstore.core.names import DatasetName, DicomStoreName
from dicomstore.core.operations import Operations
from dicomstore.core.paging import PageTokens
from dicomstore.dicom.reasons import FailureReason

DATASET = DatasetName.parse("projects/p/locations/l/datasets/d")
STORE = DicomStoreName(DATASET, "s")
TEST_FILES = sorted((PYDICOM_DATA / "test_files").glob("*.dcm"))


@pytest.fixture
async def instances(catalog: SqliteCatalog, blobs: LocalBlobStore) -> Instances:
    await catalog.create_dataset(Dataset(DATASET))
    await catalog.create_dicom_store(DicomStore(STORE))
    return Instances(catalog, blobs, Operations(catalog, PageTokens(b"k" * 32), concurrency=1))


def read(path: Path) -> bytes:
    return path.read_bytes()


def test_pydicom_ships_its_test_files() -> None:
    assert len(TEST_FILES) >= 70


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
async def test_every_pydicom_file_is_stored_intact_or_refused_clearly(
    instances: Instances, blobs: LocalBlobStore, catalog: SqliteCatalog, path: Path
) -> None:
    with path.open("rb") as source:
        result = await instances.ingest(STORE, source)
    metrics = await catalog.dicom_store_metrics(STORE)
    if result.stored:
        found = await instances.find(STORE, result.study_uid, result.series_uid, result.sop_uid)
        key = found[0].key
        assert read(blobs.local_path(key.store_key, key.instance_key)) == read(path)
        assert metrics.instance_count == 1
        assert metrics.blob_storage_size_bytes == len(read(path))
    else:
        assert result.failure in set(FailureReason)
        assert result.detail
        assert metrics.instance_count == 0
        assert await blobs.dicom_store_keys() == set()


@pytest.mark.google_behaviour("stow-duplicate")
async def test_duplicate_is_a_processing_failure_and_keeps_the_stored_copy(
    instances: Instances, blobs: LocalBlobStore
) -> None:
    path = data_file("CT_small.dcm")
    with path.open("rb") as source:
        first = await instances.ingest(STORE, source)
    assert first.stored
    with path.open("rb") as source:
        again = await instances.ingest(STORE, source)
    assert again.failure == FailureReason.PROCESSING_FAILURE
    assert "already exists" in again.detail
    (stored,) = await instances.find(STORE, first.study_uid)
    assert len(await blobs.instance_keys(stored.key.store_key)) == 1


@pytest.mark.google_behaviour("stow-study-mismatch")
async def test_instance_of_another_study_than_requested_fails(
    instances: Instances, catalog: SqliteCatalog
) -> None:
    with data_file("CT_small.dcm").open("rb") as source:
        result = await instances.ingest(STORE, source, study_uid="1.2.3")
    assert result.failure == FailureReason.STUDY_INSTANCE_UID_MISMATCH
    assert "1.2.3" in result.detail
    assert (await catalog.dicom_store_metrics(STORE)).instance_count == 0


async def test_concurrent_ingest_of_one_instance_stores_exactly_one(
    instances: Instances, catalog: SqliteCatalog
) -> None:
    payload = data_file("CT_small.dcm").read_bytes()
    results = await asyncio.gather(
        *(instances.ingest(STORE, io.BytesIO(payload)) for _ in range(8))
    )
    assert sum(r.stored for r in results) == 1
    assert (await catalog.dicom_store_metrics(STORE)).instance_count == 1


class FailingBlobs(LocalBlobStore):
    """A disk that fails on write: a fault the real blob store cannot produce on demand."""

    async def write(self, store_key: int, instance_key: int, source: BinaryIO) -> int:
        raise OSError("disk full")


async def test_failed_blob_write_leaves_nothing_visible(
    catalog: SqliteCatalog, blob_root: Path
) -> None:
    await catalog.create_dataset(Dataset(DATASET))
    await catalog.create_dicom_store(DicomStore(STORE))
    failing = FailingBlobs(blob_root)
    await failing.open()
    operations = Operations(catalog, PageTokens(b"k" * 32), concurrency=1)
    instances = Instances(catalog, failing, operations)
    with data_file("CT_small.dcm").open("rb") as source, pytest.raises(OSError, match="disk"):
        await instances.ingest(STORE, source)
    assert (await catalog.dicom_store_metrics(STORE)).instance_count == 0
    assert await catalog.recover_instances() == []
    with data_file("CT_small.dcm").open("rb") as source:
        assert (
            await Instances(catalog, LocalBlobStore(blob_root), operations).ingest(STORE, source)
        ).stored


async def test_uncommitted_instances_appear_together_on_commit(
    instances: Instances, catalog: SqliteCatalog
) -> None:
    paths = [data_file("CT_small.dcm"), data_file("MR_small.dcm")]
    results = []
    for path in paths:
        with path.open("rb") as source:
            results.append(await instances.ingest(STORE, source, commit=False))
    assert all(r.stored and r.pending for r in results)
    assert (await catalog.dicom_store_metrics(STORE)).instance_count == 0
    await instances.commit(results)
    assert (await catalog.dicom_store_metrics(STORE)).instance_count == 2


async def test_abandoned_instances_leave_no_row_and_no_blob(
    instances: Instances, catalog: SqliteCatalog, blobs: LocalBlobStore
) -> None:
    with data_file("CT_small.dcm").open("rb") as source:
        result = await instances.ingest(STORE, source, commit=False)
    assert result.pending is not None
    await instances.abandon([result])
    assert await catalog.recover_instances() == []
    assert isinstance(result.pending, NewInstanceRow)
    assert await blobs.instance_keys(result.pending.key.store_key) == set()
    with data_file("CT_small.dcm").open("rb") as source:
        assert (await instances.ingest(STORE, source)).stored


async def test_pending_rows_are_recorded_by_stage_invisibly_and_shown_by_commit(
    instances: Instances, catalog: SqliteCatalog
) -> None:
    store_key = await catalog.dicom_store_key(STORE)
    first = []
    for name in ("CT_small.dcm", "MR_small.dcm"):
        with data_file(name).open("rb") as source:
            first.append(await instances.ingest(STORE, source, commit=False))
    assert all(isinstance(r.pending, NewInstanceRow) for r in first)
    assert await catalog.instance_keys(store_key) == set()  # nothing recorded yet

    staged = await instances.stage(first)
    assert [r.pending for r in staged] == [r.pending.key for r in first]  # type: ignore[union-attr]
    assert len(await catalog.instance_keys(store_key)) == 2
    assert (await catalog.dicom_store_metrics(STORE)).instance_count == 0
    with data_file("rtplan.dcm").open("rb") as source:
        last = await instances.ingest(STORE, source, commit=False)

    done = await instances.commit([*staged, last])
    assert all(r.stored and r.pending is None for r in done)
    assert (await catalog.dicom_store_metrics(STORE)).instance_count == 3


async def test_pending_instance_whose_uids_were_stored_meanwhile_fails_on_commit(
    instances: Instances, catalog: SqliteCatalog, blobs: LocalBlobStore
) -> None:
    payload = data_file("CT_small.dcm").read_bytes()
    waiting = await instances.ingest(STORE, io.BytesIO(payload), commit=False)
    with data_file("MR_small.dcm").open("rb") as source:
        other = await instances.ingest(STORE, source, commit=False)
    assert (await instances.ingest(STORE, io.BytesIO(payload))).stored  # visible at once

    refused, stored = await instances.commit([waiting, other])
    assert refused.failure == FailureReason.PROCESSING_FAILURE
    assert "already exists" in refused.detail and refused.pending is None
    assert stored.stored and stored.pending is None
    assert (await catalog.dicom_store_metrics(STORE)).instance_count == 2
    store_key = await catalog.dicom_store_key(STORE)
    assert await blobs.instance_keys(store_key) == await catalog.instance_keys(store_key)
    assert isinstance(waiting.pending, NewInstanceRow)
    assert waiting.pending.key.instance_key not in await blobs.instance_keys(store_key)


class SlowToAnswerCatalog(SqliteCatalog):
    """Adds rows, then keeps its caller waiting: room to cancel an ingest after its commit."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.added = asyncio.Event()

    async def add_instances(self, *args: Any, **kwargs: Any) -> list[Any]:
        refusals = await super().add_instances(*args, **kwargs)
        self.added.set()
        await asyncio.sleep(30)
        return refusals


@pytest.mark.parametrize("step", ["ingest", "stage", "commit"])
async def test_ingest_cancelled_after_its_row_was_added_leaves_nothing(
    tmp_path: Path, blobs: LocalBlobStore, step: str
) -> None:
    catalog = SlowToAnswerCatalog(tmp_path / "slow.sqlite3")
    await catalog.open()
    try:
        await catalog.create_dataset(Dataset(DATASET))
        await catalog.create_dicom_store(DicomStore(STORE))
        operations = Operations(catalog, PageTokens(b"k" * 32), concurrency=1)
        instances = Instances(catalog, blobs, operations)
        payload = io.BytesIO(data_file("CT_small.dcm").read_bytes())
        task: asyncio.Task[object]
        if step == "ingest":
            task = asyncio.ensure_future(instances.ingest(STORE, payload))
        else:
            results = [await instances.ingest(STORE, payload, commit=False)]
            record = instances.stage if step == "stage" else instances.commit
            task = asyncio.ensure_future(record(results))
        await catalog.added.wait()
        store_key = await catalog.dicom_store_key(STORE)
        assert len(await catalog.instance_keys(store_key)) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        if step != "ingest":  # what the STOW handler does when its request ends this way
            await instances.abandon(results)
        assert await catalog.instance_keys(store_key) == set()
        assert await blobs.instance_keys(store_key) == set()
    finally:
        await catalog.close()


class SlowBlobStore(LocalBlobStore):
    """Writes blobs only once `release` is set, in the writing thread, as a slow disk would."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.started = threading.Event()
        self.release = threading.Event()

    def _write(self, folder: str, stem: str, source: BinaryIO) -> int:
        self.started.set()
        self.release.wait(30)
        return super()._write(folder, stem, source)


@pytest.mark.parametrize(
    "name",
    ["CT_small.dcm", "examples_palette.dcm"],
    ids=["parsed-inline", "parsed-in-a-thread"],
)
async def test_ingest_cancelled_while_its_blob_is_written_leaves_nothing(
    tmp_path: Path, catalog: SqliteCatalog, name: str
) -> None:
    blobs = SlowBlobStore(tmp_path / "slow-blobs")
    await blobs.open()
    await catalog.create_dataset(Dataset(DATASET))
    await catalog.create_dicom_store(DicomStore(STORE))
    operations = Operations(catalog, PageTokens(b"k" * 32), concurrency=1)
    instances = Instances(catalog, blobs, operations)
    payload = data_file(name).read_bytes()
    task = asyncio.ensure_future(instances.ingest(STORE, io.BytesIO(payload)))
    await asyncio.to_thread(blobs.started.wait, 30)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()  # the clean-up waits for the write it cannot stop
    blobs.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    store_key = await catalog.dicom_store_key(STORE)
    assert await catalog.instance_keys(store_key) == set()
    assert await blobs.instance_keys(store_key) == set()
