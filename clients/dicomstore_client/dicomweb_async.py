"""The asyncio flavour of `dicomweb.DicomWebClient`: the same methods, as coroutines, with
`parallel` STOW-RS requests in flight on the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from dicomstore_client.connection import Connection
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


class AsyncDicomWebClient(DicomWebBase):
    """`DicomWebClient` for asyncio: the same methods, as coroutines."""

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
        self._http = httpx.AsyncClient(headers=self.connection.http_headers(), timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._http.send(request)
        except httpx.TransportError as exc:
            raise unreachable(str(request.url), exc) from exc

    async def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = await self._send(self._http.build_request(method, url, **kwargs))
        if response.is_error:
            raise http_error(response)
        return response

    async def _store_batch(self, batch: Sequence[SentFile]) -> list[StoreResult]:
        body = StowBody([file.path for file in batch], [file.size for file in batch])
        headers = {
            "Content-Type": body.content_type,
            "Content-Length": str(body.length),
            "Accept": DICOM_JSON,
        }
        request = self._http.build_request(
            "POST", f"{self.url}/studies", content=body.achunks(), headers=headers
        )
        try:
            return self._stow_outcome(batch, await self._send(request))
        except OSError as exc:
            return failed_request(batch, ClientError(f"cannot read: {exc}"))

    async def store_files(
        self,
        paths: Iterable[Path | str],
        *,
        parallel: int = 4,
        per_request: int = 1,
        on_result: OnStored | None = None,
    ) -> StoreReport:
        """As `DicomWebClient.store_files`, with `parallel` requests in flight on the loop."""
        report = StoreReport()
        pending = batches(paths, per_request)
        running = {asyncio.create_task(self._store_batch(b)) for b in islice(pending, parallel)}
        try:
            while running:
                ended, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in ended:
                    for result in task.result():
                        report.results.append(result)
                        if on_result is not None:
                            on_result(result)
                    if (batch := next(pending, None)) is not None:
                        running.add(asyncio.create_task(self._store_batch(batch)))
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.wait(running)
        return report

    async def store_folder(self, folder: Path | str, **options: Any) -> StoreReport:
        return await self.store_files(find_files([folder]), **options)

    async def search(
        self,
        level: Level,
        query: Query | None = None,
        *,
        study: str | None = None,
        series: str | None = None,
    ) -> list[dict[str, Any]]:
        url = self._search_url(level, study, series)
        params = (query or Query()).params()
        response = await self._call("GET", url, params=params, headers={"Accept": DICOM_JSON})
        return self._search_results(response)

    async def search_all(
        self,
        level: Level,
        query: Query | None = None,
        *,
        study: str | None = None,
        series: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[dict[str, Any]]:
        query = query or Query()
        offset = query.offset or 0
        while True:
            page = await self.search(
                level, page_of(query, offset, page_size), study=study, series=series
            )
            for result in page:
                yield result
            if len(page) < page_size:
                return
            offset += len(page)

    async def retrieve(
        self,
        path: DicomPath | str,
        folder: Path | str,
        *,
        transfer_syntax: str = AS_STORED,
        on_file: OnRetrieved | None = None,
    ) -> list[RetrievedFile]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        url = self._resource_url(path)
        files: list[RetrievedFile] = []
        request = self._http.build_request(
            "GET", url, headers=self._retrieve_headers(transfer_syntax)
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise unreachable(url, exc) from exc
        try:
            if response.is_error:
                await response.aread()
                raise http_error(response)
            parts = PartsToFiles(response.headers.get("content-type", ""), folder)
            try:
                async for chunk in response.aiter_bytes():
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
            await response.aclose()
        return files

    async def delete(self, path: DicomPath | str, *, wait: bool = True) -> str | None:
        url = self._resource_url(path)
        operation = self._delete_operation(await self._call("DELETE", url))
        if operation is not None and wait:
            delay, longest = OPERATION_POLL_SECONDS
            while not self._operation_done(
                (await self._call("GET", self._operation_url(operation))).json()
            ):
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)
        return operation
