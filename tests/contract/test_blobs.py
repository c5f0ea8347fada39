"""The contract of the BlobStore port (dicomstore.core.ports.BlobStore), run against every
adapter: the folder on disk, and a bucket of fake-gcs-server (Cloud Storage's JSON API); then
what is particular to LocalBlobStore's folders and to GcsBlobStore's objects.

The adapters are listed here rather than in conftest.py (whose `blobs` fixture this module's
replaces): each builds a fresh, unopened store over a test's tmp_path (and, for Cloud Storage,
a new bucket of the session's emulator)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import google.cloud.storage as storage
import pytest
from google.auth.credentials import AnonymousCredentials
from tests.contract.conftest import new_emulator_bucket

from dicomstore.blobs.gcs import READ_CHUNK, GcsBlobStore
from dicomstore.blobs.local import LocalBlobStore
from dicomstore.core.errors import NotFound, Unavailable
from dicomstore.core.ports import BlobStore

PutBlob = Callable[[int], Awaitable[None]]


def _local(tmp_path: Path, request: pytest.FixtureRequest) -> BlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def _gcs(tmp_path: Path, request: pytest.FixtureRequest) -> BlobStore:
    url: str = request.getfixturevalue("fake_gcs_url")
    bucket = new_emulator_bucket(url)
    return GcsBlobStore(url, bucket, "some/prefix", tmp_path / "spool", anonymous=True)


BLOB_STORES: dict[str, Callable[[Path, pytest.FixtureRequest], BlobStore]] = {
    "local": _local,
    "fake-gcs-server": _gcs,
}


@pytest.fixture(params=sorted(BLOB_STORES))
async def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    """An opened, empty blob store of each adapter kind, closed after the test."""
    adapter = BLOB_STORES[request.param](tmp_path, request)
    await adapter.open()
    try:
        yield adapter
    finally:
        await adapter.close()


async def read_all(blobs: BlobStore, store_key: int, instance_key: int) -> bytes:
    return b"".join([chunk async for chunk in blobs.read(store_key, instance_key)])


# The port


async def test_write_then_read_returns_the_same_bytes(blobs: BlobStore) -> None:
    payload = bytes(range(256)) * 9000  # more than one read chunk
    source = io.BytesIO(b"skipped" + payload)
    source.seek(7)
    assert await blobs.write(4, 10, source) == len(payload)
    assert await read_all(blobs, 4, 10) == payload
    async with blobs.local_file(4, 10) as path:
        assert path.read_bytes() == payload


async def test_read_streams_a_large_blob_in_bounded_chunks(blobs: BlobStore) -> None:
    payload = bytes(range(251)) * (READ_CHUNK // 251 * 2 + 7)  # over two chunks of either
    await blobs.write(4, 10, io.BytesIO(payload))
    chunks = [chunk async for chunk in blobs.read(4, 10)]
    assert b"".join(chunks) == payload
    assert len(chunks) > 2
    assert max(len(chunk) for chunk in chunks) <= READ_CHUNK


@pytest.mark.parametrize(
    "size", [0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, READ_CHUNK, READ_CHUNK + 1]
)
async def test_read_returns_every_byte_whatever_the_size(blobs: BlobStore, size: int) -> None:
    """Sizes at the chunk boundaries of both stores: nothing lost, no empty chunk."""
    payload = bytes(range(251)) * (size // 251) + bytes(size % 251)
    await blobs.write(4, 11, io.BytesIO(payload))
    chunks = [chunk async for chunk in blobs.read(4, 11)]
    assert b"".join(chunks) == payload
    assert all(chunks)


async def test_write_copies_a_file_from_its_position(blobs: BlobStore, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 9000
    (tmp_path / "source").write_bytes(b"skipped" + payload)
    with (tmp_path / "source").open("rb") as source:
        source.seek(7)
        assert await blobs.write(4, 10, source) == len(payload)
    assert await read_all(blobs, 4, 10) == payload


@pytest.mark.parametrize(
    ("start", "size", "expected"),
    [(0, 4, b"0123"), (3, 4, b"3456"), (8, 10, b"89"), (10, 4, b""), (12, 4, b""), (2, 0, b"")],
    ids=["start", "middle", "past-end", "at-end", "beyond-end", "empty"],
)
async def test_read_range_returns_those_bytes(
    blobs: BlobStore, start: int, size: int, expected: bytes
) -> None:
    await blobs.write(4, 10, io.BytesIO(b"0123456789"))
    assert await blobs.read_range(4, 10, start, size) == expected


async def test_read_range_of_an_absent_blob_is_not_found(blobs: BlobStore) -> None:
    with pytest.raises(NotFound):
        await blobs.read_range(4, 404, 0, 10)


async def test_open_file_reads_ranges_anywhere(blobs: BlobStore) -> None:
    payload = bytes(range(256)) * 4000  # past open_file's read-ahead buffer
    await blobs.write(4, 10, io.BytesIO(payload))
    file = await blobs.open_file(4, 10)
    with file:
        assert file.read(4) == payload[:4]
        file.seek(700_000)
        assert file.read(300_000) == payload[700_000:1_000_000]
        assert file.seek(-10, io.SEEK_END) == len(payload) - 10
        assert file.read() == payload[-10:]
        file.seek(1)
        assert file.read(3) == payload[1:4]


async def test_open_file_of_an_absent_blob_is_not_found(blobs: BlobStore) -> None:
    with pytest.raises(NotFound):
        await blobs.open_file(4, 404)


async def test_local_file_of_an_absent_blob_is_not_found(blobs: BlobStore) -> None:
    with pytest.raises(NotFound):
        async with blobs.local_file(4, 404):
            pass


async def test_local_file_held_twice_is_the_same_blob(blobs: BlobStore) -> None:
    await blobs.write(4, 10, io.BytesIO(b"DICM"))
    async with blobs.local_file(4, 10) as first, blobs.local_file(4, 10) as second:
        assert first.read_bytes() == second.read_bytes() == b"DICM"


@pytest.mark.parametrize("position", [0, 3, 4, 9], ids=["start", "middle", "end", "past-end"])
async def test_write_copies_a_buffer_from_its_position(blobs: BlobStore, position: int) -> None:
    source = io.BytesIO(b"DICM")
    source.seek(position)
    assert await blobs.write(4, 10, source) == len(b"DICM"[position:])
    read = b"".join([chunk async for chunk in blobs.read(4, 10)])
    assert read == b"DICM"[position:]


async def test_write_replaces_a_blob_of_the_same_key(blobs: BlobStore) -> None:
    await blobs.write(4, 10, io.BytesIO(b"orphan left by a crash"))
    assert await blobs.write(4, 10, io.BytesIO(b"new")) == 3
    read = b"".join([chunk async for chunk in blobs.read(4, 10)])
    assert read == b"new"


async def test_deleted_blob_is_not_found_by_any_read(blobs: BlobStore) -> None:
    await blobs.write(4, 10, io.BytesIO(b"DICM"))
    async with blobs.local_file(4, 10):
        pass
    await blobs.delete(4, 10)
    with pytest.raises(NotFound):
        await read_all(blobs, 4, 10)
    with pytest.raises(NotFound):
        await blobs.read_range(4, 10, 0, 4)
    with pytest.raises(NotFound):
        async with blobs.local_file(4, 10):
            pass


async def test_write_after_remove_dicom_store_stores_the_blob(blobs: BlobStore) -> None:
    await blobs.write(4, 10, io.BytesIO(b"old"))
    await blobs.remove_dicom_store(4)
    await blobs.write(4, 10, io.BytesIO(b"new"))
    await blobs.write(4, 11, io.BytesIO(b"other folder"))
    assert await blobs.instance_keys(4) == {10, 11}
    read = b"".join([chunk async for chunk in blobs.read(4, 10)])
    assert read == b"new"


async def test_instance_keys_lists_written_blobs_per_store(blobs: BlobStore) -> None:
    for store_key, instance_key in ((1, 5), (1, 300), (2, 5)):
        await blobs.write(store_key, instance_key, io.BytesIO(b"x"))
    assert await blobs.instance_keys(1) == {5, 300}
    assert await blobs.instance_keys(2) == {5}
    assert await blobs.instance_keys(3) == set()


async def test_instance_ages_are_those_of_the_blobs_just_written(blobs: BlobStore) -> None:
    await blobs.write(4, 10, io.BytesIO(b"DICM"))
    await blobs.write(4, 11, io.BytesIO(b"DICM"))
    ages = await blobs.instance_ages(4)
    assert set(ages) == {10, 11}
    assert all(-60 < age < 60 for age in ages.values())  # an emulator's clock may differ a bit
    assert await blobs.instance_ages(5) == {}


async def test_delete_removes_one_blob_and_tolerates_absent(blobs: BlobStore) -> None:
    await blobs.write(1, 5, io.BytesIO(b"a"))
    await blobs.write(1, 6, io.BytesIO(b"b"))
    await blobs.delete(1, 5)
    await blobs.delete(1, 5)
    await blobs.delete(9, 9)
    assert await blobs.instance_keys(1) == {6}


async def test_failed_write_leaves_no_blob(blobs: BlobStore) -> None:
    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise OSError("source vanished")
            return b"x" * 10

    with pytest.raises(OSError, match="source vanished"):
        await blobs.write(1, 7, Broken())  # type: ignore[arg-type]
    assert await blobs.instance_keys(1) == set()


async def test_dicom_store_keys_empty_when_store_has_no_blobs(blobs: BlobStore) -> None:
    assert await blobs.dicom_store_keys() == set()


async def test_dicom_store_keys_lists_stores_with_blobs(
    blobs: BlobStore, put_blob: PutBlob
) -> None:
    for key in (1, 7, 12345):
        await put_blob(key)
    assert await blobs.dicom_store_keys() == {1, 7, 12345}


async def test_remove_dicom_store_removes_only_that_store(
    blobs: BlobStore, put_blob: PutBlob
) -> None:
    await put_blob(1)
    await put_blob(2)
    await blobs.remove_dicom_store(1)
    assert await blobs.dicom_store_keys() == {2}


async def test_remove_dicom_store_succeeds_when_store_never_had_blobs(
    blobs: BlobStore, put_blob: PutBlob
) -> None:
    await put_blob(2)
    await blobs.remove_dicom_store(1)
    assert await blobs.dicom_store_keys() == {2}


async def test_remove_dicom_store_succeeds_when_removed_twice(
    blobs: BlobStore, put_blob: PutBlob
) -> None:
    await put_blob(1)
    await blobs.remove_dicom_store(1)
    await blobs.remove_dicom_store(1)
    assert await blobs.dicom_store_keys() == set()


# LocalBlobStore: a removal renames `N` to `N.deleting` and then deletes it; a crash in between
# leaves `N.deleting` behind, which start-up must see (as store N) and be able to remove.


@pytest.fixture
async def local(tmp_path: Path) -> LocalBlobStore:
    store = LocalBlobStore(tmp_path / "blobs")
    await store.open()
    return store


def entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def plant(folder: Path) -> None:
    (folder / "sub").mkdir(parents=True)
    (folder / "1").write_bytes(b"DICM")
    (folder / "sub" / "2").write_bytes(b"DICM")


def dead_pid() -> int:
    """The pid of a process that has ended (not reused so soon)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


async def test_open_removes_nothing(tmp_path: Path) -> None:
    first = LocalBlobStore(tmp_path / "blobs")
    await first.open()
    partial = first.local_path(3, 2).with_name(f"2.{dead_pid()}.partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"half")
    again = LocalBlobStore(tmp_path / "blobs")
    await again.open()  # another process opening the folder while this one writes
    assert partial.exists()


async def test_remove_leftovers_removes_partial_writes_of_dead_processes_only(
    tmp_path: Path,
) -> None:
    first = LocalBlobStore(tmp_path / "blobs")
    await first.open()
    await first.write(3, 1, io.BytesIO(b"complete"))
    folder = first.local_path(3, 2).parent
    folder.mkdir(parents=True, exist_ok=True)
    dead = folder / f"2.{dead_pid()}.partial"  # what a crash in the middle of a write leaves
    unnamed = folder / "258.partial"  # written before partial files named their process
    running = folder / f"514.{os.getpid()}.partial"  # a write in progress
    for partial in (dead, unnamed, running):
        partial.write_bytes(b"half")
    again = LocalBlobStore(tmp_path / "blobs")
    await again.open()
    await again.remove_leftovers()
    assert not dead.exists()
    assert not unnamed.exists()
    assert running.exists()
    assert await again.instance_keys(3) == {1}


async def test_failed_write_leaves_no_partial_file(local: LocalBlobStore) -> None:
    class Broken(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            raise OSError("source vanished")

    await local.write(3, 1, io.BytesIO(b"complete"))
    with pytest.raises(OSError, match="source vanished"):
        await local.write(3, 257, Broken())  # type: ignore[arg-type]  # 257 shares 1's folder
    assert entries(local.local_path(3, 257).parent) == ["1.dcm"]


async def test_write_recreates_a_folder_removed_behind_its_back(
    local: LocalBlobStore, tmp_path: Path
) -> None:
    await local.write(3, 1, io.BytesIO(b"first"))
    shutil.rmtree(tmp_path / "blobs")
    await local.write(3, 2, io.BytesIO(b"second"))
    assert local.local_path(3, 2).read_bytes() == b"second"
    assert await local.instance_keys(3) == {2}


async def test_open_keeps_existing_blobs(tmp_path: Path) -> None:
    first = LocalBlobStore(tmp_path / "blobs")
    await first.open()
    plant(tmp_path / "blobs" / "3")
    again = LocalBlobStore(tmp_path / "blobs")
    await again.open()
    assert await again.dicom_store_keys() == {3}


async def test_half_removed_folder_reported_as_its_store(
    local: LocalBlobStore, tmp_path: Path
) -> None:
    plant(tmp_path / "blobs" / "7.deleting")
    assert await local.dicom_store_keys() == {7}


async def test_half_removed_folder_removed_by_remove_dicom_store(
    local: LocalBlobStore, tmp_path: Path
) -> None:
    plant(tmp_path / "blobs" / "7.deleting")
    plant(tmp_path / "blobs" / "8")
    await local.remove_dicom_store(7)
    assert await local.dicom_store_keys() == {8}
    assert entries(tmp_path / "blobs") == ["8"]


async def test_remove_dicom_store_removes_both_when_half_removed_folder_remains(
    local: LocalBlobStore, tmp_path: Path
) -> None:
    plant(tmp_path / "blobs" / "7.deleting")
    plant(tmp_path / "blobs" / "7")
    await local.remove_dicom_store(7)
    assert await local.dicom_store_keys() == set()
    assert entries(tmp_path / "blobs") == []


async def test_dicom_store_keys_ignores_foreign_entries(
    local: LocalBlobStore, tmp_path: Path
) -> None:
    plant(tmp_path / "blobs" / "5")
    plant(tmp_path / "blobs" / "lost+found")
    (tmp_path / "blobs" / ".DS_Store").write_bytes(b"")
    assert await local.dicom_store_keys() == {5}


async def test_remove_dicom_store_leaves_foreign_entries(
    local: LocalBlobStore, tmp_path: Path
) -> None:
    plant(tmp_path / "blobs" / "5")
    plant(tmp_path / "blobs" / "lost+found")
    await local.remove_dicom_store(5)
    assert entries(tmp_path / "blobs") == ["lost+found"]


async def test_reading_an_absent_blob_is_not_found(blobs: BlobStore) -> None:
    with pytest.raises(NotFound):
        [chunk async for chunk in blobs.read(1, 404)]


# GcsBlobStore: objects `PREFIX/{store}/{instance}.dcm` in its bucket; local copies for the
# pixel workers in a bounded cache.


@pytest.fixture
def gcs_bucket(fake_gcs_url: str) -> str:
    return new_emulator_bucket(fake_gcs_url)


def gcs_store(url: str, bucket: str, tmp_path: Path, **options: int) -> GcsBlobStore:
    return GcsBlobStore(url, bucket, "/some/prefix/", tmp_path / "spool", anonymous=True, **options)


def object_names(url: str, bucket: str) -> list[str]:
    client = storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": url},
    )
    try:
        return sorted(blob.name for blob in client.list_blobs(bucket))
    finally:
        client.close()


async def test_gcs_blobs_are_objects_under_the_prefix(
    fake_gcs_url: str, gcs_bucket: str, tmp_path: Path
) -> None:
    store = gcs_store(fake_gcs_url, gcs_bucket, tmp_path)
    await store.open()
    await store.write(4, 10, io.BytesIO(b"DICM"))
    await store.write(4, 300, io.BytesIO(b"DICM"))
    await store.close()
    assert object_names(fake_gcs_url, gcs_bucket) == [
        "some/prefix/4/10.dcm",
        "some/prefix/4/300.dcm",
    ]


async def test_gcs_remove_leftovers_drops_the_copies_of_dead_processes_only(
    fake_gcs_url: str, gcs_bucket: str, tmp_path: Path
) -> None:
    first = gcs_store(fake_gcs_url, gcs_bucket, tmp_path)
    await first.open()
    await first.write(4, 10, io.BytesIO(b"DICM"))
    async with first.local_file(4, 10) as copy:
        assert copy.is_relative_to(tmp_path / "spool")
    # A crash left the copies of a process that is gone.
    crashed = tmp_path / "spool" / f"{dead_pid()}-abcd"
    crashed.mkdir()
    (crashed / "4-10-1.dcm").write_bytes(b"DICM")
    again = gcs_store(fake_gcs_url, gcs_bucket, tmp_path)
    await again.open()
    assert crashed.exists()  # opening removes nothing
    await again.remove_leftovers()
    assert not crashed.exists()
    assert copy.exists()  # this process's own copies stay
    assert await again.instance_keys(4) == {10}
    await again.close()
    await first.close()


async def test_gcs_open_of_a_missing_bucket_is_not_found(fake_gcs_url: str, tmp_path: Path) -> None:
    store = gcs_store(fake_gcs_url, "no-such-bucket", tmp_path)
    with pytest.raises(NotFound, match="bucket gs://no-such-bucket not found"):
        await store.open()
    await store.close()


async def test_gcs_open_of_an_unreachable_endpoint_is_unavailable(tmp_path: Path) -> None:
    store = gcs_store("http://127.0.0.1:9", "some-bucket", tmp_path)
    with pytest.raises(Unavailable, match="unreachable"):
        await store.open()
    await store.close()


async def test_gcs_copies_beyond_the_limit_go_once_released(
    fake_gcs_url: str, gcs_bucket: str, tmp_path: Path
) -> None:
    store = gcs_store(fake_gcs_url, gcs_bucket, tmp_path, spool_limit=10)
    await store.open()
    for key in (1, 2, 3):
        await store.write(4, key, io.BytesIO(b"x" * 6))
    async with store.local_file(4, 1) as first, store.local_file(4, 2) as second:
        assert first.exists()  # 12 bytes, over the limit, but both held
    assert not first.exists()  # 12 bytes of copies not in use: the older goes
    assert second.exists()
    async with store.local_file(4, 3) as third, store.local_file(4, 3) as again:
        assert again == third  # one copy for both
    assert not second.exists()
    assert third.exists()
    await store.delete(4, 3)
    assert not third.exists()
    await store.close()
