"""PostgreSQL's errors as the domain's: the catalog's faults reach clients as clear statuses.

PostgreSQL reports a fault by an SQLSTATE (https://www.postgresql.org/docs/current/errcodes-appendix.html),
which asyncpg raises as an exception class of its own; what a client can do about it decides the
status, as for SQLite (`sqlite_errors`):

- the server cannot be reached, is shutting down, refuses connections for now or has too many,
  a lock or statement timed out, a connection was lost mid-transaction: UNAVAILABLE, retry soon;
- class 53 (insufficient resources: disk full, out of memory): RESOURCE_EXHAUSTED;
- the database is read-only, the role lacks a privilege, damaged data or indexes, an I/O error
  (class 58): INTERNAL, an operator must act.

Any other error (a constraint, a syntax error) is a bug, left as it is: the transports answer it
with a generic INTERNAL naming the request id. Serialisation failures and deadlocks are retried
by the catalog (`postgres.PostgresCatalog._write`) before they get here.
"""

from __future__ import annotations

from typing import NoReturn

import asyncpg

from dicomstore.core.errors import (
    DicomStoreError,
    Internal,
    ResourceExhausted,
    Unavailable,
    insufficient_storage,
)

_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # the connection is closed or in an unusable state
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.LockNotAvailableError,
    asyncpg.QueryCanceledError,  # statement_timeout, lock_timeout
    asyncpg.TransactionRollbackError,  # a deadlock or serialisation failure retried in vain
    OSError,  # the socket: refused, reset, unreachable
    TimeoutError,
)
_INTERNAL: tuple[tuple[type[Exception], str], ...] = (
    (asyncpg.ReadOnlySQLTransactionError, "the catalog database is read-only"),
    (asyncpg.InsufficientPrivilegeError, "permission denied"),
    (asyncpg.InvalidAuthorizationSpecificationError, "permission denied"),
    (asyncpg.DataCorruptedError, "the catalog database is damaged"),
    (asyncpg.IndexCorruptedError, "the catalog database is damaged"),
    (asyncpg.PostgresSystemError, "input/output error"),
)


def translate(exc: Exception, doing: str) -> DicomStoreError | None:
    """The domain error for a fault PostgreSQL (or the way to it) met while `doing`, or None
    when `exc` is not a fault of the storage (a bug: let it through)."""
    if isinstance(exc, _UNAVAILABLE):
        return Unavailable(f"the catalog database is unavailable ({doing}); retry in a moment")
    if isinstance(exc, asyncpg.DiskFullError):
        return insufficient_storage(doing)
    if isinstance(exc, asyncpg.InsufficientResourcesError):
        return ResourceExhausted(
            f"the catalog database is out of resources ({doing}); retry in a moment"
        )
    for kind, reason in _INTERNAL:
        if isinstance(exc, kind):
            return Internal(f"the server's storage failed while {doing}: {reason}")
    return None


def raise_translated(exc: Exception, doing: str) -> NoReturn:
    """Raise the domain error of a storage fault, else `exc` itself."""
    error = translate(exc, doing)
    if error is None:
        raise exc
    raise error from exc
