"""The embedded Cloud Storage: object `gs://BUCKET/OBJECT` is the file `ROOT/BUCKET/OBJECT`.

`ROOT` is `DATA_DIR/gcs`; a bucket exists when its folder does (make one with `mkdir`). Every
path below `ROOT` is opened one segment at a time relative to its parent folder with
O_NOFOLLOW, so a symbolic link planted in a bucket is never followed: reads and writes through
one are refused (FAILED_PRECONDITION) and listings skip it. Names that cannot stay inside their
bucket are refused by `gcs_local_paths`. An upload writes a temporary file in the object's
folder, fsyncs it and renames it into place, so an object is absent, old or new, never partial.

Listing is in lexicographic order of object name: each folder's entries are sorted with a
folder `a` sorting as `a/` (so `a-b` < `a.b` < `a/b` < `a0`, as in Cloud Storage) and walked
depth first; memory grows with the largest folder, not with the bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import stat
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import BinaryIO

from dicomstore.core.errors import (
    DicomStoreError,
    FailedPrecondition,
    NotFound,
    ObjectTooLarge,
    invalid,
    storage_fault,
)
from dicomstore.core.model import StorageObject
from dicomstore.core.uris import valid_bucket
from dicomstore.destinations.gcs_local_paths import (
    PARTIAL_PREFIX,
    object_segments,
    segment_problem,
)

_CHUNK = 1 << 20
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted in a bucket must not hang the thread.
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_ENTRY_ERRORS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})
_OBJECT_MAX_BYTES = 1024


class _StorageFaults:
    """OS errors of the embedded storage's own files as domain errors (not a source's or sink's);
    reusable, unlike a generator-based context manager."""

    def __init__(self, doing: str) -> None:
        self._doing = doing

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _: object
    ) -> None:
        if isinstance(exc, OSError):
            raise storage_fault(exc, self._doing) from exc


def _is_link(name: str, folder: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _link_refused(bucket: str, name: str, segment: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"gs://{bucket}/{name}: {segment!r} is a symbolic link in the embedded Cloud Storage; "
        "links are never followed"
    )


class LocalCloudStorage:
    """`dicomstore.core.ports.CloudStorage` in the folder `root` (DATA_DIR/gcs)."""

    def __init__(self, root: Path, *, page_size: int = 1000) -> None:
        self._root = root
        self._page_size = page_size

    async def open(self) -> None:
        """Remove the partial files of uploads a crash interrupted (never through a link)."""
        await asyncio.to_thread(self._remove_partials)

    def _remove_partials(self) -> None:
        for folder, _, files in os.walk(self._root, followlinks=False):
            for name in files:
                if name.startswith(PARTIAL_PREFIX):
                    with _StorageFaults("removing an interrupted upload"):
                        os.unlink(os.path.join(folder, name))

    async def close(self) -> None:
        """Nothing stays open between calls."""

    # Listing

    async def list_objects(self, bucket: str, prefix: str) -> AsyncIterator[StorageObject]:
        """The bucket's objects whose names start with `prefix`, in lexicographic order."""
        pages = self._pages(bucket, prefix)
        try:
            while page := await asyncio.to_thread(next, pages, None):
                for item in page:
                    yield item
        finally:
            with contextlib.suppress(ValueError):  # still running in its thread: cancelled
                pages.close()

    def _pages(self, bucket: str, prefix: str) -> Generator[list[StorageObject]]:
        folder = self._open_bucket(bucket)
        page: list[StorageObject] = []
        try:
            for item in self._walk(bucket, folder, "", prefix):
                page.append(item)
                if len(page) == self._page_size:
                    yield page
                    page = []
            if page:
                yield page
        finally:
            os.close(folder)

    def _walk(self, bucket: str, folder: int, base: str, prefix: str) -> Iterator[StorageObject]:
        """Objects below `folder` (whose names start with `base`), sorted by name."""
        with _StorageFaults(f"listing gs://{bucket}"):
            entries = sorted(self._entries(folder, base, prefix))
        for key, entry_name, size in entries:
            if size is not None:
                if len(key.encode("utf-8")) <= _OBJECT_MAX_BYTES:
                    yield StorageObject(key, size)
                continue
            try:
                child = os.open(entry_name, _FOLDER, dir_fd=folder)
            except OSError as exc:
                if exc.errno in _ENTRY_ERRORS:
                    continue  # removed, or replaced by a link, since the scan
                raise storage_fault(exc, f"listing gs://{bucket}") from exc
            try:
                yield from self._walk(bucket, child, key, prefix)
            finally:
                os.close(child)

    @staticmethod
    def _entries(folder: int, base: str, prefix: str) -> Iterator[tuple[str, str, int | None]]:
        """(sort key, entry name, size of a file or None for a folder) of the entries of
        `folder` that are, or may hold, objects whose names start with `prefix`; a folder's sort
        key ends with `/`. Links, FIFOs and names no object can have are left out."""
        with os.scandir(folder) as scan:
            for entry in scan:
                if segment_problem(entry.name) is not None:
                    continue  # a partial upload, or a name no object can have
                try:
                    if entry.is_dir(follow_symlinks=False):
                        key = f"{base}{entry.name}/"
                        if key.startswith(prefix) or prefix.startswith(key):
                            yield key, entry.name, None
                    elif entry.is_file(follow_symlinks=False):
                        key = base + entry.name
                        if key.startswith(prefix):
                            yield key, entry.name, entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue  # removed since the scan

    # Folders

    def _open_bucket(self, bucket: str) -> int:
        if not valid_bucket(bucket):
            raise invalid("bucket", f"invalid bucket name {bucket!r}")
        missing = NotFound(f"bucket gs://{bucket} not found", resource=f"gs://{bucket}")
        try:
            root = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise missing from None
        except OSError as exc:
            raise storage_fault(exc, "opening the embedded Cloud Storage") from exc
        try:
            return os.open(bucket, _FOLDER, dir_fd=root)
        except OSError as exc:
            if exc.errno in _ENTRY_ERRORS:
                if _is_link(bucket, root):
                    raise _link_refused(bucket, "", bucket) from None
                raise missing from None
            raise storage_fault(exc, f"opening gs://{bucket}") from exc
        finally:
            os.close(root)

    def _open_folder(self, bucket: str, name: str, segments: list[str], *, create: bool) -> int:
        """The folder that holds object `name` (segments `segments`), opened; made if `create`."""
        folder = self._open_bucket(bucket)
        try:
            for depth, segment in enumerate(segments[:-1]):
                if create:
                    self._make_folder(segment, folder, bucket)
                try:
                    child = os.open(segment, _FOLDER, dir_fd=folder)
                except OSError as exc:
                    error = self._entry_error(exc, bucket, name, segments, depth, folder)
                    if (
                        create
                        and exc.errno == errno.ENOTDIR
                        and not isinstance(error, FailedPrecondition)
                    ):
                        error = FailedPrecondition(
                            f"gs://{bucket}/{name}: the object gs://{bucket}/"
                            f"{'/'.join(segments[: depth + 1])} exists, and the embedded Cloud "
                            "Storage cannot hold an object inside another"
                        )
                    raise error from exc
                os.close(folder)
                folder = child
        except BaseException:
            os.close(folder)
            raise
        return folder

    @staticmethod
    def _make_folder(segment: str, parent: int, bucket: str) -> None:
        with _StorageFaults(f"writing to gs://{bucket}"):
            try:
                os.mkdir(segment, dir_fd=parent)
            except FileExistsError:
                return
            os.fsync(parent)  # the new folder survives a crash along with the object in it

    @staticmethod
    def _entry_error(
        exc: OSError, bucket: str, name: str, segments: list[str], depth: int, folder: int
    ) -> DicomStoreError:
        """The domain error of failing to open segment `depth` of `name` in `folder`: a link
        refused, the object not found, or a fault of the storage."""
        if exc.errno in _ENTRY_ERRORS and _is_link(segments[depth], folder):
            return _link_refused(bucket, name, "/".join(segments[: depth + 1]))
        if exc.errno in _ENTRY_ERRORS:
            return NotFound(f"object gs://{bucket}/{name} not found", resource=f"gs://{bucket}")
        return storage_fault(exc, f"opening gs://{bucket}/{name}")

    # Download

    async def download(self, bucket: str, name: str, sink: BinaryIO, *, limit: int) -> int:
        """Copy the object into `sink` in chunks; ObjectTooLarge past `limit` bytes."""
        return await asyncio.to_thread(self._download, bucket, name, sink, limit)

    def _download(self, bucket: str, name: str, sink: BinaryIO, limit: int) -> int:
        segments = object_segments(bucket, name)
        file = self._open_object(bucket, name, segments)
        try:
            return self._copy_out(file, sink, f"gs://{bucket}/{name}", limit)
        finally:
            os.close(file)

    def _open_object(self, bucket: str, name: str, segments: list[str]) -> int:
        folder = self._open_folder(bucket, name, segments, create=False)
        try:
            file = os.open(segments[-1], _READ, dir_fd=folder)
        except OSError as exc:
            depth = len(segments) - 1
            raise self._entry_error(exc, bucket, name, segments, depth, folder) from exc
        finally:
            os.close(folder)
        try:
            with _StorageFaults(f"reading gs://{bucket}/{name}"):
                regular = stat.S_ISREG(os.fstat(file).st_mode)
            if not regular:  # a folder (or a FIFO) is not an object
                raise NotFound(f"object gs://{bucket}/{name} not found", resource=f"gs://{bucket}")
        except BaseException:
            os.close(file)
            raise
        return file

    @staticmethod
    def _copy_out(file: int, sink: BinaryIO, uri: str, limit: int) -> int:
        def too_large(size: int) -> ObjectTooLarge:
            return ObjectTooLarge(f"{uri} is {size} bytes, more than the limit of {limit} bytes")

        reading = _StorageFaults(f"reading {uri}")
        with reading:
            size = os.fstat(file).st_size
        if size > limit:
            raise too_large(size)
        copied = 0
        while True:
            with reading:
                chunk = os.read(file, _CHUNK)
            if not chunk:
                return copied
            copied += len(chunk)
            if copied > limit:  # it grew since
                raise too_large(copied)
            sink.write(chunk)

    # Upload

    async def upload(self, bucket: str, name: str, source: BinaryIO, content_type: str) -> None:
        """Create or replace the object with `source` (from its position), atomically.

        The embedded storage keeps no metadata: `content_type` is not stored."""
        await asyncio.to_thread(self._upload, bucket, name, source)

    def _upload(self, bucket: str, name: str, source: BinaryIO) -> None:
        segments = object_segments(bucket, name)
        folder = self._open_folder(bucket, name, segments, create=True)
        partial = PARTIAL_PREFIX + secrets.token_hex(8)
        try:
            self._write_partial(partial, folder, source, bucket)
            try:
                os.replace(partial, segments[-1], src_dir_fd=folder, dst_dir_fd=folder)
                os.fsync(folder)
            except IsADirectoryError:
                raise FailedPrecondition(
                    f"gs://{bucket}/{name}: objects named gs://{bucket}/{name}/... exist, and the "
                    "embedded Cloud Storage cannot hold an object and a folder of the same name"
                ) from None
            except OSError as exc:
                raise storage_fault(exc, f"writing gs://{bucket}/{name}") from exc
        except BaseException:
            with contextlib.suppress(OSError):  # never created, or renamed already
                os.unlink(partial, dir_fd=folder)
            raise
        finally:
            os.close(folder)

    @staticmethod
    def _write_partial(partial: str, folder: int, source: BinaryIO, bucket: str) -> None:
        writing = _StorageFaults(f"writing to gs://{bucket}")
        with writing:
            file = os.open(partial, _CREATE, 0o666, dir_fd=folder)
        try:
            while chunk := source.read(_CHUNK):
                view = memoryview(chunk)
                while view:  # a short write (a signal, a nearly full disk) resumes
                    with writing:
                        view = view[os.write(file, view) :]
            with writing:
                os.fsync(file)
        finally:
            os.close(file)
