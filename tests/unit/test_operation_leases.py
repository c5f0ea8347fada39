"""Operations shared by several processes through one catalog (`--workers`, replicas): two
`Operations` runners over two catalog connections to one SQLite file stand for two processes.
Exactly one runs an operation; a cancellation asked through either stops it wherever it runs;
the operations of a runner that died (its leases left to expire) are finished by the other."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.unit.test_operations import DATASET, METHOD, RESPONSE, WAIT, Gate, open_catalog

from dicomstore.catalog.sqlite import SqliteCatalog
from dicomstore.core.errors import Code
from dicomstore.core.model import Dataset, Job, Operation, OperationResponse
from dicomstore.core.operations import JobContext, Operations
from dicomstore.core.paging import PageTokens

LEASE_S = 0.6
CHECK_S = 0.1
POLL_S = 0.2


def runner(catalog: SqliteCatalog) -> Operations:
    return Operations(
        catalog,
        PageTokens(b"k" * 32),
        concurrency=2,
        lease_s=LEASE_S,
        check_s=CHECK_S,
        poll_s=POLL_S,
    )


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[tuple[Operations, Operations]]:
    first = await open_catalog(tmp_path / "catalog.sqlite3")
    second = await open_catalog(tmp_path / "catalog.sqlite3")
    await first.create_dataset(Dataset(DATASET))
    a, b = runner(first), runner(second)
    try:
        yield a, b
    finally:
        for ops in (a, b):
            await ops.close()
        await first.close()
        await second.close()


async def crash(ops: Operations) -> None:
    """Stop a runner as `kill -9` would: its jobs end, its leases stay held until they expire."""
    tasks = list(ops._tasks)
    if ops._poller is not None:
        tasks.append(ops._poller)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def finished(ops: Operations, operation: Operation, within: float = WAIT) -> Operation:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        stored = await ops.get(str(operation.name))
        if stored.done:
            return stored
        await asyncio.sleep(0.05)
    raise AssertionError(f"{operation.name} still running after {within}s")


class Forever:
    """A job that never checks for cancellation itself and never ends on its own."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def __call__(self, context: JobContext) -> OperationResponse:
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_cancel_through_another_runner_stops_the_job_within_seconds(
    two: tuple[Operations, Operations],
) -> None:
    a, b = two
    job = Forever()
    a.register("forever", job)
    b.register("forever", job)
    op = await a.start(DATASET, METHOD, Job("forever"))
    await asyncio.wait_for(job.started.wait(), WAIT)
    asked = time.monotonic()
    await b.cancel(str(op.name))
    done = await finished(b, op)
    assert time.monotonic() - asked < 2.0
    assert done.error is not None and done.error.code == Code.CANCELLED
    assert done.cancel_requested


async def test_operation_of_a_dead_runner_is_finished_by_the_other(
    two: tuple[Operations, Operations],
) -> None:
    a, b = two
    gate, again = Gate(), Gate()
    again.release.set()
    a.register("import", gate)
    b.register("import", again)
    await b.resume()  # b polls for operations nobody holds
    op = await a.start(DATASET, METHOD, Job("import"))
    await gate.wait_started()
    await asyncio.sleep(LEASE_S * 2)  # renewed by a: b leaves it alone
    assert again.runs == 0
    died = time.monotonic()
    await crash(a)
    done = await finished(b, op)
    assert time.monotonic() - died < LEASE_S + POLL_S * 2 + 1.0
    assert again.runs == 1
    assert done.response == RESPONSE and done.error is None


async def test_runner_closed_gracefully_hands_its_operation_over_at_once(
    two: tuple[Operations, Operations],
) -> None:
    a, b = two
    gate, again = Gate(), Gate()
    again.release.set()
    a.register("import", gate)
    b.register("import", again)
    op = await a.start(DATASET, METHOD, Job("import"))
    await gate.wait_started()
    await a.close()  # releases its leases
    await b.resume()
    done = await finished(b, op, within=LEASE_S / 2 + 1.0)
    assert done.response == RESPONSE


async def test_unclaimed_operation_is_run_by_exactly_one_runner(
    two: tuple[Operations, Operations],
) -> None:
    a, b = two
    gate = Gate()
    for ops in (a, b):
        ops.register("import", gate)
    op = await a.start(DATASET, METHOD, Job("import"))
    await gate.wait_started()
    await crash(a)
    gate.release.set()
    await asyncio.gather(a.resume(), b.resume())  # both look after the lease expired
    done = await finished(b, op)
    await asyncio.sleep(POLL_S * 3)  # time for a second run, if there were one
    assert gate.runs == 2  # the crashed run, then exactly one
    assert done.response == RESPONSE


async def test_lost_lease_stops_the_job_without_writing_its_end(
    two: tuple[Operations, Operations],
) -> None:
    a, b = two
    job = Forever()
    a.register("forever", job)
    op = await a.start(DATASET, METHOD, Job("forever"))
    await asyncio.wait_for(job.started.wait(), WAIT)
    catalog = b.catalog
    # Another process takes the lease (as if a had stalled past its expiry).
    await catalog.release_leases(a.owner)
    assert await catalog.claim_operation(op.name, b.owner, 60)
    await asyncio.wait_for(a.idle(), WAIT)
    stored = await b.get(str(op.name))
    assert not stored.done
    assert not await catalog.renew_lease(op.name, a.owner, 60)
