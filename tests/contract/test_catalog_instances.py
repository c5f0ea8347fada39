"""The instance part of the Catalog port: keys, visibility, uniqueness, recovery, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from dicomstore.core.errors import Aborted, AlreadyExists, NotFound
from dicomstore.core.model import Dataset, DicomStore, InstanceKey, NewInstance, NewInstanceRow
from dicomstore.core.names import DatasetName, DicomStoreName
from dicomstore.core.ports import Catalog

DATASET = DatasetName.parse("projects/p/locations/l/datasets/d")
STORE = DicomStoreName(DATASET, "s")
OTHER_STORE = DicomStoreName(DATASET, "t")


def instance(study: str = "1.2", series: str = "1.2.3", sop: str = "1.2.3.4") -> NewInstance:
    return NewInstance(
        study_uid=study,
        series_uid=series,
        sop_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        metadata={"00080018": {"vr": "UI", "Value": [sop]}},
    )


@pytest.fixture
async def stores(catalog: Catalog) -> Catalog:
    await catalog.create_dataset(Dataset(DATASET))
    await catalog.create_dicom_store(DicomStore(STORE))
    await catalog.create_dicom_store(DicomStore(OTHER_STORE))
    return catalog


async def added(
    catalog: Catalog, new: NewInstance, size: int = 100, *, visible: bool = True
) -> InstanceKey:
    key = await catalog.reserve_instance_key(STORE)
    await catalog.add_instance(key, new, size, visible=visible)
    return key


async def test_reserved_keys_are_new_and_of_the_store(stores: Catalog) -> None:
    first = await stores.reserve_instance_key(STORE)
    second = await stores.reserve_instance_key(OTHER_STORE)
    assert first.store_key == await stores.dicom_store_key(STORE)
    assert second.store_key == await stores.dicom_store_key(OTHER_STORE)
    assert first.instance_key != second.instance_key
    added_key = await added(stores, instance())
    assert added_key.instance_key not in (first.instance_key, second.instance_key)


async def test_reserve_in_missing_store_is_not_found(stores: Catalog) -> None:
    with pytest.raises(NotFound):
        await stores.reserve_instance_key(DicomStoreName(DATASET, "missing"))


async def test_add_to_store_deleted_after_reserving_is_not_found(stores: Catalog) -> None:
    key = await stores.reserve_instance_key(STORE)
    await stores.delete_dicom_store(STORE)
    with pytest.raises(NotFound):
        await stores.add_instance(key, instance(), 1, visible=True)
    assert await stores.instance_keys(key.store_key) == set()


async def test_added_instance_counts_in_metrics(stores: Catalog) -> None:
    await added(stores, instance(), 1234)
    metrics = await stores.dicom_store_metrics(STORE)
    assert (metrics.study_count, metrics.series_count, metrics.instance_count) == (1, 1, 1)
    assert metrics.blob_storage_size_bytes == 1234
    assert metrics.structured_storage_size_bytes > 0
    counts = (metrics.study_count, metrics.structured_storage_size_bytes)
    assert all(type(count) is int for count in counts)  # not a driver's Decimal


async def test_invisible_instances_appear_together_when_committed(stores: Catalog) -> None:
    keys = [await added(stores, instance(sop=f"1.2.3.{n}"), 10, visible=False) for n in (1, 2)]
    assert (await stores.dicom_store_metrics(STORE)).instance_count == 0
    assert await stores.find_instances(STORE, "1.2") == []
    assert await stores.add_instances([], visible=True, commit=keys) == []
    metrics = await stores.dicom_store_metrics(STORE)
    assert (metrics.instance_count, metrics.blob_storage_size_bytes) == (2, 20)
    assert [i.sop_uid for i in await stores.find_instances(STORE, "1.2")] == ["1.2.3.1", "1.2.3.2"]


async def test_metrics_count_studies_series_and_instances(stores: Catalog) -> None:
    for study, series, sop in [
        ("1.1", "1.1.1", "1.1.1.1"),
        ("1.1", "1.1.1", "1.1.1.2"),
        ("1.1", "1.1.2", "1.1.2.1"),
        ("2.1", "2.1.1", "2.1.1.1"),
    ]:
        await added(stores, instance(study, series, sop), size=10)
    metrics = await stores.dicom_store_metrics(STORE)
    assert (metrics.study_count, metrics.series_count, metrics.instance_count) == (2, 3, 4)
    assert metrics.blob_storage_size_bytes == 40
    assert (await stores.dicom_store_metrics(OTHER_STORE)).instance_count == 0


@pytest.mark.parametrize("visible", [True, False], ids=["visible", "being-stored"])
async def test_same_three_uids_are_already_exists(stores: Catalog, visible: bool) -> None:
    await added(stores, instance(), visible=visible)
    key = await stores.reserve_instance_key(STORE)
    with pytest.raises(AlreadyExists):
        await stores.add_instance(key, instance(), 1, visible=True)
    assert len(await stores.instance_keys(key.store_key)) == 1


async def test_concurrent_adds_of_same_uids_store_exactly_one(stores: Catalog) -> None:
    keys = [await stores.reserve_instance_key(STORE) for _ in range(8)]
    outcomes = await asyncio.gather(
        *(stores.add_instance(key, instance(), 1, visible=True) for key in keys),
        return_exceptions=True,
    )
    assert sum(outcome is None for outcome in outcomes) == 1
    assert all(isinstance(o, AlreadyExists) for o in outcomes if o is not None)
    assert (await stores.dicom_store_metrics(STORE)).instance_count == 1


async def test_concurrent_adds_are_all_stored(stores: Catalog) -> None:
    news = [instance(f"1.{n % 3}", f"1.{n % 3}.{n % 2}", f"1.{n}.9") for n in range(50)]
    keys = [await stores.reserve_instance_key(STORE) for _ in news]
    adds = (stores.add_instance(k, n, 1, visible=True) for k, n in zip(keys, news, strict=True))
    await asyncio.gather(*adds)
    assert await stores.instance_keys(keys[0].store_key) == {k.instance_key for k in keys}
    metrics = await stores.dicom_store_metrics(STORE)
    assert (metrics.study_count, metrics.series_count, metrics.instance_count) == (3, 6, 50)


async def rows(catalog: Catalog, *news: NewInstance) -> list[NewInstanceRow]:
    return [NewInstanceRow(await catalog.reserve_instance_key(STORE), new, 10) for new in news]


async def test_rows_added_together_are_refused_one_by_one(stores: Catalog) -> None:
    await added(stores, instance(sop="1.9"))  # already stored
    await added(stores, instance(study="7.7", series="7.7.1", sop="7.7.1.1"))
    await stores.mark_deleting(STORE, "7.7", None)  # a study being deleted
    before = await stores.dicom_store_metrics(STORE)
    batch = await rows(
        stores,
        instance(sop="1.1"),
        instance(sop="1.9"),
        instance(study="7.7", series="7.7.1", sop="7.7.1.2"),
        instance(sop="1.1"),  # the same UIDs as the first row of the batch
        instance(series="1.2.4", sop="1.2"),
    )
    refusals = await stores.add_instances(batch, visible=True)
    assert refusals[0] is None and refusals[4] is None
    assert isinstance(refusals[1], AlreadyExists) and isinstance(refusals[3], AlreadyExists)
    assert isinstance(refusals[2], Aborted)
    recorded = await stores.instance_keys(batch[0].key.store_key)
    assert {batch[0].key.instance_key, batch[4].key.instance_key} <= recorded
    assert not {row.key.instance_key for row in batch[1:4]} & recorded
    metrics = await stores.dicom_store_metrics(STORE)
    assert metrics.instance_count == before.instance_count + 2
    assert metrics.series_count == before.series_count + 1  # 1.2.4; 1.1 went into 1.2.3


async def test_invisible_rows_and_earlier_ones_become_visible_in_one_commit(
    stores: Catalog,
) -> None:
    staged = await rows(stores, instance(sop="1.1"), instance(sop="1.2"))
    assert await stores.add_instances(staged, visible=False) == [None, None]
    assert (await stores.dicom_store_metrics(STORE)).instance_count == 0
    last = await rows(stores, instance(sop="1.3"))
    refusals = await stores.add_instances(last, visible=True, commit=[r.key for r in staged])
    assert refusals == [None]
    assert (await stores.dicom_store_metrics(STORE)).instance_count == 3


async def test_rows_added_to_a_deleted_store_record_nothing(stores: Catalog) -> None:
    batch = await rows(stores, instance(sop="1.1"), instance(sop="1.2"))
    await stores.delete_dicom_store(STORE)
    with pytest.raises(NotFound):
        await stores.add_instances(batch, visible=True)
    assert await stores.instance_keys(batch[0].key.store_key) == set()


async def test_same_sop_uid_in_another_series_or_store_is_allowed(stores: Catalog) -> None:
    await added(stores, instance())
    await added(stores, instance(series="1.2.9"))
    key = await stores.reserve_instance_key(OTHER_STORE)
    await stores.add_instance(key, instance(), 1, visible=True)
    assert (await stores.dicom_store_metrics(STORE)).instance_count == 2
    assert (await stores.dicom_store_metrics(OTHER_STORE)).instance_count == 1


@pytest.mark.parametrize("visible", [True, False], ids=["visible", "invisible"])
async def test_abort_forgets_instance_and_its_empty_study(stores: Catalog, visible: bool) -> None:
    key = await added(stores, instance(), visible=visible)
    await stores.abort_instance(key)
    await stores.abort_instance(key)  # already gone: not an error
    assert await stores.instance_keys(key.store_key) == set()
    await added(stores, instance())
    assert (await stores.dicom_store_metrics(STORE)).study_count == 1


async def test_recover_removes_invisible_and_returns_their_keys(stores: Catalog) -> None:
    kept = await added(stores, instance(sop="1.9"))
    lost = await added(stores, instance("7.7", "7.7.7", "7.7.7.7"), visible=False)
    assert await stores.recover_instances() == [lost]
    assert await stores.instance_keys(kept.store_key) == {kept.instance_key}
    metrics = await stores.dicom_store_metrics(STORE)
    assert (metrics.study_count, metrics.instance_count) == (1, 1)
    assert await stores.recover_instances() == []


async def test_deleting_store_removes_its_instances(stores: Catalog) -> None:
    key = await added(stores, instance())
    await stores.delete_dicom_store(STORE)
    assert await stores.instance_keys(key.store_key) == set()


async def test_instances_survive_reopen(stores: Catalog, reopen: Callable[[], Catalog]) -> None:
    key = await added(stores, instance())
    again = reopen()
    await again.open()
    try:
        assert await again.instance_keys(key.store_key) == {key.instance_key}
        assert (await again.dicom_store_metrics(STORE)).instance_count == 1
    finally:
        await again.close()


async def test_keys_are_not_reused_after_reopen(
    stores: Catalog, reopen: Callable[[], Catalog]
) -> None:
    first = await added(stores, instance())
    await stores.delete_instance(first)
    unused = await stores.reserve_instance_key(STORE)
    await stores.close()
    again = reopen()
    await again.open()
    try:
        key = await again.reserve_instance_key(STORE)
        assert key.instance_key > first.instance_key
        await again.add_instance(key, instance(), 1, visible=True)
        assert await again.instance_keys(key.store_key) == {key.instance_key}
        assert unused.instance_key != first.instance_key
    finally:
        await again.close()


async def test_list_instances_pages_the_visible_instances_of_one_store_by_key(
    stores: Catalog,
) -> None:
    keys = [await added(stores, instance("1.2", f"1.2.{n % 2}", f"1.2.9.{n}")) for n in range(5)]
    await added(stores, instance("1.2", "1.2.0", "1.2.9.99"), visible=False)
    other = await stores.reserve_instance_key(OTHER_STORE)
    await stores.add_instance(other, instance("1.3", "1.3.1", "1.3.1.1"), 10, visible=True)
    first = await stores.list_instances(STORE, after=0, limit=3)
    rest = await stores.list_instances(STORE, after=first[-1].key.instance_key, limit=3)
    assert [i.key for i in [*first, *rest]] == keys
    assert [i.sop_uid for i in rest] == ["1.2.9.3", "1.2.9.4"]
    assert (rest[0].study_uid, rest[0].series_uid, rest[0].blob_size) == ("1.2", "1.2.1", 100)
    with pytest.raises(NotFound):
        await stores.list_instances(DicomStoreName(DATASET, "missing"), after=0, limit=3)


async def test_instances_by_key_gives_the_visible_ones_in_the_order_asked(
    stores: Catalog,
) -> None:
    first = await added(stores, instance("1.2", "1.2.3", "1.2.3.1"))
    hidden = await added(stores, instance("1.2", "1.2.3", "1.2.3.2"), visible=False)
    other = await stores.reserve_instance_key(OTHER_STORE)
    await stores.add_instance(other, instance("1.3", "1.3.1", "1.3.1.1"), 10, visible=True)
    found = await stores.instances_by_key([other, hidden, first])
    assert [(i.key, i.sop_uid, i.study_uid) for i in found] == [
        (other, "1.3.1.1", "1.3"),
        (first, "1.2.3.1", "1.2"),
    ]
    assert await stores.instances_by_key([]) == []
