"""What DICOMweb answers, read: HTTP failures as `ClientError` (Google's error body
`{"error": {"code", "message", "status"}}`), and STOW-RS responses (PS3.18 10.5.3) as one
result per file sent."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx

from dicomstore_client.errors import ClientError, ExitCode

_STATUS_OF_HTTP = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_STATUS_OF_CODE = {code.value[0]: code.name for code in grpc.StatusCode}
# A STOW-RS request that fails this way fails for every file: stop sending more.
STATUSES_ENDING_A_STORE = {"NOT_FOUND", "UNAUTHENTICATED", "PERMISSION_DENIED", "UNAVAILABLE"}

_FAILED_SOP_SEQUENCE = "00081198"
_REFERENCED_SOP_SEQUENCE = "00081199"
_REFERENCED_SOP_INSTANCE_UID = "00081155"
_RETRIEVE_URL = "00081190"
_FAILURE_REASON = "00081197"
_FAILURE_DETAIL = "00091097"  # Google's private FailureDetailJSON, creator "GOOGLE"


def unreachable(url: str, exc: httpx.TransportError) -> ClientError:
    """A request that got no answer."""
    reason = str(exc) or type(exc).__name__
    return ClientError(f"cannot reach {url}: {reason}", "UNAVAILABLE", ExitCode.UNAVAILABLE)


def _error_body(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, list) and body:  # Google answers some DICOMweb errors as a list
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else None


def http_error(response: httpx.Response) -> ClientError:
    """A failed response (already read) as a ClientError with the server's status and message."""
    error = _error_body(response) or {}
    status = error.get("status") or _STATUS_OF_HTTP.get(response.status_code)
    if status is None:
        status = "INTERNAL" if response.status_code >= 500 else "UNKNOWN"
    message = error.get("message") or response.text.strip()[:500] or response.reason_phrase
    return ClientError(f"{message} (HTTP {response.status_code})", str(status))


def operation_error(error: dict[str, Any]) -> ClientError:
    """A long-running operation's `error` (a google.rpc.Status in JSON)."""
    status = _STATUS_OF_CODE.get(int(error.get("code", 2)), "UNKNOWN")
    return ClientError(str(error.get("message") or status), status)


@dataclass(frozen=True)
class StoreResult:
    """One file sent by STOW-RS: stored (`error` None) or refused, with why."""

    path: Path
    size: int
    sop_instance_uid: str | None = None
    retrieve_url: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class SentFile:
    path: Path
    size: int
    sop_instance_uid: str | None  # from its File Meta Information, to match the response


def _items(body: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    attribute = body.get(tag)
    values = attribute.get("Value", []) if isinstance(attribute, dict) else []
    return [item for item in values if isinstance(item, dict)]


def _first(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


def _failure_text(item: dict[str, Any]) -> str:
    reason = _first(item, _FAILURE_REASON)
    detail = _first(item, _FAILURE_DETAIL)
    text = f"failure reason {reason:#06x}" if isinstance(reason, int) else "refused"
    return f"{detail} ({text})" if detail else text


def is_stow_response(response: httpx.Response) -> bool:
    """A Store Instances response in DICOM JSON (200, 202 or 409), not an error body."""
    if response.status_code not in (200, 202, 409):
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "error" not in body


def stow_results(files: Sequence[SentFile], body: dict[str, Any]) -> list[StoreResult]:
    """Each file's result from a STOW-RS response. Files are matched by the SOP Instance UID of
    their File Meta Information; the items left over (a part the server could not read names
    no instance; a meta header may name another UID than its dataset) go in order to the files
    left over, failures first, as the server answers parts in order."""
    stored = {
        _first(item, _REFERENCED_SOP_INSTANCE_UID): _first(item, _RETRIEVE_URL)
        for item in _items(body, _REFERENCED_SOP_SEQUENCE)
    }
    failures = {
        _first(item, _REFERENCED_SOP_INSTANCE_UID) or f"#{index}": item
        for index, item in enumerate(_items(body, _FAILED_SOP_SEQUENCE))
    }
    results: dict[int, StoreResult] = {}
    for index, file in enumerate(files):
        uid = file.sop_instance_uid
        if uid is not None and uid in stored:
            results[index] = StoreResult(file.path, file.size, uid, stored.pop(uid))
        elif uid is not None and uid in failures:
            error = _failure_text(failures.pop(uid))
            results[index] = StoreResult(file.path, file.size, uid, error=error)
    for index, file in enumerate(files):
        if index in results:
            continue
        if failures:
            error = _failure_text(failures.pop(next(iter(failures))))
            results[index] = StoreResult(file.path, file.size, file.sop_instance_uid, error=error)
        elif stored:
            uid, url = next(iter(stored.items()))
            del stored[uid]
            results[index] = StoreResult(file.path, file.size, uid, url)
        else:
            error = "the server's response does not mention it"
            results[index] = StoreResult(file.path, file.size, file.sop_instance_uid, error=error)
    return [results[index] for index in range(len(files))]


def failed_request(files: Sequence[SentFile], error: ClientError) -> list[StoreResult]:
    """Every file of a request that failed as a whole (a 400, a 413...)."""
    return [StoreResult(f.path, f.size, f.sop_instance_uid, error=str(error)) for f in files]
