"""The contract of the CloudStorage port (dicomstore.core.ports.CloudStorage), run against every
adapter: the embedded files and the JSON API (fake-gcs-server); then import-source wildcards
through `matching_objects` on each."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest
from tests.contract.conftest import LISTING_PAGE, BucketUnderTest, new_emulator_bucket

from dicomstore.core.errors import NotFound, ObjectTooLarge, Unavailable
from dicomstore.core.model import StorageObject
from dicomstore.core.ports import CloudStorage
from dicomstore.core.uris import matching_objects, parse_import_source
from dicomstore.destinations.gcs import cloud_storage
from dicomstore.destinations.gcs_api import GcsApiStorage

MISSING_BUCKET = "no-such-bucket-for-dicomstore"
# Sorted by code point (as Cloud Storage sorts by UTF-8 bytes): ' ' < '-' < '.' < '/' < '0' < 'A'.
NAMES = [
    "A.dcm",
    "a b",
    "a-b",
    "a.b",
    "a/b",
    "a/b-c",
    "a/b.c",
    "a/b0",
    "a/bc/d",
    "a0",
    "b",
    "x-y",
    "x.y",
    "x/y-z",
    "x/y.z",
    "x/y/z",
    "é",
]


async def put(bucket: BucketUnderTest, name: str, data: bytes | None = None) -> None:
    body = name.encode() if data is None else data
    await bucket.storage.upload(bucket.name, name, io.BytesIO(body), "application/dicom")


async def fetch(bucket: BucketUnderTest, name: str, *, limit: int = 1 << 30) -> bytes:
    sink = io.BytesIO()
    size = await bucket.storage.download(bucket.name, name, sink, limit=limit)
    assert size == len(sink.getvalue())
    return sink.getvalue()


async def listed(bucket: BucketUnderTest, prefix: str = "") -> list[StorageObject]:
    return [item async for item in bucket.storage.list_objects(bucket.name, prefix)]


async def put_all(bucket: BucketUnderTest, names: list[str]) -> None:
    for name in reversed(names):  # not in the order a listing gives
        await put(bucket, name)


# Listing


async def test_list_objects_in_lexicographic_order_of_name(bucket: BucketUnderTest) -> None:
    await put_all(bucket, NAMES)
    assert [item.name for item in await listed(bucket)] == sorted(NAMES)


async def test_list_objects_gives_each_size(bucket: BucketUnderTest) -> None:
    await put(bucket, "empty", b"")
    await put(bucket, "dir/three", b"abc")
    assert await listed(bucket) == [StorageObject("dir/three", 3), StorageObject("empty", 0)]


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("a/", ["a/b", "a/b-c", "a/b.c", "a/b0", "a/bc/d"]),
        ("a", ["a b", "a-b", "a.b", "a/b", "a/b-c", "a/b.c", "a/b0", "a/bc/d", "a0"]),
        ("a/b", ["a/b", "a/b-c", "a/b.c", "a/b0", "a/bc/d"]),
        ("a/bc", ["a/bc/d"]),
        ("a/bc/", ["a/bc/d"]),
        ("x/y", ["x/y-z", "x/y.z", "x/y/z"]),
        ("x/y/", ["x/y/z"]),
        ("A", ["A.dcm"]),
        ("é", ["é"]),
        ("zzz", []),
        ("a/b/", []),
    ],
)
async def test_list_objects_only_those_with_the_prefix(
    bucket: BucketUnderTest, prefix: str, expected: list[str]
) -> None:
    await put_all(bucket, NAMES)
    assert [item.name for item in await listed(bucket, prefix)] == expected


async def test_list_objects_across_pages(bucket: BucketUnderTest) -> None:
    names = [f"dir{d}/obj{i:02d}" for d in range(3) for i in range(4 * LISTING_PAGE + 1)]
    await put_all(bucket, names)
    assert [item.name for item in await listed(bucket)] == names
    assert [item.name for item in await listed(bucket, "dir1/")] == names[13:26]


async def test_list_objects_of_an_empty_bucket_is_empty(bucket: BucketUnderTest) -> None:
    assert await listed(bucket) == []


async def test_list_objects_not_found_when_bucket_missing(bucket: BucketUnderTest) -> None:
    with pytest.raises(NotFound, match=f"gs://{MISSING_BUCKET}"):
        [item async for item in bucket.storage.list_objects(MISSING_BUCKET, "")]


async def test_list_objects_stopped_early_leaves_the_bucket_usable(
    bucket: BucketUnderTest,
) -> None:
    await put_all(bucket, NAMES)
    listing = bucket.storage.list_objects(bucket.name, "a")
    first = await anext(listing)
    await listing.aclose()  # type: ignore[attr-defined]
    assert first.name == "a b"
    await put(bucket, "b", b"after")
    assert await listed(bucket, "b") == [StorageObject("b", 5)]


# Download


async def test_download_copies_the_bytes(bucket: BucketUnderTest) -> None:
    payload = bytes(range(256)) * (3 * 4096 + 7)  # more than a chunk of any adapter
    await put(bucket, "dir/big.dcm", payload)
    assert await fetch(bucket, "dir/big.dcm") == payload


async def test_download_of_an_empty_object_is_empty(bucket: BucketUnderTest) -> None:
    await put(bucket, "empty", b"")
    assert await fetch(bucket, "empty", limit=0) == b""


async def test_download_takes_an_object_of_the_limit(bucket: BucketUnderTest) -> None:
    await put(bucket, "o", b"12345")
    assert await fetch(bucket, "o", limit=5) == b"12345"


async def test_download_object_too_large_past_the_limit(bucket: BucketUnderTest) -> None:
    await put(bucket, "o", b"12345")
    with pytest.raises(ObjectTooLarge, match=f"gs://{bucket.name}/o is 5 bytes"):
        await fetch(bucket, "o", limit=4)


async def test_download_not_found_when_object_missing(bucket: BucketUnderTest) -> None:
    await put(bucket, "a/b")
    for name in ("missing", "a", "a/b/c", "ax"):
        with pytest.raises(NotFound, match=f"gs://{bucket.name}/{name}"):
            await fetch(bucket, name)


async def test_download_not_found_when_bucket_missing(bucket: BucketUnderTest) -> None:
    with pytest.raises(NotFound, match=f"bucket gs://{MISSING_BUCKET} not found"):
        await bucket.storage.download(MISSING_BUCKET, "o", io.BytesIO(), limit=10)


# Upload


async def test_upload_overwrites_an_object(bucket: BucketUnderTest) -> None:
    await put(bucket, "dir/o", b"old and longer")
    await put(bucket, "dir/o", b"new")
    assert await fetch(bucket, "dir/o") == b"new"
    assert await listed(bucket) == [StorageObject("dir/o", 3)]


async def test_upload_copies_from_the_source_position(bucket: BucketUnderTest) -> None:
    source = io.BytesIO(b"skipped:kept")
    source.seek(8)
    await bucket.storage.upload(bucket.name, "o", source, "application/dicom")
    assert await fetch(bucket, "o") == b"kept"


async def test_upload_of_more_than_an_upload_chunk(bucket: BucketUnderTest) -> None:
    payload = bytes(range(251)) * (9 * 4200)  # > 9 MiB: several chunks of a resumable upload
    await put(bucket, "large", payload)
    assert await fetch(bucket, "large") == payload


async def test_upload_not_found_when_bucket_missing(bucket: BucketUnderTest) -> None:
    with pytest.raises(NotFound, match=f"bucket gs://{MISSING_BUCKET} not found"):
        await bucket.storage.upload(MISSING_BUCKET, "o", io.BytesIO(b"x"), "application/dicom")


# Import-source wildcards, through matching_objects

TREE = [
    "DIR-x/Example1.dcm",
    "DIR/Example.dcm",
    "DIR/Example.txt",
    "DIR/Example01.dcm",
    "DIR/Example1.dcm",
    "DIR/Example22.dcm",
    "DIR/sub/Example1.dcm",
    "DIR/sub/deeper/a.dcm",
    "DIR/sub/notes.txt",
    "DIRECTORY/a.dcm",
    "top.dcm",
]
UNDER_DIR = [name for name in TREE if name.startswith("DIR/")]


@pytest.mark.google_behaviour("import-wildcards")
@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (
            "DIR/Example*.dcm",
            ["DIR/Example.dcm", "DIR/Example01.dcm", "DIR/Example1.dcm", "DIR/Example22.dcm"],
        ),
        ("DIR/Example?.dcm", ["DIR/Example1.dcm"]),
        ("DIR/Example1.dc?", ["DIR/Example1.dcm"]),
        (
            "DIR/**.dcm",
            [name for name in UNDER_DIR if name.endswith(".dcm")],
        ),
        ("DIR/**", UNDER_DIR),
        ("DIR/*", [name for name in UNDER_DIR if name.count("/") == 1]),
        ("DIR/*/*.txt", ["DIR/sub/notes.txt"]),
        ("*/Example1.dcm", ["DIR-x/Example1.dcm", "DIR/Example1.dcm"]),
        ("*.dcm", ["top.dcm"]),
        ("**", TREE),
        ("**.txt", ["DIR/Example.txt", "DIR/sub/notes.txt"]),
        ("DIR/sub/deeper/a.dcm", ["DIR/sub/deeper/a.dcm"]),
        ("DIR/Example", []),
        ("DIR/Example*.dicom", []),
        ("NOWHERE/**", []),
    ],
)
async def test_matching_objects_follow_the_wildcard_rules(
    bucket: BucketUnderTest, pattern: str, expected: list[str]
) -> None:
    await put_all(bucket, TREE)
    source = parse_import_source(f"gs://{bucket.name}/{pattern}", "gcs_source.uri")
    found = [item.name async for item in matching_objects(bucket.storage, source)]
    assert found == expected


async def test_matching_objects_not_found_when_bucket_missing(bucket: BucketUnderTest) -> None:
    source = parse_import_source(f"gs://{MISSING_BUCKET}/**", "gcs_source.uri")
    with pytest.raises(NotFound, match=f"gs://{MISSING_BUCKET}"):
        [item async for item in matching_objects(bucket.storage, source)]


# Choosing the backend (dicomstore.destinations.gcs)


async def round_trip(storage: CloudStorage, bucket: str) -> bytes:
    try:
        await storage.upload(bucket, "dir/o", io.BytesIO(b"round trip"), "application/dicom")
        sink = io.BytesIO()
        await storage.download(bucket, "dir/o", sink, limit=100)
        return sink.getvalue()
    finally:
        await storage.close()


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


async def test_cloud_storage_is_the_data_dir_without_endpoint(tmp_path: Path) -> None:
    (tmp_path / "gcs" / "bucket").mkdir(parents=True)
    assert await round_trip(cloud_storage(tmp_path, None, {}), "bucket") == b"round trip"
    assert (tmp_path / "gcs" / "bucket" / "dir" / "o").read_bytes() == b"round trip"


@pytest.mark.parametrize("with_scheme", [True, False], ids=["url", "host-port"])
async def test_cloud_storage_is_the_emulator_named_by_the_environment(
    tmp_path: Path, fake_gcs_url: str, with_scheme: bool
) -> None:
    bucket = new_emulator_bucket(fake_gcs_url)
    host = fake_gcs_url if with_scheme else fake_gcs_url.removeprefix("http://")
    storage = cloud_storage(tmp_path, None, {"STORAGE_EMULATOR_HOST": host})
    assert await round_trip(storage, bucket) == b"round trip"
    assert not (tmp_path / "gcs").exists()


async def test_cloud_storage_endpoint_wins_over_the_environment(
    tmp_path: Path, fake_gcs_url: str
) -> None:
    bucket = new_emulator_bucket(fake_gcs_url)
    environment = {"STORAGE_EMULATOR_HOST": closed_port_url()}
    storage = cloud_storage(tmp_path, fake_gcs_url, environment)
    assert await round_trip(storage, bucket) == b"round trip"


async def test_api_unavailable_when_endpoint_unreachable() -> None:
    storage = GcsApiStorage(closed_port_url(), anonymous=True, retry_timeout=0.5)
    try:
        with pytest.raises(Unavailable, match="unreachable"):
            [item async for item in storage.list_objects("bucket", "")]
        with pytest.raises(Unavailable, match="unreachable"):
            await storage.download("bucket", "o", io.BytesIO(), limit=10)
        with pytest.raises(Unavailable, match="unreachable"):
            await storage.upload("bucket", "o", io.BytesIO(b"x"), "application/dicom")
    finally:
        await storage.close()
