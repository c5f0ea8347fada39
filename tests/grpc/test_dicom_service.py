"""DicomService through a real grpc.aio server on an ephemeral port."""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias

import grpc
import pytest
from google.cloud.healthcare.v1.dicom import dicom_pb2, dicom_pb2_grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import field_mask_pb2

from tests.conftest import DATASET, LOCATION

# The stub over an aio channel: mypy-protobuf declares it for type checkers only.
Stub: TypeAlias = "dicom_pb2_grpc.DicomServiceAsyncStub"


async def create(dicom: Stub, store_id: str, **fields: Any) -> dicom_pb2.DicomStore:
    return await dicom.CreateDicomStore(
        dicom_pb2.CreateDicomStoreRequest(
            parent=DATASET, dicom_store_id=store_id, dicom_store=dicom_pb2.DicomStore(**fields)
        )
    )


async def status_of(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def store_ids(dicom: Stub) -> list[str]:
    page = await dicom.ListDicomStores(
        dicom_pb2.ListDicomStoresRequest(parent=DATASET, page_size=1000)
    )
    return [s.name.rsplit("/", 1)[1] for s in page.dicom_stores]


FULL_STORE = dicom_pb2.DicomStore(
    labels={"env": "prod", "ключ": "значение", "team": ""},
    notification_config=dicom_pb2.NotificationConfig(
        pubsub_topic="projects/p/topics/dicom-events", send_for_bulk_import=True
    ),
    notification_configs=[
        dicom_pb2.DicomNotificationConfig(pubsub_topic="projects/p/topics/second-topic")
    ],
    stream_configs=[
        dicom_pb2.StreamConfig(
            bigquery_destination=dicom_pb2.BigQueryDestination(
                table_uri="bq://p.d.t",
                write_disposition=dicom_pb2.BigQueryDestination.WRITE_APPEND,
                include_source_store=True,
                schema_json=dicom_pb2.SchemaJSON(),
            )
        )
    ],
)


@pytest.mark.google_behaviour("create-returns")
async def test_create_returns_store_with_full_name_and_fields(dicom: Stub, dataset: str) -> None:
    request = dicom_pb2.CreateDicomStoreRequest(
        parent=dataset, dicom_store_id="ct-scans", dicom_store=FULL_STORE
    )
    created = await dicom.CreateDicomStore(request)
    expected = dicom_pb2.DicomStore()
    expected.CopyFrom(FULL_STORE)
    expected.name = f"{dataset}/dicomStores/ct-scans"
    assert created == expected
    got = await dicom.GetDicomStore(dicom_pb2.GetDicomStoreRequest(name=expected.name))
    assert got == expected


async def test_create_ignores_name_in_body(dicom: Stub, dataset: str) -> None:
    created = await create(dicom, "s1", name="projects/x/locations/y/datasets/z/dicomStores/w")
    assert created.name == f"{dataset}/dicomStores/s1"


@pytest.mark.google_behaviour("resource-names")
async def test_create_without_dataset_is_not_found(dicom: Stub) -> None:
    error = await status_of(create(dicom, "s1"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "test-dataset" in (error.details() or "")


@pytest.mark.google_behaviour("resource-names")
async def test_create_duplicate_is_already_exists_and_keeps_original(
    dicom: Stub, dataset: str
) -> None:
    await create(dicom, "s1", labels={"v": "1"})
    error = await status_of(create(dicom, "s1", labels={"v": "2"}))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    got = await dicom.GetDicomStore(
        dicom_pb2.GetDicomStoreRequest(name=f"{dataset}/dicomStores/s1")
    )
    assert dict(got.labels) == {"v": "1"}


@pytest.mark.google_behaviour("resource-names")
async def test_get_missing_store_is_not_found(dicom: Stub, dataset: str) -> None:
    error = await status_of(
        dicom.GetDicomStore(dicom_pb2.GetDicomStoreRequest(name=f"{dataset}/dicomStores/nope"))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.google_behaviour("label-rules", "store-config-fields")
@pytest.mark.parametrize(
    ("fields", "field", "rule"),
    [
        ({"labels": {"Env": "x"}}, "dicom_store.labels", "must match"),
        ({"labels": {"1abc": "x"}}, "dicom_store.labels", "must match"),
        ({"labels": {"k": "UPPER"}}, "dicom_store.labels", "match"),
        ({"labels": {"k" * 64: "x"}}, "dicom_store.labels", ""),
        ({"labels": {f"k{i}": "" for i in range(65)}}, "dicom_store.labels", "64"),
        (
            {"notification_config": dicom_pb2.NotificationConfig(pubsub_topic="topic")},
            "dicom_store.notification_config.pubsub_topic",
            "projects/",
        ),
        (
            {"notification_configs": [dicom_pb2.DicomNotificationConfig()]},
            "dicom_store.notification_configs[0].pubsub_topic",
            "required",
        ),
        (
            {"stream_configs": [dicom_pb2.StreamConfig()]},
            "dicom_store.stream_configs[0].bigquery_destination",
            "required",
        ),
        (
            {
                "stream_configs": [
                    dicom_pb2.StreamConfig(
                        bigquery_destination=dicom_pb2.BigQueryDestination(table_uri="bq://p.d.t")
                    )
                ]
                * 2
            },
            "dicom_store.stream_configs[1].bigquery_destination.table_uri",
            "unique",
        ),
        (
            {
                "stream_configs": [
                    dicom_pb2.StreamConfig(
                        bigquery_destination=dicom_pb2.BigQueryDestination(table_uri="gs://b/o")
                    )
                ]
            },
            "dicom_store.stream_configs[0].bigquery_destination.table_uri",
            "bq://",
        ),
    ],
)
async def test_create_with_bad_config_is_invalid_and_stores_nothing(
    dicom: Stub, dataset: str, fields: dict[str, object], field: str, rule: str
) -> None:
    error = await status_of(create(dicom, "bad", **fields))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith(field)
    assert rule in (error.details() or "")
    assert await store_ids(dicom) == []


@pytest.mark.google_behaviour("store-id")
@pytest.mark.parametrize(
    ("store_id", "rule"),
    [("", "1"), ("a/b", "/"), ("x" * 257, "256"), ("tab\there", "control")],
)
async def test_create_with_bad_store_id_is_invalid(
    dicom: Stub, dataset: str, store_id: str, rule: str
) -> None:
    error = await status_of(create(dicom, store_id))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "dicom_store_id" in (error.details() or "")
    assert await store_ids(dicom) == []


@pytest.mark.google_behaviour("store-id")
async def test_store_id_of_256_characters_is_accepted(dicom: Stub, dataset: str) -> None:
    created = await create(dicom, "é" * 256)
    assert created.name.endswith("é" * 256)


@pytest.mark.google_behaviour("resource-names")
@pytest.mark.parametrize(
    "parent",
    ["", "projects/p", "projects/p/locations/l", f"{DATASET}/extra", "datasets/d"],
)
async def test_create_with_malformed_parent_is_invalid(dicom: Stub, parent: str) -> None:
    error = await status_of(
        dicom.CreateDicomStore(dicom_pb2.CreateDicomStoreRequest(parent=parent, dicom_store_id="s"))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("parent")


@pytest.mark.google_behaviour("list-paging")
async def test_list_pages_in_stable_order_until_empty_token(dicom: Stub, dataset: str) -> None:
    ids = [f"store-{i:03d}" for i in range(25)]
    for store_id in reversed(ids):
        await create(dicom, store_id)
    seen: list[str] = []
    token = ""
    while True:
        page = await dicom.ListDicomStores(
            dicom_pb2.ListDicomStoresRequest(parent=dataset, page_size=10, page_token=token)
        )
        assert len(page.dicom_stores) <= 10
        seen += [s.name.rsplit("/", 1)[1] for s in page.dicom_stores]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids


@pytest.mark.google_behaviour("list-paging")
async def test_list_defaults_to_100_and_caps_at_1000(dicom: Stub, dataset: str) -> None:
    await asyncio.gather(*(create(dicom, f"s{i:04d}") for i in range(1001)))
    default = await dicom.ListDicomStores(dicom_pb2.ListDicomStoresRequest(parent=dataset))
    assert len(default.dicom_stores) == 100
    assert default.next_page_token
    capped = await dicom.ListDicomStores(
        dicom_pb2.ListDicomStoresRequest(parent=dataset, page_size=5000)
    )
    assert len(capped.dicom_stores) == 1000
    assert capped.next_page_token


@pytest.mark.google_behaviour("list-paging")
async def test_list_with_negative_page_size_is_invalid(dicom: Stub, dataset: str) -> None:
    error = await status_of(
        dicom.ListDicomStores(dicom_pb2.ListDicomStoresRequest(parent=dataset, page_size=-1))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_size" in (error.details() or "")


async def test_list_of_missing_dataset_is_not_found(dicom: Stub) -> None:
    error = await status_of(dicom.ListDicomStores(dicom_pb2.ListDicomStoresRequest(parent=DATASET)))
    assert error.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.google_behaviour("list-label-filter")
@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        ("labels.env=prod", ["a", "c"]),
        ("labels.env=prod AND labels.tier=gold", ["c"]),
        ("labels.env=prod OR labels.env=dev", ["a", "b", "c"]),
        ("NOT labels.env=prod", ["b", "d"]),
        ("labels.tier:*", ["b", "c"]),
        ('labels.env="pro"', ["a", "c"]),
        ("(labels.env=dev OR labels.tier=gold) AND NOT labels.env=prod", ["b"]),
        ("", ["a", "b", "c", "d"]),
    ],
)
async def test_list_filters_on_labels(
    dicom: Stub, dataset: str, filter: str, expected: list[str]
) -> None:
    await create(dicom, "a", labels={"env": "prod"})
    await create(dicom, "b", labels={"env": "dev", "tier": "silver"})
    await create(dicom, "c", labels={"env": "prod", "tier": "gold"})
    await create(dicom, "d")
    page = await dicom.ListDicomStores(
        dicom_pb2.ListDicomStoresRequest(parent=dataset, filter=filter)
    )
    assert [s.name.rsplit("/", 1)[1] for s in page.dicom_stores] == expected


@pytest.mark.google_behaviour("list-label-filter")
@pytest.mark.parametrize(
    ("filter", "where"),
    [
        ("labels.env=", "position"),
        ("labels.env!=prod", "!="),
        ("name=foo", "labels"),
        ("(labels.env=prod", "position"),
        ('labels.env="unterminated', "position"),
    ],
)
async def test_list_with_bad_filter_is_invalid_saying_where(
    dicom: Stub, dataset: str, filter: str, where: str
) -> None:
    error = await status_of(
        dicom.ListDicomStores(dicom_pb2.ListDicomStoresRequest(parent=dataset, filter=filter))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("filter")
    assert where in (error.details() or "")


@pytest.mark.google_behaviour("list-paging")
async def test_page_token_is_bound_to_parent_and_filter(dicom: Stub, dataset: str) -> None:
    for i in range(3):
        await create(dicom, f"s{i}", labels={"env": "prod"})
    first = await dicom.ListDicomStores(
        dicom_pb2.ListDicomStoresRequest(parent=dataset, page_size=1, filter="labels.env=prod")
    )
    token = first.next_page_token
    other_filter = dicom_pb2.ListDicomStoresRequest(parent=dataset, page_token=token)
    other_parent = dicom_pb2.ListDicomStoresRequest(
        parent=f"{LOCATION}/datasets/other", page_token=token, filter="labels.env=prod"
    )
    tampered = dicom_pb2.ListDicomStoresRequest(
        parent=dataset,
        filter="labels.env=prod",
        page_token=token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1],
    )
    for request in (other_filter, other_parent, tampered):
        error = await status_of(dicom.ListDicomStores(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in (error.details() or "")


@pytest.mark.google_behaviour("update-mask")
async def test_update_changes_only_masked_fields(dicom: Stub, dataset: str) -> None:
    created = await dicom.CreateDicomStore(
        dicom_pb2.CreateDicomStoreRequest(
            parent=dataset, dicom_store_id="s", dicom_store=FULL_STORE
        )
    )
    change = dicom_pb2.DicomStore(name=created.name, labels={"env": "dev"})
    updated = await dicom.UpdateDicomStore(
        dicom_pb2.UpdateDicomStoreRequest(
            dicom_store=change, update_mask=field_mask_pb2.FieldMask(paths=["labels"])
        )
    )
    assert dict(updated.labels) == {"env": "dev"}
    assert updated.notification_config == FULL_STORE.notification_config
    assert list(updated.stream_configs) == list(FULL_STORE.stream_configs)
    got = await dicom.GetDicomStore(dicom_pb2.GetDicomStoreRequest(name=created.name))
    assert got == updated

    cleared = await dicom.UpdateDicomStore(
        dicom_pb2.UpdateDicomStoreRequest(
            dicom_store=dicom_pb2.DicomStore(name=created.name),
            update_mask=field_mask_pb2.FieldMask(paths=["stream_configs", "notification_config"]),
        )
    )
    assert not cleared.stream_configs
    assert not cleared.HasField("notification_config")
    assert dict(cleared.labels) == {"env": "dev"}


@pytest.mark.google_behaviour("update-mask")
@pytest.mark.parametrize(
    ("paths", "labels", "rule"),
    [
        ([], {"env": "x"}, "required"),
        (["name"], {}, "'name' cannot be updated"),
        (["colour"], {}, "'colour' cannot be updated"),
        (["labels"], {"BAD": "x"}, "must match"),
    ],
)
async def test_update_with_bad_mask_or_value_is_invalid_and_changes_nothing(
    dicom: Stub, dataset: str, paths: list[str], labels: dict[str, str], rule: str
) -> None:
    created = await create(dicom, "s", labels={"keep": "me"})
    error = await status_of(
        dicom.UpdateDicomStore(
            dicom_pb2.UpdateDicomStoreRequest(
                dicom_store=dicom_pb2.DicomStore(name=created.name, labels=labels),
                update_mask=field_mask_pb2.FieldMask(paths=paths),
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rule in (error.details() or "")
    got = await dicom.GetDicomStore(dicom_pb2.GetDicomStoreRequest(name=created.name))
    assert got == created


async def test_update_of_missing_store_is_not_found(dicom: Stub, dataset: str) -> None:
    error = await status_of(
        dicom.UpdateDicomStore(
            dicom_pb2.UpdateDicomStoreRequest(
                dicom_store=dicom_pb2.DicomStore(name=f"{dataset}/dicomStores/none"),
                update_mask=field_mask_pb2.FieldMask(paths=["labels"]),
            )
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.google_behaviour("delete-store")
async def test_delete_removes_store_then_not_found(dicom: Stub, dataset: str) -> None:
    created = await create(dicom, "s")
    await dicom.DeleteDicomStore(dicom_pb2.DeleteDicomStoreRequest(name=created.name))
    assert await store_ids(dicom) == []
    error = await status_of(
        dicom.DeleteDicomStore(dicom_pb2.DeleteDicomStoreRequest(name=created.name))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    recreated = await create(dicom, "s")
    assert dict(recreated.labels) == {}


@pytest.mark.google_behaviour("store-metrics")
async def test_metrics_of_empty_store_are_zero(dicom: Stub, dataset: str) -> None:
    created = await create(dicom, "s")
    metrics = await dicom.GetDicomStoreMetrics(
        dicom_pb2.GetDicomStoreMetricsRequest(name=created.name)
    )
    assert metrics == dicom_pb2.DicomStoreMetrics(name=created.name)


async def test_metrics_of_missing_store_is_not_found(dicom: Stub, dataset: str) -> None:
    error = await status_of(
        dicom.GetDicomStoreMetrics(
            dicom_pb2.GetDicomStoreMetricsRequest(name=f"{dataset}/dicomStores/none")
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.google_behaviour("import-wildcards")
@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({}, "gcs_source.uri"),
        ({"gcs_source": dicom_pb2.GcsSource(uri="s3://b/o")}, "gcs_source.uri"),
        ({"gcs_source": dicom_pb2.GcsSource(uri="gs://b/")}, "gcs_source.uri"),
        ({"gcs_source": dicom_pb2.GcsSource(uri="gs://bucket/**/x.dcm")}, "gcs_source.uri"),
        ({"gcs_source": dicom_pb2.GcsSource(uri="gs://bucket/../x")}, "gcs_source.uri"),
    ],
)
async def test_import_with_bad_source_is_invalid_and_starts_nothing(
    dicom: Stub,
    dataset: str,
    operations: operations_pb2_grpc.OperationsStub,
    request_fields: dict[str, Any],
    field: str,
) -> None:
    store = await create(dicom, "s")
    error = await status_of(
        dicom.ImportDicomData(dicom_pb2.ImportDicomDataRequest(name=store.name, **request_fields))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith(field)
    listed = await operations.ListOperations(operations_pb2.ListOperationsRequest(name=dataset))
    assert [o.metadata for o in listed.operations if "Import" in str(o.metadata.value)] == []


@pytest.mark.google_behaviour("bigquery-table-uri")
@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({}, "destination"),
        ({"gcs_destination": dicom_pb2.GcsDestination(uri_prefix="gs://")}, "gcs_destination"),
        (
            {
                "gcs_destination": dicom_pb2.GcsDestination(
                    uri_prefix="gs://bucket-1/x", mime_type="text/html"
                )
            },
            "gcs_destination.mime_type",
        ),
        (
            {"bigquery_destination": dicom_pb2.BigQueryDestination(table_uri="bq://nodots")},
            "bigquery_destination.table_uri",
        ),
    ],
)
async def test_export_with_bad_destination_is_invalid(
    dicom: Stub, dataset: str, request_fields: dict[str, Any], field: str
) -> None:
    store = await create(dicom, "s")
    error = await status_of(
        dicom.ExportDicomData(dicom_pb2.ExportDicomDataRequest(name=store.name, **request_fields))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith(field)


async def test_import_into_missing_store_is_not_found(dicom: Stub, dataset: str) -> None:
    error = await status_of(
        dicom.ImportDicomData(
            dicom_pb2.ImportDicomDataRequest(
                name=f"{dataset}/dicomStores/none",
                gcs_source=dicom_pb2.GcsSource(uri="gs://bucket-1/x"),
            )
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
