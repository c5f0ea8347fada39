"""Cloud Storage through its JSON API (Google's service, or an emulator such as fake-gcs-server),
with the google-cloud-storage client library.

The library is synchronous: every call runs in a worker thread. Listing fetches one page per
call (`page_size` objects), so memory does not grow with the bucket. A download reads the
object's size first and refuses an object over the limit before fetching any of it; an upload of
more than 8 MiB goes in chunks of `_UPLOAD_CHUNK` bytes (a resumable upload), not whole.

The library's errors become domain errors here: 404 NOT_FOUND, 401/403 FAILED_PRECONDITION (the
server's credentials lack a permission: an operator must act), 412 ABORTED (the object changed
during a download), 429 RESOURCE_EXHAUSTED, 5xx and connection failures UNAVAILABLE (after the
retries), anything else INTERNAL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any, BinaryIO

import google.auth
import google.cloud.storage as storage
import requests
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud.storage.retry import DEFAULT_RETRY

from dicomstore.core.errors import (
    Aborted,
    DicomStoreError,
    FailedPrecondition,
    Internal,
    NotFound,
    ObjectTooLarge,
    ResourceExhausted,
    Unavailable,
)
from dicomstore.core.model import StorageObject

_UPLOAD_CHUNK = 8 << 20  # a multiple of 256 KiB, as resumable uploads require
_LIST_FIELDS = "items(name,size),nextPageToken"


#: The domain error of each error of the client library, first match wins (most specific first).
_LIBRARY_ERRORS: tuple[tuple[type[Exception], type[DicomStoreError], str], ...] = (
    (api_exceptions.NotFound, NotFound, "not found"),
    (api_exceptions.Forbidden, FailedPrecondition, "Cloud Storage refused the credentials"),
    (api_exceptions.Unauthorized, FailedPrecondition, "Cloud Storage refused the credentials"),
    (api_exceptions.PreconditionFailed, Aborted, "the object changed while read; retry"),
    (api_exceptions.TooManyRequests, ResourceExhausted, "Cloud Storage is rate limiting"),
    (api_exceptions.ServerError, Unavailable, "Cloud Storage failed"),
    (api_exceptions.GoogleAPICallError, Internal, "Cloud Storage refused the request"),
    (auth_exceptions.DefaultCredentialsError, FailedPrecondition, "no Google credentials found"),
    (auth_exceptions.TransportError, Unavailable, "Cloud Storage is unreachable"),
    (requests.ConnectionError, Unavailable, "Cloud Storage is unreachable"),
    (requests.Timeout, Unavailable, "Cloud Storage did not answer in time"),
    (api_exceptions.GoogleAPIError, Internal, "the Cloud Storage client failed"),
)


def domain_error(exc: BaseException, doing: str, bucket: str | None = None) -> DicomStoreError:
    """The domain error of a client library's error met while `doing` ("listing gs://b"); a 404
    means that `bucket` is missing when one is given. INTERNAL for an unknown error."""
    cause = exc
    if isinstance(exc, api_exceptions.RetryError) and exc.cause is not None:
        cause = exc.cause  # retried until the deadline: what failed the last time decides
    if bucket is not None and isinstance(cause, api_exceptions.NotFound):
        return _missing_bucket(bucket)
    for kind, error, meaning in _LIBRARY_ERRORS:
        if isinstance(cause, kind):
            return error(f"{doing}: {meaning} ({exc})")
    return Internal(f"{doing}: the Cloud Storage client failed ({type(exc).__name__}: {exc})")


@contextlib.contextmanager
def domain_errors(doing: str, bucket: str | None = None) -> Iterator[None]:
    """Raise the client library's errors as domain errors (`domain_error`); the domain errors
    of this module pass as they are."""
    try:
        yield
    except DicomStoreError:
        raise
    except (api_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError) as exc:
        raise domain_error(exc, doing, bucket) from exc
    except requests.RequestException as exc:
        raise domain_error(exc, doing, bucket) from exc


class _LimitedSink:
    """Passes writes to `sink` until more than `limit` bytes came (the object grew)."""

    def __init__(self, sink: BinaryIO, limit: int, uri: str) -> None:
        self._sink = sink
        self._limit = limit
        self._uri = uri
        self.written = 0

    def write(self, data: bytes) -> int:
        self.written += len(data)
        if self.written > self._limit:
            raise _too_large(self._uri, self.written, self._limit)
        return self._sink.write(data)


class FromPosition:
    """`source` seen from its current position as if that were its start: the library's
    resumable upload insists on a stream at position 0, and seeks back to resend a chunk."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._start = source.tell()

    def read(self, size: int = -1) -> bytes:
        return self._source.read(size)

    def tell(self) -> int:
        return self._source.tell() - self._start

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            offset += self._start
        return self._source.seek(offset, whence) - self._start

    def remaining(self) -> int:
        position = self._source.tell()
        end = self._source.seek(0, os.SEEK_END)
        self._source.seek(position)
        return end - position


def _missing_bucket(bucket: str) -> NotFound:
    return NotFound(f"bucket gs://{bucket} not found", resource=f"gs://{bucket}")


def _too_large(uri: str, size: int, limit: int) -> ObjectTooLarge:
    return ObjectTooLarge(f"{uri} is {size} bytes, more than the limit of {limit} bytes")


def new_client(endpoint: str, *, anonymous: bool, project: str | None = None) -> Any:
    """A `google.cloud.storage.Client` of the JSON API at `endpoint`: anonymous (an emulator),
    or with Application Default Credentials (looked up here: call it in a thread)."""
    credentials: Credentials
    if anonymous:
        credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
        project = project or "dicomstore"
    else:
        credentials, found_project = google.auth.default()
        project = project or found_project
    return storage.Client(
        project=project, credentials=credentials, client_options={"api_endpoint": endpoint}
    )


class GcsApiStorage:
    """`dicomstore.core.ports.CloudStorage` over the Cloud Storage JSON API at `endpoint`.

    Anonymous requests when `anonymous` (an emulator), else Application Default Credentials,
    looked up (in a thread) at the first call. `page_size` objects per listing request. A
    request failing in a way worth retrying (a connection error, 429, 5xx) is retried with
    backoff for up to `retry_timeout` seconds."""

    def __init__(
        self,
        endpoint: str,
        *,
        anonymous: bool,
        project: str | None = None,
        page_size: int = 1000,
        retry_timeout: float = 120.0,
    ) -> None:
        self._endpoint = endpoint
        self._anonymous = anonymous
        self._project = project
        self._page_size = page_size
        self._retry = DEFAULT_RETRY.with_timeout(retry_timeout)
        self._client: Any = None
        self._client_lock = asyncio.Lock()

    async def _storage_client(self) -> Any:
        async with self._client_lock:
            if self._client is None:
                with domain_errors(f"connecting to Cloud Storage at {self._endpoint}"):
                    self._client = await asyncio.to_thread(self._new_client)
            return self._client

    def _new_client(self) -> Any:
        return new_client(self._endpoint, anonymous=self._anonymous, project=self._project)

    async def open(self) -> None:
        """Nothing to prepare: the client is made on first use."""

    async def close(self) -> None:
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
            self._client = None

    async def list_objects(self, bucket: str, prefix: str) -> AsyncIterator[StorageObject]:
        """The bucket's objects whose names start with `prefix`, a page per request."""
        client = await self._storage_client()
        blobs = client.list_blobs(
            bucket,
            prefix=prefix,
            page_size=self._page_size,
            fields=_LIST_FIELDS,
            retry=self._retry,
        )
        pages = iter(blobs.pages)
        while True:
            with domain_errors(f"listing gs://{bucket}", bucket):
                page = await asyncio.to_thread(self._next_page, pages)
            if page is None:
                return
            for item in page:
                yield item

    @staticmethod
    def _next_page(pages: Iterator[Any]) -> list[StorageObject] | None:
        page = next(pages, None)
        if page is None:
            return None
        return [StorageObject(blob.name, int(blob.size or 0)) for blob in page]

    async def download(self, bucket: str, name: str, sink: BinaryIO, *, limit: int) -> int:
        """Copy the object into `sink` as it arrives; ObjectTooLarge past `limit` bytes."""
        client = await self._storage_client()
        uri = f"gs://{bucket}/{name}"
        with domain_errors(f"reading {uri}"):
            return await asyncio.to_thread(self._download, client, bucket, name, sink, limit)

    def _download(self, client: Any, bucket: str, name: str, sink: BinaryIO, limit: int) -> int:
        uri = f"gs://{bucket}/{name}"
        blob = client.bucket(bucket).get_blob(name, retry=self._retry)
        if blob is None:
            if not client.bucket(bucket).exists(retry=self._retry):
                raise _missing_bucket(bucket)
            raise NotFound(f"object {uri} not found", resource=f"gs://{bucket}")
        if blob.size is not None and blob.size > limit:
            raise _too_large(uri, blob.size, limit)
        limited = _LimitedSink(sink, limit, uri)
        # The generation read above: the bytes are those of the size checked.
        blob.download_to_file(limited, if_generation_match=blob.generation, retry=self._retry)
        return limited.written

    async def upload(self, bucket: str, name: str, source: BinaryIO, content_type: str) -> None:
        """Create or replace the object with `source` (from its position)."""
        client = await self._storage_client()
        with domain_errors(f"writing gs://{bucket}/{name}", bucket):
            await asyncio.to_thread(self._upload, client, bucket, name, source, content_type)

    def _upload(
        self, client: Any, bucket: str, name: str, source: BinaryIO, content_type: str
    ) -> None:
        blob = client.bucket(bucket).blob(name, chunk_size=_UPLOAD_CHUNK)
        stream = FromPosition(source)
        # With its size known, an object of 8 MiB at most goes in one request (multipart);
        # a larger one in chunks of _UPLOAD_CHUNK (resumable).
        # Retried although no generation is given: writing the same bytes again is harmless.
        blob.upload_from_file(
            stream, size=stream.remaining(), content_type=content_type, retry=self._retry
        )
