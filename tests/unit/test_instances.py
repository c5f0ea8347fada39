"""Instance lookup and deletion over a real SQLite catalog, real blobs and the operations runner."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from dicomstore.blobs.local import LocalBlobStore
from dicomstore.catalog.sqlite import SqliteCatalog
from dicomstore.core.errors import Aborted, Code, NotFound
from dicomstore.core.instances import DELETE_SERIES_METHOD, DELETE_STUDY_METHOD, Instances
from dicomstore.core.model import (
    Dataset,
    DicomStore,
    InstanceKey,
    Job,
    NewInstance,
    Operation,
    OperationResponse,
)
from dicomstore.core.names import DatasetName, DicomStoreName
from dicomstore.core.operations import EMPTY, JobContext, Operations
from dicomstore.core.paging import PageTokens

DATASET = DatasetName.parse("projects/p/locations/l/datasets/d")
STORE = DicomStoreName(DATASET, "s")
LAYOUT = [("1.1", "1.1.1", "1.1.1.1"), ("1.1", "1.1.1", "1.1.1.2"), ("1.1", "1.1.2", "1.1.2.1"),
          ("2.1", "2.1.1", "2.1.1.1")]  # fmt: skip


@pytest.fixture
async def operations(catalog: SqliteCatalog) -> Operations:
    return Operations(catalog, PageTokens(b"k" * 32), concurrency=2)


@pytest.fixture
async def instances(
    catalog: SqliteCatalog, blobs: LocalBlobStore, operations: Operations
) -> Instances:
    await catalog.create_dataset(Dataset(DATASET))
    await catalog.create_dicom_store(DicomStore(STORE))
    for study, series, sop in LAYOUT:
        new = NewInstance(study, series, sop, "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
        key = await catalog.reserve_instance_key(STORE)
        await blobs.write(key.store_key, key.instance_key, io.BytesIO(sop.encode()))
        await catalog.add_instance(key, new, len(sop), visible=True)
    return Instances(catalog, blobs, operations)


async def blob_contents(blobs: LocalBlobStore, key: InstanceKey) -> set[bytes]:
    return {
        blobs.local_path(key.store_key, k).read_bytes()
        for k in await blobs.instance_keys(key.store_key)
    }


async def test_find_returns_instances_in_series_then_sop_order(instances: Instances) -> None:
    found = await instances.find(STORE, "1.1")
    assert [(i.series_uid, i.sop_uid) for i in found] == [
        ("1.1.1", "1.1.1.1"),
        ("1.1.1", "1.1.1.2"),
        ("1.1.2", "1.1.2.1"),
    ]
    assert [i.sop_uid for i in await instances.find(STORE, "1.1", "1.1.2")] == ["1.1.2.1"]


@pytest.mark.parametrize(
    ("study", "series", "sop"),
    [("9.9", None, None), ("1.1", "9.9", None), ("1.1", "1.1.1", "9.9"), ("2.1", "1.1.1", None)],
)
async def test_find_of_missing_resource_is_not_found(
    instances: Instances, study: str, series: str | None, sop: str | None
) -> None:
    with pytest.raises(NotFound):
        await instances.find(STORE, study, series, sop)


@pytest.mark.google_behaviour("delete-study-series", "operation-method-names")
async def test_delete_study_operation_removes_rows_and_blobs(
    instances: Instances,
    operations: Operations,
    catalog: SqliteCatalog,
    blobs: LocalBlobStore,
) -> None:
    operation = await instances.start_delete(STORE, "1.1")
    assert operation.api_method_name == DELETE_STUDY_METHOD
    await operations.idle()
    finished = await catalog.get_operation(operation.name)
    assert finished.done and finished.error is None
    assert finished.response is not None
    assert finished.response.type_name == "google.protobuf.Empty"
    assert finished.counter.success == 3
    assert finished.counter.pending == 0
    metrics = await catalog.dicom_store_metrics(STORE)
    assert (metrics.study_count, metrics.series_count, metrics.instance_count) == (1, 1, 1)
    remaining = (await instances.find(STORE, "2.1"))[0].key
    assert await blob_contents(blobs, remaining) == {b"2.1.1.1"}


async def test_delete_series_leaves_the_rest_of_the_study(
    instances: Instances, operations: Operations, catalog: SqliteCatalog
) -> None:
    operation = await instances.start_delete(STORE, "1.1", "1.1.1")
    assert operation.api_method_name == DELETE_SERIES_METHOD
    await operations.idle()
    assert [i.sop_uid for i in await instances.find(STORE, "1.1")] == ["1.1.2.1"]


@pytest.mark.google_behaviour("delete-blocks-inserts")
async def test_study_being_deleted_takes_no_new_instance(
    instances: Instances, catalog: SqliteCatalog
) -> None:
    await catalog.mark_deleting(STORE, "1.1")
    new = NewInstance("1.1", "1.1.9", "1.1.9.1", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2")
    key = await catalog.reserve_instance_key(STORE)
    with pytest.raises(Aborted, match="being deleted"):
        await catalog.add_instance(key, new, 1, visible=False)


@pytest.mark.google_behaviour("delete-blocks-inserts")
async def test_deleted_study_takes_instances_again_once_gone(
    instances: Instances, operations: Operations, catalog: SqliteCatalog
) -> None:
    await instances.start_delete(STORE, "1.1")
    await operations.idle()
    new = NewInstance("1.1", "1.1.1", "1.1.1.1", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2")
    await catalog.add_instance(await catalog.reserve_instance_key(STORE), new, 1, visible=True)
    assert len(await instances.find(STORE, "1.1")) == 1


async def test_study_delete_cancelled_before_it_runs_still_deletes_and_releases_the_study(
    instances: Instances, operations: Operations, catalog: SqliteCatalog
) -> None:
    # Both job slots busy: the delete waits, marked, and is cancelled before it starts.
    release = asyncio.Event()

    async def busy(context: JobContext) -> OperationResponse:
        await release.wait()
        return EMPTY

    operations.register("busy", busy)
    for _ in range(2):
        await operations.start(DATASET, "busy", Job("busy"))
    operation = await instances.start_delete(STORE, "1.1")
    await operations.cancel(str(operation.name))
    release.set()
    await operations.idle()
    done = await operations.get(str(operation.name))
    assert (done.error, done.response, done.cancel_requested) == (None, EMPTY, True)
    assert [i.sop_uid for i in await catalog.find_instances(STORE, "2.1")] == ["2.1.1.1"]
    with pytest.raises(NotFound):
        await instances.find(STORE, "1.1")
    new = NewInstance("1.1", "1.1.1", "1.1.1.1", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2")
    await catalog.add_instance(await catalog.reserve_instance_key(STORE), new, 1, visible=True)


async def test_delete_of_missing_study_is_not_found_and_starts_nothing(
    instances: Instances, catalog: SqliteCatalog
) -> None:
    with pytest.raises(NotFound):
        await instances.start_delete(STORE, "9.9")
    assert list(await catalog.list_operations(DATASET, done=None, after="", limit=10)) == []


@pytest.mark.google_behaviour("delete-instance")
async def test_delete_instance_removes_row_and_blob(
    instances: Instances, catalog: SqliteCatalog, blobs: LocalBlobStore
) -> None:
    key = (await instances.find(STORE, "1.1", "1.1.1", "1.1.1.2"))[0].key
    await instances.delete_instance(STORE, "1.1", "1.1.1", "1.1.1.2")
    assert key.instance_key not in await blobs.instance_keys(key.store_key)
    assert (await catalog.dicom_store_metrics(STORE)).instance_count == 3
    with pytest.raises(NotFound):
        await instances.delete_instance(STORE, "1.1", "1.1.1", "1.1.1.2")


async def test_interrupted_delete_resumes_after_restart(
    instances: Instances, operations: Operations, catalog: SqliteCatalog, blobs: LocalBlobStore
) -> None:
    operation = await instances.start_delete(STORE, "1.1")
    await operations.close()  # the server stopped before the job ran
    restarted = Operations(catalog, PageTokens(b"k" * 32), concurrency=2)
    Instances(catalog, blobs, restarted)
    await restarted.resume()
    await restarted.idle()
    finished = await catalog.get_operation(operation.name)
    assert finished.done and finished.error is None
    assert (await catalog.dicom_store_metrics(STORE)).instance_count == 1


async def test_delete_of_store_during_study_delete_ends_cleanly(
    instances: Instances, operations: Operations, catalog: SqliteCatalog
) -> None:
    operation = await instances.start_delete(STORE, "1.1")
    await catalog.delete_dicom_store(STORE)
    await operations.idle()
    finished = await catalog.get_operation(operation.name)
    assert finished.done
    assert finished.error is None or finished.error.code != Code.INTERNAL


class OperationsFail(SqliteCatalog):
    """The real catalog, whose recording of an operation fails (the moment a crash or an I/O
    error would strike between a delete's two writes)."""

    async def create_operation(
        self, operation: Operation, *, owner: str = "", lease_seconds: float = 0
    ) -> None:
        raise OSError("recording the operation failed")


async def test_study_is_never_marked_deleting_without_its_operation(
    instances: Instances, catalog: SqliteCatalog, blobs: LocalBlobStore, tmp_path: Path
) -> None:
    failing = OperationsFail(tmp_path / "catalog.sqlite3")  # the same file, a second connection
    await failing.open()
    try:
        operations = Operations(failing, PageTokens(b"k" * 32), concurrency=2)
        doomed = Instances(failing, blobs, operations)
        with pytest.raises(OSError, match="recording the operation failed"):
            await doomed.start_delete(STORE, "1.1")

        # The study was not marked: it takes new instances, as if no delete had been asked.
        new = NewInstance(
            "1.1", "1.1.1", "1.1.1.9", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2"
        )
        assert list(await failing.list_operations(DATASET, done=None, after="", limit=10)) == []
        key = await failing.reserve_instance_key(STORE)
        await failing.add_instance(key, new, 1, visible=True)
        assert len(await doomed.find(STORE, "1.1")) == 4
    finally:
        await failing.close()
