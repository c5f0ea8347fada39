"""Pixel work on stored instances, wherever their blobs are kept (`BlobStore`).

Native frames wanted as they are stored are read straight from their byte range of the blob
(`BlobStore.read_range`: one `pread` on disk, one ranged request to Cloud Storage) once where
the frames lie is known (`frames.FrameSpan`: the header parsed once, through
`BlobStore.open_file`, and remembered for `SPANS_KEPT` instances; a blob never changes once
written and its key is never reused).

Everything else runs in the pixel workers (`PixelWork`) on a file of the blob on this machine
(`BlobStore.local_file`): the blob itself on disk; for Cloud Storage, the instance spooled to a
bounded cache of local copies. A whole copy rather than the byte ranges each job needs, because
the workers are other processes without the server's Cloud Storage client, and their work wants
random access to the whole file: decoding follows the encapsulated fragments' offsets, a
transcoded body is made by several jobs over one instance, and a worker keeps its last instances
open for the next frames. The copy is held (leased) until the body that needs it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import BinaryIO, Final

from dicomstore.core import pixels
from dicomstore.core.errors import FailedPrecondition, InvalidArgument, NotFound
from dicomstore.core.model import InstanceKey, StoredInstance
from dicomstore.core.ports import BlobStore, PixelWork
from dicomstore.dicom.frames import (
    NATIVE_TRANSFER_SYNTAXES,
    FrameError,
    FrameReader,
    FrameSpan,
    InconsistentPixelData,
)
from dicomstore.dicom.pixel_encode import NATIVE_FRAME, STORED_FRAME
from dicomstore.dicom.render import RenderOptions
from dicomstore.dicom.values import InstanceFile

#: Instances whose frame positions are remembered (a few dozen bytes each).
SPANS_KEPT: Final = 4096
#: Instances checked by one worker job before a transcoded answer starts...
CHECK_BATCH: Final = 50
#: ...and at most this many bytes of them (their local copies are held during the check).
CHECK_BATCH_BYTES: Final = 256 << 20


class InstancePixels:
    """Frames, rendered images and transcoded bodies of stored instances."""

    def __init__(self, blobs: BlobStore, work: PixelWork) -> None:
        self._blobs = blobs
        self._work = work
        self._spans: OrderedDict[InstanceKey, FrameSpan | None] = OrderedDict()

    def _local_file(self, instance: StoredInstance) -> contextlib.AbstractAsyncContextManager[Path]:
        return self._blobs.local_file(instance.key.store_key, instance.key.instance_key)

    # --- frames -------------------------------------------------------------------------------

    async def frame(self, instance: StoredInstance, number: int, media: str) -> bytes:
        """Frame `number` (from 1) as `media` (see `pixel_jobs.frame`)."""
        span = await self._span(instance, media)
        if span is not None:
            return await self._read_frame(instance, span, number)
        async with self._local_file(instance) as path:
            return await self._work.frame(str(path), number, media, instance.transfer_syntax_uid)

    async def frames(
        self, instance: StoredInstance, numbers: Sequence[int], media: str
    ) -> AsyncIterator[bytes]:
        """Frames `numbers` as `media`, made one ahead (`pixels.one_ahead`)."""
        if not numbers:
            return
        if await self._span(instance, media) is not None:
            jobs = (partial(self.frame, instance, number, media) for number in numbers)
            async for frame in pixels.one_ahead(jobs):
                yield frame
            return
        async with self._local_file(instance) as path:
            syntax = instance.transfer_syntax_uid
            async for frame in pixels.frames(self._work, str(path), numbers, media, syntax):
                yield frame

    async def _span(self, instance: StoredInstance, media: str) -> FrameSpan | None:
        """Where the instance's frames lie in its blob, when `media` wants them as stored and
        each is a plain byte range of it."""
        native = instance.transfer_syntax_uid in NATIVE_TRANSFER_SYNTAXES
        if not native or media not in (NATIVE_FRAME, STORED_FRAME):
            return None
        key = instance.key
        if key in self._spans:
            self._spans.move_to_end(key)
            return self._spans[key]
        file = await self._blobs.open_file(key.store_key, key.instance_key)
        span = await asyncio.to_thread(_find_span, file)
        self._spans[key] = span
        while len(self._spans) > SPANS_KEPT:
            self._spans.popitem(last=False)
        return span

    async def _read_frame(self, instance: StoredInstance, span: FrameSpan, number: int) -> bytes:
        with _frame_errors():
            offset, size = span.frame_range(number)
        key = instance.key
        data = await self._blobs.read_range(key.store_key, key.instance_key, offset, size)
        if len(data) < size:
            raise FailedPrecondition(f"the file ends inside frame {number}")
        return data

    # --- rendered images and transcoding ------------------------------------------------------

    async def render(self, instance: StoredInstance, number: int, options: RenderOptions) -> bytes:
        async with self._local_file(instance) as path:
            return await self._work.render(str(path), number, options)

    async def check_transcode(self, instances: Sequence[StoredInstance], target: str) -> None:
        """Raise for the first instance that cannot be transcoded to `target`; instances
        deleted meanwhile are left out."""
        for batch in _batches(instances):
            async with contextlib.AsyncExitStack() as held:
                paths = []
                for instance in batch:
                    with contextlib.suppress(NotFound):
                        paths.append(
                            str(await held.enter_async_context(self._local_file(instance)))
                        )
                with contextlib.suppress(FileNotFoundError):
                    await self._work.check_transcode(paths, target)

    async def transcoded(self, instance: StoredInstance, target: str) -> AsyncIterator[bytes]:
        """The instance as a Part 10 file in `target`; its first piece is made before this
        returns, so that an impossible transcode raises while an answer can still say so.
        NotFound if the instance was deleted."""
        held = contextlib.AsyncExitStack()
        try:
            path = await held.enter_async_context(self._local_file(instance))
            body = await pixels.transcoded(self._work, str(path), target)
        except FileNotFoundError:
            await held.aclose()
            raise NotFound(f"instance {instance.sop_uid} was just deleted") from None
        except BaseException:
            await held.aclose()
            raise
        # A body never read (its client gone before the answer started) runs no `finally`; its
        # copy is let go when it is collected all the same: `held` holds the lease's async
        # generator, which asyncio closes when it is collected.
        return _holding(held, body)


async def _holding(
    held: contextlib.AsyncExitStack, body: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    """`body`, with the local file it is made from held until it ends."""
    async with held:
        async for piece in body:
            yield piece


def _batches(instances: Sequence[StoredInstance]) -> Iterator[list[StoredInstance]]:
    batch: list[StoredInstance] = []
    size = 0
    for instance in instances:
        if batch and (len(batch) == CHECK_BATCH or size + instance.blob_size > CHECK_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(instance)
        size += instance.blob_size
    if batch:
        yield batch


def _find_span(file: BinaryIO) -> FrameSpan | None:
    with file:
        try:
            return FrameReader(InstanceFile(file)).span()
        except FrameError:
            return None


@contextlib.contextmanager
def _frame_errors() -> Iterator[None]:
    try:
        yield
    except InconsistentPixelData as exc:
        raise FailedPrecondition(str(exc)) from None
    except FrameError as exc:
        raise InvalidArgument(f"frames: {exc}", field="frames") from None
