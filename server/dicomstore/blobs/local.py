"""Blob storage on local disk: `ROOT/{store_key}/{xx}/{instance_key}.dcm`.

Names come from internal ids, never from UIDs. A write goes to a temporary file that is fsynced,
renamed into place and its folder fsynced, so a blob is either absent or complete and durable.
`xx` (the key modulo 256, in hex) keeps folders small. A write that finds its folder missing (new,
or removed with its store) creates it and fsyncs the folders holding it, then writes again.

Reads: `read` streams 1 MiB chunks, `read_range` is one `pread`, `open_file` the file itself,
and `local_file` the blob's own path (no copy: the pixel workers open it where it lies).

OS errors become domain errors here (`storage_fault`): a full disk is RESOURCE_EXHAUSTED, a
read-only or unreadable folder or an I/O error INTERNAL, a missing blob NOT_FOUND. A write that
fails leaves no partial file behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO

from dicomstore.core.errors import NotFound, storage_fault
from dicomstore.core.processes import pid_running

_CHUNK = 1 << 20
_SUFFIX = ".dcm"
_PARTIAL = ".partial"
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
#: A partial file nobody has written for this long is abandoned, whatever its pid says.
STALE_PARTIAL_S = 3600.0


@contextlib.contextmanager
def _writing() -> Iterator[None]:
    """OS errors of the blob storage's own writes as domain errors (not those of a source)."""
    try:
        yield
    except OSError as exc:
        raise storage_fault(exc, "writing a blob") from exc


def _fsync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | memoryview) -> int:
    view = memoryview(data)  # a short write (a full disk, a signal) resumes without a copy
    written = 0
    with _writing():
        while written < len(view):
            written += os.write(fd, view[written:])
    return written


def _copy(source: BinaryIO, fd: int) -> int:
    """Write `source` from its position to its end into `fd`; leave `source` at its end."""
    if isinstance(source, io.BytesIO):
        start = source.tell()
        with source.getbuffer() as buffer:
            size = _write_all(fd, buffer[start:])
        source.seek(0, os.SEEK_END)
        return size
    size = 0
    while chunk := source.read(_CHUNK):
        size += _write_all(fd, chunk)
    return size


@contextlib.contextmanager
def _reading(store_key: int, instance_key: int) -> Iterator[None]:
    """A missing blob as NotFound, other OS errors of a read as domain errors."""
    try:
        yield
    except FileNotFoundError:
        raise NotFound(f"blob {store_key}/{instance_key} not found") from None
    except OSError as exc:
        raise storage_fault(exc, "reading a blob") from exc


def _ages(folder: Path) -> dict[int, float]:
    now = time.time()
    ages = {}
    for path in folder.glob(f"*/*{_SUFFIX}"):
        if path.stem.isdigit():
            with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                ages[int(path.stem)] = now - path.stat().st_mtime
    return ages


def _abandoned(partial: Path) -> bool:
    """A partial file whose writer is no longer running here (its pid is in its name: `KEY.PID
    .partial`), or that nobody has written for an hour (a pid reused meanwhile)."""
    pid = partial.name.removesuffix(_PARTIAL).partition(".")[2]
    try:
        stale = time.time() - partial.stat().st_mtime > STALE_PARTIAL_S
    except FileNotFoundError:
        return False  # renamed into place or removed meanwhile
    return stale or not pid.isdigit() or not pid_running(int(pid))


def _open_and_read(path: Path) -> tuple[BinaryIO, bytes]:
    """The file open for reading, and its first chunk."""
    blob = path.open("rb")
    try:
        return blob, blob.read(_CHUNK)
    except BaseException:
        blob.close()
        raise


def _pread(path: Path, start: int, size: int) -> bytes:
    with path.open("rb") as file:
        return os.pread(file.fileno(), size, start)


class LocalBlobStore:
    """`dicomstore.core.ports.BlobStore` in a directory."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._root_name = os.fspath(root)

    async def open(self) -> None:
        """Create the root."""
        try:
            self._root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_fault(exc, f"opening the blob folder {self._root}") from exc

    async def remove_leftovers(self) -> None:
        """Remove the partial writes of processes no longer running (nobody refers to them)."""
        try:
            await asyncio.to_thread(self._remove_partials)
        except OSError as exc:
            raise storage_fault(exc, f"cleaning the blob folder {self._root}") from exc

    def _remove_partials(self) -> None:
        for partial in self._root.glob(f"*/*/*{_PARTIAL}"):
            if _abandoned(partial):
                partial.unlink(missing_ok=True)

    def _folder(self, store_key: int, instance_key: int) -> str:
        return f"{self._root_name}/{store_key}/{instance_key % 256:02x}"

    def _path(self, store_key: int, instance_key: int) -> Path:
        return Path(f"{self._folder(store_key, instance_key)}/{instance_key}{_SUFFIX}")

    async def write(self, store_key: int, instance_key: int, source: BinaryIO) -> int:
        """Copy `source` (from its current position) into a durable blob; return its size."""
        # One thread trip, plain `os` calls, no mkdir: for a small blob the two fsyncs dominate.
        folder = self._folder(store_key, instance_key)
        return await asyncio.to_thread(self._write, folder, f"{folder}/{instance_key}", source)

    def _write(self, folder: str, stem: str, source: BinaryIO) -> int:
        partial = f"{stem}.{os.getpid()}{_PARTIAL}"  # whose it is, for `remove_leftovers`
        with _writing():
            try:
                fd = os.open(partial, _CREATE, 0o666)
            except FileNotFoundError:
                self._make_folder(folder)
                fd = os.open(partial, _CREATE, 0o666)
        try:
            try:
                size = _copy(source, fd)  # an error reading `source` is not the storage's
                with _writing():
                    os.fsync(fd)
            finally:
                with _writing():
                    os.close(fd)
            with _writing():
                os.replace(partial, stem + _SUFFIX)
        except BaseException:
            with contextlib.suppress(OSError):  # gone already, or the disk refuses: no matter
                os.unlink(partial)
            raise
        with _writing():
            _fsync_folder(folder)
        return size

    def _make_folder(self, folder: str) -> None:
        """Create `folder` (and its store's folder) durably: their entries are fsynced too."""
        store_folder = os.path.dirname(folder)
        os.makedirs(folder, exist_ok=True)
        _fsync_folder(store_folder)
        _fsync_folder(self._root_name)

    async def read(self, store_key: int, instance_key: int) -> AsyncIterator[bytes]:
        """The blob's bytes in chunks of at most 1 MiB; NotFound if there is no such blob."""
        path = self._path(store_key, instance_key)
        with _reading(store_key, instance_key):
            blob, chunk = await asyncio.to_thread(_open_and_read, path)
        with blob:
            # A read shorter than asked for is the end of a file: a blob of at most one chunk
            # (most instances) takes one thread trip, not three (open, read, read the end).
            while chunk:
                yield chunk
                if len(chunk) < _CHUNK:
                    break
                try:
                    chunk = await asyncio.to_thread(blob.read, _CHUNK)
                except OSError as exc:
                    raise storage_fault(exc, "reading a blob") from exc

    async def read_range(self, store_key: int, instance_key: int, start: int, size: int) -> bytes:
        """`size` bytes from `start`, in one `pread`; fewer at the blob's end."""
        path = self._path(store_key, instance_key)
        with _reading(store_key, instance_key):
            return await asyncio.to_thread(_pread, path, start, size)

    async def open_file(self, store_key: int, instance_key: int) -> BinaryIO:
        """The blob file itself, open for reading."""
        path = self._path(store_key, instance_key)
        with _reading(store_key, instance_key):
            return await asyncio.to_thread(path.open, "rb")

    @contextlib.asynccontextmanager
    async def local_file(self, store_key: int, instance_key: int) -> AsyncIterator[Path]:
        """The blob's own path: no copy. NotFound if there is no such blob."""
        path = self._path(store_key, instance_key)
        if not await asyncio.to_thread(path.exists):
            raise NotFound(f"blob {store_key}/{instance_key} not found")
        yield path

    def local_path(self, store_key: int, instance_key: int) -> Path:
        """Where the blob lives (whether or not it exists)."""
        return self._path(store_key, instance_key)

    async def delete(self, store_key: int, instance_key: int) -> None:
        """Remove one blob; removing an absent blob is not an error."""
        try:
            await asyncio.to_thread(self._path(store_key, instance_key).unlink, missing_ok=True)
        except OSError as exc:
            raise storage_fault(exc, "deleting a blob") from exc

    async def instance_keys(self, store_key: int) -> set[int]:
        """Keys of the complete blobs of a store."""
        folder = self._root / str(store_key)
        try:
            return await asyncio.to_thread(
                lambda: {int(p.stem) for p in folder.glob(f"*/*{_SUFFIX}") if p.stem.isdigit()}
            )
        except OSError as exc:
            raise storage_fault(exc, "listing blobs") from exc

    async def instance_ages(self, store_key: int) -> dict[int, float]:
        """Keys of the complete blobs of a store, with the seconds since each was written."""
        folder = self._root / str(store_key)
        try:
            return await asyncio.to_thread(_ages, folder)
        except OSError as exc:
            raise storage_fault(exc, "listing blobs") from exc

    async def remove_dicom_store(self, store_key: int) -> None:
        folder = self._root / str(store_key)
        # Rename first so a crash mid-removal leaves a folder that recovery recognises as garbage.
        doomed = self._root / f"{store_key}.deleting"
        try:
            await asyncio.to_thread(self._remove, folder, doomed)
        except OSError as exc:
            raise storage_fault(exc, "deleting a store's blobs") from exc

    @staticmethod
    def _remove(folder: Path, doomed: Path) -> None:
        shutil.rmtree(doomed, ignore_errors=True)  # left by an interrupted removal
        if folder.exists():
            folder.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    async def dicom_store_keys(self) -> set[int]:
        try:
            return await asyncio.to_thread(self._keys)
        except OSError as exc:
            raise storage_fault(exc, "listing blobs") from exc

    async def close(self) -> None:
        """Nothing to release: every call opens and closes its own files."""

    def _keys(self) -> set[int]:
        keys = set()
        for entry in self._root.iterdir():
            stem = entry.name.removesuffix(".deleting")
            if stem.isdigit():
                keys.add(int(stem))
        return keys
