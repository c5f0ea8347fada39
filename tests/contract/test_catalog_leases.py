"""The contract of the Catalog port's operation leases (claim_operation, renew_lease,
release_leases, unclaimed_operations, create_operation with an owner), run against every
adapter: exactly one owner holds an unfinished operation's lease at a time, and an expired or
released lease can be claimed by any other.

Two adapters built over the same storage (`reopen`) stand for two processes sharing a catalog.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest
from tests.contract.test_catalog import DATASET, add_dataset, finished, op_name, running

from dicomstore.core.model import OperationResponse
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


async def unclaimed_ids(catalog: Catalog) -> list[str]:
    return [o.name.operation_id for o in await catalog.unclaimed_operations()]


async def test_claim_takes_an_operation_never_claimed(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await catalog.create_operation(running("1"))
    assert await unclaimed_ids(catalog) == ["1"]
    assert await catalog.claim_operation(op_name("1"), A, LONG)
    assert await unclaimed_ids(catalog) == []


async def test_claim_refused_while_another_owner_holds_the_lease(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await catalog.create_operation(running("1"))
    assert await catalog.claim_operation(op_name("1"), A, LONG)
    assert not await catalog.claim_operation(op_name("1"), B, LONG)
    assert await catalog.claim_operation(op_name("1"), A, LONG)  # its holder renews it


async def test_create_with_owner_is_claimed_from_the_start(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await catalog.create_operation(running("1"), owner=A, lease_seconds=LONG)
    await catalog.create_operation(running("2", minutes=1))
    assert await unclaimed_ids(catalog) == ["2"]
    assert not await catalog.claim_operation(op_name("1"), B, LONG)
    assert await catalog.renew_lease(op_name("1"), A, LONG)
    assert (await catalog.get_operation(op_name("1"))) == running("1")  # nothing else changes


async def test_expired_lease_is_claimed_by_another_owner(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await catalog.create_operation(running("1"), owner=A, lease_seconds=SHORT)
    await asyncio.sleep(SHORT * 2)
    assert await unclaimed_ids(catalog) == ["1"]
    assert await catalog.claim_operation(op_name("1"), B, LONG)
    assert not await catalog.renew_lease(op_name("1"), A, LONG)  # A must stop running it
    assert not await catalog.claim_operation(op_name("1"), A, LONG)


async def test_renew_keeps_the_lease_past_its_first_expiry(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await catalog.create_operation(running("1"), owner=A, lease_seconds=SHORT)
    for _ in range(3):
        await asyncio.sleep(SHORT / 2)
        assert await catalog.renew_lease(op_name("1"), A, SHORT)
    assert not await catalog.claim_operation(op_name("1"), B, LONG)


async def test_renew_refused_to_an_owner_that_never_held_it(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await catalog.create_operation(running("1"))
    assert not await catalog.renew_lease(op_name("1"), A, LONG)
    assert await unclaimed_ids(catalog) == ["1"]


async def test_finished_operation_is_neither_claimed_nor_renewed(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await catalog.create_operation(finished("1"))
    await catalog.create_operation(running("2"), owner=A, lease_seconds=LONG)
    end = running("2")
    end = dataclasses.replace(
        end, end_time=end.create_time + timedelta(seconds=1), response=OperationResponse("x")
    )
    await catalog.update_operation(end)
    assert not await catalog.claim_operation(op_name("1"), A, LONG)
    assert not await catalog.renew_lease(op_name("2"), A, LONG)
    assert await unclaimed_ids(catalog) == []


async def test_missing_operation_is_neither_claimed_nor_renewed(catalog: Catalog) -> None:
    await add_dataset(catalog)
    assert not await catalog.claim_operation(op_name("404"), A, LONG)
    assert not await catalog.renew_lease(op_name("404"), A, LONG)


async def test_release_by_owner_frees_only_its_leases(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await catalog.create_operation(running("1"), owner=A, lease_seconds=LONG)
    await catalog.create_operation(running("2", minutes=1), owner=B, lease_seconds=LONG)
    await catalog.release_leases(A)
    assert await unclaimed_ids(catalog) == ["1"]
    assert not await catalog.renew_lease(op_name("1"), A, LONG)
    assert await catalog.renew_lease(op_name("2"), B, LONG)
    assert await catalog.claim_operation(op_name("1"), B, LONG)


async def test_release_of_every_lease_frees_them_all(catalog: Catalog) -> None:
    await add_dataset(catalog)
    await catalog.create_operation(running("1"), owner=A, lease_seconds=LONG)
    await catalog.create_operation(running("2", minutes=1), owner=B, lease_seconds=LONG)
    await catalog.release_leases()
    assert await unclaimed_ids(catalog) == ["1", "2"]


async def test_unclaimed_operations_are_oldest_first_across_datasets(catalog: Catalog) -> None:
    from tests.contract.test_catalog import OTHER_DATASET

    await add_dataset(catalog)
    await add_dataset(catalog, OTHER_DATASET)
    await catalog.create_operation(running("b", minutes=2))
    await catalog.create_operation(running("a", dataset=OTHER_DATASET, minutes=1))
    await catalog.create_operation(running("c", minutes=3))
    listed = await catalog.unclaimed_operations()
    assert [(o.name.dataset, o.name.operation_id) for o in listed] == [
        (OTHER_DATASET, "a"),
        (DATASET, "b"),
        (DATASET, "c"),
    ]
    assert listed[1] == running("b", minutes=2)


async def test_lease_is_seen_through_another_adapter(catalog: Catalog, other: Catalog) -> None:
    await add_dataset(catalog)
    await catalog.create_operation(running("1"), owner=A, lease_seconds=LONG)
    assert await unclaimed_ids(other) == []
    assert not await other.claim_operation(op_name("1"), B, LONG)
    await catalog.release_leases(A)
    assert await other.claim_operation(op_name("1"), B, LONG)
    assert not await catalog.renew_lease(op_name("1"), A, LONG)


async def test_concurrent_claims_through_two_adapters_give_one_owner(
    catalog: Catalog, other: Catalog
) -> None:
    await add_dataset(catalog)
    for n in range(10):
        await catalog.create_operation(running(f"{n}", minutes=n))
    names = [op_name(f"{n}") for n in range(10)]
    outcomes = await asyncio.gather(
        *(catalog.claim_operation(name, A, LONG) for name in names),
        *(other.claim_operation(name, B, LONG) for name in names),
    )
    for n in range(10):
        assert outcomes[n] != outcomes[10 + n], f"operation {n}: {outcomes[n]}, {outcomes[10 + n]}"
