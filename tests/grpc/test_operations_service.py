"""google.longrunning.Operations through a real grpc.aio server."""

from __future__ import annotations

from typing import TypeAlias

import grpc
import pytest
from google.cloud.healthcare.v1.dicom import dicom_pb2, dicom_pb2_grpc
from google.longrunning import operations_pb2, operations_pb2_grpc

from tests.conftest import LOCATION
from tests.grpc.test_dicom_service import status_of
from tests.grpc.transfers import finished

Stub: TypeAlias = operations_pb2_grpc.OperationsStub


async def start_import(dicom: dicom_pb2_grpc.DicomServiceAsyncStub, dataset: str) -> str:
    store = await dicom.CreateDicomStore(
        dicom_pb2.CreateDicomStoreRequest(parent=dataset, dicom_store_id="s")
    )
    operation = await dicom.ImportDicomData(
        dicom_pb2.ImportDicomDataRequest(
            name=store.name, gcs_source=dicom_pb2.GcsSource(uri="gs://bucket/*.dcm")
        )
    )
    name: str = operation.name
    return name


@pytest.mark.google_behaviour("operations-under-dataset", "operations-list-filter")
async def test_list_filters_on_done_and_pages(
    operations: Stub,
    dicom: dicom_pb2_grpc.DicomServiceAsyncStub,
    dataset: str,
    channel: grpc.aio.Channel,
) -> None:
    created = await operations.ListOperations(operations_pb2.ListOperationsRequest(name=dataset))
    assert len(created.operations) == 1  # the dataset's own CreateDataset operation
    names = [await start_import(dicom, dataset)]
    for name in names:
        await finished(Stub(channel), name)
    everything = await operations.ListOperations(
        operations_pb2.ListOperationsRequest(name=dataset, page_size=1)
    )
    assert len(everything.operations) == 1
    second = await operations.ListOperations(
        operations_pb2.ListOperationsRequest(
            name=dataset, page_size=1, page_token=everything.next_page_token
        )
    )
    assert [o.name for o in second.operations] == names
    assert second.next_page_token == ""
    done = await operations.ListOperations(
        operations_pb2.ListOperationsRequest(name=dataset, filter="done=true")
    )
    assert len(done.operations) == 2
    running = await operations.ListOperations(
        operations_pb2.ListOperationsRequest(name=dataset, filter="done = false")
    )
    assert list(running.operations) == []


@pytest.mark.google_behaviour("operations-list-filter")
async def test_list_with_bad_filter_or_partial_success_is_invalid(
    operations: Stub, dataset: str
) -> None:
    for request in (
        operations_pb2.ListOperationsRequest(name=dataset, filter="state=RUNNING"),
        operations_pb2.ListOperationsRequest(name=dataset, return_partial_success=True),
        operations_pb2.ListOperationsRequest(name=dataset, page_size=-5),
    ):
        error = await status_of(operations.ListOperations(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_get_of_missing_operation_is_not_found(operations: Stub, dataset: str) -> None:
    error = await status_of(
        operations.GetOperation(operations_pb2.GetOperationRequest(name=f"{dataset}/operations/1"))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = await status_of(
        operations.GetOperation(operations_pb2.GetOperationRequest(name=f"{LOCATION}/operations/1"))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.google_behaviour("operation-cancel")
async def test_cancel_of_finished_operation_changes_nothing(
    operations: Stub,
    dicom: dicom_pb2_grpc.DicomServiceAsyncStub,
    dataset: str,
    channel: grpc.aio.Channel,
) -> None:
    name = await start_import(dicom, dataset)
    before = await finished(Stub(channel), name)
    await operations.CancelOperation(operations_pb2.CancelOperationRequest(name=name))
    after = await operations.GetOperation(operations_pb2.GetOperationRequest(name=name))
    assert after == before


@pytest.mark.google_behaviour("operations-under-dataset")
async def test_delete_and_wait_operation_are_unimplemented(operations: Stub, dataset: str) -> None:
    name = f"{dataset}/operations/1"
    for call in (
        operations.DeleteOperation(operations_pb2.DeleteOperationRequest(name=name)),
        operations.WaitOperation(operations_pb2.WaitOperationRequest(name=name)),
    ):
        error = await status_of(call)
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED
