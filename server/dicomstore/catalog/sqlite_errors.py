"""SQLite's errors as the domain's: the catalog's faults reach clients as clear statuses.

SQLite reports a fault by a result code (https://www.sqlite.org/rescode.html); its primary code
(the low byte) says what a client can do about it:

- SQLITE_BUSY, SQLITE_LOCKED: another connection (a backup, a `sqlite3` shell) held the catalog
  locked longer than the busy timeout: UNAVAILABLE, retry soon;
- SQLITE_FULL (and SQLITE_IOERR_SHMSIZE, the shared-memory index that could not grow): the disk
  is full: RESOURCE_EXHAUSTED, retry once space has been freed;
- SQLITE_READONLY, SQLITE_PERM, SQLITE_AUTH, SQLITE_CANTOPEN, SQLITE_IOERR, SQLITE_CORRUPT,
  SQLITE_NOTADB: the catalog cannot be written or read (a read-only file or file system, a file
  moved away, an I/O error, damage): INTERNAL, an operator must act.

Any other error (a constraint, a misuse) is a bug, left as it is: the transports answer it with a
generic INTERNAL naming the request id.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from dicomstore.core.errors import (
    DicomStoreError,
    Internal,
    Unavailable,
    insufficient_storage,
)

SQLITE_PERM: Final = 3
SQLITE_BUSY: Final = 5
SQLITE_LOCKED: Final = 6
SQLITE_READONLY: Final = 8
SQLITE_IOERR: Final = 10
SQLITE_CORRUPT: Final = 11
SQLITE_FULL: Final = 13
SQLITE_CANTOPEN: Final = 14
SQLITE_AUTH: Final = 23
SQLITE_NOTADB: Final = 26
SQLITE_IOERR_SHMSIZE: Final = SQLITE_IOERR | (19 << 8)

_INTERNAL: Final = {
    SQLITE_PERM: "permission denied",
    SQLITE_AUTH: "permission denied",
    SQLITE_READONLY: "the catalog is read-only",
    SQLITE_CANTOPEN: "the catalog file cannot be opened",
    SQLITE_IOERR: "input/output error",
    SQLITE_CORRUPT: "the catalog file is damaged",
    SQLITE_NOTADB: "the catalog file is not an SQLite database",
}


def result_code(exc: sqlite3.Error) -> int | None:
    """The extended result code of an error raised by SQLite itself, else None."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code if isinstance(code, int) else None


def translate(exc: sqlite3.Error, doing: str) -> DicomStoreError | None:
    """The domain error for a fault SQLite met while `doing` ("writing the catalog"), or None
    when `exc` is not a fault of the storage (a bug: let it through)."""
    code = result_code(exc)
    if code is None:
        return None
    primary = code & 0xFF
    if primary in (SQLITE_BUSY, SQLITE_LOCKED):
        return Unavailable(
            f"the catalog is locked by another connection ({doing}); retry in a moment"
        )
    if primary == SQLITE_FULL or code == SQLITE_IOERR_SHMSIZE:
        return insufficient_storage(doing)
    reason = _INTERNAL.get(primary)
    if reason is None:
        return None
    return Internal(f"the server's storage failed while {doing}: {reason}")
