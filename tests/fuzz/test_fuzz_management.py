"""Fuzzed management calls against a real `dicomstore serve`, over REST and over gRPC: resource
names, JSON bodies, AIP-160 filters (ListDicomStores), page tokens, and request messages. Never a
5xx (501 UNIMPLEMENTED aside), the process alive, a refused call changes nothing (conftest.py).

The fixtures' dataset and stores are never the target of a fuzzed delete, so that every test
keeps something to work on."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

import grpc
from google.cloud.healthcare.v1.dataset import dataset_pb2, dataset_pb2_grpc
from google.cloud.healthcare.v1.dicom import dicom_pb2, dicom_pb2_grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import field_mask_pb2
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.fuzz.conftest import DATASET, LOCATION, STORE, Fuzzed
from tests.fuzz.strategies import (
    ID_TEXT,
    PRINTABLE,
    encoded_path,
    filter_expression,
    json_body,
    media_type,
    page_token,
    raw_query,
    resource_name,
)

PROTECTED = frozenset(
    {
        "projects/fuzz",
        "projects/fuzz/locations/local",
        DATASET,
        *(f"{DATASET}/dicomStores/{store}" for store in ("fuzz", "other", "third")),
    }
)
OTHER_STORE = f"{DATASET}/dicomStores/other"
QUERY_NAMES = [
    "datasetId",
    "dicomStoreId",
    "updateMask",
    "pageSize",
    "pageToken",
    "filter",
    "alt",
    "fields",
    "prettyPrint",
    "$.xgafv",
    "x",
]
query_parameters = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(QUERY_NAMES), st.text(max_size=10)),
        st.one_of(
            st.sampled_from(["labels", "timeZone", "labels,notificationConfig", "*", "json"]),
            st.integers(-(2**40), 2**40).map(str),
            st.text(max_size=30),
        ),
    ),
    max_size=3,
)


def protected(name: str) -> bool:
    return name.strip("/").split(":")[0] in PROTECTED


@given(
    method=st.sampled_from(["GET", "POST", "PATCH", "DELETE", "PUT"]),
    name=resource_name(),
    params=query_parameters,
    body=st.one_of(st.none(), json_body()),
)
def test_rest_resource_names_and_methods(
    google: Fuzzed,
    method: str,
    name: str,
    params: list[tuple[str, str]],
    body: bytes | None,
) -> None:
    assume(not (method == "DELETE" and protected(name)))
    google.request(
        "rest management (resource names, methods)",
        method,
        "/v1/" + quote(name, safe="/:"),
        params=params,
        content=body,
        headers={"Content-Type": "application/json"} if body is not None else {},
    )


@given(
    method=st.sampled_from(["GET", "POST", "PATCH", "DELETE"]),
    path=encoded_path(),
    query=raw_query,
)
def test_rest_encoded_paths_and_raw_query_strings(
    google: Fuzzed, method: str, path: str, query: str
) -> None:
    assume(not (method == "DELETE" and protected(unquote(path))))
    google.request(
        "rest management (encoded paths, raw query strings)",
        method,
        f"/v1/{path}?{query}" if query else f"/v1/{path}",
    )


ENDPOINTS = {
    "create dataset": ("POST", f"/v1/{LOCATION}/datasets", "datasetId"),
    "patch dataset": ("PATCH", f"/v1/{DATASET}", "updateMask"),
    "create store": ("POST", f"/v1/{DATASET}/dicomStores", "dicomStoreId"),
    "patch store": ("PATCH", f"/v1/{OTHER_STORE}", "updateMask"),
    "import": ("POST", f"/v1/{OTHER_STORE}:import", ""),
    "export": ("POST", f"/v1/{OTHER_STORE}:export", ""),
    "metrics": ("GET", f"/v1/{OTHER_STORE}:getDICOMStoreMetrics", ""),
}


@given(
    endpoint=st.sampled_from(sorted(ENDPOINTS)),
    body=json_body(),
    value=st.one_of(
        st.sampled_from(["labels", "timeZone", "notificationConfig", "labels,timeZone", ""]),
        ID_TEXT,
    ),
    content_type=st.one_of(st.just("application/json"), media_type()),
)
def test_rest_json_bodies(
    google: Fuzzed, endpoint: str, body: bytes, value: str, content_type: str
) -> None:
    method, path, parameter = ENDPOINTS[endpoint]
    google.request(
        "rest management (JSON bodies)",
        method,
        path,
        params={parameter: value} if parameter else {},
        content=body,
        headers={"Content-Type": content_type},
    )


@given(expression=filter_expression)
def test_list_dicom_stores_filter_over_rest_and_grpc(google: Fuzzed, expression: str) -> None:
    google.request(
        "rest ListDicomStores filter (AIP-160)",
        "GET",
        f"/v1/{DATASET}/dicomStores",
        params={"filter": expression},
    )
    google.request(
        "rest ListOperations filter",
        "GET",
        f"/v1/{DATASET}/operations",
        params={"filter": expression},
    )
    dicom = dicom_pb2_grpc.DicomServiceStub(google.channel)
    google.called(
        "grpc ListDicomStores filter (AIP-160)",
        dicom.ListDicomStores,
        dicom_pb2.ListDicomStoresRequest(parent=DATASET, filter=expression),
    )


def real_tokens(google: Fuzzed) -> dict[str, str]:
    """A next-page token of each list, from a page of one."""
    tokens = {}
    for what, path in (
        ("datasets", f"/v1/{LOCATION}/datasets"),
        ("dicomStores", f"/v1/{DATASET}/dicomStores"),
        ("operations", f"/v1/{DATASET}/operations"),
    ):
        page = google.http.get(path, params={"pageSize": "1"})
        page.raise_for_status()
        tokens[what] = page.json().get("nextPageToken", "")
    return tokens


@given(
    data=st.data(),
    what=st.sampled_from(["datasets", "dicomStores", "operations"]),
    page_size=st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
    raw_size=st.one_of(st.none(), st.text(PRINTABLE, max_size=12)),
)
def test_page_tokens_over_rest_and_grpc(
    google: Fuzzed, data: st.DataObject, what: str, page_size: int | None, raw_size: str | None
) -> None:
    real = real_tokens(google)[what] or "AAAA"
    token = data.draw(page_token(real))
    parent = {"datasets": LOCATION, "dicomStores": DATASET, "operations": DATASET}[what]
    params = {"pageToken": token}
    if page_size is not None or raw_size is not None:
        params["pageSize"] = str(page_size) if raw_size is None else raw_size
    google.request(
        f"rest List{what[0].upper()}{what[1:]} page tokens",
        "GET",
        f"/v1/{parent}/{what}",
        params=params,
    )
    size = page_size if page_size is not None else 0
    calls: dict[str, tuple[Any, Any]] = {
        "datasets": (
            dataset_pb2_grpc.DatasetServiceStub(google.channel).ListDatasets,
            dataset_pb2.ListDatasetsRequest(parent=parent, page_size=size, page_token=token),
        ),
        "dicomStores": (
            dicom_pb2_grpc.DicomServiceStub(google.channel).ListDicomStores,
            dicom_pb2.ListDicomStoresRequest(parent=parent, page_size=size, page_token=token),
        ),
        "operations": (
            operations_pb2_grpc.OperationsStub(google.channel).ListOperations,
            operations_pb2.ListOperationsRequest(
                name=f"{parent}/operations", page_size=size, page_token=token
            ),
        ),
    }
    call, request = calls[what]
    google.called(f"grpc List{what[0].upper()}{what[1:]} page tokens", call, request)


def _grpc_calls(google: Fuzzed) -> dict[str, Any]:
    datasets = dataset_pb2_grpc.DatasetServiceStub(google.channel)
    dicom = dicom_pb2_grpc.DicomServiceStub(google.channel)
    operations = operations_pb2_grpc.OperationsStub(google.channel)
    return {
        "GetDataset": (datasets.GetDataset, lambda n, i: dataset_pb2.GetDatasetRequest(name=n)),
        "DeleteDataset": (
            datasets.DeleteDataset,
            lambda n, i: dataset_pb2.DeleteDatasetRequest(name=n),
        ),
        "ListDatasets": (
            datasets.ListDatasets,
            lambda n, i: dataset_pb2.ListDatasetsRequest(parent=n),
        ),
        "CreateDataset": (
            datasets.CreateDataset,
            lambda n, i: dataset_pb2.CreateDatasetRequest(parent=n, dataset_id=i),
        ),
        "GetDicomStore": (dicom.GetDicomStore, lambda n, i: dicom_pb2.GetDicomStoreRequest(name=n)),
        "GetDicomStoreMetrics": (
            dicom.GetDicomStoreMetrics,
            lambda n, i: dicom_pb2.GetDicomStoreMetricsRequest(name=n),
        ),
        "DeleteDicomStore": (
            dicom.DeleteDicomStore,
            lambda n, i: dicom_pb2.DeleteDicomStoreRequest(name=n),
        ),
        "ListDicomStores": (
            dicom.ListDicomStores,
            lambda n, i: dicom_pb2.ListDicomStoresRequest(parent=n),
        ),
        "CreateDicomStore": (
            dicom.CreateDicomStore,
            lambda n, i: dicom_pb2.CreateDicomStoreRequest(parent=n, dicom_store_id=i),
        ),
        "GetOperation": (
            operations.GetOperation,
            lambda n, i: operations_pb2.GetOperationRequest(name=n),
        ),
        "CancelOperation": (
            operations.CancelOperation,
            lambda n, i: operations_pb2.CancelOperationRequest(name=n),
        ),
        "ListOperations": (
            operations.ListOperations,
            lambda n, i: operations_pb2.ListOperationsRequest(name=n),
        ),
    }


GRPC_METHODS = [
    "CancelOperation",
    "CreateDataset",
    "CreateDicomStore",
    "DeleteDataset",
    "DeleteDicomStore",
    "GetDataset",
    "GetDicomStore",
    "GetDicomStoreMetrics",
    "GetOperation",
    "ListDatasets",
    "ListDicomStores",
    "ListOperations",
]


@given(method=st.sampled_from(GRPC_METHODS), name=resource_name(), resource_id=ID_TEXT)
def test_grpc_resource_names(google: Fuzzed, method: str, name: str, resource_id: str) -> None:
    assume(not (method.startswith("Delete") and protected(name)))
    call, build = _grpc_calls(google)[method]
    google.called(
        "grpc resource names", call, build(name, resource_id), writes=method.startswith("Create")
    )


labels = st.dictionaries(
    st.one_of(ID_TEXT, st.text(max_size=70)), st.one_of(ID_TEXT, st.text(max_size=70)), max_size=5
)
mask_paths = st.lists(
    st.one_of(
        st.sampled_from(["labels", "notification_config", "time_zone", "name", "*", ""]),
        st.text(max_size=20),
    ),
    max_size=3,
)
uris = st.one_of(
    st.sampled_from(["gs://bucket/x/**.dcm", "gs://bucket", "gs://", "bq://p.d.t", "bq://", ""]),
    st.builds(lambda scheme, rest: scheme + rest, st.sampled_from(["gs://", "bq://"]), st.text()),
    st.text(max_size=40),
)


@given(
    method=st.sampled_from(
        [
            "CreateDicomStore",
            "UpdateDicomStore",
            "PatchDataset",
            "Import",
            "Export gcs",
            "Export bq",
        ]
    ),
    store_labels=labels,
    paths=mask_paths,
    uri=uris,
    text=st.text(max_size=40),
)
def test_grpc_request_messages(
    google: Fuzzed, method: str, store_labels: dict[str, str], paths: list[str], uri: str, text: str
) -> None:
    dicom = dicom_pb2_grpc.DicomServiceStub(google.channel)
    datasets = dataset_pb2_grpc.DatasetServiceStub(google.channel)
    mask = field_mask_pb2.FieldMask(paths=paths)
    store = dicom_pb2.DicomStore(
        labels=store_labels,
        notification_config=dicom_pb2.NotificationConfig(pubsub_topic=uri),
    )
    calls: dict[str, tuple[Any, Any]] = {
        "CreateDicomStore": (
            dicom.CreateDicomStore,
            dicom_pb2.CreateDicomStoreRequest(
                parent=DATASET, dicom_store_id=text, dicom_store=store
            ),
        ),
        "UpdateDicomStore": (
            dicom.UpdateDicomStore,
            dicom_pb2.UpdateDicomStoreRequest(
                dicom_store=dicom_pb2.DicomStore(
                    name=OTHER_STORE,
                    labels=store_labels,
                    notification_config=store.notification_config,
                ),
                update_mask=mask,
            ),
        ),
        "PatchDataset": (
            datasets.PatchDataset,
            dataset_pb2.PatchDatasetRequest(
                dataset=dataset_pb2.Dataset(name=DATASET, time_zone=text), update_mask=mask
            ),
        ),
        "Import": (
            dicom.ImportDicomData,
            dicom_pb2.ImportDicomDataRequest(
                name=OTHER_STORE, gcs_source=dicom_pb2.GcsSource(uri=uri)
            ),
        ),
        "Export gcs": (
            dicom.ExportDicomData,
            dicom_pb2.ExportDicomDataRequest(
                name=STORE,
                gcs_destination=dicom_pb2.GcsDestination(uri_prefix=uri, mime_type=text),
            ),
        ),
        "Export bq": (
            dicom.ExportDicomData,
            dicom_pb2.ExportDicomDataRequest(
                name=STORE,
                bigquery_destination=dicom_pb2.BigQueryDestination(table_uri=uri),
            ),
        ),
    }
    call, request = calls[method]
    google.called("grpc request messages", call, request, writes=True)


#: A valid request of each of our methods, whose serialization the raw-bytes fuzzing mutates.
#: Deletes name resources the fixtures do not need.
RAW_REQUESTS = {
    "/google.cloud.healthcare.v1.dataset.DatasetService/CreateDataset": (
        dataset_pb2.CreateDatasetRequest(parent=LOCATION, dataset_id="raw")
    ),
    "/google.cloud.healthcare.v1.dataset.DatasetService/GetDataset": (
        dataset_pb2.GetDatasetRequest(name=DATASET)
    ),
    "/google.cloud.healthcare.v1.dataset.DatasetService/ListDatasets": (
        dataset_pb2.ListDatasetsRequest(parent=LOCATION, page_size=2)
    ),
    "/google.cloud.healthcare.v1.dataset.DatasetService/PatchDataset": (
        dataset_pb2.PatchDatasetRequest(
            dataset=dataset_pb2.Dataset(name=DATASET, time_zone="UTC"),
            update_mask=field_mask_pb2.FieldMask(paths=["time_zone"]),
        )
    ),
    "/google.cloud.healthcare.v1.dataset.DatasetService/DeleteDataset": (
        dataset_pb2.DeleteDatasetRequest(name=f"{LOCATION}/datasets/raw")
    ),
    "/google.cloud.healthcare.v1.dicom.DicomService/CreateDicomStore": (
        dicom_pb2.CreateDicomStoreRequest(
            parent=DATASET,
            dicom_store_id="raw",
            dicom_store=dicom_pb2.DicomStore(labels={"a": "b"}),
        )
    ),
    "/google.cloud.healthcare.v1.dicom.DicomService/GetDicomStore": (
        dicom_pb2.GetDicomStoreRequest(name=STORE)
    ),
    "/google.cloud.healthcare.v1.dicom.DicomService/GetDicomStoreMetrics": (
        dicom_pb2.GetDicomStoreMetricsRequest(name=STORE)
    ),
    "/google.cloud.healthcare.v1.dicom.DicomService/ListDicomStores": (
        dicom_pb2.ListDicomStoresRequest(parent=DATASET, page_size=1, filter="labels.kind=fuzz")
    ),
    "/google.cloud.healthcare.v1.dicom.DicomService/UpdateDicomStore": (
        dicom_pb2.UpdateDicomStoreRequest(
            dicom_store=dicom_pb2.DicomStore(name=OTHER_STORE, labels={"kind": "other"}),
            update_mask=field_mask_pb2.FieldMask(paths=["labels"]),
        )
    ),
    "/google.cloud.healthcare.v1.dicom.DicomService/DeleteDicomStore": (
        dicom_pb2.DeleteDicomStoreRequest(name=f"{DATASET}/dicomStores/raw")
    ),
    "/google.cloud.healthcare.v1.dicom.DicomService/ImportDicomData": (
        dicom_pb2.ImportDicomDataRequest(
            name=OTHER_STORE, gcs_source=dicom_pb2.GcsSource(uri="gs://bucket/none/*.dcm")
        )
    ),
    "/google.cloud.healthcare.v1.dicom.DicomService/ExportDicomData": (
        dicom_pb2.ExportDicomDataRequest(
            name=STORE, gcs_destination=dicom_pb2.GcsDestination(uri_prefix="gs://bucket/out")
        )
    ),
    "/google.longrunning.Operations/ListOperations": (
        operations_pb2.ListOperationsRequest(name=f"{DATASET}/operations", filter="done=true")
    ),
    "/google.longrunning.Operations/GetOperation": (
        operations_pb2.GetOperationRequest(name=f"{DATASET}/operations/1")
    ),
    "/google.longrunning.Operations/CancelOperation": (
        operations_pb2.CancelOperationRequest(name=f"{DATASET}/operations/1")
    ),
}


@st.composite
def raw_request(draw: st.DrawFn, valid: bytes) -> bytes:
    """`valid` with bytes flipped, cut, inserted or removed; or any bytes."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=64))
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "cut", "insert", "remove"]))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at : at + draw(st.integers(1, 8))]
    return bytes(data)


@given(data=st.data(), method=st.sampled_from(sorted(RAW_REQUESTS)))
def test_grpc_malformed_request_bytes(google: Fuzzed, data: st.DataObject, method: str) -> None:
    raw = data.draw(raw_request(RAW_REQUESTS[method].SerializeToString()))
    call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = google.channel.unary_unary(method)
    google.called("grpc request bytes (mutated protobuf)", call, raw, writes=True)
