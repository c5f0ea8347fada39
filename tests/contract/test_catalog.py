"""The contract of the Catalog port (dicomstore.core.ports.Catalog), run against every adapter.

Only what the port promises is asserted here: no SQL, no file layout. Adapter specifics belong
in tests/unit (e.g. test_sqlite_catalog.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from dicomstore.core.errors import AlreadyExists, Code, NotFound
from dicomstore.core.model import (
    BigQueryDestination,
    BigQuerySchema,
    Dataset,
    DicomStore,
    DicomStoreConfig,
    DicomStoreMetrics,
    Job,
    NotificationConfig,
    Operation,
    OperationError,
    OperationLogEntry,
    OperationResponse,
    ProgressCounter,
    StreamConfig,
    WriteDisposition,
)
from dicomstore.core.names import DatasetName, DicomStoreName, LocationName, OperationName
from dicomstore.core.ports import Catalog

LOCATION = LocationName("test-project", "us-central1")
OTHER_LOCATION = LocationName("test-project", "europe-west4")
DATASET = DatasetName(LOCATION, "dataset")
OTHER_DATASET = DatasetName(LOCATION, "other")
# Ids whose code point order differs from a locale's collation order (case, punctuation, accents).
IDS = ["Zeta", "a-b", "a.b", "a_b", "alpha", "b", "beta2", "beta10", "ü", "1", "_x", "-y"]
T0 = datetime(2024, 5, 1, 12, 34, 56, 789123, tzinfo=UTC)

FULL_CONFIG = DicomStoreConfig(
    labels={"env": "prod", "ключ": "значение", "ラベル": "値", "empty": ""},
    notification_config=NotificationConfig(
        pubsub_topic="projects/p/topics/legacy", send_for_bulk_import=True
    ),
    notification_configs=("projects/p/topics/one", "projects/example.com:p/topics/two"),
    stream_configs=(
        StreamConfig(
            BigQueryDestination(
                table_uri="bq://p.ds.flat",
                force=True,
                write_disposition=WriteDisposition.WRITE_TRUNCATE,
                include_source_store=True,
                schema=BigQuerySchema.FLATTENED,
            )
        ),
        StreamConfig(
            BigQueryDestination(
                table_uri="bq://p.ds.json table",
                force=False,
                write_disposition=WriteDisposition.WRITE_APPEND,
                include_source_store=False,
                schema=BigQuerySchema.JSON,
            )
        ),
        StreamConfig(BigQueryDestination(table_uri="bq://p.ds.defaults")),
        StreamConfig(
            BigQueryDestination(
                table_uri="bq://p.ds.empty",
                write_disposition=WriteDisposition.WRITE_EMPTY,
                schema=BigQuerySchema.UNSPECIFIED,
            )
        ),
    ),
)


def store_name(store_id: str, dataset: DatasetName = DATASET) -> DicomStoreName:
    return DicomStoreName(dataset, store_id)


def op_name(operation_id: str, dataset: DatasetName = DATASET) -> OperationName:
    return OperationName(dataset, operation_id)


def running(operation_id: str, *, dataset: DatasetName = DATASET, minutes: int = 0) -> Operation:
    return Operation(
        name=op_name(operation_id, dataset),
        api_method_name="google.cloud.healthcare.v1.dicom.DicomService.ImportDicomData",
        create_time=T0 + timedelta(minutes=minutes),
        job=Job("import_dicom_data", {"uri": "gs://bucket/dir/**.dcm"}),
    )


def finished(operation_id: str, *, dataset: DatasetName = DATASET, minutes: int = 0) -> Operation:
    op = running(operation_id, dataset=dataset, minutes=minutes)
    return dataclasses.replace(
        op,
        end_time=op.create_time + timedelta(seconds=5),
        response=OperationResponse("google.protobuf.Empty"),
    )


async def add_dataset(catalog: Catalog, name: DatasetName = DATASET) -> None:
    await catalog.create_dataset(Dataset(name))


async def add_store(
    catalog: Catalog, store_id: str, dataset: DatasetName = DATASET
) -> DicomStoreName:
    name = store_name(store_id, dataset)
    await catalog.create_dicom_store(DicomStore(name))
    return name


# Settings


async def test_setting_stores_default_when_key_is_new(catalog: Catalog) -> None:
    assert await catalog.setting("page_token_key", b"\x00first\xff") == b"\x00first\xff"


async def test_setting_returns_first_value_when_called_again(catalog: Catalog) -> None:
    await catalog.setting("page_token_key", b"first")
    assert await catalog.setting("page_token_key", b"second") == b"first"


async def test_setting_keeps_keys_apart(catalog: Catalog) -> None:
    await catalog.setting("a", b"1")
    assert await catalog.setting("b", b"2") == b"2"
    assert await catalog.setting("a", b"3") == b"1"


# Datasets


async def test_dataset_round_trips_when_created(catalog: Catalog) -> None:
    await catalog.create_dataset(Dataset(DATASET, "America/New_York"))
    assert await catalog.get_dataset(DATASET) == Dataset(DATASET, "America/New_York")


async def test_create_dataset_already_exists_when_id_taken(catalog: Catalog) -> None:
    await catalog.create_dataset(Dataset(DATASET, "UTC"))
    with pytest.raises(AlreadyExists):
        await catalog.create_dataset(Dataset(DATASET, "Europe/Paris"))
    assert (await catalog.get_dataset(DATASET)).time_zone == "UTC"


async def test_create_dataset_allows_same_id_in_another_location(catalog: Catalog) -> None:
    await catalog.create_dataset(Dataset(DATASET, "UTC"))
    elsewhere = DatasetName(OTHER_LOCATION, DATASET.dataset_id)
    await catalog.create_dataset(Dataset(elsewhere, "Europe/Paris"))
    assert (await catalog.get_dataset(elsewhere)).time_zone == "Europe/Paris"
    assert (await catalog.get_dataset(DATASET)).time_zone == "UTC"


async def test_get_dataset_not_found_when_missing(catalog: Catalog) -> None:
    with pytest.raises(NotFound):
        await catalog.get_dataset(DATASET)


async def test_list_datasets_ordered_by_id(catalog: Catalog) -> None:
    for dataset_id in IDS:
        await add_dataset(catalog, DatasetName(LOCATION, dataset_id))
    listed = await catalog.list_datasets(LOCATION, after="", limit=100)
    assert [d.name.dataset_id for d in listed] == sorted(IDS)


async def test_list_datasets_pages_with_after_and_limit(catalog: Catalog) -> None:
    for dataset_id in IDS:
        await add_dataset(catalog, DatasetName(LOCATION, dataset_id))
    seen: list[str] = []
    after = ""
    while page := await catalog.list_datasets(LOCATION, after=after, limit=5):
        assert len(page) <= 5
        seen += [d.name.dataset_id for d in page]
        after = page[-1].name.dataset_id
    assert seen == sorted(IDS)


async def test_list_datasets_excludes_other_locations(catalog: Catalog) -> None:
    await add_dataset(catalog, DATASET)
    await add_dataset(catalog, DatasetName(OTHER_LOCATION, "elsewhere"))
    listed = await catalog.list_datasets(LOCATION, after="", limit=100)
    assert [d.name for d in listed] == [DATASET]


async def test_list_datasets_empty_when_location_has_none(catalog: Catalog) -> None:
    assert list(await catalog.list_datasets(LOCATION, after="", limit=100)) == []


async def test_update_dataset_replaces_time_zone(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await catalog.update_dataset(Dataset(DATASET, "Asia/Tokyo"))
    assert await catalog.get_dataset(DATASET) == Dataset(DATASET, "Asia/Tokyo")


async def test_update_dataset_not_found_when_missing(catalog: Catalog) -> None:
    with pytest.raises(NotFound):
        await catalog.update_dataset(Dataset(DATASET, "Asia/Tokyo"))
    assert list(await catalog.list_datasets(LOCATION, after="", limit=100)) == []


async def test_delete_dataset_not_found_when_missing(catalog: Catalog) -> None:
    with pytest.raises(NotFound):
        await catalog.delete_dataset(DATASET)


async def test_delete_dataset_returns_keys_of_its_stores(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await add_dataset(catalog, OTHER_DATASET)
    keys = {await catalog.dicom_store_key(await add_store(catalog, s)) for s in ("a", "b")}
    kept = await catalog.dicom_store_key(await add_store(catalog, "a", OTHER_DATASET))
    assert set(await catalog.delete_dataset(DATASET)) == keys
    assert await catalog.dicom_store_keys() == {kept}


async def test_delete_dataset_removes_its_stores_and_operations(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await add_dataset(catalog, OTHER_DATASET)
    store = await add_store(catalog, "a")
    await catalog.create_operation(running("1"))
    other_store = await add_store(catalog, "a", OTHER_DATASET)
    await catalog.create_operation(running("1", dataset=OTHER_DATASET))
    await catalog.delete_dataset(DATASET)
    with pytest.raises(NotFound):
        await catalog.get_dataset(DATASET)
    with pytest.raises(NotFound):
        await catalog.get_dicom_store(store)
    with pytest.raises(NotFound):
        await catalog.get_operation(op_name("1"))
    assert [o.name for o in await catalog.unfinished_operations()] == [op_name("1", OTHER_DATASET)]
    assert (await catalog.get_dicom_store(other_store)).name == other_store


async def test_delete_dataset_returns_no_keys_when_it_has_no_stores(catalog: Catalog) -> None:
    await add_dataset(catalog)
    assert list(await catalog.delete_dataset(DATASET)) == []


async def test_recreated_dataset_starts_empty(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await add_store(catalog, "a")
    await catalog.create_operation(finished("1"))
    await catalog.delete_dataset(DATASET)
    await add_dataset(catalog)
    assert list(await catalog.list_dicom_stores(DATASET, after="", limit=100)) == []
    assert list(await catalog.list_operations(DATASET, done=None, after="", limit=100)) == []


# DICOM stores


async def test_dicom_store_config_round_trips_exactly(catalog: Catalog) -> None:
    await add_dataset(catalog)
    store = DicomStore(store_name("full"), FULL_CONFIG)
    await catalog.create_dicom_store(store)
    got = await catalog.get_dicom_store(store.name)
    assert got == store
    assert dict(got.config.labels) == dict(FULL_CONFIG.labels)


async def test_dicom_store_default_config_round_trips(catalog: Catalog) -> None:
    await add_dataset(catalog)
    name = await add_store(catalog, "plain")
    got = await catalog.get_dicom_store(name)
    assert got == DicomStore(name)
    assert got.config.notification_config is None


async def test_create_dicom_store_not_found_when_dataset_missing(catalog: Catalog) -> None:
    with pytest.raises(NotFound):
        await catalog.create_dicom_store(DicomStore(store_name("a")))
    assert await catalog.dicom_store_keys() == set()


async def test_create_dicom_store_already_exists_when_id_taken(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await catalog.create_dicom_store(DicomStore(store_name("a"), FULL_CONFIG))
    with pytest.raises(AlreadyExists):
        await catalog.create_dicom_store(DicomStore(store_name("a")))
    assert (await catalog.get_dicom_store(store_name("a"))).config == FULL_CONFIG


async def test_create_dicom_store_allows_same_id_in_two_datasets(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await add_dataset(catalog, OTHER_DATASET)
    first = DicomStore(store_name("a"), DicomStoreConfig(labels={"n": "1"}))
    second = DicomStore(store_name("a", OTHER_DATASET), DicomStoreConfig(labels={"n": "2"}))
    await catalog.create_dicom_store(first)
    await catalog.create_dicom_store(second)
    assert await catalog.get_dicom_store(first.name) == first
    assert await catalog.get_dicom_store(second.name) == second
    assert await catalog.dicom_store_key(first.name) != await catalog.dicom_store_key(second.name)


async def test_get_dicom_store_not_found_when_missing(catalog: Catalog) -> None:
    await add_dataset(catalog)
    with pytest.raises(NotFound):
        await catalog.get_dicom_store(store_name("a"))


async def test_dicom_store_key_not_found_when_missing(catalog: Catalog) -> None:
    await add_dataset(catalog)
    with pytest.raises(NotFound):
        await catalog.dicom_store_key(store_name("a"))


@pytest.mark.parametrize("deleted", ["store", "dataset"])
async def test_dicom_store_key_not_found_once_deleted_and_new_when_recreated(
    catalog: Catalog, deleted: str
) -> None:
    await add_dataset(catalog)
    name = await add_store(catalog, "a")
    key = await catalog.dicom_store_key(name)
    assert await catalog.dicom_store_key(name) == key  # asked twice: the second may be cached
    if deleted == "store":
        await catalog.delete_dicom_store(name)
    else:
        await catalog.delete_dataset(DATASET)
    with pytest.raises(NotFound):
        await catalog.dicom_store_key(name)
    if deleted == "dataset":
        await add_dataset(catalog)
    await add_store(catalog, "a")
    assert await catalog.dicom_store_key(name) not in (key, None)


async def test_list_dicom_stores_ordered_by_id(catalog: Catalog) -> None:
    await add_dataset(catalog)
    for store_id in IDS:
        await add_store(catalog, store_id)
    listed = await catalog.list_dicom_stores(DATASET, after="", limit=100)
    assert [s.name.store_id for s in listed] == sorted(IDS)


async def test_list_dicom_stores_pages_with_after_and_limit(catalog: Catalog) -> None:
    await add_dataset(catalog)
    for store_id in IDS:
        await add_store(catalog, store_id)
    seen: list[str] = []
    after = ""
    while page := await catalog.list_dicom_stores(DATASET, after=after, limit=5):
        assert len(page) <= 5
        seen += [s.name.store_id for s in page]
        after = page[-1].name.store_id
    assert seen == sorted(IDS)


async def test_list_dicom_stores_returns_configs(catalog: Catalog) -> None:
    await add_dataset(catalog)
    store = DicomStore(store_name("full"), FULL_CONFIG)
    await catalog.create_dicom_store(store)
    assert list(await catalog.list_dicom_stores(DATASET, after="", limit=10)) == [store]


async def test_list_dicom_stores_excludes_other_datasets(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await add_dataset(catalog, OTHER_DATASET)
    await add_store(catalog, "mine")
    await add_store(catalog, "theirs", OTHER_DATASET)
    listed = await catalog.list_dicom_stores(DATASET, after="", limit=100)
    assert [s.name for s in listed] == [store_name("mine")]


async def test_update_dicom_store_replaces_config(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await catalog.create_dicom_store(DicomStore(store_name("a"), FULL_CONFIG))
    replaced = DicomStore(store_name("a"), DicomStoreConfig(labels={"env": "dev"}))
    await catalog.update_dicom_store(replaced)
    assert await catalog.get_dicom_store(store_name("a")) == replaced


async def test_update_dicom_store_keeps_key(catalog: Catalog) -> None:
    await add_dataset(catalog)
    name = await add_store(catalog, "a")
    key = await catalog.dicom_store_key(name)
    await catalog.update_dicom_store(DicomStore(name, FULL_CONFIG))
    assert await catalog.dicom_store_key(name) == key


async def test_update_dicom_store_not_found_when_missing(catalog: Catalog) -> None:
    await add_dataset(catalog)
    with pytest.raises(NotFound):
        await catalog.update_dicom_store(DicomStore(store_name("a"), FULL_CONFIG))
    assert list(await catalog.list_dicom_stores(DATASET, after="", limit=10)) == []


async def test_delete_dicom_store_returns_its_key(catalog: Catalog) -> None:
    await add_dataset(catalog)
    name = await add_store(catalog, "a")
    other = await add_store(catalog, "b")
    key = await catalog.dicom_store_key(name)
    assert await catalog.delete_dicom_store(name) == key
    with pytest.raises(NotFound):
        await catalog.get_dicom_store(name)
    assert await catalog.dicom_store_keys() == {await catalog.dicom_store_key(other)}


async def test_delete_dicom_store_not_found_when_missing(catalog: Catalog) -> None:
    await add_dataset(catalog)
    with pytest.raises(NotFound):
        await catalog.delete_dicom_store(store_name("a"))


async def test_dicom_store_key_not_reused_after_delete(catalog: Catalog) -> None:
    # Blobs live under the key and are removed after the catalog row: a new store given a
    # deleted store's key would share (and then lose) that store's blob folder.
    await add_dataset(catalog)
    await add_store(catalog, "a")
    last = await add_store(catalog, "b")
    deleted = await catalog.delete_dicom_store(last)
    new = await catalog.dicom_store_key(await add_store(catalog, "c"))
    assert new != deleted


async def test_dicom_store_key_not_reused_after_dataset_delete(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await add_store(catalog, "a")
    deleted = set(await catalog.delete_dataset(DATASET))
    await add_dataset(catalog)
    new = await catalog.dicom_store_key(await add_store(catalog, "a"))
    assert new not in deleted


async def test_dicom_store_keys_lists_every_store(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await add_dataset(catalog, OTHER_DATASET)
    names = [await add_store(catalog, "a"), await add_store(catalog, "a", OTHER_DATASET)]
    keys = {await catalog.dicom_store_key(n) for n in names}
    assert len(keys) == 2
    assert await catalog.dicom_store_keys() == keys


async def test_dicom_store_keys_empty_when_no_stores(catalog: Catalog) -> None:
    assert await catalog.dicom_store_keys() == set()


async def test_dicom_store_metrics_zero_when_store_empty(catalog: Catalog) -> None:
    await add_dataset(catalog)
    name = await add_store(catalog, "a")
    assert await catalog.dicom_store_metrics(name) == DicomStoreMetrics(name=name)


async def test_dicom_store_metrics_not_found_when_store_missing(catalog: Catalog) -> None:
    await add_dataset(catalog)
    with pytest.raises(NotFound):
        await catalog.dicom_store_metrics(store_name("a"))


# Operations


def complete_operation() -> Operation:
    return Operation(
        name=op_name("0001714566896789123042"),
        api_method_name="google.cloud.healthcare.v1.dicom.DicomService.ExportDicomData",
        create_time=T0,
        job=Job(
            "export_dicom_data",
            {"store": str(store_name("a")), "uri_prefix": "gs://b/out", "n": 3, "ok": True},
        ),
        end_time=T0 + timedelta(seconds=1, microseconds=7),
        cancel_requested=True,
        counter=ProgressCounter(
            success=10, failure=2, pending=3, secondary_success=4, secondary_failure=5
        ),
        logs_url="https://console.example/logs?q=ü",
        error=OperationError(Code.FAILED_PRECONDITION, "bucket gs://b is gone — »ü«"),
        response=OperationResponse(
            "google.cloud.healthcare.v1.dicom.ExportDicomDataResponse",
            {"name": "x", "count": 3, "nested": {"list": [1, "two", None, 2.5], "flag": False}},
        ),
    )


async def test_operation_round_trips_every_field(catalog: Catalog) -> None:
    await add_dataset(catalog)
    op = complete_operation()
    await catalog.create_operation(op)
    got = await catalog.get_operation(op.name)
    assert got == op
    assert got.done


async def test_operation_round_trips_when_running(catalog: Catalog) -> None:
    await add_dataset(catalog)
    op = running("1")
    await catalog.create_operation(op)
    got = await catalog.get_operation(op.name)
    assert got == op
    assert not got.done
    assert got.error is None
    assert got.response is None


async def test_create_operation_not_found_when_dataset_missing(catalog: Catalog) -> None:
    with pytest.raises(NotFound):
        await catalog.create_operation(running("1"))


async def test_create_operation_already_exists_when_id_taken(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await catalog.create_operation(running("1"))
    with pytest.raises(AlreadyExists):
        await catalog.create_operation(finished("1"))
    assert not (await catalog.get_operation(op_name("1"))).done


async def test_create_operation_allows_same_id_in_two_datasets(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await add_dataset(catalog, OTHER_DATASET)
    await catalog.create_operation(running("1"))
    await catalog.create_operation(finished("1", dataset=OTHER_DATASET))
    assert not (await catalog.get_operation(op_name("1"))).done
    assert (await catalog.get_operation(op_name("1", OTHER_DATASET))).done


async def test_get_operation_not_found_when_missing(catalog: Catalog) -> None:
    await add_dataset(catalog)
    with pytest.raises(NotFound):
        await catalog.get_operation(op_name("1"))


async def seed_operations(catalog: Catalog) -> tuple[list[str], list[str]]:
    """Create operations 01..12 (every third finished) and one in another dataset."""
    await add_dataset(catalog)
    await add_dataset(catalog, OTHER_DATASET)
    done, pending = [], []
    for i in range(12, 0, -1):  # created in reverse so id order differs from creation order
        op_id = f"{i:02d}"
        if i % 3 == 0:
            await catalog.create_operation(finished(op_id, minutes=-i))
            done.append(op_id)
        else:
            await catalog.create_operation(running(op_id, minutes=-i))
            pending.append(op_id)
    await catalog.create_operation(running("00", dataset=OTHER_DATASET))
    return sorted(done), sorted(pending)


@pytest.mark.parametrize("done", [None, True, False])
async def test_list_operations_filters_by_done(catalog: Catalog, done: bool | None) -> None:
    finished_ids, running_ids = await seed_operations(catalog)
    expected = {None: sorted(finished_ids + running_ids), True: finished_ids, False: running_ids}
    listed = await catalog.list_operations(DATASET, done=done, after="", limit=100)
    assert [o.name.operation_id for o in listed] == expected[done]
    assert all(o.name.dataset == DATASET for o in listed)


@pytest.mark.parametrize("done", [None, True, False])
async def test_list_operations_pages_with_after_and_limit(
    catalog: Catalog, done: bool | None
) -> None:
    finished_ids, running_ids = await seed_operations(catalog)
    expected = {None: sorted(finished_ids + running_ids), True: finished_ids, False: running_ids}
    seen: list[str] = []
    after = ""
    while page := await catalog.list_operations(DATASET, done=done, after=after, limit=3):
        assert len(page) <= 3
        seen += [o.name.operation_id for o in page]
        after = page[-1].name.operation_id
    assert seen == expected[done]


async def test_list_operations_returns_every_field(catalog: Catalog) -> None:
    await add_dataset(catalog)
    op = complete_operation()
    await catalog.create_operation(op)
    assert list(await catalog.list_operations(DATASET, done=True, after="", limit=10)) == [op]


async def test_update_operation_persists_progress_and_outcome(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await catalog.create_operation(running("1"))
    progressed = dataclasses.replace(
        running("1"), counter=ProgressCounter(success=5, failure=1, pending=4)
    )
    await catalog.update_operation(progressed)
    assert await catalog.get_operation(op_name("1")) == progressed
    outcome = dataclasses.replace(
        progressed,
        end_time=T0 + timedelta(hours=1),
        counter=ProgressCounter(success=9, failure=1),
        error=OperationError(Code.CANCELLED, "operation was cancelled"),
        cancel_requested=True,
    )
    await catalog.update_operation(outcome)
    assert await catalog.get_operation(op_name("1")) == outcome
    assert [
        o.name for o in await catalog.list_operations(DATASET, done=True, after="", limit=9)
    ] == [op_name("1")]


async def test_update_operation_not_found_when_missing(catalog: Catalog) -> None:
    await add_dataset(catalog)
    with pytest.raises(NotFound):
        await catalog.update_operation(running("1"))


async def test_request_cancel_sets_flag_when_unfinished(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await catalog.create_operation(running("1"))
    returned = await catalog.request_cancel(op_name("1"))
    assert returned == dataclasses.replace(running("1"), cancel_requested=True)
    assert await catalog.get_operation(op_name("1")) == returned


async def test_request_cancel_changes_nothing_when_finished(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await catalog.create_operation(finished("1"))
    assert await catalog.request_cancel(op_name("1")) == finished("1")
    assert await catalog.get_operation(op_name("1")) == finished("1")


async def test_request_cancel_not_found_when_missing(catalog: Catalog) -> None:
    await add_dataset(catalog)
    with pytest.raises(NotFound):
        await catalog.request_cancel(op_name("1"))


async def test_unfinished_operations_oldest_first(catalog: Catalog) -> None:
    _, running_ids = await seed_operations(catalog)
    unfinished = await catalog.unfinished_operations()
    # seed_operations made op "NN" NN minutes before T0, and "00" of the other dataset at T0.
    oldest_first = [op_name(i) for i in sorted(running_ids, reverse=True)]
    assert [o.name for o in unfinished] == [*oldest_first, op_name("00", OTHER_DATASET)]
    assert all(not o.done for o in unfinished)


async def test_unfinished_operations_empty_when_all_done(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await catalog.create_operation(finished("1"))
    assert list(await catalog.unfinished_operations()) == []


# Durability


async def test_data_survives_close_and_reopen(
    catalog: Catalog, reopen: Callable[[], Catalog]
) -> None:
    await add_dataset(catalog)
    await catalog.update_dataset(Dataset(DATASET, "Europe/Berlin"))
    store = DicomStore(store_name("full"), FULL_CONFIG)
    await catalog.create_dicom_store(store)
    key = await catalog.dicom_store_key(store.name)
    await catalog.create_operation(complete_operation())
    await catalog.create_operation(running("1"))
    await catalog.setting("page_token_key", b"secret")
    await catalog.close()

    again = reopen()
    await again.open()
    try:
        assert await again.get_dataset(DATASET) == Dataset(DATASET, "Europe/Berlin")
        assert await again.get_dicom_store(store.name) == store
        assert await again.dicom_store_key(store.name) == key
        assert await again.get_operation(complete_operation().name) == complete_operation()
        assert [o.name for o in await again.unfinished_operations()] == [op_name("1")]
        assert await again.setting("page_token_key", b"other") == b"secret"
    finally:
        await again.close()


async def test_operation_log_is_numbered_in_order_paged_and_cleared(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await add_dataset(catalog, OTHER_DATASET)
    await catalog.create_operation(running("1"))
    await catalog.create_operation(running("1", dataset=OTHER_DATASET))
    entry = OperationLogEntry
    await catalog.add_operation_log(op_name("1"), [entry("gs://b/a", Code.INVALID_ARGUMENT, "x")])
    await catalog.add_operation_log(
        op_name("1"), [entry(f"gs://b/{n}", Code.ALREADY_EXISTS, f"m{n}") for n in range(3)]
    )
    await catalog.add_operation_log(op_name("1", OTHER_DATASET), [entry("other", Code.OK, "")])
    log = await catalog.operation_log(op_name("1"), after=0, limit=10)
    assert [(e.seq, e.resource, e.code, e.message) for e in log] == [
        (1, "gs://b/a", Code.INVALID_ARGUMENT, "x"),
        (2, "gs://b/0", Code.ALREADY_EXISTS, "m0"),
        (3, "gs://b/1", Code.ALREADY_EXISTS, "m1"),
        (4, "gs://b/2", Code.ALREADY_EXISTS, "m2"),
    ]
    assert all(e.time is not None and e.time.tzinfo is not None for e in log)
    page = await catalog.operation_log(op_name("1"), after=2, limit=1)
    assert [e.seq for e in page] == [3]
    await catalog.clear_operation_log(op_name("1"))
    assert await catalog.operation_log(op_name("1"), after=0, limit=10) == []
    assert len(await catalog.operation_log(op_name("1", OTHER_DATASET), after=0, limit=9)) == 1


async def test_operation_log_of_a_missing_operation_is_not_found(catalog: Catalog) -> None:
    await add_dataset(catalog)
    with pytest.raises(NotFound):
        await catalog.operation_log(op_name("9"), after=0, limit=10)
    with pytest.raises(NotFound):
        await catalog.add_operation_log(op_name("9"), [OperationLogEntry("r", Code.INTERNAL, "")])


async def test_progress_written_after_a_cancel_request_keeps_it(catalog: Catalog) -> None:
    await add_dataset(catalog)
    job_copy = running("1")
    await catalog.create_operation(job_copy)
    await catalog.request_cancel(op_name("1"))
    await catalog.update_operation(
        dataclasses.replace(job_copy, counter=ProgressCounter(success=3))
    )
    stored = await catalog.get_operation(op_name("1"))
    assert stored.cancel_requested and stored.counter.success == 3
