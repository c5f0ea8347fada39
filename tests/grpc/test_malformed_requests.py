"""A request whose bytes are not its message (a broken client, a fuzzer) is INVALID_ARGUMENT with
what failed to parse, never UNKNOWN with a Python exception's name."""

from __future__ import annotations

import grpc
import pytest

from dicomstore.app import App

MALFORMED = {
    "truncated field": b"\x0a\x05ab",
    "bad UTF-8 string": b"\x0a\x02\xff\xfe",
    "bad wire type": b"\xff\xff\xff",
    "lone tag": b"\x08",
}


@pytest.mark.parametrize(
    "method",
    [
        "/google.cloud.healthcare.v1.dicom.DicomService/GetDicomStore",
        "/google.cloud.healthcare.v1.dataset.DatasetService/CreateDataset",
        "/google.longrunning.Operations/ListOperations",
    ],
)
@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
async def test_undecodable_request_is_invalid_argument(app: App, method: str, raw: bytes) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(raw, timeout=10)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    message_type = method.rsplit("/", 1)[1] + "Request"
    assert f"not a valid {message_type}" in (caught.value.details() or "")
    assert "<class" not in (caught.value.details() or "")
