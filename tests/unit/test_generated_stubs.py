"""The generated stubs are fresh and the protos match Google's published API surface.

Google's reference for the field names and REST bindings is the discovery
document ``healthcare.v1.json`` shipped inside google-api-python-client; the
RPC names come from Google's RPC reference for ``google.cloud.healthcare.v1.dicom``
(docs/google-behaviour.md#grpc-dicom-service, #proto-field-numbers).
"""

from __future__ import annotations

import importlib.resources
import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from google.api import annotations_pb2, http_pb2
from google.cloud.healthcare.v1 import operation_pb2
from google.cloud.healthcare.v1.dataset import dataset_pb2
from google.cloud.healthcare.v1.dicom import dicom_pb2
from google.longrunning import operations_pb2
from google.protobuf import descriptor, json_format
from google.protobuf.message import Message

REPO = Path(__file__).resolve().parents[2]

DICOM_SERVICE = dicom_pb2.DESCRIPTOR.services_by_name["DicomService"]
DATASET_SERVICE = dataset_pb2.DESCRIPTOR.services_by_name["DatasetService"]

STORE = "projects/*/locations/*/datasets/*/dicomStores/*"
DATASET = "projects/*/locations/*/datasets/*"

# RPC -> (verb, path template, body), as Google binds them.
HTTP_RULES: dict[str, tuple[str, str, str]] = {
    "CreateDicomStore": ("post", f"/v1/{{parent={DATASET}}}/dicomStores", "dicom_store"),
    "DeleteDicomStore": ("delete", f"/v1/{{name={STORE}}}", ""),
    "ExportDicomData": ("post", f"/v1/{{name={STORE}}}:export", "*"),
    "GetDicomStore": ("get", f"/v1/{{name={STORE}}}", ""),
    "GetDicomStoreMetrics": ("get", f"/v1/{{name={STORE}}}:getDICOMStoreMetrics", ""),
    "ImportDicomData": ("post", f"/v1/{{name={STORE}}}:import", "*"),
    "ListDicomStores": ("get", f"/v1/{{parent={DATASET}}}/dicomStores", ""),
    "UpdateDicomStore": ("patch", f"/v1/{{dicom_store.name={STORE}}}", "dicom_store"),
    "CreateDataset": ("post", "/v1/{parent=projects/*/locations/*}/datasets", "dataset"),
    "GetDataset": ("get", f"/v1/{{name={DATASET}}}", ""),
    "ListDatasets": ("get", "/v1/{parent=projects/*/locations/*}/datasets", ""),
    "PatchDataset": ("patch", f"/v1/{{dataset.name={DATASET}}}", "dataset"),
    "DeleteDataset": ("delete", f"/v1/{{name={DATASET}}}", ""),
}

# RPC -> the discovery document's method, under projects.locations.datasets.
DISCOVERY_METHODS = {
    "CreateDicomStore": "dicomStores.create",
    "DeleteDicomStore": "dicomStores.delete",
    "ExportDicomData": "dicomStores.export",
    "GetDicomStore": "dicomStores.get",
    "GetDicomStoreMetrics": "dicomStores.getDICOMStoreMetrics",
    "ImportDicomData": "dicomStores.import",
    "ListDicomStores": "dicomStores.list",
    "UpdateDicomStore": "dicomStores.patch",
    "CreateDataset": "create",
    "GetDataset": "get",
    "ListDatasets": "list",
    "PatchDataset": "patch",
    "DeleteDataset": "delete",
}

# Discovery schema -> (proto message, discovery properties we deliberately lack, with why).
SCHEMAS: dict[str, tuple[type[Message], dict[str, str]]] = {
    "DicomStore": (dicom_pb2.DicomStore, {}),
    "NotificationConfig": (dicom_pb2.NotificationConfig, {}),
    "DicomNotificationConfig": (dicom_pb2.DicomNotificationConfig, {}),
    "GoogleCloudHealthcareV1DicomStreamConfig": (dicom_pb2.StreamConfig, {}),
    "GoogleCloudHealthcareV1DicomBigQueryDestination": (dicom_pb2.BigQueryDestination, {}),
    "SchemaFlattened": (dicom_pb2.SchemaFlattened, {}),
    "SchemaJSON": (dicom_pb2.SchemaJSON, {}),
    "GoogleCloudHealthcareV1DicomGcsSource": (dicom_pb2.GcsSource, {}),
    "GoogleCloudHealthcareV1DicomGcsDestination": (dicom_pb2.GcsDestination, {}),
    "DicomFilterConfig": (dicom_pb2.DicomFilterConfig, {}),
    "BlobStorageSettings": (dicom_pb2.BlobStorageSettings, {}),
    "DicomStoreMetrics": (dicom_pb2.DicomStoreMetrics, {}),
    "ImportDicomDataRequest": (dicom_pb2.ImportDicomDataRequest, {}),
    "ImportDicomDataResponse": (dicom_pb2.ImportDicomDataResponse, {}),
    "ExportDicomDataRequest": (dicom_pb2.ExportDicomDataRequest, {}),
    "ExportDicomDataResponse": (dicom_pb2.ExportDicomDataResponse, {}),
    "ListDicomStoresResponse": (dicom_pb2.ListDicomStoresResponse, {}),
    "Dataset": (
        dataset_pb2.Dataset,
        {
            "encryptionSpec": "customer-managed encryption keys (Cloud KMS) are not offered",
            "satisfiesPzi": "zone isolation is a property of Google's infrastructure",
            "satisfiesPzs": "zone separation is a property of Google's infrastructure",
        },
    ),
    "ListDatasetsResponse": (dataset_pb2.ListDatasetsResponse, {}),
    "OperationMetadata": (operation_pb2.OperationMetadata, {}),
    "ProgressCounter": (operation_pb2.ProgressCounter, {}),
}

# Request fields that REST carries in the URL path, so the body schema omits them.
PATH_FIELDS = {"ImportDicomDataRequest": {"name"}, "ExportDicomDataRequest": {"name"}}


@cache
def discovery() -> dict[str, Any]:
    """Google's discovery document for healthcare v1, as google-api-python-client ships it."""
    documents = importlib.resources.files("googleapiclient") / "discovery_cache" / "documents"
    document: dict[str, Any] = json.loads((documents / "healthcare.v1.json").read_text("utf-8"))
    return document


def discovery_method(dotted: str) -> dict[str, Any]:
    node: dict[str, Any] = discovery()["resources"]["projects"]["resources"]["locations"]
    node = node["resources"]["datasets"]
    *resources, method = dotted.split(".")
    for resource in resources:
        node = node["resources"][resource]
    found: dict[str, Any] = node["methods"][method]
    return found


def http_rule(method: descriptor.MethodDescriptor) -> http_pb2.HttpRule:
    rule: http_pb2.HttpRule = method.GetOptions().Extensions[annotations_pb2.http]
    return rule


def all_methods() -> list[descriptor.MethodDescriptor]:
    return [*DICOM_SERVICE.methods, *DATASET_SERVICE.methods]


def json_names(message: type[Message]) -> dict[str, descriptor.FieldDescriptor]:
    # types-protobuf types DESCRIPTOR as the Python or the upb descriptor, as unrelated classes;
    # at run time upb's fields are descriptor.FieldDescriptor instances (protobuf's metaclass).
    return {field.json_name: field for field in message.DESCRIPTOR.fields}  # type: ignore[misc]


def test_generated_stubs_match_protos() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "generate_protos.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, f"stale stubs:\n{result.stdout}{result.stderr}"


@pytest.mark.google_behaviour("grpc-dicom-service")
@pytest.mark.parametrize(
    ("service", "expected"),
    [
        (
            DICOM_SERVICE,
            {
                "CreateDicomStore": ("CreateDicomStoreRequest", "dicom.DicomStore"),
                "DeleteDicomStore": ("DeleteDicomStoreRequest", "google.protobuf.Empty"),
                "ExportDicomData": ("ExportDicomDataRequest", "google.longrunning.Operation"),
                "GetDicomStore": ("GetDicomStoreRequest", "dicom.DicomStore"),
                "GetDicomStoreMetrics": ("GetDicomStoreMetricsRequest", "dicom.DicomStoreMetrics"),
                "ImportDicomData": ("ImportDicomDataRequest", "google.longrunning.Operation"),
                "ListDicomStores": ("ListDicomStoresRequest", "dicom.ListDicomStoresResponse"),
                "UpdateDicomStore": ("UpdateDicomStoreRequest", "dicom.DicomStore"),
            },
        ),
        (
            DATASET_SERVICE,
            {
                "CreateDataset": ("CreateDatasetRequest", "google.longrunning.Operation"),
                "GetDataset": ("GetDatasetRequest", "dataset.Dataset"),
                "ListDatasets": ("ListDatasetsRequest", "dataset.ListDatasetsResponse"),
                "PatchDataset": ("PatchDatasetRequest", "dataset.Dataset"),
                "DeleteDataset": ("DeleteDatasetRequest", "google.protobuf.Empty"),
            },
        ),
    ],
    ids=["DicomService", "DatasetService"],
)
def test_service_has_exactly_the_api_methods(
    service: descriptor.ServiceDescriptor, expected: dict[str, tuple[str, str]]
) -> None:
    package = service.file.package

    def qualified(name: str) -> str:
        own = name.startswith(("dicom.", "dataset."))
        return f"{package}.{name.split('.')[-1]}" if own else name

    actual = {m.name: (m.input_type.full_name, m.output_type.full_name) for m in service.methods}
    assert actual == {
        name: (f"{package}.{request}", qualified(response))
        for name, (request, response) in expected.items()
    }
    assert all(not m.client_streaming and not m.server_streaming for m in service.methods)


@pytest.mark.google_behaviour("rest-bindings")
@pytest.mark.parametrize("method", all_methods(), ids=lambda m: m.name)
def test_http_rule_is_googles_binding(method: descriptor.MethodDescriptor) -> None:
    rule = http_rule(method)
    verb = rule.WhichOneof("pattern")
    assert verb is not None
    assert (verb, getattr(rule, verb), rule.body) == HTTP_RULES[method.name]
    assert not rule.additional_bindings


@pytest.mark.google_behaviour("rest-bindings")
@pytest.mark.parametrize("method", all_methods(), ids=lambda m: m.name)
def test_http_rule_matches_discovery_document(method: descriptor.MethodDescriptor) -> None:
    google = discovery_method(DISCOVERY_METHODS[method.name])
    rule = http_rule(method)
    verb = rule.WhichOneof("pattern")
    assert verb is not None
    # `/v1/{name=projects/*/...}:x` and `v1/projects/{projectsId}/...:x` both flatten to
    # `v1/projects/*/...:x`.
    ours = re.sub(r"\{[\w.]+=([^}]*)\}", r"\1", getattr(rule, verb)).removeprefix("/")
    theirs = re.sub(r"\{\w+\}", "*", google["flatPath"])
    assert (verb.upper(), ours) == (google["httpMethod"], theirs)
    assert bool(rule.body) == ("request" in google)


@pytest.mark.google_behaviour("rest-bindings")
def test_get_dicom_store_metrics_is_bound_to_get_with_custom_verb() -> None:
    rule = http_rule(DICOM_SERVICE.methods_by_name["GetDicomStoreMetrics"])
    assert rule.get == (
        "/v1/{name=projects/*/locations/*/datasets/*/dicomStores/*}:getDICOMStoreMetrics"
    )


@pytest.mark.google_behaviour("proto-field-numbers")
@pytest.mark.parametrize("schema", sorted(SCHEMAS))
def test_proto_has_every_discovery_property(schema: str) -> None:
    message, lacking = SCHEMAS[schema]
    properties = set(discovery()["schemas"][schema].get("properties", {}))
    ours = set(json_names(message))
    assert properties - ours == set(lacking), f"{message.DESCRIPTOR.full_name} misses fields"
    assert not set(lacking) & ours, "a deliberately lacking property is now defined: drop it"


@pytest.mark.google_behaviour("proto-field-numbers")
@pytest.mark.parametrize("schema", sorted(SCHEMAS))
def test_proto_has_no_property_unknown_to_discovery(schema: str) -> None:
    message, _ = SCHEMAS[schema]
    properties = set(discovery()["schemas"][schema].get("properties", {}))
    extra = set(json_names(message)) - properties - PATH_FIELDS.get(schema, set())
    assert not extra


@pytest.mark.google_behaviour("proto-field-numbers", "json-mapping")
@pytest.mark.parametrize("schema", sorted(SCHEMAS))
def test_proto_field_types_match_discovery(schema: str) -> None:
    message, _ = SCHEMAS[schema]
    fields = json_names(message)
    for name, spec in discovery()["schemas"][schema].get("properties", {}).items():
        if name not in fields:
            continue
        field = fields[name]
        if spec.get("format") == "int64":
            assert field.type == descriptor.FieldDescriptor.TYPE_INT64, name
        elif spec.get("format") == "google-datetime":
            assert field.message_type is not None, name
            assert field.message_type.full_name == "google.protobuf.Timestamp", name
        elif "enum" in spec:
            assert field.enum_type is not None, name
            assert [v.name for v in field.enum_type.values] == spec["enum"], name
        elif spec.get("type") == "array":
            assert field.is_repeated, name
        elif spec.get("type") == "object" and "additionalProperties" in spec:
            assert field.message_type is not None, name
            assert field.message_type.GetOptions().map_entry, name


@pytest.mark.google_behaviour("json-mapping", "store-config-fields")
def test_dicom_store_json_round_trips_with_discovery_names() -> None:
    document = {
        "name": "projects/p/locations/l/datasets/d/dicomStores/s",
        "labels": {"env": "test", "team": ""},
        "notificationConfig": {
            "pubsubTopic": "projects/p/topics/t",
            "sendForBulkImport": True,
        },
        "streamConfigs": [
            {
                "bigqueryDestination": {
                    "tableUri": "bq://p.d.t",
                    "force": True,
                    "writeDisposition": "WRITE_APPEND",
                    "includeSourceStore": True,
                    "schemaJson": {},
                }
            }
        ],
        "notificationConfigs": [{"pubsubTopic": "projects/p/topics/u"}],
    }
    store = json_format.ParseDict(document, dicom_pb2.DicomStore())
    assert store.stream_configs[0].bigquery_destination.write_disposition == (
        dicom_pb2.BigQueryDestination.WRITE_APPEND
    )
    assert store.stream_configs[0].bigquery_destination.WhichOneof("schema") == "schema_json"
    assert json_format.MessageToDict(store) == document


@pytest.mark.google_behaviour("json-mapping", "store-metrics")
def test_metrics_json_carries_int64_as_strings() -> None:
    metrics = dicom_pb2.DicomStoreMetrics(name="n", study_count=2, blob_storage_size_bytes=2**40)
    assert json_format.MessageToDict(metrics) == {
        "name": "n",
        "studyCount": "2",
        "blobStorageSizeBytes": str(2**40),
    }


@pytest.mark.google_behaviour("operation-metadata")
@pytest.mark.parametrize(
    "method",
    [m for m in all_methods() if m.output_type.full_name == "google.longrunning.Operation"],
    ids=lambda m: m.name,
)
def test_long_running_method_declares_operation_types(
    method: descriptor.MethodDescriptor,
) -> None:
    info = method.GetOptions().Extensions[operations_pb2.operation_info]
    assert info.metadata_type == operation_pb2.OperationMetadata.DESCRIPTOR.full_name
    assert info.response_type in method.containing_service.file.message_types_by_name
