"""The instance part of the Catalog port: two-phase creation, uniqueness, recovery, metrics."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dicomstore.core.errors import AlreadyExists, NotFound
from dicomstore.core.model import Dataset, DicomStore, InstanceKey, NewInstance
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


async def stored(catalog: Catalog, new: NewInstance, size: int = 100) -> InstanceKey:
    key = await catalog.begin_instance(STORE, new)
    await catalog.commit_instance(key, size)
    return key


async def test_begun_instance_is_invisible_until_committed(stores: Catalog) -> None:
    key = await stores.begin_instance(STORE, instance())
    assert (await stores.dicom_store_metrics(STORE)).instance_count == 0
    await stores.commit_instance(key, 1234)
    metrics = await stores.dicom_store_metrics(STORE)
    assert (metrics.study_count, metrics.series_count, metrics.instance_count) == (1, 1, 1)
    assert metrics.blob_storage_size_bytes == 1234
    assert metrics.structured_storage_size_bytes > 0


async def test_metrics_count_studies_series_and_instances(stores: Catalog) -> None:
    for study, series, sop in [
        ("1.1", "1.1.1", "1.1.1.1"),
        ("1.1", "1.1.1", "1.1.1.2"),
        ("1.1", "1.1.2", "1.1.2.1"),
        ("2.1", "2.1.1", "2.1.1.1"),
    ]:
        await stored(stores, instance(study, series, sop), size=10)
    metrics = await stores.dicom_store_metrics(STORE)
    assert (metrics.study_count, metrics.series_count, metrics.instance_count) == (2, 3, 4)
    assert metrics.blob_storage_size_bytes == 40
    assert (await stores.dicom_store_metrics(OTHER_STORE)).instance_count == 0


@pytest.mark.parametrize("committed", [True, False], ids=["committed", "being-stored"])
async def test_same_three_uids_are_already_exists(stores: Catalog, committed: bool) -> None:
    key = await stores.begin_instance(STORE, instance())
    if committed:
        await stores.commit_instance(key, 1)
    with pytest.raises(AlreadyExists):
        await stores.begin_instance(STORE, instance())


async def test_same_sop_uid_in_another_series_or_store_is_allowed(stores: Catalog) -> None:
    await stored(stores, instance())
    await stored(stores, instance(series="1.2.9"))
    await stores.begin_instance(OTHER_STORE, instance())
    assert (await stores.dicom_store_metrics(STORE)).instance_count == 2


async def test_abort_forgets_instance_and_its_empty_study(stores: Catalog) -> None:
    key = await stores.begin_instance(STORE, instance())
    await stores.abort_instance(key)
    await stored(stores, instance())
    assert (await stores.dicom_store_metrics(STORE)).study_count == 1


async def test_recover_removes_uncommitted_and_returns_their_keys(stores: Catalog) -> None:
    kept = await stored(stores, instance(sop="1.9"))
    lost = await stores.begin_instance(STORE, instance(study="7.7", series="7.7.7", sop="7.7.7.7"))
    assert await stores.recover_instances() == [lost]
    assert await stores.instance_keys(kept.store_key) == {kept.instance_key}
    metrics = await stores.dicom_store_metrics(STORE)
    assert (metrics.study_count, metrics.instance_count) == (1, 1)
    assert await stores.recover_instances() == []


async def test_begin_in_missing_store_is_not_found(stores: Catalog) -> None:
    with pytest.raises(NotFound):
        await stores.begin_instance(DicomStoreName(DATASET, "missing"), instance())


async def test_deleting_store_removes_its_instances(stores: Catalog) -> None:
    key = await stored(stores, instance())
    await stores.delete_dicom_store(STORE)
    assert await stores.instance_keys(key.store_key) == set()


async def test_instances_survive_reopen(stores: Catalog, reopen: Callable[[], Catalog]) -> None:
    key = await stored(stores, instance())
    again = reopen()
    await again.open()
    try:
        assert await again.instance_keys(key.store_key) == {key.instance_key}
        assert (await again.dicom_store_metrics(STORE)).instance_count == 1
    finally:
        await again.close()
