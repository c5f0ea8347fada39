"""Blob storage in a Cloud Storage bucket (`--blobs gs://BUCKET/PREFIX`): the object
`PREFIX/{store_key}/{instance_key}.dcm`, through the JSON API with google-cloud-storage.

Durability: an object exists only once its upload has completed, and is durable from then on
(Cloud Storage's guarantee), so a blob is absent or complete, and `write` returns only then,
before the catalog row is added. An upload a crash interrupts leaves no object (an unfinished
resumable upload is not one; Cloud Storage drops it after a week). A blob written without a
catalog row (a crash between upload and commit) is an object that recovery finds with
`instance_keys` and deletes. A store's objects are deleted one by one; those a crash leaves are
still listed by `dicom_store_keys`, so recovery removes them.

Writes stream from the source: up to 8 MiB in one request, larger blobs in 8 MiB chunks of a
resumable upload (`destinations.gcs_api`), never the whole instance in memory. Reads are ranged
requests: `read` streams `READ_CHUNK` at a time, `read_range` is one request, `open_file` a
file whose reads are requests of their range, at least `FILE_BUFFER` bytes (a header's many
small reads take one). `local_file` spools the blob into a bounded cache of copies
(`blobs.spool`) for the pixel workers, which open files by path.

The library is synchronous: every call runs in a thread. Its errors become domain errors as for
import and export (`gcs_api.domain_error`). The client is made at the first call. `open` checks
the bucket (a missing bucket is NOT_FOUND, an unreachable endpoint UNAVAILABLE, so that start-up
stops saying which); `remove_leftovers` removes the local copies of processes that died.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Final

from google.api_core import exceptions as api_exceptions
from google.cloud.storage.retry import DEFAULT_RETRY

from dicomstore.blobs.spool import SpoolCache
from dicomstore.core.errors import NotFound
from dicomstore.destinations.gcs_api import FromPosition, domain_errors, new_client

#: Bytes of a blob `read` fetches per request.
READ_CHUNK: Final = 4 << 20
#: Bytes an `open_file` request reads at least: a header's small reads are served by one.
FILE_BUFFER: Final = 256 << 10
#: Bytes of local copies kept once no request holds them.
SPOOL_LIMIT: Final = 1 << 30
#: Seconds start-up retries reaching the bucket before it gives up.
OPEN_RETRY_S: Final = 5.0
_UPLOAD_CHUNK = 8 << 20  # a multiple of 256 KiB, as resumable uploads require
_SUFFIX = ".dcm"
_CONTENT_TYPE = "application/dicom"


class GcsBlobStore:
    """`dicomstore.core.ports.BlobStore` in `gs://{bucket}/{prefix}` of the JSON API at
    `endpoint` (anonymous requests when `anonymous`: an emulator). Local copies for the pixel
    workers go to `spool_folder`."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        prefix: str,
        spool_folder: Path,
        *,
        anonymous: bool,
        retry_timeout: float = 120.0,
        spool_limit: int = SPOOL_LIMIT,
    ) -> None:
        self._endpoint = endpoint
        self._bucket_name = bucket
        self._prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self._anonymous = anonymous
        self._retry = DEFAULT_RETRY.with_timeout(retry_timeout)
        self._spool = SpoolCache(spool_folder, spool_limit)
        self._client: Any = None
        self._bucket: Any = None
        self._connecting = asyncio.Lock()

    def __str__(self) -> str:
        return f"gs://{self._bucket_name}/{self._prefix}"

    async def open(self) -> None:
        """Check that the bucket can be reached."""
        bucket = await self._connected()
        retry = DEFAULT_RETRY.with_timeout(OPEN_RETRY_S)
        with domain_errors(f"opening the blob bucket {self} at {self._endpoint}", bucket.name):
            await asyncio.to_thread(bucket.reload, retry=retry)

    async def remove_leftovers(self) -> None:
        """Remove the local copies of processes that died (an object exists only once complete:
        an interrupted upload leaves nothing to remove in the bucket)."""
        await self._spool.remove_abandoned()

    async def _connected(self) -> Any:
        """The bucket; its client is made at the first call (in a thread: it may look up
        credentials)."""
        async with self._connecting:
            if self._bucket is None:
                with domain_errors(f"connecting to Cloud Storage at {self._endpoint}"):
                    client = await asyncio.to_thread(
                        new_client, self._endpoint, anonymous=self._anonymous
                    )
                self._client, self._bucket = client, client.bucket(self._bucket_name)
            return self._bucket

    async def close(self) -> None:
        if self._client is not None:
            client, self._client, self._bucket = self._client, None, None
            await asyncio.to_thread(client.close)
        await self._spool.close()

    def _name(self, store_key: int, instance_key: int) -> str:
        return f"{self._prefix}{store_key}/{instance_key}{_SUFFIX}"

    async def _blob(self, store_key: int, instance_key: int, **kwargs: Any) -> Any:
        bucket = await self._connected()
        return bucket.blob(self._name(store_key, instance_key), **kwargs)

    # --- writing ------------------------------------------------------------------------------

    async def write(self, store_key: int, instance_key: int, source: BinaryIO) -> int:
        """Upload `source` from its position; durable when this returns. Returns the size."""
        blob = await self._blob(store_key, instance_key, chunk_size=_UPLOAD_CHUNK)
        return await asyncio.to_thread(self._write, blob, source)

    def _write(self, blob: Any, source: BinaryIO) -> int:
        if not _seekable(source):  # the upload needs the size first: spool it to a disk file
            with tempfile.TemporaryFile() as spooled:
                shutil.copyfileobj(source, spooled)
                spooled.seek(0)
                return self._upload(blob, spooled)
        return self._upload(blob, source)

    def _upload(self, blob: Any, source: BinaryIO) -> int:
        stream = FromPosition(source)
        size = max(stream.remaining(), 0)  # nothing to copy from past the end
        with domain_errors(f"writing {self}{blob.name}"):
            # Retried although no generation is given: the same bytes again are harmless.
            blob.upload_from_file(stream, size=size, content_type=_CONTENT_TYPE, retry=self._retry)
        return size

    # --- reading ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _reading(self, blob: Any) -> Iterator[None]:
        """A missing object as NotFound naming the blob; other errors as domain errors."""
        try:
            with domain_errors(f"reading {self}{blob.name}"):
                yield
        except NotFound:
            raise NotFound(f"blob {self}{blob.name} not found") from None

    def _download(self, blob: Any, start: int, size: int) -> bytes:
        """Bytes `start` to `start + size` of the object, fewer at its end (one request)."""
        if size <= 0:
            return b""
        with self._reading(blob):
            try:
                # Not checksummed: the object's hashes are of all of it, not of a range.
                data: bytes = blob.download_as_bytes(
                    start=start,
                    end=start + size - 1,
                    raw_download=True,
                    checksum=None,
                    retry=self._retry,
                )
            except api_exceptions.RequestRangeNotSatisfiable:
                return b""  # from the end of the object on
        return data

    async def read(self, store_key: int, instance_key: int) -> AsyncIterator[bytes]:
        """The blob in chunks of `READ_CHUNK` bytes, one request each."""
        blob = await self._blob(store_key, instance_key)
        start = 0
        while True:
            chunk = await asyncio.to_thread(self._download, blob, start, READ_CHUNK)
            if chunk:
                yield chunk
            if len(chunk) < READ_CHUNK:
                return
            start += len(chunk)

    async def read_range(self, store_key: int, instance_key: int, start: int, size: int) -> bytes:
        blob = await self._blob(store_key, instance_key)
        return await asyncio.to_thread(self._download, blob, start, size)

    def _size(self, blob: Any) -> int:
        with self._reading(blob):
            blob.reload(retry=self._retry)
        return int(blob.size or 0)

    async def open_file(self, store_key: int, instance_key: int) -> BinaryIO:
        blob = await self._blob(store_key, instance_key)
        size = await asyncio.to_thread(self._size, blob)
        return _ObjectFile(size, partial(self._download, blob), FILE_BUFFER)  # type: ignore[return-value]

    @contextlib.asynccontextmanager
    async def local_file(self, store_key: int, instance_key: int) -> AsyncIterator[Path]:
        """A copy of the blob spooled to disk (kept in a bounded cache)."""
        blob = await self._blob(store_key, instance_key)

        async def fill(path: Path) -> int:
            return await asyncio.to_thread(self._download_to, blob, path)

        async with self._spool.lease((store_key, instance_key), fill) as path:
            yield path

    def _download_to(self, blob: Any, path: Path) -> int:
        with self._reading(blob):
            blob.download_to_filename(str(path), raw_download=True, retry=self._retry)
        return path.stat().st_size

    # --- deleting and listing -----------------------------------------------------------------

    async def delete(self, store_key: int, instance_key: int) -> None:
        blob = await self._blob(store_key, instance_key)
        await asyncio.to_thread(self._delete, blob)
        await self._spool.forget((store_key, instance_key))

    def _delete(self, blob: Any) -> None:
        with (
            domain_errors(f"deleting {self}{blob.name}"),
            contextlib.suppress(api_exceptions.NotFound),
        ):
            blob.delete(retry=self._retry)

    async def instance_keys(self, store_key: int) -> set[int]:
        """Keys of the store's objects (every object is a complete blob)."""
        bucket = await self._connected()
        names = await asyncio.to_thread(self._names, bucket, f"{self._prefix}{store_key}/")
        return {int(stem) for stem in (_stem(name) for name in names) if stem.isdigit()}

    async def instance_ages(self, store_key: int) -> dict[int, float]:
        """Keys of the store's objects, with the seconds since each was created (by Cloud
        Storage's clock: an hour-long margin makes a skew of this machine's irrelevant)."""
        bucket = await self._connected()
        prefix = f"{self._prefix}{store_key}/"
        created = await asyncio.to_thread(self._creation_times, bucket, prefix)
        now = time.time()
        return {int(stem): now - when for stem, when in created.items() if stem.isdigit()}

    def _creation_times(self, bucket: Any, prefix: str) -> dict[str, float]:
        with domain_errors(f"listing {self}"):
            blobs = bucket.list_blobs(
                prefix=prefix, fields="items(name,timeCreated),nextPageToken", retry=self._retry
            )
            # An object without a creation time counts as new: it is left alone.
            return {
                _stem(blob.name): blob.time_created.timestamp()
                if blob.time_created
                else time.time()
                for blob in blobs
            }

    def _names(self, bucket: Any, prefix: str) -> list[str]:
        with domain_errors(f"listing {self}"):
            blobs = bucket.list_blobs(
                prefix=prefix, fields="items(name),nextPageToken", retry=self._retry
            )
            return [blob.name for blob in blobs]

    async def remove_dicom_store(self, store_key: int) -> None:
        bucket = await self._connected()
        for name in await asyncio.to_thread(self._names, bucket, f"{self._prefix}{store_key}/"):
            await asyncio.to_thread(self._delete, bucket.blob(name))
            stem = _stem(name)
            if stem.isdigit():
                await self._spool.forget((store_key, int(stem)))

    async def dicom_store_keys(self) -> set[int]:
        return await asyncio.to_thread(self._store_keys, await self._connected())

    def _store_keys(self, bucket: Any) -> set[int]:
        with domain_errors(f"listing {self}"):
            listing = bucket.list_blobs(
                prefix=self._prefix,
                delimiter="/",
                fields="items(name),prefixes,nextPageToken",
                retry=self._retry,
            )
            for _ in listing.pages:
                pass  # `prefixes` fills page by page
            folders = [p.removeprefix(self._prefix).rstrip("/") for p in listing.prefixes]
        return {int(folder) for folder in folders if folder.isdigit()}


def _stem(name: str) -> str:
    return name.rsplit("/", 1)[-1].removesuffix(_SUFFIX)


def _seekable(source: BinaryIO) -> bool:
    try:
        return bool(source.seekable())
    except (AttributeError, ValueError):
        return False


class _ObjectFile(io.RawIOBase):
    """A read-only file of `size` bytes whose reads are ranged requests (`download`), each of at
    least `read_ahead` bytes: a header's many small reads are served by one. Reads return all
    the bytes asked for (up to the end), as pydicom expects. Not an `io.BufferedReader`, which
    pydicom would take for a file it can reopen by name."""

    def __init__(self, size: int, download: Callable[[int, int], bytes], read_ahead: int) -> None:
        super().__init__()
        self._size = size
        self._download = download
        self._read_ahead = read_ahead
        self._position = 0
        self._start = 0  # where `_data`, the bytes of the last request, lie in the object
        self._data = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._position = base + offset
        return self._position

    def readall(self) -> bytes:
        """The rest of the object, in one request (not in `io.DEFAULT_BUFFER_SIZE` pieces)."""
        rest = bytearray(max(self._size - self._position, 0))
        return bytes(rest[: self.readinto(rest)])

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        count = max(min(len(view), self._size - self._position), 0)
        done = 0
        while done < count:
            offset = self._position - self._start
            if not 0 <= offset < len(self._data):
                self._data = self._download(self._position, max(count - done, self._read_ahead))
                self._start, offset = self._position, 0
                if not self._data:
                    break  # the object ends early
            piece = self._data[offset : offset + count - done]
            view[done : done + len(piece)] = piece
            done += len(piece)
            self._position += len(piece)
        return done
