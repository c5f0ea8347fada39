"""Every domain error reaches a gRPC client as its status; anything else is a generic INTERNAL."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import grpc
import pytest
from google.cloud.healthcare.v1.dicom import dicom_pb2, dicom_pb2_grpc

from dicomstore.api.grpc.server import GrpcServer
from dicomstore.api.status import status_of
from dicomstore.core import errors
from dicomstore.logs import AccessLog
from tests.conftest import DOMAIN_ERRORS


class Failing:
    """DicomService handlers whose GetDicomStore raises what the request's name says."""

    async def GetDicomStore(self, request: dicom_pb2.GetDicomStoreRequest) -> dicom_pb2.DicomStore:
        for cls in DOMAIN_ERRORS:
            if cls.__name__ == request.name:
                raise cls(f"{cls.__name__} happened", field="name")
        raise RuntimeError("secret internal detail")


@pytest.fixture
async def stub() -> AsyncIterator[dicom_pb2_grpc.DicomServiceAsyncStub]:
    service = dicom_pb2.DESCRIPTOR.services_by_name["DicomService"]
    server = GrpcServer(
        [(service, Failing())], address="127.0.0.1:0", access_log=AccessLog(sys.stderr, "json")
    )
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield dicom_pb2_grpc.DicomServiceStub(channel)
    await server.stop(0)


def test_every_core_error_class_is_covered() -> None:
    assert {cls.code for cls in DOMAIN_ERRORS} >= {
        errors.Code.INVALID_ARGUMENT,
        errors.Code.NOT_FOUND,
        errors.Code.ALREADY_EXISTS,
        errors.Code.FAILED_PRECONDITION,
        errors.Code.UNIMPLEMENTED,
        errors.Code.INTERNAL,
    }


@pytest.mark.google_behaviour("error-model")
@pytest.mark.parametrize("cls", DOMAIN_ERRORS, ids=lambda c: c.__name__)
async def test_domain_error_becomes_its_grpc_status(
    stub: dicom_pb2_grpc.DicomServiceAsyncStub, cls: type[errors.DicomStoreError]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetDicomStore(dicom_pb2.GetDicomStoreRequest(name=cls.__name__))
    status = status_of(cls.code)
    assert caught.value.code() == status.grpc
    assert caught.value.code().name == cls.code.name
    if not status.fault:
        assert caught.value.details() == f"{cls.__name__} happened"
        return
    # The server's fault: the message names the request id, which the trailers carry too.
    request_id = dict(caught.value.trailing_metadata() or ())["x-request-id"]
    assert caught.value.details() == f"{cls.__name__} happened (request id {request_id})"


async def test_unexpected_error_is_internal_without_details(
    stub: dicom_pb2_grpc.DicomServiceAsyncStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetDicomStore(dicom_pb2.GetDicomStoreRequest(name="boom"))
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (caught.value.details() or "")
    assert "request id" in (caught.value.details() or "")


async def test_method_without_handler_is_unimplemented(
    stub: dicom_pb2_grpc.DicomServiceAsyncStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListDicomStores(dicom_pb2.ListDicomStoresRequest(parent="x"))
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.google_behaviour("error-model")
@pytest.mark.parametrize("code", list(errors.Code), ids=lambda c: c.name)
def test_every_code_has_grpc_and_http_status(code: errors.Code) -> None:
    status = status_of(code)
    assert status.grpc.value[0] == int(code)
    assert status.name == code.name
    assert 200 <= status.http < 600
