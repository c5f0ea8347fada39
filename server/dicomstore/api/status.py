"""THE mapping from a domain error code to a gRPC status code, an HTTP status and a status name.

HTTP statuses follow google/rpc/code.proto (the mapping Google's REST APIs use).

Some codes say that the server failed, not the request (`Status.fault`): the transports log such
an error with its cause (a full disk, a locked catalog, an I/O error and the path it met) and
the request id, and add the request id to the message the client gets, so that one can be found
from the other. A full disk is RESOURCE_EXHAUSTED, HTTP 429, as Google answers when a quota is
exhausted: the gRPC code and the HTTP status stay one pair (507 Insufficient Storage has no
code), and clients retry 429 with backoff (google-api-python-client, dicomweb-client, which
retries neither 500 nor 507), which succeeds once space has been freed.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from dicomstore.core.errors import Code


@dataclass(frozen=True)
class Status:
    grpc: grpc.StatusCode
    http: int
    fault: bool = False
    """The server failed, not the request: log it, and name the request id to the client."""

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

_FAULTS = frozenset(
    {Code.UNKNOWN, Code.RESOURCE_EXHAUSTED, Code.INTERNAL, Code.UNAVAILABLE, Code.DATA_LOSS}
)

_GRPC = {status.value[0]: status for status in grpc.StatusCode}

STATUS: dict[Code, Status] = {
    code: Status(_GRPC[int(code)], _HTTP[code], code in _FAULTS) for code in Code
}


def status_of(code: Code) -> Status:
    return STATUS[code]


# HTTP statuses that no canonical code maps to, which DICOMweb answers (PS3.18 names them): the
# client sent what the server cannot take (406 an Accept it cannot satisfy, 413 an instance over
# the size limit, 415 a body type STOW-RS does not take), so their error body says INVALID_ARGUMENT.
HTTP_ONLY: dict[int, Code] = {
    406: Code.INVALID_ARGUMENT,
    413: Code.INVALID_ARGUMENT,
    415: Code.INVALID_ARGUMENT,
}


def code_of_http(http: int) -> Code:
    """The code an HTTP status stands for: OK below 400, an HTTP-only status's code, else the
    first code (in google/rpc/code.proto's order) that maps to it, else UNKNOWN."""
    if http < 400:
        return Code.OK
    if http in HTTP_ONLY:
        return HTTP_ONLY[http]
    return next((code for code, status in STATUS.items() if status.http == http), Code.UNKNOWN)


def client_message(message: str, status: Status, request_id: str) -> str:
    """The message a client gets: a fault's names the request id its log line carries."""
    return f"{message} (request id {request_id})" if status.fault else message
