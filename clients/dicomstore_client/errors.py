"""The client's one error type, and the command line's exit code for each kind of failure."""

from __future__ import annotations

import enum
from typing import Any

import grpc


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1  # the call worked but some items failed (an operation's failures, a file refused)
    USAGE = 2  # a bad command line (Typer's own code)
    NOT_FOUND = 3
    CONFLICT = 4  # ALREADY_EXISTS, ABORTED
    INVALID = 5  # INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
    UNAVAILABLE = 6  # cannot connect, UNAVAILABLE, DEADLINE_EXCEEDED
    DENIED = 7  # UNAUTHENTICATED, PERMISSION_DENIED
    SERVER = 8  # INTERNAL, UNIMPLEMENTED, anything else the server answers
    CANCELLED = 9  # an operation ended cancelled, or Ctrl-C


_BY_STATUS = {
    "NOT_FOUND": ExitCode.NOT_FOUND,
    "ALREADY_EXISTS": ExitCode.CONFLICT,
    "ABORTED": ExitCode.CONFLICT,
    "INVALID_ARGUMENT": ExitCode.INVALID,
    "FAILED_PRECONDITION": ExitCode.INVALID,
    "OUT_OF_RANGE": ExitCode.INVALID,
    "UNAVAILABLE": ExitCode.UNAVAILABLE,
    "DEADLINE_EXCEEDED": ExitCode.UNAVAILABLE,
    "UNAUTHENTICATED": ExitCode.DENIED,
    "PERMISSION_DENIED": ExitCode.DENIED,
    "CANCELLED": ExitCode.CANCELLED,
}


def exit_code_of_status(status: str) -> ExitCode:
    """The exit code of a google.rpc status name (`NOT_FOUND`, ...)."""
    return _BY_STATUS.get(status, ExitCode.SERVER)


class ClientError(Exception):
    """A failure the user can read in one line: the server's status and message, or why the
    client could not ask."""

    def __init__(self, message: str, status: str = "UNKNOWN", exit_code: ExitCode | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.exit_code = exit_code if exit_code is not None else exit_code_of_status(status)

    def __str__(self) -> str:
        return f"{self.status}: {self.message}" if self.status != "UNKNOWN" else self.message


class OperationError(ClientError):
    """A long-running operation that ended with an error; `operation` is the done Operation.

    When some of its items failed (its counter says so) the exit code is `FAILED`, whatever the
    status of the first failure that the error carries."""

    def __init__(self, operation: Any, failed_items: int) -> None:
        status = status_name(operation.error.code)
        super().__init__(
            operation.error.message or status,
            status,
            ExitCode.FAILED if failed_items and status != "CANCELLED" else None,
        )
        self.operation = operation
        self.failed_items = failed_items

    def __str__(self) -> str:
        if self.exit_code is ExitCode.FAILED:
            return f"{self.message} (first failure: {self.status})"
        return super().__str__()


_STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def status_name(code: int) -> str:
    """The google.rpc code name of a numeric code (`5` is `NOT_FOUND`)."""
    return _STATUS_NAMES.get(code, "UNKNOWN")


def from_rpc_error(error: grpc.RpcError) -> ClientError:
    # grpc.aio's errors carry code() and details() without being a grpc.Call.
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    return ClientError(details or code.name, code.name)
