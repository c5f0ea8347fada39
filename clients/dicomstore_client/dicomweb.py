"""DICOMweb clients of one DICOM store, sync (`DicomWebClient`) and async
(`AsyncDicomWebClient`), over httpx: STOW-RS from files with bounded parallelism, QIDO-RS
searches, WADO-RS retrieval streamed to files, and delete (PS3.18 10.4-10.6; Google's
`projects.locations.datasets.dicomStores.dicomWeb` methods).

    with DicomWebClient("projects/p/locations/l/datasets/d/dicomStores/s") as client:
        report = client.store_files(find_files(["scans/**/*.dcm"]), parallel=4)
        studies = client.search("studies", Query(patient_id="P1", limit=10))
        client.retrieve("studies/1.2.3", Path("out"))
        client.delete("studies/1.2.3")
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from dicomstore_client.connection import Connection
from dicomstore_client.dicomweb_async import AsyncDicomWebClient
from dicomstore_client.dicomweb_base import (
    AS_STORED,
    DEFAULT_TIMEOUT,
    DICOM_JSON,
    OPERATION_POLL_SECONDS,
    DicomWebBase,
    OnRetrieved,
    OnStored,
    RetrievedFile,
    StoreReport,
    batches,
    page_of,
)
from dicomstore_client.dicomweb_files import find_files
from dicomstore_client.dicomweb_multipart import PartsToFiles, StowBody
from dicomstore_client.dicomweb_names import DicomPath, StoreName
from dicomstore_client.dicomweb_query import Level, Query
from dicomstore_client.dicomweb_results import (
    SentFile,
    StoreResult,
    failed_request,
    http_error,
    unreachable,
)
from dicomstore_client.errors import ClientError

__all__ = [
    "AS_STORED",
    "AsyncDicomWebClient",
    "DicomPath",
    "DicomWebClient",
    "Query",
    "RetrievedFile",
    "StoreName",
    "StoreReport",
    "StoreResult",
    "find_files",
]


class DicomWebClient(DicomWebBase):
    """A DICOM store's DICOMweb API, blocking. `store` is a full name, or an id with `project`,
    `location` and `dataset`; the base URL and token come from `connection` (default: the
    environment, `Connection.from_env`). Failures raise `ClientError`."""

    def __init__(
        self,
        store: StoreName | str,
        connection: Connection | None = None,
        *,
        project: str | None = None,
        location: str | None = None,
        dataset: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(store, connection, project=project, location=location, dataset=dataset)
        self._http = httpx.Client(headers=self.connection.http_headers(), timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            return self._http.send(request)
        except httpx.TransportError as exc:
            raise unreachable(str(request.url), exc) from exc

    def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = self._send(self._http.build_request(method, url, **kwargs))
        if response.is_error:
            raise http_error(response)
        return response

    def _store_batch(self, batch: Sequence[SentFile]) -> list[StoreResult]:
        body = StowBody([file.path for file in batch], [file.size for file in batch])
        headers = {
            "Content-Type": body.content_type,
            "Content-Length": str(body.length),
            "Accept": DICOM_JSON,
        }
        request = self._http.build_request(
            "POST", f"{self.url}/studies", content=body.chunks(), headers=headers
        )
        try:
            return self._stow_outcome(batch, self._send(request))
        except OSError as exc:
            return failed_request(batch, ClientError(f"cannot read: {exc}"))

    def store_files(
        self,
        paths: Iterable[Path | str],
        *,
        parallel: int = 4,
        per_request: int = 1,
        on_result: OnStored | None = None,
    ) -> StoreReport:
        """Store files by STOW-RS, `per_request` files a request, `parallel` requests at once.
        A file the server refuses is a failed result, not an exception; a failure that concerns
        every file (store not found, denied, unreachable) raises ClientError."""
        report = StoreReport()
        pending = batches(paths, per_request)
        with concurrent.futures.ThreadPoolExecutor(max(parallel, 1)) as pool:
            running = {pool.submit(self._store_batch, b) for b in islice(pending, parallel)}
            try:
                while running:
                    ended, running = concurrent.futures.wait(
                        running, return_when=concurrent.futures.FIRST_COMPLETED
                    )
                    for future in ended:
                        for result in future.result():
                            report.results.append(result)
                            if on_result is not None:
                                on_result(result)
                        if (batch := next(pending, None)) is not None:
                            running.add(pool.submit(self._store_batch, batch))
            finally:
                for future in running:
                    future.cancel()
        return report

    def store_folder(self, folder: Path | str, **options: Any) -> StoreReport:
        """Store every file under `folder`, recursively (options as `store_files`)."""
        return self.store_files(find_files([folder]), **options)

    def search(
        self,
        level: Level,
        query: Query | None = None,
        *,
        study: str | None = None,
        series: str | None = None,
    ) -> list[dict[str, Any]]:
        """One page of QIDO-RS results (DICOM JSON), within a study or series if given."""
        url = self._search_url(level, study, series)
        params = (query or Query()).params()
        return self._search_results(
            self._call("GET", url, params=params, headers={"Accept": DICOM_JSON})
        )

    def search_all(
        self,
        level: Level,
        query: Query | None = None,
        *,
        study: str | None = None,
        series: str | None = None,
        page_size: int = 100,
    ) -> Iterator[dict[str, Any]]:
        """Every result, page after page (`limit`/`offset`), from the query's offset on."""
        query = query or Query()
        offset = query.offset or 0
        while True:
            page = self.search(level, page_of(query, offset, page_size), study=study, series=series)
            yield from page
            if len(page) < page_size:
                return
            offset += len(page)

    def retrieve(
        self,
        path: DicomPath | str,
        folder: Path | str,
        *,
        transfer_syntax: str = AS_STORED,
        on_file: OnRetrieved | None = None,
    ) -> list[RetrievedFile]:
        """Write a study's, a series' or an instance's instances into `folder`, each part of the
        response to its file as it arrives (FOLDER/STUDY/SERIES/INSTANCE.dcm)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        url = self._resource_url(path)
        files: list[RetrievedFile] = []
        request = self._http.build_request(
            "GET", url, headers=self._retrieve_headers(transfer_syntax)
        )
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise unreachable(url, exc) from exc
        try:
            if response.is_error:
                response.read()
                raise http_error(response)
            parts = PartsToFiles(response.headers.get("content-type", ""), folder)
            try:
                for chunk in response.iter_bytes():
                    for part in parts.feed(chunk):
                        files.append(self._retrieved(part, folder))
                        if on_file is not None:
                            on_file(files[-1])
                parts.close()
            except httpx.TransportError as exc:
                parts.abort()
                raise unreachable(url, exc) from exc
            except BaseException:
                parts.abort()
                raise
        finally:
            response.close()
        return files

    def delete(self, path: DicomPath | str, *, wait: bool = True) -> str | None:
        """Delete a study, series or instance. A study or series is deleted by a long-running
        operation, whose name is returned; `wait` polls it until it ends."""
        url = self._resource_url(path)
        operation = self._delete_operation(self._call("DELETE", url))
        if operation is not None and wait:
            delay, longest = OPERATION_POLL_SECONDS
            while not self._operation_done(
                self._call("GET", self._operation_url(operation)).json()
            ):
                time.sleep(delay)
                delay = min(delay * 2, longest)
        return operation
