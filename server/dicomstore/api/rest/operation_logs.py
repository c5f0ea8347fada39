"""`GET /logs/{operation name}`: the error entries of an import or export, our stand-in for the
Cloud Logging page Google's `OperationMetadata.logsUrl` points at.

Each entry has the shape of a Cloud Logging `LogEntry` (logName, timestamp, severity,
operation, jsonPayload) whose payload is what Google logs for DICOM imports and exports: the
resource (`source`: the `gs://` object, or the instance's DICOMweb path) and its
`google.rpc.Status` as JSON. Pages as Google's lists do: `pageSize` (default 100, at most
1,000) and `pageToken`, answered with `entries` and `nextPageToken`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from dicomstore.core.errors import invalid
from dicomstore.core.model import OperationLogEntry
from dicomstore.core.operations import Operations

#: The log and payload type of each logged operation's method, after Google's names.
_LOGS = {
    "google.cloud.healthcare.v1.dicom.DicomService.ImportDicomData": (
        "import_dicom_data",
        "ImportDicomLogEntry",
    ),
    "google.cloud.healthcare.v1.dicom.DicomService.ExportDicomData": (
        "export_dicom_data",
        "ExportDicomLogEntry",
    ),
}


def routes(operations: Operations) -> list[BaseRoute]:
    async def logs(request: Request) -> JSONResponse:
        operation = await operations.get(request.path_params["name"])
        size = request.query_params.get("pageSize", "0")
        if not size.isdigit():
            raise invalid("pageSize", f"must be a non-negative integer, got {size!r}")
        page = await operations.log_entries(
            str(operation.name), int(size), request.query_params.get("pageToken", "")
        )
        log, payload = _LOGS.get(operation.api_method_name, ("operations", "LogEntry"))
        project = operation.name.dataset.location.project
        body: dict[str, Any] = {
            "entries": [
                _entry(
                    entry,
                    f"projects/{project}/logs/healthcare.googleapis.com%2F{log}",
                    str(operation.name),
                    payload,
                )
                for entry in page.items
            ]
        }
        if page.next_page_token:
            body["nextPageToken"] = page.next_page_token
        return JSONResponse(body)

    return [Route("/logs/{name:path}", logs, methods=["GET"])]


def _entry(entry: OperationLogEntry, log_name: str, operation: str, payload: str) -> Any:
    assert entry.time is not None  # set by the catalog
    return {
        "logName": log_name,
        "timestamp": entry.time.isoformat().replace("+00:00", "Z"),
        "severity": "ERROR",
        "operation": {"id": operation, "producer": "healthcare.googleapis.com"},
        "jsonPayload": {
            "@type": f"type.googleapis.com/google.cloud.healthcare.logging.{payload}",
            "source": entry.resource,
            "error": {
                "code": int(entry.code),
                "message": entry.message,
                "status": entry.code.name,
            },
        },
    }
