"""The contract of the Catalog port's process liveness (heartbeat, end_process, processes) and
of owner-scoped recovery (`recover_instances` with owners), run against every adapter: the
invisible rows of a process that is alive are never removed, those of one that is dead are.

Two adapters built over the same storage (`reopen`) stand for two processes sharing a catalog.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from tests.contract.test_catalog import add_dataset, op_name, running
from tests.contract.test_catalog_instances import STORE, instance, rows, stores  # noqa: F401

from dicomstore.core.errors import Unavailable
from dicomstore.core.model import InstanceKey
from dicomstore.core.ports import Catalog

A, B = "host:1:aaaa", "host:2:bbbb"
LONG = 60.0  # a lease that does not expire during a test
SHORT = 0.2  # a lease that a test waits out


@pytest.fixture
async def other(reopen: Callable[[], Catalog]) -> AsyncIterator[Catalog]:
    """A second adapter over the same storage: another process's view of the catalog."""
    adapter = reopen()
    await adapter.open()
    try:
        yield adapter
    finally:
        await adapter.close()


async def staged(catalog: Catalog, owner: str, *sops: str) -> list[InstanceKey]:
    """Invisible rows of `owner`, as a STOW-RS in progress leaves them."""
    batch = await rows(catalog, *(instance(sop=sop) for sop in sops))
    assert await catalog.add_instances(batch, visible=False, owner=owner) == [None] * len(sops)
    return [row.key for row in batch]


async def test_heartbeat_is_seen_by_another_process(catalog: Catalog, other: Catalog) -> None:
    assert await other.processes() == {}
    await catalog.heartbeat(A, LONG)
    remaining = (await other.processes())[A]
    assert LONG - 5 < remaining <= LONG


async def test_renewed_heartbeat_extends_the_lease(catalog: Catalog) -> None:
    await catalog.heartbeat(A, SHORT)
    await catalog.heartbeat(A, LONG)
    assert (await catalog.processes())[A] > LONG - 5


async def test_expired_lease_stays_listed_with_negative_time(catalog: Catalog) -> None:
    await catalog.heartbeat(A, SHORT)
    await asyncio.sleep(SHORT * 2)
    assert (await catalog.processes())[A] < 0


async def test_end_process_removes_its_lease_and_releases_its_operations(
    catalog: Catalog,
) -> None:
    await add_dataset(catalog)
    await catalog.heartbeat(A, LONG)
    await catalog.heartbeat(B, LONG)
    await catalog.create_operation(running("1"), owner=A, lease_seconds=LONG)
    await catalog.create_operation(running("2"), owner=B, lease_seconds=LONG)
    await catalog.end_process(A)
    await catalog.end_process("never-seen")  # not an error
    assert set(await catalog.processes()) == {B}
    assert [o.name.operation_id for o in await catalog.unclaimed_operations()] == ["1"]
    assert await catalog.claim_operation(op_name("1"), B, LONG)


async def test_recover_keeps_the_invisible_rows_of_a_live_process(
    stores: Catalog,  # noqa: F811
    other: Catalog,
) -> None:
    await stores.heartbeat(A, LONG)
    keys = await staged(stores, A, "1.1", "1.2")
    assert await other.recover_instances() == []
    # The live process commits its request as if nothing had happened.
    assert await stores.add_instances([], visible=True, commit=keys) == []
    assert (await stores.dicom_store_metrics(STORE)).instance_count == 2


async def test_recover_removes_the_invisible_rows_of_dead_processes_only(
    stores: Catalog,  # noqa: F811
    other: Catalog,
) -> None:
    await stores.heartbeat(A, SHORT)  # dies: its lease runs out
    await stores.heartbeat(B, LONG)
    await stores.heartbeat("host:3:cccc", LONG)
    expired = await staged(stores, A, "1.1")
    ended = await staged(stores, "host:3:cccc", "1.2")
    unleased = await staged(stores, "host:4:dddd", "1.3")  # never took a lease
    alive = await staged(stores, B, "1.4")
    await stores.end_process("host:3:cccc")  # stopped, or found gone
    await asyncio.sleep(SHORT * 2)
    assert set(await other.recover_instances()) == {*expired, *ended, *unleased}
    assert await stores.instance_keys(alive[0].store_key) == {alive[0].instance_key}


async def test_commit_of_rows_recovery_removed_is_unavailable_and_records_nothing(
    stores: Catalog,  # noqa: F811
    other: Catalog,
) -> None:
    await stores.heartbeat(A, SHORT)
    keys = await staged(stores, A, "1.1", "1.2")
    await asyncio.sleep(SHORT * 2)  # A stalled past its lease: taken for dead
    assert len(await other.recover_instances()) == 2
    await stores.heartbeat(A, LONG)  # and wakes up
    last = await rows(stores, instance(sop="1.3"))
    with pytest.raises(Unavailable, match="retry"):
        await stores.add_instances(last, visible=True, commit=keys)
    assert await stores.instance_keys(keys[0].store_key) == set()
