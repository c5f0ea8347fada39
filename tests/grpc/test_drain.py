"""Draining before a stop waits for calls still queued in grpc core: how long "no call arrived"
must last follows how fast calls lately came through, since a loaded server takes them from core
slowly and core cancels those still queued when the server stops."""

from __future__ import annotations

import asyncio
import io
import time

import pytest

from dicomstore.api.grpc.access import AccessInterceptor
from dicomstore.logs import AccessLog


def _interceptor(arrivals_ago: list[float]) -> AccessInterceptor:
    interceptor = AccessInterceptor(AccessLog(io.StringIO(), "json", enabled=False))
    now = time.perf_counter()
    for ago in arrivals_ago:
        interceptor._arrivals.append(now - ago)
    return interceptor


async def test_drain_waits_three_times_the_longest_recent_gap_between_calls() -> None:
    # Calls came through every 0.2 s, the last 0.05 s ago: 0.6 s of quiet is needed.
    interceptor = _interceptor([0.85, 0.65, 0.45, 0.25, 0.05])
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(interceptor.drain(within=10), timeout=0.3)


async def test_drain_of_a_server_that_was_busy_and_fast_ends_soon() -> None:
    interceptor = _interceptor([0.04, 0.03, 0.02, 0.01])
    await asyncio.wait_for(interceptor.drain(within=10), timeout=5)


async def test_drain_takes_a_lull_between_calls_for_idleness_not_for_a_slow_intake() -> None:
    interceptor = _interceptor([600.0, 300.0, 0.2])
    await asyncio.wait_for(interceptor.drain(within=10), timeout=5)


async def test_drain_of_a_server_that_never_had_a_call_ends_at_once() -> None:
    await asyncio.wait_for(_interceptor([]).drain(within=10), timeout=5)
