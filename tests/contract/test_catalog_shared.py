"""The catalog keeps no state a second process could invalidate: two adapters built over the
same storage (`reopen`: two processes, as `--workers` or replicas run them) see each other's
changes at once, and never hand out the same instance key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from tests.contract.test_catalog import DATASET, add_dataset, add_store
from tests.contract.test_catalog_instances import instance

from dicomstore.core.errors import NotFound
from dicomstore.core.model import NewInstanceRow
from dicomstore.core.ports import Catalog


@pytest.fixture
async def other(reopen: Callable[[], Catalog]) -> AsyncIterator[Catalog]:
    adapter = reopen()
    await adapter.open()
    try:
        yield adapter
    finally:
        await adapter.close()


async def test_store_deleted_through_one_is_gone_through_the_other(
    catalog: Catalog, other: Catalog
) -> None:
    await add_dataset(catalog)
    store = await add_store(catalog, "s")
    key = await other.reserve_instance_key(store)  # `other` has looked the store up
    await catalog.delete_dicom_store(store)
    with pytest.raises(NotFound):
        await other.dicom_store_key(store)
    with pytest.raises(NotFound):
        await other.reserve_instance_key(store)
    with pytest.raises(NotFound):
        await other.add_instances([NewInstanceRow(key, instance(), 1)], visible=True)


async def test_store_recreated_through_one_gets_its_new_key_through_the_other(
    catalog: Catalog, other: Catalog
) -> None:
    await add_dataset(catalog)
    store = await add_store(catalog, "s")
    old = await other.dicom_store_key(store)
    await catalog.delete_dicom_store(store)
    await add_store(catalog, "s")
    new = await other.dicom_store_key(store)
    assert new != old
    key = await other.reserve_instance_key(store)
    assert key.store_key == new
    assert await other.add_instances([NewInstanceRow(key, instance(), 1)], visible=True) == [None]


async def test_store_created_through_one_is_listed_through_the_other(
    catalog: Catalog, other: Catalog
) -> None:
    await add_dataset(catalog)
    assert list(await other.list_dicom_stores(DATASET, after="", limit=10)) == []
    await add_store(catalog, "s")
    listed = await other.list_dicom_stores(DATASET, after="", limit=10)
    assert [s.name.store_id for s in listed] == ["s"]


async def test_instance_keys_of_two_adapters_never_collide(
    catalog: Catalog, other: Catalog
) -> None:
    await add_dataset(catalog)
    store = await add_store(catalog, "s")
    keys = await asyncio.gather(
        *(adapter.reserve_instance_key(store) for _ in range(100) for adapter in (catalog, other))
    )
    assert len({k.instance_key for k in keys}) == len(keys)
