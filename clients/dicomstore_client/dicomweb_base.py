"""What the sync and async DICOMweb clients share: the store's URLs, the request headers, and
how answers are read into results (`dicomweb.DicomWebClient`, `dicomweb_async`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from dicomstore_client.connection import Connection
from dicomstore_client.dicomweb_files import sop_instance_uid
from dicomstore_client.dicomweb_multipart import ReceivedPart
from dicomstore_client.dicomweb_names import DicomPath, StoreName
from dicomstore_client.dicomweb_query import Level, Query
from dicomstore_client.dicomweb_results import (
    STATUSES_ENDING_A_STORE,
    SentFile,
    StoreResult,
    failed_request,
    http_error,
    is_stow_response,
    operation_error,
    stow_results,
)
from dicomstore_client.errors import ClientError

DEFAULT_TIMEOUT = httpx.Timeout(300.0, connect=10.0)
DICOM_JSON = "application/dicom+json"
#: Retrieve the stored bytes as they are; a transfer syntax UID asks for a transcoding.
AS_STORED = "*"
OPERATION_POLL_SECONDS = (0.1, 2.0)  # first and longest wait between polls of a delete

OnStored = Callable[[StoreResult], None]
OnRetrieved = Callable[["RetrievedFile"], None]


@dataclass(frozen=True)
class RetrievedFile:
    """An instance written by a retrieve: where, and its UIDs when the response named them."""

    path: Path
    size: int
    dicom_path: DicomPath | None


@dataclass
class StoreReport:
    """The results of storing files, one per file, in the order they ended."""

    results: list[StoreResult] = field(default_factory=list)

    @property
    def stored(self) -> list[StoreResult]:
        return [result for result in self.results if result.ok]

    @property
    def failed(self) -> list[StoreResult]:
        return [result for result in self.results if not result.ok]


def batches(paths: Iterable[Path | str], per_request: int) -> Iterator[list[SentFile]]:
    """The files in groups of `per_request`, each with its size and the SOP Instance UID its
    response will name, read as the groups are taken."""
    if per_request < 1:
        raise ValueError("per_request must be at least 1")
    batch: list[SentFile] = []
    for name in paths:
        path = Path(name)
        try:
            size = path.stat().st_size
        except OSError:
            size = 0  # the read fails when the file is sent, and the file is reported failed
        batch.append(SentFile(path, size, sop_instance_uid(path)))
        if len(batch) == per_request:
            yield batch
            batch = []
    if batch:
        yield batch


class DicomWebBase:
    """What both flavours share: the URLs, headers and how answers are read."""

    def __init__(
        self,
        store: StoreName | str,
        connection: Connection | None,
        *,
        project: str | None,
        location: str | None,
        dataset: str | None,
    ) -> None:
        self.connection = connection or Connection.from_env()
        self.store = (
            store
            if isinstance(store, StoreName)
            else StoreName.resolve(store, project=project, location=location, dataset=dataset)
        )
        self.url = self.store.dicomweb_url(self.connection.http_url)

    def _search_url(self, level: Level, study: str | None, series: str | None) -> str:
        scope = ""
        if study is not None:
            scope = f"/studies/{study}"
            if series is not None:
                scope += f"/series/{series}"
        return f"{self.url}{scope}/{level}"

    def _resource_url(self, path: DicomPath | str) -> str:
        return f"{self.url}/{DicomPath.parse(path) if isinstance(path, str) else path}"

    def _operation_url(self, name: str) -> str:
        return f"{self.connection.http_url}/v1/{name}"

    @staticmethod
    def _retrieve_headers(transfer_syntax: str) -> dict[str, str]:
        return {
            "Accept": f'multipart/related; type="application/dicom"; '
            f"transfer-syntax={transfer_syntax}"
        }

    @staticmethod
    def _search_results(response: httpx.Response) -> list[dict[str, Any]]:
        if response.status_code == 204 or not response.content:
            return []  # Google answers no match with 204
        results = response.json()
        if not isinstance(results, list):
            raise ClientError("the search answered something else than a JSON array", "INTERNAL")
        return results

    @staticmethod
    def _stow_outcome(batch: Sequence[SentFile], response: httpx.Response) -> list[StoreResult]:
        if is_stow_response(response):
            return stow_results(batch, response.json())
        error = http_error(response)
        if error.status in STATUSES_ENDING_A_STORE:
            raise error
        return failed_request(batch, error)

    @staticmethod
    def _retrieved(part: ReceivedPart, folder: Path) -> RetrievedFile:
        """Name a received part by its UIDs: FOLDER/STUDY/SERIES/INSTANCE.dcm from its
        Content-Location, else FOLDER/INSTANCE.dcm from its File Meta Information."""
        dicom_path = DicomPath.from_url(part.headers.get("content-location", ""))
        if dicom_path is not None and dicom_path.instance is not None:
            assert dicom_path.series is not None
            target = folder / dicom_path.study / dicom_path.series / f"{dicom_path.instance}.dcm"
        else:
            uid = sop_instance_uid(part.path)
            if uid is None:
                part.path.unlink()
                raise ClientError("a part of the response is no DICOM file", "INTERNAL")
            target = folder / f"{uid}.dcm"
            dicom_path = None
        target.parent.mkdir(parents=True, exist_ok=True)
        part.path.replace(target)
        return RetrievedFile(target, part.size, dicom_path)

    @staticmethod
    def _delete_operation(response: httpx.Response) -> str | None:
        body = response.json() if response.content else {}
        name = body.get("name") if isinstance(body, dict) else None
        return name if isinstance(name, str) else None

    @staticmethod
    def _operation_done(body: dict[str, Any]) -> bool:
        if not body.get("done"):
            return False
        if "error" in body:
            raise operation_error(body["error"])
        return True


def page_of(query: Query, offset: int, page_size: int) -> Query:
    return replace(query, offset=offset, limit=page_size)
