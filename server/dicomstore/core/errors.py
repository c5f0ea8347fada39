"""The domain's one error hierarchy.

One class per canonical code the core raises (google.rpc.Code); the transports map each code to a
gRPC status and an HTTP status in one place (`dicomstore.api.status`). Errors carry attributes
(the offending field, the resource) instead of a class per noun.

Faults of the server's own storage (the adapters translate their driver's errors with
`storage_fault` and `dicomstore.catalog.sqlite_errors`) use three codes, by what a client can do
about them: RESOURCE_EXHAUSTED when the disk is full (retry once space has been freed),
UNAVAILABLE when the catalog is locked by another process (retry soon), INTERNAL when the
storage refuses (read-only, permission denied) or fails (I/O error): an operator must act.
"""

from __future__ import annotations

import enum
import errno
from typing import ClassVar


class Code(enum.IntEnum):
    """Canonical error codes, numbered as in google/rpc/code.proto."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class DicomStoreError(Exception):
    """Base of every error the core raises on purpose."""

    code: ClassVar[Code] = Code.UNKNOWN

    def __init__(self, message: str, *, field: str | None = None, resource: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.resource = resource

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, field={self.field!r})"


class Cancelled(DicomStoreError):
    code = Code.CANCELLED


class InvalidArgument(DicomStoreError):
    code = Code.INVALID_ARGUMENT


class NotFound(DicomStoreError):
    code = Code.NOT_FOUND


class AlreadyExists(DicomStoreError):
    code = Code.ALREADY_EXISTS


class FailedPrecondition(DicomStoreError):
    code = Code.FAILED_PRECONDITION


class Aborted(DicomStoreError):
    code = Code.ABORTED


class ResourceExhausted(DicomStoreError):
    code = Code.RESOURCE_EXHAUSTED


class ObjectTooLarge(InvalidArgument):
    """A Cloud Storage object larger than the server takes for one instance."""


class Unimplemented(DicomStoreError):
    code = Code.UNIMPLEMENTED


class Unavailable(DicomStoreError):
    code = Code.UNAVAILABLE


class Internal(DicomStoreError):
    code = Code.INTERNAL


def invalid(field: str, rule: str) -> InvalidArgument:
    """An INVALID_ARGUMENT whose message names the field and the rule it broke."""
    return InvalidArgument(f"{field}: {rule}", field=field)


#: What an OS error number means for the server's storage.
_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.EIO: "input/output error",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
}
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def insufficient_storage(doing: str) -> ResourceExhausted:
    """The disk holding the server's data is full."""
    return ResourceExhausted(
        f"insufficient storage: the server's disk is full ({doing}); retry once space has been"
        " freed"
    )


def storage_fault(exc: OSError, doing: str) -> DicomStoreError:
    """The domain error of an OS error met while `doing` ("writing a blob"): RESOURCE_EXHAUSTED
    for a full disk or quota, INTERNAL otherwise. The message leaves out the path (clients see
    it); the OS error, chained by the caller, keeps it for the log."""
    if exc.errno in _FULL:
        return insufficient_storage(doing)
    reason = _REASONS.get(exc.errno or 0) or exc.strerror or type(exc).__name__
    return Internal(f"the server's storage failed while {doing}: {reason}")
