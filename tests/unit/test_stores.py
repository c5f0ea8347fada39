"""DICOM stores (dicomstore.core.stores) and the import/export requests of DicomService
(dicomstore.core.imports, dicomstore.core.exports, dicomstore.core.uris), over a real SQLite
catalog and blob folder in tmp_path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dicomstore.blobs.local import LocalBlobStore
from dicomstore.catalog.sqlite import SqliteCatalog
from dicomstore.core.errors import AlreadyExists, Code, InvalidArgument, NotFound
from dicomstore.core.exports import Exports, GcsDestination
from dicomstore.core.imports import Imports
from dicomstore.core.instances import Instances
from dicomstore.core.model import (
    BigQueryDestination,
    BigQuerySchema,
    Dataset,
    DicomStore,
    DicomStoreConfig,
    DicomStoreMetrics,
    NotificationConfig,
    Operation,
    StreamConfig,
    WriteDisposition,
)
from dicomstore.core.names import DatasetName, DicomStoreName, LocationName
from dicomstore.core.operations import Operations
from dicomstore.core.paging import PageTokens
from dicomstore.core.stores import DicomStores
from dicomstore.core.uris import GcsUri, parse_gcs_uri, parse_import_source
from dicomstore.destinations.bigquery import bigquery_tables
from dicomstore.destinations.gcs_local import LocalCloudStorage
from dicomstore.pixel_workers import PixelWorkers

KEY = b"k" * 32
LOCATION = LocationName("test-project", "us-central1")
DATASET = str(DatasetName(LOCATION, "dataset"))
OTHER_DATASET = str(DatasetName(LOCATION, "other"))
MISSING_DATASET = str(DatasetName(LOCATION, "missing"))
WAIT = 10


@pytest.fixture
async def catalog(catalog: SqliteCatalog) -> SqliteCatalog:
    for name in (DATASET, OTHER_DATASET):
        await catalog.create_dataset(Dataset(DatasetName.parse(name)))
    return catalog


@pytest.fixture
async def stores(catalog: SqliteCatalog, blobs: LocalBlobStore) -> DicomStores:
    return DicomStores(catalog, blobs, PageTokens(KEY))


@pytest.fixture
async def operations(catalog: SqliteCatalog) -> AsyncIterator[Operations]:
    ops = Operations(catalog, PageTokens(KEY), concurrency=2)
    try:
        yield ops
    finally:
        await ops.close()


def store(store_id: str, parent: str = DATASET) -> str:
    return f"{parent}/dicomStores/{store_id}"


def bq(table_uri: str, **fields: object) -> StreamConfig:
    return StreamConfig(BigQueryDestination(table_uri=table_uri, **fields))  # type: ignore[arg-type]


async def put_blob(catalog: SqliteCatalog, blob_root: Path, name: str) -> Path:
    """Give a store a blob file directly (the write API arrives later); return its folder."""
    key = await catalog.dicom_store_key(DicomStoreName.parse(name))
    folder = blob_root / str(key)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "1").write_bytes(b"DICM")
    return folder


async def listed_ids(stores: DicomStores, parent: str = DATASET) -> list[str]:
    return [s.name.store_id for s in (await stores.list(parent, "", 1000, "")).items]


async def all_pages(
    stores: DicomStores, filter: str, page_size: int, parent: str = DATASET
) -> list[list[DicomStore]]:
    pages, token = [], ""
    while True:
        page = await stores.list(parent, filter, page_size, token)
        pages.append(page.items)
        token = page.next_page_token
        if not token:
            return pages


async def create_many(stores: DicomStores, count: int) -> list[str]:
    ids = []
    for i in range(count):
        labels = {"n": str(i), "third": "yes" if i % 3 == 0 else "no"}
        if i in (0, count - 1):
            labels["rare"] = "1"
        await stores.create(DATASET, f"s{i:04d}", DicomStoreConfig(labels=labels))
        ids.append(f"s{i:04d}")
    return ids


# Create and get


FULL_CONFIG = DicomStoreConfig(
    labels={"env": "prod", "über": "grün", "ラベル": "値"},
    notification_config=NotificationConfig("projects/p/topics/legacy", send_for_bulk_import=True),
    notification_configs=("projects/p/topics/one", "projects/example.com:p/topics/two"),
    stream_configs=(
        bq(
            "bq://p.ds.flat",
            force=True,
            write_disposition=WriteDisposition.WRITE_APPEND,
            include_source_store=True,
            schema=BigQuerySchema.FLATTENED,
        ),
        bq("bq://example.com:p.ds.json table", schema=BigQuerySchema.JSON),
    ),
)


async def test_create_returns_store_readable_by_get(stores: DicomStores) -> None:
    created = await stores.create(DATASET, "full", FULL_CONFIG)
    assert str(created.name) == store("full")
    assert await stores.get(store("full")) == created
    assert created.config == FULL_CONFIG


async def test_create_not_found_when_dataset_missing(stores: DicomStores) -> None:
    with pytest.raises(NotFound):
        await stores.create(MISSING_DATASET, "a", DicomStoreConfig())


async def test_create_keeps_first_store_when_id_taken(stores: DicomStores) -> None:
    await stores.create(DATASET, "a", FULL_CONFIG)
    with pytest.raises(AlreadyExists):
        await stores.create(DATASET, "a", DicomStoreConfig())
    assert (await stores.get(store("a"))).config == FULL_CONFIG


async def test_get_not_found_when_store_missing(stores: DicomStores) -> None:
    with pytest.raises(NotFound):
        await stores.get(store("missing"))


@pytest.mark.google_behaviour("resource-names")
@pytest.mark.parametrize(
    "name",
    [
        "",
        DATASET,
        f"{DATASET}/dicomStores",
        f"{DATASET}/dicomStores/",
        f"{DATASET}/fhirStores/a",
        f"{DATASET}/dicomStores/a/extra",
    ],
)
async def test_get_invalid_argument_when_name_malformed(stores: DicomStores, name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await stores.get(name)
    assert caught.value.field == "name"


SIX_STREAMS = tuple(bq(f"bq://p.ds.t{i}") for i in range(6))


@pytest.mark.google_behaviour("store-config-fields")
@pytest.mark.parametrize(
    ("store_id", "config", "field"),
    [
        ("a/b", DicomStoreConfig(), "dicom_store_id"),
        ("", DicomStoreConfig(), "dicom_store_id"),
        ("..", DicomStoreConfig(), "dicom_store_id"),
        ("x" * 257, DicomStoreConfig(), "dicom_store_id"),
        ("tab\there", DicomStoreConfig(), "dicom_store_id"),
        ("ok", DicomStoreConfig(labels={"Env": "prod"}), "dicom_store.labels"),
        ("ok", DicomStoreConfig(labels={"env": "Prod"}), "dicom_store.labels"),
        ("ok", DicomStoreConfig(labels={"": "x"}), "dicom_store.labels"),
        (
            "ok",
            DicomStoreConfig(labels={f"k{i}": "v" for i in range(65)}),
            "dicom_store.labels",
        ),
        (
            "ok",
            DicomStoreConfig(notification_config=NotificationConfig("topics/t")),
            "dicom_store.notification_config.pubsub_topic",
        ),
        (
            "ok",
            DicomStoreConfig(notification_config=NotificationConfig("projects/p/topics/goog-x")),
            "dicom_store.notification_config.pubsub_topic",
        ),
        (
            "ok",
            DicomStoreConfig(notification_configs=("projects/p/topics/good", "projects/p/x")),
            "dicom_store.notification_configs[1].pubsub_topic",
        ),
        (
            "ok",
            DicomStoreConfig(notification_configs=("",)),
            "dicom_store.notification_configs[0].pubsub_topic",
        ),
        (
            "ok",
            DicomStoreConfig(stream_configs=(bq("bq://p.ds.t"), bq("bq://p.ds.t", force=True))),
            "dicom_store.stream_configs[1].bigquery_destination.table_uri",
        ),
        ("ok", DicomStoreConfig(stream_configs=SIX_STREAMS), "dicom_store.stream_configs"),
        (
            "ok",
            DicomStoreConfig(stream_configs=(StreamConfig(None),)),
            "dicom_store.stream_configs[0].bigquery_destination",
        ),
        (
            "ok",
            DicomStoreConfig(stream_configs=(bq("bq://p.ds"),)),
            "dicom_store.stream_configs[0].bigquery_destination.table_uri",
        ),
    ],
)
async def test_create_invalid_argument_names_field_and_stores_nothing(
    stores: DicomStores, store_id: str, config: DicomStoreConfig, field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await stores.create(DATASET, store_id, config)
    assert caught.value.field == field
    assert caught.value.message.startswith(f"{field}: ")
    assert await listed_ids(stores) == []


@pytest.mark.google_behaviour("store-config-fields")
async def test_create_accepts_five_stream_configs(stores: DicomStores) -> None:
    config = DicomStoreConfig(stream_configs=SIX_STREAMS[:5])
    assert (await stores.create(DATASET, "a", config)).config == config


async def test_create_invalid_argument_when_parent_malformed(stores: DicomStores) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await stores.create(str(LOCATION), "a", DicomStoreConfig())
    assert caught.value.field == "parent"


# List


async def test_list_returns_page_of_default_size_when_page_size_zero(stores: DicomStores) -> None:
    ids = await create_many(stores, 101)
    first = await stores.list(DATASET, "", 0, "")
    assert [s.name.store_id for s in first.items] == ids[:100]
    assert first.next_page_token
    second = await stores.list(DATASET, "", 0, first.next_page_token)
    assert [s.name.store_id for s in second.items] == ids[100:]
    assert second.next_page_token == ""


@pytest.mark.google_behaviour("list-paging")
async def test_list_caps_page_size_at_1000(stores: DicomStores) -> None:
    ids = await create_many(stores, 1200)
    first = await stores.list(DATASET, "", 5000, "")
    assert [s.name.store_id for s in first.items] == ids[:1000]
    second = await stores.list(DATASET, "", 5000, first.next_page_token)
    assert [s.name.store_id for s in second.items] == ids[1000:]
    assert second.next_page_token == ""


async def test_list_invalid_argument_when_page_size_negative(stores: DicomStores) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await stores.list(DATASET, "", -1, "")
    assert caught.value.field == "page_size"


async def test_list_pages_in_stable_order_without_repeats(stores: DicomStores) -> None:
    ids = await create_many(stores, 50)
    pages = await all_pages(stores, "", 7)
    assert [len(p) for p in pages] == [7] * 7 + [1]
    assert [s.name.store_id for p in pages for s in p] == ids


async def test_list_has_no_token_when_last_page_is_full(stores: DicomStores) -> None:
    await create_many(stores, 10)
    page = await stores.list(DATASET, "", 10, "")
    assert len(page.items) == 10
    assert page.next_page_token == ""


async def test_list_excludes_other_datasets(stores: DicomStores) -> None:
    await stores.create(DATASET, "mine", DicomStoreConfig())
    await stores.create(OTHER_DATASET, "theirs", DicomStoreConfig())
    assert await listed_ids(stores) == ["mine"]
    assert await listed_ids(stores, OTHER_DATASET) == ["theirs"]


async def test_list_not_found_when_dataset_missing(stores: DicomStores) -> None:
    with pytest.raises(NotFound):
        await stores.list(MISSING_DATASET, "", 0, "")


@pytest.mark.parametrize("page_size", [7, 150, 400, 1000])
async def test_list_filter_applies_across_pages(stores: DicomStores, page_size: int) -> None:
    ids = await create_many(stores, 1200)
    pages = await all_pages(stores, "labels.third=yes", page_size)
    assert all(len(p) <= page_size for p in pages)
    assert all(len(p) == page_size for p in pages[:-1])
    assert [s.name.store_id for p in pages for s in p] == ids[::3]
    assert len(pages) == -(-400 // page_size)


async def test_list_filter_finds_matches_far_apart(stores: DicomStores) -> None:
    await create_many(stores, 1200)
    first = await stores.list(DATASET, "labels.rare:*", 1, "")
    assert [s.name.store_id for s in first.items] == ["s0000"]
    assert first.next_page_token
    second = await stores.list(DATASET, "labels.rare:*", 1, first.next_page_token)
    assert [s.name.store_id for s in second.items] == ["s1199"]
    assert second.next_page_token == ""


async def test_list_empty_when_filter_matches_nothing(stores: DicomStores) -> None:
    await create_many(stores, 20)
    page = await stores.list(DATASET, "labels.missing=x", 5, "")
    assert page.items == []
    assert page.next_page_token == ""


async def test_list_invalid_argument_when_filter_malformed(stores: DicomStores) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await stores.list(DATASET, "labels.env=", 0, "")
    assert caught.value.field == "filter"


async def test_list_token_valid_when_filter_spelled_differently(stores: DicomStores) -> None:
    ids = await create_many(stores, 12)
    first = await stores.list(DATASET, "labels.third=yes", 2, "")
    second = await stores.list(DATASET, "labels.third = yes", 2, first.next_page_token)
    assert [s.name.store_id for s in second.items] == ids[6:12:3]


@pytest.mark.parametrize(
    ("parent", "filter"),
    [
        (OTHER_DATASET, "labels.third=yes"),  # another parent
        (DATASET, "labels.third=no"),  # another filter
        (DATASET, ""),  # filter dropped
    ],
)
async def test_list_invalid_argument_when_token_from_another_request(
    stores: DicomStores, parent: str, filter: str
) -> None:
    await create_many(stores, 12)
    token = (await stores.list(DATASET, "labels.third=yes", 1, "")).next_page_token
    assert token
    with pytest.raises(InvalidArgument) as caught:
        await stores.list(parent, filter, 1, token)
    assert caught.value.field == "page_token"


def tampered(token: str) -> list[str]:
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    return [flipped, token[1:], token + "A", "not-a-token", "é"]


async def test_list_invalid_argument_when_token_tampered(stores: DicomStores) -> None:
    await create_many(stores, 3)
    token = (await stores.list(DATASET, "", 1, "")).next_page_token
    for bad in tampered(token):
        with pytest.raises(InvalidArgument) as caught:
            await stores.list(DATASET, "", 1, bad)
        assert caught.value.field == "page_token"


# Update


@pytest.mark.google_behaviour("update-mask")
async def test_update_changes_only_listed_paths(stores: DicomStores) -> None:
    await stores.create(DATASET, "a", FULL_CONFIG)
    new = DicomStoreConfig(
        labels={"env": "dev"},
        notification_configs=("projects/p/topics/new",),
        stream_configs=(bq("bq://p.ds.other"),),
    )
    updated = await stores.update(store("a"), new, ["labels", "notification_configs"])
    expected = DicomStoreConfig(
        labels={"env": "dev"},
        notification_config=FULL_CONFIG.notification_config,
        notification_configs=("projects/p/topics/new",),
        stream_configs=FULL_CONFIG.stream_configs,
    )
    assert updated.config == expected
    assert (await stores.get(store("a"))).config == expected


@pytest.mark.parametrize(
    "path", ["labels", "notification_config", "notification_configs", "stream_configs"]
)
async def test_update_clears_path_when_listed_and_unset(stores: DicomStores, path: str) -> None:
    await stores.create(DATASET, "a", FULL_CONFIG)
    await stores.update(store("a"), DicomStoreConfig(), [path])
    got = (await stores.get(store("a"))).config
    assert getattr(got, path) == getattr(DicomStoreConfig(), path)
    others = [p for p in ("labels", "notification_configs", "stream_configs") if p != path]
    assert all(getattr(got, p) == getattr(FULL_CONFIG, p) for p in others)


@pytest.mark.parametrize(
    "mask",
    [[], ["name"], ["unknown"], ["labels", "bogus"], ["labels.env"], ["dicom_store.labels"]],
)
async def test_update_invalid_argument_when_mask_bad_and_nothing_changes(
    stores: DicomStores, mask: list[str]
) -> None:
    await stores.create(DATASET, "a", FULL_CONFIG)
    with pytest.raises(InvalidArgument) as caught:
        await stores.update(store("a"), DicomStoreConfig(labels={"env": "dev"}), mask)
    assert caught.value.field == "update_mask"
    assert (await stores.get(store("a"))).config == FULL_CONFIG


@pytest.mark.parametrize(
    ("config", "mask", "field"),
    [
        (DicomStoreConfig(labels={"Bad": "x"}), ["labels"], "dicom_store.labels"),
        (
            DicomStoreConfig(notification_configs=("nope",)),
            ["notification_configs"],
            "dicom_store.notification_configs[0].pubsub_topic",
        ),
        (
            DicomStoreConfig(stream_configs=SIX_STREAMS),
            ["stream_configs"],
            "dicom_store.stream_configs",
        ),
    ],
)
async def test_update_invalid_argument_when_value_bad_and_nothing_changes(
    stores: DicomStores, config: DicomStoreConfig, mask: list[str], field: str
) -> None:
    await stores.create(DATASET, "a", FULL_CONFIG)
    with pytest.raises(InvalidArgument) as caught:
        await stores.update(store("a"), config, mask)
    assert caught.value.field == field
    assert (await stores.get(store("a"))).config == FULL_CONFIG


async def test_update_not_found_when_store_missing(stores: DicomStores) -> None:
    with pytest.raises(NotFound):
        await stores.update(store("missing"), DicomStoreConfig(), ["labels"])
    assert await listed_ids(stores) == []


# Delete and metrics


@pytest.mark.google_behaviour("delete-store")
async def test_delete_removes_store_and_its_blob_folder(
    stores: DicomStores, catalog: SqliteCatalog, blob_root: Path
) -> None:
    await stores.create(DATASET, "a", DicomStoreConfig())
    await stores.create(DATASET, "b", DicomStoreConfig())
    doomed = await put_blob(catalog, blob_root, store("a"))
    kept = await put_blob(catalog, blob_root, store("b"))
    await stores.delete(store("a"))
    with pytest.raises(NotFound):
        await stores.get(store("a"))
    assert not doomed.exists()
    assert not doomed.with_name(f"{doomed.name}.deleting").exists()
    assert (kept / "1").read_bytes() == b"DICM"
    assert await listed_ids(stores) == ["b"]


async def test_delete_succeeds_when_store_has_no_blobs(stores: DicomStores) -> None:
    await stores.create(DATASET, "a", DicomStoreConfig())
    await stores.delete(store("a"))
    assert await listed_ids(stores) == []


async def test_delete_not_found_when_store_missing(stores: DicomStores) -> None:
    with pytest.raises(NotFound):
        await stores.delete(store("missing"))


async def test_recreated_store_has_no_blobs_of_deleted_one(
    stores: DicomStores, catalog: SqliteCatalog, blob_root: Path
) -> None:
    await stores.create(DATASET, "a", DicomStoreConfig())
    await put_blob(catalog, blob_root, store("a"))
    await stores.delete(store("a"))
    await stores.create(DATASET, "a", DicomStoreConfig())
    key = await catalog.dicom_store_key(DicomStoreName.parse(store("a")))
    assert not (blob_root / str(key)).exists()


async def test_metrics_zero_when_store_empty(stores: DicomStores) -> None:
    await stores.create(DATASET, "a", DicomStoreConfig())
    metrics = await stores.metrics(store("a"))
    assert metrics == DicomStoreMetrics(name=DicomStoreName.parse(store("a")))


async def test_metrics_not_found_when_store_missing(stores: DicomStores) -> None:
    with pytest.raises(NotFound):
        await stores.metrics(store("missing"))


# Cloud Storage URIs


BUCKET_222 = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 30])


@pytest.mark.parametrize(
    "text",
    [
        "gs://bucket/object",
        "gs://abc/o",
        "gs://my_bucket-1.example.com/dir/sub/file.dcm",
        f"gs://{'a' * 63}/o",
        f"gs://{BUCKET_222}/o",
        "gs://bucket/a b/ü.dcm",
        "gs://bucket/.hidden",
        "gs://bucket/a..b/...",
        "gs://bucket/dir/",
    ],
)
def test_gcs_uri_accepted_when_valid(text: str) -> None:
    uri = parse_gcs_uri(text, "uri")
    assert str(uri) == text


@pytest.mark.parametrize(
    ("text", "object_required", "expected"),
    [
        ("gs://bucket", False, GcsUri("bucket", "")),
        ("gs://bucket/", False, GcsUri("bucket", "")),
        ("gs://bucket/out/", False, GcsUri("bucket", "out/")),
        ("gs://bucket/dir/file.dcm", True, GcsUri("bucket", "dir/file.dcm")),
    ],
)
def test_gcs_uri_splits_bucket_and_object(
    text: str, object_required: bool, expected: GcsUri
) -> None:
    assert parse_gcs_uri(text, "uri", object_required=object_required) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "bucket/object",
        "gs:/bucket/object",
        "GS://bucket/object",
        "s3://bucket/object",
        "https://storage.googleapis.com/bucket/object",
        "gs://Bucket/object",
        "gs://ab/object",
        "gs://-bucket/object",
        "gs://bucket-/object",
        "gs://.bucket/object",
        "gs://buc..ket/object",
        "gs://bu$ket/object",
        "gs://bu ket/object",
        f"gs://{BUCKET_222}e/object",  # 222 characters at most with dots
        "gs://bucket",
        "gs://bucket/",
        "gs:///object",
    ],
)
def test_gcs_uri_invalid_argument_when_malformed(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_gcs_uri(text, "gcs_source.uri")
    assert caught.value.field == "gcs_source.uri"
    assert caught.value.message.startswith("gcs_source.uri: ")


@pytest.mark.parametrize(
    "bucket",
    ["a" * 64, f"{'a' * 64}.com", f"example.{'b' * 64}.com"],
    ids=["64-without-dots", "64-before-dot", "64-between-dots"],
)
def test_gcs_uri_invalid_argument_when_bucket_part_longer_than_63(bucket: str) -> None:
    # Cloud Storage: 3-63 characters, or up to 222 with dots but at most 63 between dots.
    with pytest.raises(InvalidArgument) as caught:
        parse_gcs_uri(f"gs://{bucket}/object", "gcs_source.uri")
    assert caught.value.field == "gcs_source.uri"


@pytest.mark.parametrize(
    "text",
    [
        "gs://bucket/..",
        "gs://bucket/../x",
        "gs://bucket/a/../../x",
        "gs://bucket/./x",
        "gs://bucket/a/.",
        "gs://bucket/a\\..\\b",
        "gs://bucket/a\\b",
        "gs://bucket/a\x00b",
    ],
)
def test_gcs_uri_invalid_argument_when_object_escapes(text: str) -> None:
    for required in (True, False):
        with pytest.raises(InvalidArgument) as caught:
            parse_gcs_uri(text, "uri", object_required=required)
        assert caught.value.field == "uri"


@pytest.mark.parametrize(
    "text",
    [
        "gs://bucket/file.dcm",
        "gs://bucket/dir/*.dcm",
        "gs://bucket/d?r/file*.dcm",
        "gs://bucket/dir*/sub/*",
        "gs://bucket/**",
        "gs://bucket/dir/**",
        "gs://bucket/dir/**.dcm",
        "gs://bucket/a/b/c/**.dcm",
    ],
)
def test_import_source_accepted_when_wildcards_valid(text: str) -> None:
    assert str(parse_import_source(text, "gcs_source.uri")) == text


@pytest.mark.google_behaviour("import-wildcards")
@pytest.mark.parametrize(
    "text",
    [
        "gs://bucket/**/file.dcm",  # ** not in the last segment
        "gs://bucket/dir/a**",  # ** does not begin the segment
        "gs://bucket/dir/x**.dcm",
        "gs://bucket/d*/**",  # another wildcard before **
        "gs://bucket/d?/**.dcm",
        "gs://bucket/dir/**.d?m",  # another wildcard after **
        "gs://bucket/dir/**.*",
        "gs://bucket/dir/***",
        "gs://bucket/dir/****",
        "gs://bucket/../**",
        "gs://bucket",
        "gs://bucket/",
    ],
)
def test_import_source_invalid_argument_when_wildcards_misused(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_import_source(text, "gcs_source.uri")
    assert caught.value.field == "gcs_source.uri"


# ImportDicomData and ExportDicomData requests


@pytest.fixture
async def imports(
    catalog: SqliteCatalog,
    blobs: LocalBlobStore,
    operations: Operations,
    stores: DicomStores,
    tmp_path: Path,
) -> Imports:
    await stores.create(DATASET, "a", DicomStoreConfig())
    instances = Instances(catalog, blobs, operations)
    storage = LocalCloudStorage(tmp_path / "gcs")
    return Imports(
        catalog, operations, instances, storage, max_instance_bytes=1 << 20, concurrency=2
    )


@pytest.fixture
async def exports(
    catalog: SqliteCatalog,
    blobs: LocalBlobStore,
    operations: Operations,
    stores: DicomStores,
    tmp_path: Path,
) -> Exports:
    await stores.create(DATASET, "a", DicomStoreConfig())
    storage = LocalCloudStorage(tmp_path / "gcs")
    pixels = PixelWorkers(processes=1, memory_limit=1 << 28)  # started only if used
    return Exports(catalog, operations, blobs, storage, bigquery_tables(tmp_path, None), pixels)


async def operation_names(operations: Operations) -> list[str]:
    return [str(o.name) for o in (await operations.list(DATASET, "", 0, "")).items]


async def outcome(operations: Operations, op: Operation) -> Operation:
    await asyncio.wait_for(operations.idle(), WAIT)
    return await operations.get(str(op.name))


@pytest.mark.google_behaviour("operation-method-names", "operation-error-logs")
@pytest.mark.parametrize("storage_class", ["", "STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"])
async def test_import_creates_an_operation_that_runs_in_the_background(
    imports: Imports, operations: Operations, storage_class: str
) -> None:
    op = await imports.start(store("a"), "gs://bucket/dir/**.dcm", storage_class)
    assert op.api_method_name == "google.cloud.healthcare.v1.dicom.DicomService.ImportDicomData"
    assert op.logs_url.endswith(f"/logs/{op.name}")
    assert await operation_names(operations) == [str(op.name)]
    done = await outcome(operations, op)
    assert done.error is not None
    assert done.error.code == Code.NOT_FOUND  # no such bucket
    assert "bucket" in done.error.message
    assert done.response is None


@pytest.mark.google_behaviour("import-wildcards", "blob-storage-classes")
@pytest.mark.parametrize(
    ("name", "uri", "storage_class", "field"),
    [
        (store("a"), "", "", "gcs_source.uri"),
        (store("a"), "bucket/dir/*.dcm", "", "gcs_source.uri"),
        (store("a"), "gs://bucket/**/x.dcm", "", "gcs_source.uri"),
        (store("a"), "gs://bucket/../x.dcm", "", "gcs_source.uri"),
        (store("a"), "gs://bucket/x.dcm", "GLACIER", "blob_storage_settings.blob_storage_class"),
        (store("a"), "gs://bucket/x.dcm", "standard", "blob_storage_settings.blob_storage_class"),
        (DATASET, "gs://bucket/x.dcm", "", "name"),
    ],
)
async def test_import_invalid_argument_creates_no_operation(
    imports: Imports,
    operations: Operations,
    name: str,
    uri: str,
    storage_class: str,
    field: str,
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await imports.start(name, uri, storage_class)
    assert caught.value.field == field
    assert await operation_names(operations) == []


async def test_import_not_found_when_store_missing(
    imports: Imports, operations: Operations
) -> None:
    with pytest.raises(NotFound):
        await imports.start(store("missing"), "gs://bucket/x.dcm", "")
    assert await operation_names(operations) == []


@pytest.mark.google_behaviour("operation-method-names")
@pytest.mark.parametrize(
    "destination",
    [
        GcsDestination("gs://bucket/out"),
        GcsDestination("gs://bucket"),
        GcsDestination(
            "gs://bucket/out/", "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
        ),
        GcsDestination("gs://bucket/out", "Application/DICOM;transfer-syntax=*"),
        GcsDestination(
            "gs://bucket/out", "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.90"
        ),
        GcsDestination("gs://bucket/out", "application/octet-stream; transfer-syntax=*"),
        GcsDestination("gs://bucket/out", "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"),
        GcsDestination("gs://bucket/out", "image/png"),
        BigQueryDestination("bq://p.ds.table"),
    ],
)
async def test_export_of_an_empty_store_creates_an_operation_that_succeeds(
    exports: Exports, operations: Operations, destination: GcsDestination | BigQueryDestination
) -> None:
    op = await exports.start(store("a"), destination, "")
    assert op.api_method_name == "google.cloud.healthcare.v1.dicom.DicomService.ExportDicomData"
    assert await operation_names(operations) == [str(op.name)]
    done = await outcome(operations, op)
    assert done.error is None
    assert done.response is not None
    assert done.counter.success == done.counter.failure == 0


@pytest.mark.google_behaviour("export-filter-file")
async def test_export_accepts_filter_file(exports: Exports, operations: Operations) -> None:
    op = await exports.start(store("a"), GcsDestination("gs://bucket/out"), "gs://bucket/f.txt")
    assert op.job.args["filter"] == "gs://bucket/f.txt"


@pytest.mark.parametrize(
    ("destination", "filter_uri", "field"),
    [
        (None, "", "destination"),
        (GcsDestination(""), "", "gcs_destination.uri_prefix"),
        (GcsDestination("bucket/out"), "", "gcs_destination.uri_prefix"),
        (GcsDestination("gs://bucket/../out"), "", "gcs_destination.uri_prefix"),
        (GcsDestination("gs://bucket/out", "image/gif"), "", "gcs_destination.mime_type"),
        (GcsDestination("gs://bucket/out", "application/dicom"), "", "gcs_destination.mime_type"),
        (
            GcsDestination("gs://bucket/out", "application/dicom; transfer-syntax=1.2.3"),
            "",
            "gcs_destination.mime_type",
        ),
        (BigQueryDestination(""), "", "bigquery_destination.table_uri"),
        (BigQueryDestination("bq://p.ds"), "", "bigquery_destination.table_uri"),
        (GcsDestination("gs://bucket/out"), "gs://bucket", "filter_config.resource_paths_gcs_uri"),
        (GcsDestination("gs://bucket/out"), "f.txt", "filter_config.resource_paths_gcs_uri"),
    ],
)
async def test_export_invalid_argument_creates_no_operation(
    exports: Exports,
    operations: Operations,
    destination: GcsDestination | BigQueryDestination | None,
    filter_uri: str,
    field: str,
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await exports.start(store("a"), destination, filter_uri)
    assert caught.value.field == field
    assert await operation_names(operations) == []


async def test_export_not_found_when_store_missing(
    exports: Exports, operations: Operations
) -> None:
    with pytest.raises(NotFound):
        await exports.start(store("missing"), GcsDestination("gs://bucket/out"), "")
    assert await operation_names(operations) == []
