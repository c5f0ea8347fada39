"""THE mapping from a domain error code to a gRPC status code, an HTTP status and a status name.

HTTP statuses follow google/rpc/code.proto (the mapping Google's REST APIs use).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from dicomstore.core.errors import Code


@dataclass(frozen=True)
class Status:
    grpc: grpc.StatusCode
    http: int

    @property
    def name(self) -> str:
        return str(self.grpc.name)


_HTTP = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}

_GRPC = {status.value[0]: status for status in grpc.StatusCode}

STATUS: dict[Code, Status] = {code: Status(_GRPC[int(code)], _HTTP[code]) for code in Code}


def status_of(code: Code) -> Status:
    return STATUS[code]
