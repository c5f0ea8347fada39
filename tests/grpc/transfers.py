"""What the import, export and streaming tests share: generated instances, storing them over
STOW-RS, waiting for an operation, reading its metadata."""

from __future__ import annotations

import asyncio

import httpx
from google.cloud.healthcare.v1.operation_pb2 import OperationMetadata
from google.longrunning import operations_pb2, operations_pb2_grpc

from dicomstore.app import App
from tests.unit.dicom.dicomfiles import new_instance, part10


def generated(study: str, series: str, number: int) -> bytes:
    """A small Part 10 instance of `series` of `study`, SOP Instance UID `{series}.{number}`."""
    return part10(
        new_instance(
            StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=f"{series}.{number}"
        )
    )


async def stow(app: App, store: str, *bodies: bytes) -> None:
    """Store each Part 10 body with its own STOW-RS request; each must be stored."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as http:
        for body in bodies:
            answer = await http.post(
                f"/v1/{store}/dicomWeb/studies",
                content=body,
                headers={"Content-Type": "application/dicom"},
            )
            assert answer.status_code == 200, answer.text


async def finished(
    operations: operations_pb2_grpc.OperationsStub, name: str
) -> operations_pb2.Operation:
    """The operation once done (30 s at most)."""
    for _ in range(3000):
        operation = await operations.GetOperation(operations_pb2.GetOperationRequest(name=name))
        if operation.done:
            return operation
        await asyncio.sleep(0.01)
    raise AssertionError(f"operation {name} did not finish")


def metadata(operation: operations_pb2.Operation) -> OperationMetadata:
    found = OperationMetadata()
    assert operation.metadata.Unpack(found)
    return found
