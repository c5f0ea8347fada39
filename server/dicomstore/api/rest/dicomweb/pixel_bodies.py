"""Response bodies made by the pixel workers, piece by piece with one job ahead.

A body of decoded or re-encoded frames is a sequence of jobs (`PixelWorkers`); awaiting them
one after the other would leave the worker idle while the socket drains, and running them all
at once would hold the whole body in memory. One job ahead keeps a worker busy and holds at
most two pieces per request. A client that goes away cancels the job in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path

from dicomstore.dicom import transcode
from dicomstore.pixel_workers import PixelWorkers


async def one_ahead(jobs: Iterator[Callable[[], Awaitable[bytes]]]) -> AsyncIterator[bytes]:
    """The results of `jobs`, in order, each started while the one before is being sent."""
    pending: asyncio.Future[bytes] | None = None
    try:
        for job in jobs:
            started = asyncio.ensure_future(job())
            if pending is not None:
                yield await pending
            pending = started
        if pending is not None:
            result, pending = await pending, None
            yield result
    finally:
        if pending is not None:
            pending.cancel()


async def transcoded(
    pixels: PixelWorkers, path: Path, plan: transcode.Plan, head: bytes
) -> AsyncIterator[bytes]:
    """A transcoded instance: `head` (which holds the first piece), the others, the tail."""
    yield head
    step = plan.pieces_per_job
    starts = range(2, plan.frames + 1, step)

    def jobs() -> Iterator[Callable[[], Awaitable[bytes]]]:
        for start in starts:
            stop = min(start + step, plan.frames + 1)
            yield partial(pixels.transcode_frames, str(path), plan, start, stop)

    async for piece in one_ahead(jobs()):
        yield piece
    yield transcode.tail(plan)
