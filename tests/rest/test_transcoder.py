"""Google's REST surface for the management RPCs, through the ASGI app of a real started server.

The first part drives every management method of a real `App` over httpx's in-process ASGI
transport, with the paths, verbs, query parameters and JSON of `healthcare.googleapis.com/v1`.
The second part uses an echo service (a descriptor built here, bound by configured HTTP rules) to
pin the transcoding rules themselves: query parameter types and spellings, body binding, path
variables and their decoding. The last part walks every domain error through REST.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    field_mask_pb2,
    text_format,
    timestamp_pb2,
)
from google.protobuf.message import Message
from starlette.types import ASGIApp

from dicomstore.api.rest.transcoder import PathTemplate, http_rules, split_verb
from dicomstore.api.status import status_of
from dicomstore.core import errors
from tests.conftest import DATASET, DOMAIN_ERRORS, LOCATION
from tests.rest.support import (
    DICOM_SERVICE,
    OPERATION_METADATA,
    Failing,
    client_for,
    create_store,
    error,
    ok,
    rest_app,
    wait_done,
)

STORES = f"/v1/{DATASET}/dicomStores"


@pytest.fixture
async def dataset(client: httpx.AsyncClient) -> str:
    response = await client.post(
        f"/v1/{LOCATION}/datasets", params={"datasetId": "test-dataset"}, json={}
    )
    assert response.status_code == 200, response.text
    return DATASET


def store_path(store_id: str) -> str:
    return f"{STORES}/{quote(store_id, safe='')}"


# --- datasets ----------------------------------------------------------------------------------


@pytest.mark.google_behaviour("create-returns", "operation-method-names")
async def test_create_dataset_returns_a_done_operation_with_the_dataset(
    client: httpx.AsyncClient,
) -> None:
    operation = ok(
        await client.post(
            f"/v1/{LOCATION}/datasets", params={"datasetId": "ds"}, json={"timeZone": "UTC"}
        )
    )
    assert operation["name"].startswith(f"{LOCATION}/datasets/ds/operations/")
    assert operation["done"] is True
    assert operation["metadata"]["@type"] == OPERATION_METADATA
    assert operation["metadata"]["apiMethodName"].endswith("DatasetService.CreateDataset")
    assert operation["response"] == {
        "@type": "type.googleapis.com/google.cloud.healthcare.v1.dataset.Dataset",
        "name": f"{LOCATION}/datasets/ds",
        "timeZone": "UTC",
    }


@pytest.mark.google_behaviour("json-mapping")
async def test_get_dataset_answers_lower_camel_case_json(
    client: httpx.AsyncClient, dataset: str
) -> None:
    assert ok(await client.get(f"/v1/{dataset}")) == {"name": dataset, "timeZone": "UTC"}


@pytest.mark.google_behaviour("list-paging")
async def test_list_datasets_pages_with_page_size_and_token(client: httpx.AsyncClient) -> None:
    for dataset_id in ("a", "b", "c"):
        await client.post(f"/v1/{LOCATION}/datasets", params={"datasetId": dataset_id})
    first = ok(await client.get(f"/v1/{LOCATION}/datasets", params={"pageSize": 2}))
    assert [d["name"].rsplit("/", 1)[1] for d in first["datasets"]] == ["a", "b"]
    second = ok(
        await client.get(
            f"/v1/{LOCATION}/datasets", params={"pageSize": 2, "pageToken": first["nextPageToken"]}
        )
    )
    assert [d["name"].rsplit("/", 1)[1] for d in second["datasets"]] == ["c"]
    assert "nextPageToken" not in second


async def test_patch_dataset_changes_the_masked_field(
    client: httpx.AsyncClient, dataset: str
) -> None:
    patched = ok(
        await client.patch(
            f"/v1/{dataset}", params={"updateMask": "timeZone"}, json={"timeZone": "Europe/Paris"}
        )
    )
    assert patched == {"name": dataset, "timeZone": "Europe/Paris"}
    assert ok(await client.get(f"/v1/{dataset}"))["timeZone"] == "Europe/Paris"


async def test_delete_dataset_answers_empty_object(client: httpx.AsyncClient, dataset: str) -> None:
    assert ok(await client.delete(f"/v1/{dataset}")) == {}
    error(await client.get(f"/v1/{dataset}"), 404, "NOT_FOUND")


# --- DICOM stores ------------------------------------------------------------------------------

FULL_STORE = {
    "labels": {"env": "prod", "ключ": "значение"},
    "notificationConfig": {"pubsubTopic": "projects/p/topics/events", "sendForBulkImport": True},
    "streamConfigs": [
        {
            "bigqueryDestination": {
                "tableUri": "bq://p.d.t",
                "writeDisposition": "WRITE_APPEND",
                "schemaJson": {},
            }
        }
    ],
}


@pytest.mark.google_behaviour("store-id")
async def test_create_store_takes_its_id_from_the_query(
    client: httpx.AsyncClient, dataset: str
) -> None:
    store = await create_store(client, "ct", **FULL_STORE)
    assert store == {"name": f"{dataset}/dicomStores/ct", **FULL_STORE}


@pytest.mark.google_behaviour("resource-names")
async def test_create_store_twice_is_409_already_exists(
    client: httpx.AsyncClient, dataset: str
) -> None:
    await create_store(client, "ct")
    response = await client.post(STORES, params={"dicomStoreId": "ct"}, json={})
    assert "ct" in error(response, 409, "ALREADY_EXISTS")


async def test_get_store_answers_the_store(client: httpx.AsyncClient, dataset: str) -> None:
    created = await create_store(client, "ct", labels={"env": "prod"})
    assert ok(await client.get(store_path("ct"))) == created


@pytest.mark.google_behaviour("list-label-filter", "list-paging")
async def test_list_stores_filters_and_pages(client: httpx.AsyncClient, dataset: str) -> None:
    for store_id, env in (("a", "prod"), ("b", "test"), ("c", "prod"), ("d", "prod")):
        await create_store(client, store_id, labels={"env": env})
    first = ok(await client.get(STORES, params={"filter": "labels.env=prod", "pageSize": 2}))
    assert [s["name"].rsplit("/", 1)[1] for s in first["dicomStores"]] == ["a", "c"]
    second = ok(
        await client.get(
            STORES,
            params={
                "filter": "labels.env=prod",
                "pageSize": 2,
                "pageToken": first["nextPageToken"],
            },
        )
    )
    assert [s["name"].rsplit("/", 1)[1] for s in second["dicomStores"]] == ["d"]
    assert "nextPageToken" not in second


@pytest.mark.google_behaviour("list-label-filter")
async def test_list_stores_with_bad_filter_is_400_saying_where(
    client: httpx.AsyncClient, dataset: str
) -> None:
    message = error(
        await client.get(STORES, params={"filter": "labels.env=("}), 400, "INVALID_ARGUMENT"
    )
    assert message.startswith("filter")


@pytest.mark.google_behaviour("update-mask")
async def test_patch_store_changes_only_the_masked_paths(
    client: httpx.AsyncClient, dataset: str
) -> None:
    await create_store(client, "ct", **FULL_STORE)
    patched = ok(
        await client.patch(
            store_path("ct"),
            params={"updateMask": "labels,notificationConfig"},
            json={"labels": {"site": "north"}, "streamConfigs": []},
        )
    )
    assert patched["labels"] == {"site": "north"}
    assert "notificationConfig" not in patched
    assert patched["streamConfigs"] == FULL_STORE["streamConfigs"]


@pytest.mark.google_behaviour("update-mask")
async def test_patch_store_without_update_mask_is_400(
    client: httpx.AsyncClient, dataset: str
) -> None:
    await create_store(client, "ct")
    response = await client.patch(store_path("ct"), json={"labels": {"a": "b"}})
    assert "update_mask" in error(response, 400, "INVALID_ARGUMENT")


@pytest.mark.google_behaviour("delete-store")
async def test_delete_store_answers_empty_object(client: httpx.AsyncClient, dataset: str) -> None:
    await create_store(client, "ct")
    assert ok(await client.delete(store_path("ct"))) == {}
    error(await client.get(store_path("ct")), 404, "NOT_FOUND")


@pytest.mark.google_behaviour("store-metrics")
async def test_metrics_of_an_empty_store_name_the_store(
    client: httpx.AsyncClient, dataset: str
) -> None:
    store = await create_store(client, "ct")
    assert ok(await client.get(f"{store_path('ct')}:getDICOMStoreMetrics")) == {
        "name": store["name"]
    }


@pytest.mark.google_behaviour("resource-names")
async def test_metrics_of_missing_store_is_404(client: httpx.AsyncClient, dataset: str) -> None:
    response = await client.get(f"{store_path('nope')}:getDICOMStoreMetrics")
    error(response, 404, "NOT_FOUND")


@pytest.mark.google_behaviour("operations-under-dataset", "operation-method-names")
async def test_import_returns_an_operation_of_the_dataset(
    client: httpx.AsyncClient, dataset: str
) -> None:
    await create_store(client, "ct")
    operation = ok(
        await client.post(
            f"{store_path('ct')}:import", json={"gcsSource": {"uri": "gs://bucket/*.dcm"}}
        )
    )
    assert operation["name"].startswith(f"{dataset}/operations/")
    assert operation["metadata"]["@type"] == OPERATION_METADATA
    assert operation["metadata"]["apiMethodName"].endswith("DicomService.ImportDicomData")


async def test_import_with_bad_uri_is_400(client: httpx.AsyncClient, dataset: str) -> None:
    await create_store(client, "ct")
    response = await client.post(f"{store_path('ct')}:import", json={"gcsSource": {"uri": "x"}})
    assert error(response, 400, "INVALID_ARGUMENT").startswith("gcs_source.uri")


@pytest.mark.google_behaviour("operations-under-dataset", "operation-method-names")
async def test_export_returns_an_operation_of_the_dataset(
    client: httpx.AsyncClient, dataset: str
) -> None:
    await create_store(client, "ct")
    operation = ok(
        await client.post(
            f"{store_path('ct')}:export", json={"gcsDestination": {"uriPrefix": "gs://bucket/out"}}
        )
    )
    assert operation["name"].startswith(f"{dataset}/operations/")
    assert operation["metadata"]["apiMethodName"].endswith("DicomService.ExportDicomData")


# --- operations --------------------------------------------------------------------------------


async def start_import(client: httpx.AsyncClient) -> str:
    await create_store(client, "ct")
    operation = ok(
        await client.post(
            f"{store_path('ct')}:import", json={"gcsSource": {"uri": "gs://bucket/*.dcm"}}
        )
    )
    name: str = operation["name"]
    return name


@pytest.mark.google_behaviour("operation-metadata")
async def test_get_operation_answers_it_with_metadata(
    client: httpx.AsyncClient, dataset: str
) -> None:
    name = await start_import(client)
    operation = await wait_done(client, name)
    assert operation["name"] == name
    assert operation["metadata"]["@type"] == OPERATION_METADATA
    assert "createTime" in operation["metadata"]


@pytest.mark.google_behaviour("operations-under-dataset", "operations-list-filter")
async def test_list_operations_filters_and_pages(client: httpx.AsyncClient, dataset: str) -> None:
    name = await start_import(client)
    await wait_done(client, name)
    url = f"/v1/{dataset}/operations"
    first = ok(await client.get(url, params={"pageSize": 1}))
    assert len(first["operations"]) == 1
    second = ok(await client.get(url, params={"pageSize": 1, "pageToken": first["nextPageToken"]}))
    assert [o["name"] for o in second["operations"]] == [name]
    done = ok(await client.get(url, params={"filter": "done=true"}))
    assert len(done["operations"]) == 2
    assert ok(await client.get(url, params={"filter": "done=false"})) == {}


@pytest.mark.google_behaviour("operations-list-filter")
async def test_list_operations_with_partial_success_is_400(
    client: httpx.AsyncClient, dataset: str
) -> None:
    response = await client.get(
        f"/v1/{dataset}/operations", params={"returnPartialSuccess": "true"}
    )
    assert error(response, 400, "INVALID_ARGUMENT").startswith("return_partial_success")


@pytest.mark.google_behaviour("operation-cancel")
async def test_cancel_operation_answers_empty_object(
    client: httpx.AsyncClient, dataset: str
) -> None:
    name = await start_import(client)
    before = await wait_done(client, name)
    assert ok(await client.post(f"/v1/{name}:cancel", json={})) == {}
    assert ok(await client.post(f"/v1/{name}:cancel")) == {}
    assert ok(await client.get(f"/v1/{name}")) == before


async def test_get_of_missing_operation_is_404(client: httpx.AsyncClient, dataset: str) -> None:
    error(await client.get(f"/v1/{dataset}/operations/12345"), 404, "NOT_FOUND")


@pytest.mark.google_behaviour("operations-under-dataset")
@pytest.mark.parametrize(
    ("method", "path", "http", "status"),
    [
        ("DELETE", "/v1/{dataset}/operations/1", 404, "NOT_FOUND"),
        ("GET", "/v1/operations/1", 404, "NOT_FOUND"),
        ("GET", "/v1/operations", 404, "NOT_FOUND"),
        ("DELETE", "/v1/operations/1", 404, "NOT_FOUND"),
    ],
)
async def test_operations_are_served_only_under_datasets(
    client: httpx.AsyncClient, dataset: str, method: str, path: str, http: int, status: str
) -> None:
    # The proto's generic /v1/{name=operations/**} bindings are replaced by the service config.
    error(await client.request(method, path.format(dataset=dataset)), http, status)


# --- paths -------------------------------------------------------------------------------------


@pytest.mark.google_behaviour("store-id")
@pytest.mark.parametrize("store_id", ["with space", "é", "a:b", "x%41", "😀 ü+&?#"])
async def test_store_id_in_path_is_percent_decoded_once(
    client: httpx.AsyncClient, dataset: str, store_id: str
) -> None:
    created = await create_store(client, store_id, labels={"k": "v"})
    assert created["name"] == f"{dataset}/dicomStores/{store_id}"
    assert ok(await client.get(store_path(store_id))) == created
    metrics = ok(await client.get(f"{store_path(store_id)}:getDICOMStoreMetrics"))
    assert metrics == {"name": created["name"]}
    listed = ok(await client.get(STORES))
    assert [s["name"] for s in listed["dicomStores"]] == [created["name"]]


@pytest.mark.google_behaviour("rest-bindings")
async def test_encoded_colon_is_part_of_the_id_not_a_verb(
    client: httpx.AsyncClient, dataset: str
) -> None:
    await create_store(client, "s")
    named_like_a_verb = await create_store(client, "s:getDICOMStoreMetrics", labels={"k": "v"})
    assert ok(await client.get(f"{STORES}/s:getDICOMStoreMetrics")) == {
        "name": f"{dataset}/dicomStores/s"
    }
    assert ok(await client.get(f"{STORES}/s%3AgetDICOMStoreMetrics")) == named_like_a_verb


@pytest.mark.google_behaviour("unimplemented-methods")
async def test_unknown_verb_is_501_naming_it_not_part_of_the_id(
    client: httpx.AsyncClient, dataset: str
) -> None:
    await create_store(client, "s:frobnicate")
    response = await client.get(f"{STORES}/s:frobnicate")
    assert error(response, 501, "UNIMPLEMENTED") == (
        "method healthcare.projects.locations.datasets.dicomStores.frobnicate"
        " is not implemented by this server"
    )


async def test_encoded_slash_does_not_split_a_segment(
    client: httpx.AsyncClient, dataset: str
) -> None:
    await create_store(client, "a")
    # Without the encoding this would be .../dicomStores/a/b: no such route.
    error(await client.get(f"{STORES}/a/b"), 404, "NOT_FOUND")
    message = error(await client.get(f"{STORES}/a%2Fb"), 404, "NOT_FOUND")
    assert "a%2Fb" in message


async def test_path_that_is_not_utf8_is_400(client: httpx.AsyncClient, dataset: str) -> None:
    error(await client.get(f"{STORES}/%FF"), 400, "INVALID_ARGUMENT")


@pytest.mark.google_behaviour("error-model")
@pytest.mark.parametrize(
    "path",
    [
        "/v1/nothing",
        "/v2/{dataset}",
        "/v1/{dataset}/dicomStores/s/extra",
        "/v1/{dataset}/",
        "/v1/projects//locations/l/datasets",
        "/v1/{dataset}/dicomStores/s:",
    ],
)
async def test_unknown_path_is_404_in_google_error_shape(
    client: httpx.AsyncClient, dataset: str, path: str
) -> None:
    error(await client.get(path.format(dataset=dataset)), 404, "NOT_FOUND")


@pytest.mark.google_behaviour("wrong-http-method")
@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/v1/{dataset}/dicomStores/s", "DELETE, GET, PATCH"),
        ("POST", "/v1/{dataset}", "DELETE, GET, PATCH"),
        ("DELETE", "/v1/{dataset}/dicomStores", "GET, POST"),
        ("PUT", "/v1/{dataset}/dicomStores/s:import", "POST"),
        ("POST", "/v1/{dataset}/dicomStores/s:getDICOMStoreMetrics", "GET"),
        ("PATCH", "/v1/{dataset}/operations/1:cancel", "POST"),
    ],
)
async def test_known_path_with_another_method_is_404_method_not_found_with_allow(
    client: httpx.AsyncClient, dataset: str, method: str, path: str, allowed: str
) -> None:
    # Google's front end routes on method and path together: no method, 404 NOT_FOUND.
    response = await client.request(method, path.format(dataset=dataset))
    message = error(response, 404, "NOT_FOUND")
    assert message.startswith(f"Method not found: no method is served at {method} /v1/")
    assert message.endswith(f"; it takes {allowed}")
    assert response.headers["allow"] == allowed


async def test_healthz_is_unchanged(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "SERVING"}


# --- query parameters and bodies over the real services -----------------------------------------


@pytest.mark.google_behaviour("system-parameters")
@pytest.mark.parametrize(
    "params",
    [
        {"$.xgafv": "2"},
        {"access_token": "t", "oauth_token": "t", "key": "k"},
        {"alt": "json", "prettyPrint": "false", "fields": "dicomStores(name)"},
        {"callback": "cb", "quotaUser": "q", "upload_protocol": "raw", "uploadType": "media"},
    ],
)
async def test_system_parameters_are_accepted_and_ignored(
    client: httpx.AsyncClient, dataset: str, params: dict[str, str]
) -> None:
    await create_store(client, "ct", labels={"a": "b"})
    listed = ok(await client.get(STORES, params=params))
    assert listed["dicomStores"][0]["labels"] == {"a": "b"}


@pytest.mark.google_behaviour("system-parameters")
async def test_alt_other_than_json_is_400(client: httpx.AsyncClient, dataset: str) -> None:
    assert error(await client.get(STORES, params={"alt": "media"}), 400, "INVALID_ARGUMENT")


async def test_unknown_query_parameter_is_400_naming_it(
    client: httpx.AsyncClient, dataset: str
) -> None:
    message = error(await client.get(STORES, params={"pageSzie": "3"}), 400, "INVALID_ARGUMENT")
    assert message.startswith("pageSzie: unknown query parameter")


async def test_query_parameter_in_snake_case_is_accepted(
    client: httpx.AsyncClient, dataset: str
) -> None:
    for store_id in ("a", "b"):
        await create_store(client, store_id)
    listed = ok(await client.get(STORES, params={"page_size": "1"}))
    assert len(listed["dicomStores"]) == 1


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"pageSize": "ten"}, "pageSize"),
        ({"pageSize": "1.5"}, "pageSize"),
        ([("pageSize", "1"), ("page_size", "2")], "pageSize"),
        ({"parent": DATASET}, "parent"),
        ({"dicomStores": "x"}, "dicomStores"),
    ],
)
async def test_bad_query_parameter_is_400_naming_it(
    client: httpx.AsyncClient, dataset: str, params: Any, named: str
) -> None:
    message = error(await client.get(STORES, params=params), 400, "INVALID_ARGUMENT")
    assert message.startswith(named), message


async def test_query_parameter_inside_the_body_field_is_400(
    client: httpx.AsyncClient, dataset: str
) -> None:
    response = await client.post(
        STORES, params={"dicomStoreId": "ct", "dicomStore.name": "x"}, json={}
    )
    assert "set by the path or the body" in error(response, 400, "INVALID_ARGUMENT")


async def test_unknown_json_field_is_400_naming_it(client: httpx.AsyncClient, dataset: str) -> None:
    response = await client.post(STORES, params={"dicomStoreId": "ct"}, json={"lables": {}})
    assert '"lables"' in error(response, 400, "INVALID_ARGUMENT")
    response = await client.post(
        STORES, params={"dicomStoreId": "ct"}, json={"notificationConfig": {"topic": "x"}}
    )
    assert '"topic"' in error(response, 400, "INVALID_ARGUMENT")
    error(await client.get(store_path("ct")), 404, "NOT_FOUND")


@pytest.mark.parametrize("body", [b'{"labels": ', b"[1, 2]", b"\xff\xfe", b"null", b'"text"'])
async def test_malformed_json_body_is_400(
    client: httpx.AsyncClient, dataset: str, body: bytes
) -> None:
    response = await client.post(
        STORES,
        params={"dicomStoreId": "ct"},
        content=body,
        headers={"content-type": "application/json"},
    )
    assert "Invalid JSON payload" in error(response, 400, "INVALID_ARGUMENT")


async def test_wrongly_typed_json_value_is_400(client: httpx.AsyncClient, dataset: str) -> None:
    response = await client.post(STORES, params={"dicomStoreId": "ct"}, json={"labels": [1]})
    error(response, 400, "INVALID_ARGUMENT")


async def test_body_on_a_method_without_body_is_400(
    client: httpx.AsyncClient, dataset: str
) -> None:
    await create_store(client, "ct")
    response = await client.request("DELETE", store_path("ct"), json={"force": True})
    assert "takes no request body" in error(response, 400, "INVALID_ARGUMENT")
    assert ok(await client.get(store_path("ct")))


async def test_path_variable_wins_over_the_body(client: httpx.AsyncClient, dataset: str) -> None:
    await create_store(client, "ct")
    patched = ok(
        await client.patch(
            store_path("ct"),
            params={"updateMask": "labels"},
            json={"name": f"{dataset}/dicomStores/other", "labels": {"a": "b"}},
        )
    )
    assert patched["name"] == f"{dataset}/dicomStores/ct"


# --- access log and request ids ----------------------------------------------------------------


@pytest.fixture
def failing() -> tuple[ASGIApp, io.StringIO]:
    return rest_app((DICOM_SERVICE, Failing()))


@pytest.mark.google_behaviour("error-model")
@pytest.mark.parametrize("cls", DOMAIN_ERRORS, ids=lambda c: c.__name__)
async def test_domain_error_becomes_its_http_status_and_name(
    failing: tuple[ASGIApp, io.StringIO], cls: type[errors.DicomStoreError]
) -> None:
    async with client_for(failing[0]) as http:
        response = await http.get(f"{STORES}/{cls.__name__}")
    status = status_of(cls.code)
    expected = f"{cls.__name__} happened"
    if status.fault:  # the server's fault: the message names the request id
        expected += f" (request id {response.headers['x-request-id']})"
    assert error(response, status.http, status.name) == expected
    assert status.name == cls.code.name


@pytest.mark.google_behaviour("error-model")
async def test_unexpected_error_is_500_with_request_id_and_no_details(
    failing: tuple[ASGIApp, io.StringIO], caplog: pytest.LogCaptureFixture
) -> None:
    async with client_for(failing[0]) as http:
        response = await http.get(f"{STORES}/boom", headers={"x-request-id": "req-42"})
    message = error(response, 500, "INTERNAL")
    assert message == "internal error (request id req-42)"
    assert "secret" not in response.text
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.exc_info is not None and "secret internal detail" in str(record.exc_info[1])
    assert record.__dict__["request_id"] == "req-42"


async def test_method_without_handler_is_501(failing: tuple[ASGIApp, io.StringIO]) -> None:
    async with client_for(failing[0]) as http:
        response = await http.get(STORES)
    assert "ListDicomStores" in error(response, 501, "UNIMPLEMENTED")


async def test_every_request_writes_one_access_line(
    failing: tuple[ASGIApp, io.StringIO],
) -> None:
    app, stream = failing
    async with client_for(app) as http:
        fine = await http.get(f"{STORES}/fine", headers={"x-request-id": "abc"})
        await http.get(f"{STORES}/NotFound")
        await http.get("/v1/nowhere?x=1")
        await http.put(f"{STORES}/fine")
        await http.get("/healthz")
    assert fine.headers["x-request-id"] == "abc"
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    template = "/v1/{name=projects/*/locations/*/datasets/*/dicomStores/*}"
    assert [(line["method"], line["code"]) for line in lines] == [
        (f"GET {template}", "OK"),
        (f"GET {template}", "NOT_FOUND"),
        ("GET /v1/nowhere", "NOT_FOUND"),
        (f"PUT {template}", "NOT_FOUND"),
        ("GET /healthz", "OK"),
    ]
    assert lines[0]["request_id"] == "abc"
    assert len({line["request_id"] for line in lines}) == len(lines)
    assert all(line["peer"].startswith("ipv4:127.0.0.1:") for line in lines)
    assert all(line["duration_ms"] >= 0 for line in lines)


# --- transcoding rules, pinned with an echo service ----------------------------------------------

ECHO_FILE = """
name: "dicomstore_test/echo.proto"
package: "dicomstore.test"
dependency: "google/protobuf/field_mask.proto"
dependency: "google/protobuf/timestamp.proto"
message_type {
  name: "Inner"
  field { name: "text" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "big_number" number: 2 label: LABEL_OPTIONAL type: TYPE_INT64 }
}
message_type {
  name: "Echo"
  field { name: "name" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "page_size" number: 2 label: LABEL_OPTIONAL type: TYPE_INT32 }
  field { name: "big" number: 3 label: LABEL_OPTIONAL type: TYPE_INT64 }
  field { name: "flag" number: 4 label: LABEL_OPTIONAL type: TYPE_BOOL }
  field { name: "tags" number: 5 label: LABEL_REPEATED type: TYPE_STRING }
  field { name: "kind" number: 6 label: LABEL_OPTIONAL type: TYPE_ENUM
          type_name: ".dicomstore.test.Kind" }
  field { name: "inner" number: 7 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".dicomstore.test.Inner" }
  field { name: "update_mask" number: 8 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".google.protobuf.FieldMask" }
  field { name: "labels" number: 9 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".dicomstore.test.Echo.LabelsEntry" }
  field { name: "items" number: 10 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".dicomstore.test.Inner" }
  field { name: "when" number: 11 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".google.protobuf.Timestamp" }
  field { name: "ubig" number: 12 label: LABEL_OPTIONAL type: TYPE_UINT64 }
  field { name: "ratio" number: 13 label: LABEL_OPTIONAL type: TYPE_DOUBLE }
  field { name: "numbers" number: 14 label: LABEL_REPEATED type: TYPE_INT64 }
  nested_type {
    name: "LabelsEntry"
    field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
    field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_STRING }
    options { map_entry: true }
  }
}
enum_type {
  name: "Kind"
  value { name: "KIND_UNSPECIFIED" number: 0 }
  value { name: "ALPHA" number: 1 }
}
service {
  name: "EchoService"
  method { name: "Echo" input_type: ".dicomstore.test.Echo" output_type: ".dicomstore.test.Echo" }
}
"""

ECHO_RULES = """
rules {
  selector: "dicomstore.test.EchoService.Echo"
  get: "/v1/{name=things/*}"
  additional_bindings { post: "/v1/{name=things/*}:echo" body: "*" }
  additional_bindings { patch: "/v1/{inner.text=things/*/inners/*}" body: "inner" }
  additional_bindings { put: "/v1/{name=things/*}/tags" body: "tags" }
  additional_bindings { get: "/v1/{name=files/**}" }
  additional_bindings { get: "/v1/one/{name}" }
  additional_bindings { custom { kind: "SEARCH" path: "/v1/{name=things/*}:search" } }
  additional_bindings { get: "/v1/{name=things/*}/inner" response_body: "inner" }
}
"""


def _echo_service() -> Any:
    pool = descriptor_pool.DescriptorPool()
    for dependency in (field_mask_pb2, timestamp_pb2):
        pool.AddSerializedFile(dependency.DESCRIPTOR.serialized_pb)
    file = text_format.Parse(ECHO_FILE, descriptor_pb2.FileDescriptorProto())
    pool.Add(file)
    return pool.FindServiceByName("dicomstore.test.EchoService")


class Echo:
    """Answers the request it was given, and keeps it."""

    def __init__(self) -> None:
        self.requests: list[Message] = []

    async def Echo(self, request: Message) -> Message:
        self.requests.append(request)
        return request


@pytest.fixture
async def echo() -> AsyncIterator[tuple[httpx.AsyncClient, Echo]]:
    handlers = Echo()
    app, _ = rest_app((_echo_service(), handlers), http_config=ECHO_RULES)
    async with client_for(app) as http:
        yield http, handlers


async def test_query_parameters_of_every_kind_reach_the_request(
    echo: tuple[httpx.AsyncClient, Echo],
) -> None:
    http, handlers = echo
    query = (
        ("pageSize", "7"),
        ("big", "9007199254740993"),
        ("flag", "true"),
        ("tags", "a"),
        ("tags", "b b"),
        ("kind", "ALPHA"),
        ("inner.text", "deep"),
        ("inner.bigNumber", "-5"),
        ("updateMask", "inner.bigNumber,pageSize,update_mask"),
        ("when", "2024-01-02T03:04:05Z"),
        ("ubig", "18446744073709551615"),
        ("ratio", "0.25"),
        ("numbers", "1"),
        ("numbers", "2"),
    )
    answer = ok(await http.get("/v1/things/t1", params=query))
    assert answer == {
        "name": "things/t1",
        "pageSize": 7,
        "big": "9007199254740993",
        "flag": True,
        "tags": ["a", "b b"],
        "kind": "ALPHA",
        "inner": {"text": "deep", "bigNumber": "-5"},
        "updateMask": "inner.bigNumber,pageSize,updateMask",
        "when": "2024-01-02T03:04:05Z",
        "ubig": "18446744073709551615",
        "ratio": 0.25,
        "numbers": ["1", "2"],
    }
    mask = handlers.requests[0].update_mask  # type: ignore[attr-defined]
    assert list(mask.paths) == ["inner.big_number", "page_size", "update_mask"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("flag", "yes"),
        ("big", "12abc"),
        ("pageSize", "99999999999"),
        ("kind", "BETA"),
        ("when", "yesterday"),
        ("inner", "x"),
        ("labels", "x"),
        ("labels.a", "x"),
        ("items", "x"),
        ("items.text", "x"),
        ("inner.nope", "x"),
        ("name", "things/t2"),
    ],
)
async def test_query_parameter_that_cannot_set_its_field_is_400(
    echo: tuple[httpx.AsyncClient, Echo], name: str, value: str
) -> None:
    http, handlers = echo
    response = await http.get("/v1/things/t1", params={name: value})
    assert error(response, 400, "INVALID_ARGUMENT").startswith(name)
    assert handlers.requests == []


async def test_bool_query_parameter_takes_true_false_one_zero(
    echo: tuple[httpx.AsyncClient, Echo],
) -> None:
    http, _ = echo
    for text, value in (("TRUE", True), ("1", True), ("false", False), ("0", False)):
        answer = ok(await http.get("/v1/things/t1", params={"flag": text}))
        assert answer.get("flag", False) is value


async def test_body_star_fills_the_message_and_path_wins(
    echo: tuple[httpx.AsyncClient, Echo],
) -> None:
    http, _ = echo
    answer = ok(
        await http.post(
            "/v1/things/t1:echo", json={"name": "things/other", "big": 12, "tags": ["x"]}
        )
    )
    assert answer == {"name": "things/t1", "big": "12", "tags": ["x"]}
    response = await http.post("/v1/things/t1:echo", params={"pageSize": "1"}, json={})
    assert error(response, 400, "INVALID_ARGUMENT").startswith("pageSize")


async def test_body_field_fills_that_field_and_query_the_rest(
    echo: tuple[httpx.AsyncClient, Echo],
) -> None:
    http, _ = echo
    answer = ok(
        await http.patch("/v1/things/t1/inners/i1", params={"pageSize": 3}, json={"bigNumber": "5"})
    )
    assert answer == {"pageSize": 3, "inner": {"text": "things/t1/inners/i1", "bigNumber": "5"}}
    response = await http.patch("/v1/things/t1/inners/i1", json={"text": 1, "bogus": 2})
    error(response, 400, "INVALID_ARGUMENT")


async def test_body_may_be_a_repeated_field(echo: tuple[httpx.AsyncClient, Echo]) -> None:
    http, _ = echo
    answer = ok(await http.put("/v1/things/t1/tags", json=["a", "b"]))
    assert answer == {"name": "things/t1", "tags": ["a", "b"]}


async def test_double_star_captures_the_rest_and_keeps_encoded_slashes(
    echo: tuple[httpx.AsyncClient, Echo],
) -> None:
    http, _ = echo
    assert ok(await http.get("/v1/files/a/b%2Fc/d%20e"))["name"] == "files/a/b%2Fc/d e"
    assert ok(await http.get("/v1/files"))["name"] == "files"


async def test_single_segment_variable_is_fully_decoded(
    echo: tuple[httpx.AsyncClient, Echo],
) -> None:
    http, _ = echo
    assert ok(await http.get("/v1/one/a%2Fb%3Ac"))["name"] == "a/b:c"


@pytest.mark.google_behaviour("rest-bindings")
async def test_custom_method_and_response_body(echo: tuple[httpx.AsyncClient, Echo]) -> None:
    http, _ = echo
    assert ok(await http.request("SEARCH", "/v1/things/t1:search")) == {"name": "things/t1"}
    answer = ok(await http.get("/v1/things/t1/inner", params={"inner.text": "x"}))
    assert answer == {"text": "x"}


@pytest.mark.google_behaviour("json-mapping")
async def test_int64_fields_are_json_strings(echo: tuple[httpx.AsyncClient, Echo]) -> None:
    http, _ = echo
    answer = ok(await http.get("/v1/things/t1", params={"big": str(2**63 - 1)}))
    assert answer["big"] == str(2**63 - 1)


# --- templates -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    ["v1/x", "/v1/{name=a/**/b}", "/v1/{name=a/*", "/v1//x", "/v1/{name=a}}", "/v1/{na{me}}"],
)
def test_bad_template_is_refused(template: str) -> None:
    with pytest.raises(ValueError, match="template"):
        PathTemplate(template)


@pytest.mark.parametrize(
    ("template", "path", "captured"),
    [
        ("/v1/{name=a/*}:v", "/v1/a/x:v", {("name",): ["a", "x"]}),
        ("/v1/{name=a/*}:v", "/v1/a/x%3Av", None),
        ("/v1/{name=a/*}:v", "/v1/a/x:y:v", None),
        ("/v1/{name=a/*}:v", "/v1/a/x:", None),
        ("/v1/{name=a/*}", "/v1/a/x:v", None),
        ("/v1/{name=a/*}", "/v1/a/x:", None),
        ("/v1/{name=a/*}", "/v1/a/x%3Av", {("name",): ["a", "x%3Av"]}),
        ("/v1/{name=a/**}", "/v1/a/x:v/y", {("name",): ["a", "x:v", "y"]}),
        ("/v1/{name=a/**}", "/v1/a/x/y:v", None),
        ("/v1/{p.q=a/*}/b", "/v1/a/x/b", {("p", "q"): ["a", "x"]}),
        ("/v1/a", "/v1/%61", {}),
        ("/v1/{name=a/*}", "/v1/a/", None),
    ],
)
def test_template_matches_raw_segments(
    template: str, path: str, captured: dict[tuple[str, ...], list[str]] | None
) -> None:
    assert PathTemplate(template).match(path) == captured


@pytest.mark.parametrize(
    ("path", "split"),
    [
        ("/v1/a/b", ("/v1/a/b", None)),
        ("/v1/a/b:v", ("/v1/a/b", "v")),
        ("/v1/a/b:", ("/v1/a/b", "")),
        ("/v1/a/b:v:w", ("/v1/a/b", "v:w")),
        ("/v1/a:x/b", ("/v1/a:x/b", None)),
        ("/v1/a/b%3Av", ("/v1/a/b%3Av", None)),
        ("/v1/a/:v", ("/v1/a/", "v")),
    ],
)
def test_verb_follows_the_first_bare_colon_of_the_last_segment(
    path: str, split: tuple[str, str | None]
) -> None:
    assert split_verb(path) == split


def test_rules_parse_from_service_config_text() -> None:
    [rule] = http_rules(ECHO_RULES)
    assert rule.selector == "dicomstore.test.EchoService.Echo"
    assert len(rule.additional_bindings) == 7
