"""Datasets (dicomstore.core.datasets) over a real SQLite catalog and blob folder in tmp_path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dicomstore.blobs.local import LocalBlobStore
from dicomstore.catalog.sqlite import SqliteCatalog
from dicomstore.core.datasets import CREATE_METHOD, DATASET_TYPE, Datasets
from dicomstore.core.errors import AlreadyExists, InvalidArgument, NotFound
from dicomstore.core.model import Dataset, DicomStoreConfig, Job, OperationResponse
from dicomstore.core.names import DatasetName, DicomStoreName
from dicomstore.core.operations import JobContext, Operations
from dicomstore.core.paging import PageTokens
from dicomstore.core.stores import DicomStores

KEY = b"k" * 32
LOCATION = "projects/test-project/locations/us-central1"
OTHER_LOCATION = "projects/test-project/locations/europe-west4"
DATASET = f"{LOCATION}/datasets/dataset"
OTHER_DATASET = f"{LOCATION}/datasets/other"


@pytest.fixture
async def operations(catalog: SqliteCatalog) -> AsyncIterator[Operations]:
    ops = Operations(catalog, PageTokens(KEY), concurrency=2)
    try:
        yield ops
    finally:
        await ops.close()


@pytest.fixture
def datasets(catalog: SqliteCatalog, blobs: LocalBlobStore, operations: Operations) -> Datasets:
    return Datasets(catalog, blobs, operations, PageTokens(KEY))


@pytest.fixture
def stores(catalog: SqliteCatalog, blobs: LocalBlobStore) -> DicomStores:
    return DicomStores(catalog, blobs, PageTokens(KEY))


async def listed_ids(datasets: Datasets, parent: str = LOCATION) -> list[str]:
    return [d.name.dataset_id for d in (await datasets.list(parent, 1000, "")).items]


async def create_many(datasets: Datasets, count: int) -> list[str]:
    ids = [f"d{i:04d}" for i in range(count)]
    for dataset_id in ids:
        await datasets.create(LOCATION, dataset_id, "")
    return ids


async def put_blob(catalog: SqliteCatalog, blob_root: Path, name: str) -> Path:
    """Give a store a blob file directly (the write API arrives later); return its folder."""
    key = await catalog.dicom_store_key(DicomStoreName.parse(name))
    folder = blob_root / str(key)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "1").write_bytes(b"DICM")
    return folder


def folder_names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


# Create and get


@pytest.mark.google_behaviour("create-returns")
async def test_create_returns_done_operation_with_dataset(
    datasets: Datasets, operations: Operations
) -> None:
    op = await datasets.create(LOCATION, "dataset", "Europe/Paris")
    assert op.done
    assert op.error is None
    assert op.api_method_name == CREATE_METHOD
    assert op.response == OperationResponse(
        DATASET_TYPE, {"name": DATASET, "timeZone": "Europe/Paris"}
    )
    assert str(op.name.dataset) == DATASET
    assert await operations.get(str(op.name)) == op


async def test_create_makes_dataset_readable_by_get(datasets: Datasets) -> None:
    await datasets.create(LOCATION, "dataset", "Asia/Tokyo")
    assert await datasets.get(DATASET) == Dataset(DatasetName.parse(DATASET), "Asia/Tokyo")


async def test_create_defaults_time_zone_to_utc_when_empty(datasets: Datasets) -> None:
    op = await datasets.create(LOCATION, "dataset", "")
    assert (await datasets.get(DATASET)).time_zone == "UTC"
    assert op.response is not None
    assert op.response.fields["timeZone"] == "UTC"


async def test_create_already_exists_keeps_first_dataset_and_records_nothing(
    datasets: Datasets, operations: Operations
) -> None:
    first = await datasets.create(LOCATION, "dataset", "Europe/Paris")
    with pytest.raises(AlreadyExists):
        await datasets.create(LOCATION, "dataset", "Asia/Tokyo")
    assert (await datasets.get(DATASET)).time_zone == "Europe/Paris"
    listed = (await operations.list(DATASET, "", 0, "")).items
    assert [o.name for o in listed] == [first.name]


@pytest.mark.parametrize(
    ("parent", "dataset_id", "time_zone", "field"),
    [
        (LOCATION, "", "", "dataset_id"),
        (LOCATION, "a/b", "", "dataset_id"),
        (LOCATION, "a b", "", "dataset_id"),
        (LOCATION, "..", "", "dataset_id"),
        (LOCATION, "x" * 257, "", "dataset_id"),
        (LOCATION, "dataset", "Mars/Olympus_Mons", "dataset.time_zone"),
        (LOCATION, "dataset", "localtime", "dataset.time_zone"),
        (LOCATION, "dataset", "../zoneinfo/UTC", "dataset.time_zone"),
        ("projects/test-project", "dataset", "", "parent"),
        (f"{LOCATION}/datasets/x", "dataset", "", "parent"),
    ],
)
async def test_create_invalid_argument_names_field_and_stores_nothing(
    datasets: Datasets, parent: str, dataset_id: str, time_zone: str, field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await datasets.create(parent, dataset_id, time_zone)
    assert caught.value.field == field
    assert caught.value.message.startswith(f"{field}: ")
    assert await listed_ids(datasets) == []


async def test_get_not_found_when_dataset_missing(datasets: Datasets) -> None:
    with pytest.raises(NotFound):
        await datasets.get(DATASET)


@pytest.mark.parametrize("name", ["", LOCATION, f"{DATASET}/dicomStores/a", "datasets/dataset"])
async def test_get_invalid_argument_when_name_malformed(datasets: Datasets, name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await datasets.get(name)
    assert caught.value.field == "name"


# List


async def test_list_returns_page_of_default_size_when_page_size_zero(datasets: Datasets) -> None:
    ids = await create_many(datasets, 101)
    first = await datasets.list(LOCATION, 0, "")
    assert [d.name.dataset_id for d in first.items] == ids[:100]
    assert first.next_page_token
    second = await datasets.list(LOCATION, 0, first.next_page_token)
    assert [d.name.dataset_id for d in second.items] == ids[100:]
    assert second.next_page_token == ""


async def test_list_caps_page_size_at_1000(datasets: Datasets) -> None:
    ids = await create_many(datasets, 1001)
    first = await datasets.list(LOCATION, 1_000_000, "")
    assert [d.name.dataset_id for d in first.items] == ids[:1000]
    second = await datasets.list(LOCATION, 1_000_000, first.next_page_token)
    assert [d.name.dataset_id for d in second.items] == ids[1000:]
    assert second.next_page_token == ""


async def test_list_invalid_argument_when_page_size_negative(datasets: Datasets) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await datasets.list(LOCATION, -5, "")
    assert caught.value.field == "page_size"


async def test_list_pages_in_stable_order_without_repeats(datasets: Datasets) -> None:
    ids = await create_many(datasets, 23)
    seen, sizes, token = [], [], ""
    while True:
        page = await datasets.list(LOCATION, 5, token)
        sizes.append(len(page.items))
        seen += [d.name.dataset_id for d in page.items]
        token = page.next_page_token
        if not token:
            break
    assert sizes == [5, 5, 5, 5, 3]
    assert seen == ids


async def test_list_has_no_token_when_last_page_is_full(datasets: Datasets) -> None:
    await create_many(datasets, 5)
    page = await datasets.list(LOCATION, 5, "")
    assert len(page.items) == 5
    assert page.next_page_token == ""


async def test_list_excludes_other_locations(datasets: Datasets) -> None:
    await datasets.create(LOCATION, "here", "")
    await datasets.create(OTHER_LOCATION, "there", "")
    assert await listed_ids(datasets) == ["here"]
    assert await listed_ids(datasets, OTHER_LOCATION) == ["there"]


async def test_list_invalid_argument_when_token_from_another_location(
    datasets: Datasets,
) -> None:
    for location in (LOCATION, OTHER_LOCATION):
        for dataset_id in ("a", "b"):
            await datasets.create(location, dataset_id, "")
    token = (await datasets.list(LOCATION, 1, "")).next_page_token
    assert token
    with pytest.raises(InvalidArgument) as caught:
        await datasets.list(OTHER_LOCATION, 1, token)
    assert caught.value.field == "page_token"


async def test_list_invalid_argument_when_token_tampered(datasets: Datasets) -> None:
    await create_many(datasets, 3)
    token = (await datasets.list(LOCATION, 1, "")).next_page_token
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (flipped, token[1:], token + "A", "not-a-token", "é"):
        with pytest.raises(InvalidArgument) as caught:
            await datasets.list(LOCATION, 1, bad)
        assert caught.value.field == "page_token"


async def test_list_invalid_argument_when_parent_malformed(datasets: Datasets) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await datasets.list("projects/test-project", 0, "")
    assert caught.value.field == "parent"


# Patch


async def test_patch_changes_time_zone(datasets: Datasets) -> None:
    await datasets.create(LOCATION, "dataset", "Europe/Paris")
    patched = await datasets.patch(DATASET, "America/New_York", ["time_zone"])
    assert patched == Dataset(DatasetName.parse(DATASET), "America/New_York")
    assert await datasets.get(DATASET) == patched


async def test_patch_resets_time_zone_to_utc_when_empty(datasets: Datasets) -> None:
    await datasets.create(LOCATION, "dataset", "Europe/Paris")
    await datasets.patch(DATASET, "", ["time_zone"])
    assert (await datasets.get(DATASET)).time_zone == "UTC"


@pytest.mark.parametrize(
    "mask", [[], ["name"], ["timeZone"], ["time_zone", "name"], ["labels"], ["dataset.time_zone"]]
)
async def test_patch_invalid_argument_when_mask_bad_and_nothing_changes(
    datasets: Datasets, mask: list[str]
) -> None:
    await datasets.create(LOCATION, "dataset", "Europe/Paris")
    with pytest.raises(InvalidArgument) as caught:
        await datasets.patch(DATASET, "Asia/Tokyo", mask)
    assert caught.value.field == "update_mask"
    assert (await datasets.get(DATASET)).time_zone == "Europe/Paris"


async def test_patch_invalid_argument_when_time_zone_bad_and_nothing_changes(
    datasets: Datasets,
) -> None:
    await datasets.create(LOCATION, "dataset", "Europe/Paris")
    with pytest.raises(InvalidArgument) as caught:
        await datasets.patch(DATASET, "Europe/Atlantis", ["time_zone"])
    assert caught.value.field == "dataset.time_zone"
    assert (await datasets.get(DATASET)).time_zone == "Europe/Paris"


async def test_patch_not_found_when_dataset_missing(datasets: Datasets) -> None:
    with pytest.raises(NotFound):
        await datasets.patch(DATASET, "Asia/Tokyo", ["time_zone"])
    assert await listed_ids(datasets) == []


async def test_patch_invalid_argument_when_name_malformed(datasets: Datasets) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await datasets.patch(LOCATION, "Asia/Tokyo", ["time_zone"])
    assert caught.value.field == "dataset.name"


# Delete


@pytest.mark.google_behaviour("delete-store")
async def test_delete_removes_stores_blob_folders_and_operations(
    datasets: Datasets,
    stores: DicomStores,
    operations: Operations,
    catalog: SqliteCatalog,
    blob_root: Path,
) -> None:
    created = await datasets.create(LOCATION, "dataset", "")
    await datasets.create(LOCATION, "other", "")
    for store_id in ("a", "b"):
        await stores.create(DATASET, store_id, DicomStoreConfig())
    await stores.create(OTHER_DATASET, "a", DicomStoreConfig())
    doomed = [await put_blob(catalog, blob_root, f"{DATASET}/dicomStores/{s}") for s in "ab"]
    kept = await put_blob(catalog, blob_root, f"{OTHER_DATASET}/dicomStores/a")

    await datasets.delete(DATASET)

    with pytest.raises(NotFound):
        await datasets.get(DATASET)
    with pytest.raises(NotFound):
        await stores.get(f"{DATASET}/dicomStores/a")
    with pytest.raises(NotFound):
        await operations.get(str(created.name))
    assert not any(folder.exists() for folder in doomed)
    assert folder_names(blob_root) == [kept.name]
    assert await listed_ids(datasets) == ["other"]
    assert (await stores.get(f"{OTHER_DATASET}/dicomStores/a")).name.store_id == "a"


async def test_delete_leaves_no_interrupted_operation_to_resume(
    datasets: Datasets, operations: Operations, catalog: SqliteCatalog
) -> None:
    started = asyncio.Event()

    async def endless(context: JobContext) -> OperationResponse:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    await datasets.create(LOCATION, "dataset", "")
    operations.register("endless", endless)
    await operations.start(DatasetName.parse(DATASET), "Import", Job("endless"))
    await asyncio.wait_for(started.wait(), 10)
    await operations.close()  # as at shutdown: the operation stays unfinished
    assert len(await catalog.unfinished_operations()) == 1
    await datasets.delete(DATASET)
    assert list(await catalog.unfinished_operations()) == []


async def test_delete_not_found_when_dataset_missing(datasets: Datasets) -> None:
    with pytest.raises(NotFound):
        await datasets.delete(DATASET)


async def test_recreated_dataset_starts_empty(
    datasets: Datasets, stores: DicomStores, operations: Operations
) -> None:
    await datasets.create(LOCATION, "dataset", "Europe/Paris")
    await stores.create(DATASET, "a", DicomStoreConfig())
    await datasets.delete(DATASET)
    op = await datasets.create(LOCATION, "dataset", "")
    assert (await datasets.get(DATASET)).time_zone == "UTC"
    assert (await stores.list(DATASET, "", 0, "")).items == []
    assert [o.name for o in (await operations.list(DATASET, "", 0, "")).items] == [op.name]


async def test_delete_then_list_location_is_empty(datasets: Datasets) -> None:
    await create_many(datasets, 3)
    for dataset_id in ("d0000", "d0001", "d0002"):
        await datasets.delete(f"{LOCATION}/datasets/{dataset_id}")
    page = await datasets.list(LOCATION, 0, "")
    assert page.items == []
    assert page.next_page_token == ""
