"""The pixel work that runs inside `PixelWorkers`' processes: each function is one job.

Jobs take the path of a local file of the blob (`BlobStore.local_file`: the blob itself, or a
copy of one kept in Cloud Storage), open it themselves and return bytes, so a job's arguments
and result cross the process boundary small (a path in, an encoded frame out). A worker keeps its
last few opened instances: the frames of one instance usually arrive as consecutive jobs, and
reopening costs a parse of the header each time. Blobs never change once written (their names
come from internal ids), and the key holds the file's size and mtime besides, so a cached
instance cannot be stale.

Each job first checks `memory_limit` against the decoded size of a frame, the most a job holds
at once (a rendered frame holds a few working copies of it, hence `RENDER_COPIES`).
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Final

from dicomstore.dicom import transcode
from dicomstore.dicom.pixel_encode import (
    NATIVE_FRAME,
    PNG_FRAME,
    STORED_FRAME,
    encode_frame,
    encode_png,
    native_bytes,
)
from dicomstore.dicom.pixel_source import NoPixelData, PixelSource
from dicomstore.dicom.render import RenderOptions, render_frame

#: Opened instances a worker keeps.
CACHED_SOURCES: Final = 4
#: Working copies of a frame that rendering holds at once (float values, 8-bit output, image).
RENDER_COPIES: Final = 4

_Key = tuple[str, int, int]
# One cache per worker process (built after the worker starts, never shared with the server).
_sources: OrderedDict[_Key, PixelSource] = OrderedDict()


class OverMemoryLimit(ValueError):
    """A job would hold more memory than `--pixel-memory-limit` allows."""


def start_worker(server_pid: int) -> None:
    """Worker initializer. Ctrl-C in a terminal reaches the whole process group; only the
    server should act on it (it stops the pool itself). And a worker must not outlive the
    server: killed with SIGKILL, the server cannot stop its pool, and a worker waiting for its
    next job would wait forever (it holds both ends of the job queue), keeping the fork
    server alive too."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(server_pid,), daemon=True).start()


def _exit_with(server_pid: int) -> None:
    try:
        handle = os.pidfd_open(server_pid)
    except OSError:  # the server is gone already, or no pidfd (Linux before 5.3)
        while _alive(server_pid):
            time.sleep(1.0)
    else:
        select.select([handle], [], [])  # readable once the process has exited
    os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user
        pass
    return True


def ping() -> int:
    return os.getpid()


def _source(path: str, memory_limit: int, copies: int = 1) -> PixelSource:
    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns)
    source = _sources.get(key)
    if source is None:
        source = PixelSource.open(Path(path))
        _sources[key] = source
        while len(_sources) > CACHED_SOURCES:
            _sources.popitem(last=False)[1].close()
    else:
        _sources.move_to_end(key)
    needed = source.image.decoded_frame_bytes * copies
    if needed > memory_limit:
        raise OverMemoryLimit(
            f"a decoded frame of this instance takes {source.image.decoded_frame_bytes} bytes,"
            f" and this request would hold {needed}: more than the {memory_limit} bytes"
            " --pixel-memory-limit allows per request"
        )
    return source


def render(path: str, number: int, options: RenderOptions, memory_limit: int) -> bytes:
    source = _source(path, memory_limit, RENDER_COPIES)
    decoded = source.decode(number)
    return render_frame(source.dataset, decoded.array, decoded.photometric, options)


def frame(path: str, number: int, media: str, memory_limit: int) -> bytes:
    """Frame `number` as `media`: a `pixel_encode` *_FRAME value or a transfer syntax UID."""
    source = _source(path, memory_limit)
    if media == STORED_FRAME or (
        media == source.image.transfer_syntax and source.image.encapsulated
    ):
        return source.stored_frame(number)
    if media == NATIVE_FRAME and not source.image.encapsulated:
        return source.stored_frame(number)
    decoded = source.decode(number)
    if media == NATIVE_FRAME:
        return native_bytes(decoded, source.image)
    if media == PNG_FRAME:
        return encode_png(decoded, source.image)
    return encode_frame(decoded, source.image, media).data


def stored_frame(path: str, number: int) -> bytes:
    """Frame `number` as stored, from a fresh open (this runs in a server thread, not a
    worker, where the cache would be shared state)."""
    with PixelSource.open(Path(path)) as source:
        return source.stored_frame(number)


def check_transcode(paths: list[str], target: str, memory_limit: int) -> None:
    """Raise for the first of `paths` that cannot be transcoded to `target`."""
    for path in paths:
        try:
            source = _source(path, memory_limit)
        except NoPixelData:
            continue  # only the data set's encoding changes
        transcode.plan(source, target)


def transcode_head(path: str, target: str, memory_limit: int) -> tuple[transcode.Plan, bytes]:
    try:
        source = _source(path, memory_limit)
    except NoPixelData:
        return transcode.header_only(path, target)
    return transcode.head(source, path, target)


def transcode_frames(
    path: str, plan: transcode.Plan, start: int, stop: int, memory_limit: int
) -> bytes:
    return transcode.frames(_source(path, memory_limit), plan, start, stop)
