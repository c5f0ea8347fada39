"""The adapters translate their driver's and the OS's faults into the domain's errors.

Real faults wherever one can be had on demand: a second connection holding the catalog locked, a
tmpfs filled up, a read-only bind mount (tests run as root, whom permissions do not stop; see
tests/faults.py). An I/O error cannot be had on demand: `fsync` is made to fail with EIO, and
SQLite's I/O and damage codes are checked on errors built with those codes.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.faults import fill, read_only_bind, require_root, tmpfs
from tests.unit.test_sqlite_writer import grouped, insert

from dicomstore.blobs.local import LocalBlobStore
from dicomstore.catalog import sqlite_errors
from dicomstore.catalog.sqlite import SqliteCatalog
from dicomstore.catalog.sqlite_writer import SqliteWriter
from dicomstore.core.errors import Internal, ResourceExhausted, Unavailable
from dicomstore.core.model import Dataset
from dicomstore.core.names import DatasetName, LocationName

LOCATION = LocationName("p", "l")


def dataset(name: str) -> Dataset:
    return Dataset(DatasetName(LOCATION, name), "")


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs."""
    require_root()
    with tmpfs(tmp_path / "disk", 2 << 20) as root:
        yield root


# --- catalog ------------------------------------------------------------------------------------


async def test_locked_catalog_is_unavailable_then_writes_again(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    catalog = SqliteCatalog(path, busy_timeout=0.05)
    await catalog.open()
    try:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(Unavailable) as caught:
                await catalog.create_dataset(dataset("d1"))
            assert "locked by another connection" in caught.value.message
            assert await catalog.list_datasets(LOCATION, after="", limit=10) == []  # reads go on
        finally:
            other.execute("ROLLBACK")
            other.close()
        await catalog.create_dataset(dataset("d1"))
        assert await catalog.get_dataset(dataset("d1").name) == dataset("d1")
    finally:
        await catalog.close()


async def test_read_only_catalog_refuses_writes_as_internal_and_still_reads(
    tmp_path: Path,
) -> None:
    require_root()
    path = tmp_path / "catalog.sqlite"
    catalog = SqliteCatalog(path)
    await catalog.open()
    await catalog.create_dataset(dataset("kept"))
    await catalog.close()
    with read_only_bind(path):
        catalog = SqliteCatalog(path)
        await catalog.open()
        try:
            with pytest.raises(Internal) as caught:
                await catalog.create_dataset(dataset("new"))
            assert caught.value.message.endswith("the catalog is read-only")
            assert await catalog.get_dataset(dataset("kept").name) == dataset("kept")
        finally:
            await catalog.close()


async def test_catalog_on_a_full_disk_is_resource_exhausted_then_writes_again(
    disk: Path,
) -> None:
    catalog = SqliteCatalog(disk / "catalog.sqlite")
    await catalog.open()
    try:
        fill(disk / "filler", 0)
        caught = None
        for number in range(2000):  # the log may have room for a few; not for thousands
            try:
                await catalog.create_dataset(dataset(f"{number:04d}" + "x" * 200))
            except ResourceExhausted as exc:
                caught = exc
                break
        assert caught is not None
        assert caught.message.startswith("insufficient storage: the server's disk is full")
        assert "writing the catalog" in caught.message
        (disk / "filler").unlink()
        await catalog.create_dataset(dataset("after"))
        assert await catalog.get_dataset(dataset("after").name) == dataset("after")
    finally:
        await catalog.close()


async def test_group_rolled_back_by_a_full_disk_fails_each_job_with_that_error(
    disk: Path,
) -> None:
    path = disk / "writer.sqlite"
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.executescript("PRAGMA journal_mode=WAL; CREATE TABLE t (v);")
    writer = SqliteWriter(db)
    writer.start()
    try:

        def huge(db: sqlite3.Connection) -> None:  # spills to the log mid-transaction: no room
            db.execute("INSERT INTO t (v) VALUES (?)", (b"x" * (4 << 20),))

        outcomes = await grouped(writer, [insert(1), huge, insert(3)])
        # SQLite rolled the whole transaction back: every job learns why, none is half-done.
        for outcome in outcomes:
            assert isinstance(outcome, sqlite3.OperationalError), outcomes
            assert sqlite_errors.result_code(outcome) == sqlite_errors.SQLITE_FULL
        assert await writer.run(insert(4)) == 4  # the writer goes on
    finally:
        await writer.close()
    with contextlib.closing(sqlite3.connect(path)) as check:
        assert [r[0] for r in check.execute("SELECT v FROM t")] == [4]


def sqlite_error(code: int) -> sqlite3.OperationalError:
    """An error as SQLite raises it with `code` (for faults that cannot be had on demand)."""
    exc = sqlite3.OperationalError("fault")
    exc.sqlite_errorcode = code
    return exc


@pytest.mark.parametrize(
    ("code", "kind", "says"),
    [
        (sqlite_errors.SQLITE_IOERR | (3 << 8), Internal, "input/output error"),  # IOERR_WRITE
        (sqlite_errors.SQLITE_IOERR | (4 << 8), Internal, "input/output error"),  # IOERR_FSYNC
        (sqlite_errors.SQLITE_CORRUPT, Internal, "damaged"),
        (sqlite_errors.SQLITE_IOERR_SHMSIZE, ResourceExhausted, "insufficient storage"),
        (sqlite_errors.SQLITE_LOCKED, Unavailable, "locked"),
    ],
)
def test_sqlite_fault_codes_become_domain_errors(
    code: int, kind: type[Exception], says: str
) -> None:
    error = sqlite_errors.translate(sqlite_error(code), "writing the catalog")
    assert isinstance(error, kind)
    assert says in str(error)


def test_sqlite_errors_that_are_bugs_are_left_alone() -> None:
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        db.execute("CREATE TABLE t (v UNIQUE)")
        db.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(sqlite3.IntegrityError) as constraint:
            db.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(sqlite3.OperationalError) as syntax:
            db.execute("SELEC 1")
    assert sqlite_errors.translate(constraint.value, "writing the catalog") is None
    assert sqlite_errors.translate(syntax.value, "writing the catalog") is None


# --- blobs --------------------------------------------------------------------------------------


def partials(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".dcm")]


async def test_blob_write_on_a_full_disk_is_resource_exhausted_and_leaves_nothing(
    disk: Path,
) -> None:
    blobs = LocalBlobStore(disk / "blobs")
    await blobs.open()
    await blobs.write(1, 1, io.BytesIO(b"kept"))
    fill(disk / "filler", 64 << 10)
    with pytest.raises(ResourceExhausted) as caught:
        await blobs.write(1, 2, io.BytesIO(b"x" * (256 << 10)))
    assert "writing a blob" in caught.value.message
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.__cause__.errno == errno.ENOSPC
    assert await blobs.instance_keys(1) == {1}
    assert partials(disk / "blobs") == []
    (disk / "filler").unlink()
    assert await blobs.write(1, 2, io.BytesIO(b"x" * (256 << 10))) == 256 << 10


async def test_blob_write_on_read_only_storage_is_internal(tmp_path: Path) -> None:
    require_root()
    root = tmp_path / "blobs"
    blobs = LocalBlobStore(root)
    await blobs.open()
    await blobs.write(1, 1, io.BytesIO(b"kept"))
    with read_only_bind(root):
        with pytest.raises(Internal) as caught:
            await blobs.write(1, 2, io.BytesIO(b"new"))
        assert caught.value.message.endswith("writing a blob: read-only file system")
        assert b"".join([c async for c in blobs.read(1, 1)]) == b"kept"  # reads go on
    assert await blobs.instance_keys(1) == {1}


async def test_blob_io_error_on_fsync_is_internal_and_leaves_nothing(
    blob_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = LocalBlobStore(blob_root)
    await blobs.open()

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr("dicomstore.blobs.local.os.fsync", failing_fsync)
    with pytest.raises(Internal) as caught:
        await blobs.write(1, 1, io.BytesIO(b"lost"))
    assert caught.value.message.endswith("writing a blob: input/output error")
    monkeypatch.undo()
    assert await blobs.instance_keys(1) == set()
    assert partials(blob_root) == []


async def test_source_that_fails_is_not_a_storage_fault(blob_root: Path) -> None:
    class Vanishing(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: object) -> int:
            raise OSError(errno.EIO, "the upload's spool file failed")

    blobs = LocalBlobStore(blob_root)
    await blobs.open()
    with pytest.raises(OSError, match="spool file failed") as caught:
        await blobs.write(1, 1, io.BufferedReader(Vanishing()))
    assert caught.value.errno == errno.EIO
    assert partials(blob_root) == []
