"""Pixel work off the event loop: a pool of worker processes running `pixel_jobs`.

Decoding, encoding and rendering are CPU-bound and hold the GIL, so they run in processes,
`--pixel-processes` of them (default: the number of cores). The pool starts its processes
from a fork server, never by forking the server itself: grpcio's threads and locks do not
survive `fork()` (grpc/grpc, doc/fork_support.md). The fork server is a fresh interpreter that
imports `pixel_jobs` (pydicom, numpy, the codecs) once, so each worker starts already warm.
Processes start at the first pixel request, not with the server.

A worker that dies (a codec crashing on a hostile file, the OOM killer) breaks a
`ProcessPoolExecutor` for good: the jobs in flight fail, and so would every later one. The
pool is then replaced; the requests whose jobs were lost get 503 UNAVAILABLE, and the next ones
run on the new pool.

The errors a job raises come back as themselves and are mapped here, at the boundary, to the
core's errors (CannotTranscode and bad frame numbers 400 INVALID_ARGUMENT, undecodable data and
requests over `--pixel-memory-limit` 400 FAILED_PRECONDITION).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from dicomstore import pixel_jobs
from dicomstore.core.errors import FailedPrecondition, InvalidArgument, Unavailable
from dicomstore.dicom import transcode
from dicomstore.dicom.frames import NATIVE_TRANSFER_SYNTAXES, FrameError
from dicomstore.dicom.pixel_encode import NATIVE_FRAME, STORED_FRAME, CannotTranscode
from dicomstore.dicom.pixel_source import PixelDataError
from dicomstore.dicom.render import RenderError, RenderOptions

log = logging.getLogger(__name__)

T = TypeVar("T")


class PixelWorkers:
    def __init__(self, processes: int, memory_limit: int) -> None:
        self.processes = processes
        self.memory_limit = memory_limit
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False

    def _executor(self) -> ProcessPoolExecutor:
        if self._closed:
            raise Unavailable("the server is shutting down")
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["dicomstore.pixel_jobs"])
            self._pool = ProcessPoolExecutor(
                self.processes,
                mp_context=context,
                initializer=pixel_jobs.start_worker,
                initargs=(os.getpid(),),
            )
        return self._pool

    async def run(self, job: Callable[..., T], *args: Any) -> T:
        """Run `job(*args)` in a worker; its errors come back mapped to the core's."""
        pool = self._executor()
        try:
            return await _mapped(asyncio.get_running_loop().run_in_executor(pool, job, *args))
        except BrokenProcessPool:
            self._replace(pool)
            raise Unavailable(
                "a pixel worker process died while working on this request; retry it"
            ) from None

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        if self._pool is broken:
            log.error("a pixel worker process died; starting a new pool")
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    # --- the jobs ---------------------------------------------------------------------------

    async def render(self, path: str, number: int, options: RenderOptions) -> bytes:
        return await self.run(pixel_jobs.render, path, number, options, self.memory_limit)

    async def frame(self, path: str, number: int, media: str, stored_syntax: str = "") -> bytes:
        """Frame `number` as `media`. Given the instance's `stored_syntax`, a frame wanted as
        stored is read in a thread rather than a worker: it needs no codec, and a worker would
        only add two copies through a pipe."""
        native = stored_syntax in NATIVE_TRANSFER_SYNTAXES
        if (
            media == STORED_FRAME
            or media == stored_syntax != ""
            or (native and media == NATIVE_FRAME)
        ):
            return await _mapped(asyncio.to_thread(pixel_jobs.stored_frame, path, number))
        return await self.run(pixel_jobs.frame, path, number, media, self.memory_limit)

    async def check_transcode(self, paths: list[str], target: str) -> None:
        await self.run(pixel_jobs.check_transcode, paths, target, self.memory_limit)

    async def transcode_head(self, path: str, target: str) -> tuple[transcode.Plan, bytes]:
        return await self.run(pixel_jobs.transcode_head, path, target, self.memory_limit)

    async def transcode_frames(
        self, path: str, plan: transcode.Plan, start: int, stop: int
    ) -> bytes:
        return await self.run(
            pixel_jobs.transcode_frames, path, plan, start, stop, self.memory_limit
        )


async def _mapped(work: Awaitable[T]) -> T:
    """`work`, its codec and frame errors mapped to the core's."""
    try:
        return await work
    except CannotTranscode as exc:
        raise InvalidArgument(str(exc)) from None
    except FrameError as exc:
        raise InvalidArgument(f"frames: {exc}", field="frames") from None
    except RenderError as exc:
        raise FailedPrecondition(f"the frame cannot be rendered: {exc}") from None
    except (PixelDataError, pixel_jobs.OverMemoryLimit) as exc:
        raise FailedPrecondition(str(exc)) from None
