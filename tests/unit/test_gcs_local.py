"""What is particular to the embedded Cloud Storage (LocalCloudStorage): objects as files under
DATA_DIR/gcs, names that would leave their bucket refused, links never followed."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from dicomstore.core.errors import FailedPrecondition, InvalidArgument, NotFound
from dicomstore.core.model import StorageObject
from dicomstore.destinations.gcs_local import LocalCloudStorage
from dicomstore.destinations.gcs_local_paths import PARTIAL_PREFIX

BUCKET = "bucket"
SECRET = b"outside the bucket"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """DATA_DIR/gcs with an empty bucket, and a secret file and folder next to the data dir."""
    (tmp_path / "data" / "gcs" / BUCKET).mkdir(parents=True)
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (tmp_path / "secret-dir").mkdir()
    (tmp_path / "secret-dir" / "x").write_bytes(SECRET)
    return tmp_path / "data" / "gcs"


@pytest.fixture
def storage(root: Path) -> LocalCloudStorage:
    return LocalCloudStorage(root, page_size=2)


def tree(top: Path) -> dict[str, bytes | None]:
    """Every entry below `top`: file contents, None for folders and links."""
    found: dict[str, bytes | None] = {}
    for folder, folders, files in os.walk(top):
        for name in folders + files:
            path = Path(folder, name)
            is_file = path.is_file() and not path.is_symlink()
            found[str(path.relative_to(top))] = path.read_bytes() if is_file else None
    return found


async def upload(storage: LocalCloudStorage, name: str, data: bytes = b"DICM") -> None:
    await storage.upload(BUCKET, name, io.BytesIO(data), "application/dicom")


async def download(storage: LocalCloudStorage, name: str) -> bytes:
    sink = io.BytesIO()
    await storage.download(BUCKET, name, sink, limit=1 << 20)
    return sink.getvalue()


async def names(storage: LocalCloudStorage, prefix: str = "") -> list[str]:
    return [item.name async for item in storage.list_objects(BUCKET, prefix)]


# Objects as files


async def test_upload_writes_the_file_of_the_object(storage: LocalCloudStorage, root: Path) -> None:
    await upload(storage, "dir/sub/file.dcm", b"bytes")
    assert (root / BUCKET / "dir" / "sub" / "file.dcm").read_bytes() == b"bytes"
    assert tree(root / BUCKET) == {"dir": None, "dir/sub": None, "dir/sub/file.dcm": b"bytes"}


async def test_download_reads_a_file_placed_in_the_bucket(
    storage: LocalCloudStorage, root: Path
) -> None:
    (root / BUCKET / "by hand").mkdir()
    (root / BUCKET / "by hand" / "ü.dcm").write_bytes(b"placed")
    assert await download(storage, "by hand/ü.dcm") == b"placed"
    assert await names(storage) == ["by hand/ü.dcm"]


async def test_list_objects_sorts_a_folder_as_its_name_and_slash(
    storage: LocalCloudStorage,
) -> None:
    # Folder `x` lists its objects as `x/...`: after `x-y` and `x.y` ('/' is 0x2F), before `x0`.
    expected = ["x y", "x!", "x-y", "x.y", "x/y-z", "x/y.z", "x/y/z", "x/y0", "x0", "xa"]
    for name in reversed(expected):
        await upload(storage, name)
    assert await names(storage) == expected
    assert await names(storage, "x/y") == ["x/y-z", "x/y.z", "x/y/z", "x/y0"]
    assert await names(storage, "x/y/") == ["x/y/z"]


async def test_list_objects_skips_partial_uploads(storage: LocalCloudStorage, root: Path) -> None:
    await upload(storage, "dir/a")
    (root / BUCKET / "dir" / f"{PARTIAL_PREFIX}0123abcd").write_bytes(b"left by a crash")
    assert await names(storage) == ["dir/a"]


async def test_upload_that_fails_leaves_the_old_object_and_no_partial_file(
    storage: LocalCloudStorage, root: Path
) -> None:
    class Failing(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise OSError("the source broke")

    await upload(storage, "dir/o", b"old")
    with pytest.raises(OSError, match="the source broke"):
        await storage.upload(BUCKET, "dir/o", Failing(), "application/dicom")
    assert tree(root / BUCKET) == {"dir": None, "dir/o": b"old"}


async def test_upload_failed_precondition_when_an_object_is_in_the_way(
    storage: LocalCloudStorage,
) -> None:
    await upload(storage, "a")
    with pytest.raises(FailedPrecondition, match="gs://bucket/a exists"):
        await upload(storage, "a/b")
    await upload(storage, "c/d")
    with pytest.raises(FailedPrecondition, match="gs://bucket/c/"):
        await upload(storage, "c")
    assert await names(storage) == ["a", "c/d"]


async def test_list_objects_not_found_when_data_dir_has_no_gcs_folder(tmp_path: Path) -> None:
    storage = LocalCloudStorage(tmp_path / "nothing" / "gcs")
    with pytest.raises(NotFound, match="bucket gs://bucket not found"):
        await names(storage)


async def test_download_not_found_for_a_fifo(storage: LocalCloudStorage, root: Path) -> None:
    os.mkfifo(root / BUCKET / "pipe")
    with pytest.raises(NotFound):
        await download(storage, "pipe")  # without hanging on the open
    assert await names(storage) == []


async def test_list_objects_skips_file_names_that_are_not_utf8(
    storage: LocalCloudStorage, root: Path
) -> None:
    os.close(os.open(os.fsencode(root / BUCKET) + b"/latin-\xe9", os.O_CREAT | os.O_WRONLY))
    await upload(storage, "ok")
    assert await names(storage) == ["ok"]


# Names that would leave their bucket

ESCAPES = {
    "dot-dot": "../secret.txt",
    "dot-dot-deep": "a/../../../secret.txt",
    "dot": "./x",
    "absolute": "/etc/passwd",
    "empty-segment": "a//b",
    "trailing-slash": "a/",
    "percent-dot-dot": "%2e%2e/%2e%2e/secret.txt",
    "percent-dot-dot-upper": "%2E%2E/x",
    "percent-slash": "..%2f..%2fsecret.txt",
    "percent-slash-upper": "a%2Fb",
    "double-percent": "%252e%252e/x",
    "percent-backslash": "a%5cb",
    "percent-nul": "a%00b",
    "fullwidth-dots": "\uff0e\uff0e/secret.txt",
    "two-dot-leader": "\u2025/x",
    "fullwidth-solidus": "a\uff0fb",
    "division-slash": "..\u2215secret.txt",
    "fraction-slash": "a\u2044b",
    "fullwidth-backslash": "a\uff3cb",
    "backslash": "..\\secret.txt",
    "nul": "a\x00b",
    "newline": "a\nb",
    "lone-surrogate": "a\ud800b",
    "reserved-partial": f"{PARTIAL_PREFIX}x",
    "long-segment": "a" * 256,
    "long-name": "/".join(["a" * 200] * 6),
}


@pytest.mark.parametrize("name", ESCAPES.values(), ids=ESCAPES.keys())
async def test_upload_invalid_argument_when_name_could_leave_the_bucket(
    storage: LocalCloudStorage, root: Path, name: str
) -> None:
    before = tree(root.parent.parent)
    with pytest.raises(InvalidArgument, match="cannot store it as a file inside its bucket"):
        await upload(storage, name, b"written")
    assert tree(root.parent.parent) == before


@pytest.mark.parametrize("name", ESCAPES.values(), ids=ESCAPES.keys())
async def test_download_invalid_argument_when_name_could_leave_the_bucket(
    storage: LocalCloudStorage, name: str
) -> None:
    with pytest.raises(InvalidArgument):
        await download(storage, name)


@pytest.mark.parametrize("bucket", ["..", "../bucket", "a/b", ".hidden", "Bucket", "bu\\ck"])
async def test_invalid_argument_when_bucket_name_is_not_one(
    storage: LocalCloudStorage, bucket: str
) -> None:
    with pytest.raises(InvalidArgument):
        await storage.upload(bucket, "o", io.BytesIO(b"x"), "application/dicom")
    with pytest.raises(InvalidArgument):
        await storage.download(bucket, "o", io.BytesIO(), limit=10)
    with pytest.raises(InvalidArgument):
        [item async for item in storage.list_objects(bucket, "")]


@pytest.mark.parametrize(
    "name", ["100%.dcm", "a%zzb", "..a/b..", "...", "a..b", "\uff21\uff22.dcm", "x\u0301"]
)
async def test_upload_takes_names_that_only_look_unusual(
    storage: LocalCloudStorage, name: str
) -> None:
    await upload(storage, name, b"fine")
    assert await download(storage, name) == b"fine"
    assert await names(storage) == [name]


# Links planted in the data dir are never followed


async def test_download_failed_precondition_through_a_file_link(
    storage: LocalCloudStorage, root: Path
) -> None:
    (root / BUCKET / "link.dcm").symlink_to(root.parent.parent / "secret.txt")
    with pytest.raises(FailedPrecondition, match="symbolic link"):
        await download(storage, "link.dcm")


async def test_download_failed_precondition_through_a_folder_link(
    storage: LocalCloudStorage, root: Path
) -> None:
    (root / BUCKET / "dir").symlink_to(root.parent.parent / "secret-dir")
    with pytest.raises(FailedPrecondition, match="'dir' is a symbolic link"):
        await download(storage, "dir/x")


async def test_list_objects_skips_links(storage: LocalCloudStorage, root: Path) -> None:
    await upload(storage, "real/o")
    (root / BUCKET / "file-link").symlink_to(root.parent.parent / "secret.txt")
    (root / BUCKET / "dir-link").symlink_to(root.parent.parent / "secret-dir")
    (root / BUCKET / "real" / "inner-link").symlink_to(root / BUCKET / "real" / "o")
    assert await names(storage) == ["real/o"]
    assert await names(storage, "dir-link/") == []


async def test_upload_replaces_a_file_link_without_writing_its_target(
    storage: LocalCloudStorage, root: Path
) -> None:
    link = root / BUCKET / "link.dcm"
    link.symlink_to(root.parent.parent / "secret.txt")
    await upload(storage, "link.dcm", b"new object")
    assert (root.parent.parent / "secret.txt").read_bytes() == SECRET
    assert not link.is_symlink()
    assert link.read_bytes() == b"new object"


async def test_upload_failed_precondition_through_a_folder_link(
    storage: LocalCloudStorage, root: Path
) -> None:
    (root / BUCKET / "dir").symlink_to(root.parent.parent / "secret-dir")
    with pytest.raises(FailedPrecondition, match="'dir' is a symbolic link"):
        await upload(storage, "dir/new", b"escaped")
    with pytest.raises(FailedPrecondition, match="'dir' is a symbolic link"):
        await upload(storage, "dir/x", b"escaped")
    assert tree(root.parent.parent / "secret-dir") == {"x": SECRET}


async def test_bucket_folder_that_is_a_link_is_refused(
    storage: LocalCloudStorage, root: Path
) -> None:
    (root / "linked").symlink_to(root.parent.parent / "secret-dir")
    with pytest.raises(FailedPrecondition, match="symbolic link"):
        await storage.download("linked", "x", io.BytesIO(), limit=100)
    with pytest.raises(FailedPrecondition, match="symbolic link"):
        await storage.upload("linked", "y", io.BytesIO(b"escaped"), "application/dicom")
    with pytest.raises(FailedPrecondition, match="symbolic link"):
        [item async for item in storage.list_objects("linked", "")]
    assert tree(root.parent.parent / "secret-dir") == {"x": SECRET}


async def test_list_objects_streams_pages(storage: LocalCloudStorage) -> None:
    for index in range(5):
        await upload(storage, f"o{index}", b"x" * index)
    listing = storage.list_objects(BUCKET, "")
    assert await anext(listing) == StorageObject("o0", 0)
    assert [item async for item in listing] == [StorageObject(f"o{i}", i) for i in range(1, 5)]


async def test_open_removes_partial_uploads_a_crash_left_and_never_follows_links(
    storage: LocalCloudStorage, root: Path, tmp_path: Path
) -> None:
    await upload(storage, "a/b.dcm", b"kept")
    (root / BUCKET / "a" / f"{PARTIAL_PREFIX}0123").write_bytes(b"half")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / f"{PARTIAL_PREFIX}4567").write_bytes(b"not ours")
    (root / BUCKET / "link").symlink_to(outside)
    await storage.open()
    assert sorted(os.listdir(root / BUCKET / "a")) == ["b.dcm"]
    assert (outside / f"{PARTIAL_PREFIX}4567").read_bytes() == b"not ours"
    assert await download(storage, "a/b.dcm") == b"kept"
