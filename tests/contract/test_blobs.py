"""The contract of the BlobStore port (dicomstore.core.ports.BlobStore), run against every
adapter; then what is particular to LocalBlobStore's folders."""

from __future__ import annotations

import io
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from dicomstore.blobs.local import LocalBlobStore
from dicomstore.core.errors import NotFound
from dicomstore.core.ports import BlobStore

PutBlob = Callable[[int], Awaitable[None]]

# The port


async def test_write_then_read_returns_the_same_bytes(blobs: BlobStore) -> None:
    payload = bytes(range(256)) * 9000  # more than one read chunk
    source = io.BytesIO(b"skipped" + payload)
    source.seek(7)
    assert await blobs.write(4, 10, source) == len(payload)
    read = b"".join([chunk async for chunk in blobs.read(4, 10)])
    assert read == payload
    assert blobs.local_path(4, 10).read_bytes() == payload


async def test_write_copies_a_file_from_its_position(blobs: BlobStore, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 9000
    (tmp_path / "source").write_bytes(b"skipped" + payload)
    with (tmp_path / "source").open("rb") as source:
        source.seek(7)
        assert await blobs.write(4, 10, source) == len(payload)
    assert blobs.local_path(4, 10).read_bytes() == payload


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


async def test_open_removes_partial_writes_and_keeps_blobs(tmp_path: Path) -> None:
    first = LocalBlobStore(tmp_path / "blobs")
    await first.open()
    await first.write(3, 1, io.BytesIO(b"complete"))
    partial = first.local_path(3, 2).with_suffix(".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"half")  # what a crash in the middle of a write leaves
    again = LocalBlobStore(tmp_path / "blobs")
    await again.open()
    assert not partial.exists()
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
