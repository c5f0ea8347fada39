"""Bodies made of pixel work, piece by piece with one job ahead, for WADO-RS and export.

A body of decoded or re-encoded frames is a sequence of `PixelWork` jobs; awaiting them one
after the other would leave the workers idle while the socket (or the upload) drains, and
running them all at once would hold the whole body in memory. One job ahead keeps a worker busy
and holds at most two pieces per body. A consumer that goes away cancels the job in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from functools import partial

from dicomstore.core.ports import PixelWork
from dicomstore.dicom import transcode

Job = Callable[[], Awaitable[bytes]]


async def one_ahead(jobs: Iterable[Job]) -> AsyncIterator[bytes]:
    """The results of `jobs`, in order, each started while the one before is consumed."""
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


async def transcoded(work: PixelWork, path: str, target: str) -> AsyncIterator[bytes]:
    """The instance at `path` as a Part 10 file in `target`.

    Its first piece is made before this returns, so an impossible transcode raises here, while
    an answer can still say so."""
    plan, head = await work.transcode_head(path, target)
    return _transcoded_body(work, path, plan, head)


async def _transcoded_body(
    work: PixelWork, path: str, plan: transcode.Plan, head: bytes
) -> AsyncIterator[bytes]:
    yield head
    step = plan.pieces_per_job
    jobs = (
        partial(work.transcode_frames, path, plan, start, min(start + step, plan.frames + 1))
        for start in range(2, plan.frames + 1, step)
    )
    async for piece in one_ahead(jobs):
        yield piece
    yield transcode.tail(plan)


def frames(
    work: PixelWork, path: str, numbers: Iterable[int], media: str, stored_syntax: str = ""
) -> AsyncIterator[bytes]:
    """Frames `numbers` of the instance at `path` (stored in `stored_syntax`), each as `media`."""
    return one_ahead(partial(work.frame, path, number, media, stored_syntax) for number in numbers)
