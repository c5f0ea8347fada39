"""Server reflection, used the way grpcurl and `buf curl` use it.

Every request here is built only from descriptors fetched through reflection: the files are put
into a fresh `DescriptorPool`, message classes come from it, requests are parsed from JSON (as
`grpcurl -d` does) and sent by method path. Nothing of the generated stubs is used on the client
side, so a descriptor the server fails to publish, or publishes wrongly, fails these tests.

Reflection v1alpha is read through grpcio-reflection's `ProtoReflectionDescriptorDatabase`; v1 (the
one current grpcurl and buf ask for first) through a raw stream on
`grpc.reflection.v1.ServerReflection/ServerReflectionInfo` with the v1alpha message classes,
which are identical on the wire.

The server is the in-process `app` fixture, or `DICOMSTORE_TEST_TARGET=host:grpcport,httpport`.
The clients are synchronous and run in a worker thread, so the in-process server's event loop
keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import pytest
from google.protobuf import (
    descriptor,
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message_factory,
)
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from tests.e2e.server import external_target

from dicomstore.app import App

DICOM_SERVICE = "google.cloud.healthcare.v1.dicom.DicomService"
DATASET_SERVICE = "google.cloud.healthcare.v1.dataset.DatasetService"
OPERATIONS = "google.longrunning.Operations"
HEALTH = "grpc.health.v1.Health"
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
REFLECTION_V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
EXPECTED_SERVICES = {
    DICOM_SERVICE,
    DATASET_SERVICE,
    OPERATIONS,
    HEALTH,
    REFLECTION_V1,
    REFLECTION_V1ALPHA,
}
LOCATION = "projects/reflection-project/locations/us-central1"
TIMEOUT = 10.0
ANY_PREFIX = "type.googleapis.com/"


# --- reflection clients ----------------------------------------------------------------------


class Reflection(Protocol):
    def list_services(self) -> list[str]: ...

    def file_containing_symbol(self, symbol: str) -> list[descriptor_pb2.FileDescriptorProto]: ...

    def file_by_filename(self, name: str) -> list[descriptor_pb2.FileDescriptorProto]: ...


class V1AlphaReflection:
    """grpc.reflection.v1alpha through grpcio-reflection's descriptor database."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._db = ProtoReflectionDescriptorDatabase(channel)

    def list_services(self) -> list[str]:
        return list(self._db.get_services())

    def file_containing_symbol(self, symbol: str) -> list[descriptor_pb2.FileDescriptorProto]:
        return [self._db.FindFileContainingSymbol(symbol)]

    def file_by_filename(self, name: str) -> list[descriptor_pb2.FileDescriptorProto]:
        return [self._db.FindFileByName(name)]


class RawReflection:
    """A reflection service spoken over a raw stream: one request and one response per call."""

    def __init__(self, channel: grpc.Channel, service: str) -> None:
        self._call = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )

    def _ask(self, request: reflection_pb2.ServerReflectionRequest) -> Any:
        responses = list(self._call(iter([request]), timeout=TIMEOUT))
        assert len(responses) == 1
        response = responses[0]
        assert response.original_request == request
        if response.HasField("error_response"):
            error = response.error_response
            raise KeyError(f"{request}: {error.error_code} {error.error_message}")
        return response

    def list_services(self) -> list[str]:
        response = self._ask(reflection_pb2.ServerReflectionRequest(list_services=""))
        return [s.name for s in response.list_services_response.service]

    def _files(self, response: Any) -> list[descriptor_pb2.FileDescriptorProto]:
        return [
            descriptor_pb2.FileDescriptorProto.FromString(data)
            for data in response.file_descriptor_response.file_descriptor_proto
        ]

    def file_containing_symbol(self, symbol: str) -> list[descriptor_pb2.FileDescriptorProto]:
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
        return self._files(self._ask(request))

    def file_by_filename(self, name: str) -> list[descriptor_pb2.FileDescriptorProto]:
        request = reflection_pb2.ServerReflectionRequest(file_by_filename=name)
        return self._files(self._ask(request))


CLIENTS: dict[str, Callable[[grpc.Channel], Reflection]] = {
    "v1": lambda channel: RawReflection(channel, REFLECTION_V1),
    "v1alpha": V1AlphaReflection,
}


class ReflectedSchema:
    """The files fetched so far, and a fresh pool built from them alone."""

    def __init__(self, reflection: Reflection) -> None:
        self.reflection = reflection
        self.files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        self.pool = descriptor_pool.DescriptorPool()
        self._in_pool: set[str] = set()

    def _fetch_closure(self, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        pending = list(files)
        while pending:
            file = pending.pop()
            self.files.setdefault(file.name, file)
            for dependency in file.dependency:
                if dependency not in self.files:
                    pending.extend(self.reflection.file_by_filename(dependency))

    def _add(self, name: str) -> None:
        if name in self._in_pool:
            return
        file = self.files[name]
        for dependency in file.dependency:
            self._add(dependency)
        self.pool.AddSerializedFile(file.SerializeToString())
        self._in_pool.add(name)

    def resolve(self, symbol: str) -> None:
        """Fetch the file defining `symbol` and everything it imports, and add them to the pool."""
        files = self.reflection.file_containing_symbol(symbol)
        self._fetch_closure(files)
        for file in files:
            self._add(file.name)

    def service(self, name: str) -> descriptor.ServiceDescriptor:
        self.resolve(name)
        return self.pool.FindServiceByName(name)

    def message_class(self, full_name: str) -> Any:
        return message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full_name))

    def resolve_any_types(self, value: Any) -> None:
        """Fetch the types named by the `@type` of Any values, as grpcurl does to print them."""
        for field, inner in value.ListFields():
            values = inner if field.is_repeated else [inner]
            if field.message_type is None:
                continue
            if field.message_type.full_name == "google.protobuf.Any":
                for any_value in values:
                    type_name = any_value.type_url.removeprefix(ANY_PREFIX)
                    self.resolve(type_name)
                    unpacked = self.message_class(type_name).FromString(any_value.value)
                    self.resolve_any_types(unpacked)
            elif not field.message_type.GetOptions().map_entry:
                for item in values:
                    self.resolve_any_types(item)


@dataclass
class JsonClient:
    """Calls methods by path with JSON requests and answers, like `grpcurl -d '{...}'`."""

    channel: grpc.Channel
    schema: ReflectedSchema

    def call(self, service: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
        method_descriptor = self.schema.service(service).FindMethodByName(method)
        assert method_descriptor is not None, f"{service}.{method} is not in the reflected schema"
        request_class = self.schema.message_class(method_descriptor.input_type.full_name)
        response_class = self.schema.message_class(method_descriptor.output_type.full_name)
        request = json_format.ParseDict(body, request_class())
        stub = self.channel.unary_unary(
            f"/{service}/{method}",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        response = stub(request, timeout=TIMEOUT)
        self.schema.resolve_any_types(response)
        return json_format.MessageToDict(response, descriptor_pool=self.schema.pool)

    def fails(self, service: str, method: str, body: dict[str, Any]) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as failed:
            self.call(service, method, body)
        code: grpc.StatusCode = failed.value.code()
        return code


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def address(request: pytest.FixtureRequest) -> str:
    """host:port of a server: the external target if one is named, else the in-process `app`."""
    target = external_target()
    if target is not None:
        return target.grpc_address
    app: App = request.getfixturevalue("app")
    return f"127.0.0.1:{app.grpc_port}"


def in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking client in a worker thread so the in-process server keeps serving."""
    return asyncio.to_thread(function, *args)


# --- list_services and file resolution -------------------------------------------------------


def listed_and_resolved(address: str, version: str) -> tuple[list[str], dict[str, list[str]]]:
    with grpc.insecure_channel(address) as channel:
        schema = ReflectedSchema(CLIENTS[version](channel))
        services = schema.reflection.list_services()
        methods = {name: [m.name for m in schema.service(name).methods] for name in services}
    return services, methods


@pytest.mark.parametrize("version", CLIENTS)
async def test_list_services_names_every_service(address: str, version: str) -> None:
    services, _ = await in_thread(listed_and_resolved, address, version)
    assert set(services) >= EXPECTED_SERVICES
    assert len(services) == len(set(services))


@pytest.mark.parametrize("version", CLIENTS)
async def test_every_listed_service_resolves_with_its_methods(address: str, version: str) -> None:
    _, methods = await in_thread(listed_and_resolved, address, version)
    assert len(methods[DICOM_SERVICE]) == 8
    assert len(methods[DATASET_SERVICE]) == 5
    assert set(methods[OPERATIONS]) >= {
        "GetOperation",
        "ListOperations",
        "CancelOperation",
        "DeleteOperation",
        "WaitOperation",
    }
    assert set(methods[HEALTH]) >= {"Check", "Watch"}
    assert methods[REFLECTION_V1] == ["ServerReflectionInfo"]
    assert methods[REFLECTION_V1ALPHA] == ["ServerReflectionInfo"]


def reflection_v1_file(address: str, version: str) -> descriptor_pb2.FileDescriptorProto:
    with grpc.insecure_channel(address) as channel:
        schema = ReflectedSchema(CLIENTS[version](channel))
        service = schema.service(REFLECTION_V1)
        method = service.FindMethodByName("ServerReflectionInfo")
        assert method.input_type.full_name == "grpc.reflection.v1.ServerReflectionRequest"
        assert method.output_type.full_name == "grpc.reflection.v1.ServerReflectionResponse"
        return schema.files[service.file.name]


@pytest.mark.parametrize("version", CLIENTS)
async def test_reflection_v1_descriptor_resolves(address: str, version: str) -> None:
    file = await in_thread(reflection_v1_file, address, version)
    assert file.package == "grpc.reflection.v1"
    assert file.name == "grpc/reflection/v1/reflection.proto"


def unknown_symbol(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        RawReflection(channel, REFLECTION_V1).file_containing_symbol("no.such.Symbol")


async def test_reflection_unknown_symbol_is_not_found(address: str) -> None:
    with pytest.raises(KeyError, match=str(grpc.StatusCode.NOT_FOUND.value[0])):
        await in_thread(unknown_symbol, address)


# --- every RPC, from reflected descriptors and JSON ------------------------------------------


def call_every_rpc(address: str, version: str) -> set[str]:
    """Call each RPC of the three API services; returns the methods called."""
    called: set[str] = set()
    with grpc.insecure_channel(address) as channel:
        client = JsonClient(channel, ReflectedSchema(CLIENTS[version](channel)))

        def call(service: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
            called.add(f"{service}.{method}")
            return client.call(service, method, body)

        def fails(service: str, method: str, body: dict[str, Any]) -> grpc.StatusCode:
            called.add(f"{service}.{method}")
            return client.fails(service, method, body)

        dataset_id = f"ds-{uuid.uuid4().hex[:12]}"
        dataset = f"{LOCATION}/datasets/{dataset_id}"
        store = f"{dataset}/dicomStores/store"

        # DatasetService
        created = call(
            DATASET_SERVICE,
            "CreateDataset",
            {"parent": LOCATION, "datasetId": dataset_id, "dataset": {"timeZone": "UTC"}},
        )
        assert created["done"] is True
        assert created["name"].startswith(f"{dataset}/operations/")
        assert created["response"]["@type"].endswith("google.cloud.healthcare.v1.dataset.Dataset")
        assert created["response"]["name"] == dataset
        assert created["metadata"]["@type"].endswith("google.cloud.healthcare.v1.OperationMetadata")
        assert created["metadata"]["apiMethodName"].endswith("CreateDataset")
        assert call(DATASET_SERVICE, "GetDataset", {"name": dataset}) == {
            "name": dataset,
            "timeZone": "UTC",
        }
        listed = call(DATASET_SERVICE, "ListDatasets", {"parent": LOCATION, "pageSize": 1000})
        assert dataset in [d["name"] for d in listed["datasets"]]
        patched = call(
            DATASET_SERVICE,
            "PatchDataset",
            {"dataset": {"name": dataset, "timeZone": "Europe/Paris"}, "updateMask": "timeZone"},
        )
        assert patched == {"name": dataset, "timeZone": "Europe/Paris"}

        # DicomService
        labels = {"team": "radiology"}
        made = call(
            DICOM_SERVICE,
            "CreateDicomStore",
            {"parent": dataset, "dicomStoreId": "store", "dicomStore": {"labels": labels}},
        )
        assert made == {"name": store, "labels": labels}
        assert call(DICOM_SERVICE, "GetDicomStore", {"name": store}) == made
        stores = call(DICOM_SERVICE, "ListDicomStores", {"parent": dataset, "filter": ""})
        assert stores["dicomStores"] == [made]
        updated = call(
            DICOM_SERVICE,
            "UpdateDicomStore",
            {
                "dicomStore": {
                    "name": store,
                    "notificationConfig": {
                        "pubsubTopic": "projects/reflection-project/topics/changes"
                    },
                },
                "updateMask": "notificationConfig",
            },
        )
        assert updated["notificationConfig"] == {
            "pubsubTopic": "projects/reflection-project/topics/changes"
        }
        assert updated["labels"] == labels
        metrics = call(DICOM_SERVICE, "GetDicomStoreMetrics", {"name": store})
        assert metrics["name"] == store
        assert int(metrics.get("instanceCount", "0")) == 0
        imported = call(
            DICOM_SERVICE,
            "ImportDicomData",
            {"name": store, "gcsSource": {"uri": "gs://reflection-bucket/in/**.dcm"}},
        )
        assert imported["name"].startswith(f"{dataset}/operations/")
        exported = call(
            DICOM_SERVICE,
            "ExportDicomData",
            {"name": store, "gcsDestination": {"uriPrefix": "gs://reflection-bucket/out"}},
        )
        assert exported["name"].startswith(f"{dataset}/operations/")

        # google.longrunning.Operations
        got = call(OPERATIONS, "GetOperation", {"name": imported["name"]})
        assert got["name"] == imported["name"]
        assert got["metadata"]["apiMethodName"].endswith("ImportDicomData")
        assert "createTime" in got["metadata"]
        operations = call(OPERATIONS, "ListOperations", {"name": dataset})
        names = {o["name"] for o in operations["operations"]}
        assert {created["name"], imported["name"], exported["name"]} <= names
        assert call(OPERATIONS, "CancelOperation", {"name": exported["name"]}) == {}
        deleted = fails(OPERATIONS, "DeleteOperation", {"name": imported["name"]})
        assert deleted == grpc.StatusCode.UNIMPLEMENTED
        waited = fails(OPERATIONS, "WaitOperation", {"name": imported["name"], "timeout": "1s"})
        assert waited == grpc.StatusCode.UNIMPLEMENTED

        # Clean up through the API too.
        assert call(DICOM_SERVICE, "DeleteDicomStore", {"name": store}) == {}
        missing = fails(DICOM_SERVICE, "GetDicomStore", {"name": store})
        assert missing == grpc.StatusCode.NOT_FOUND
        assert call(DATASET_SERVICE, "DeleteDataset", {"name": dataset}) == {}

        every = {
            f"{service}.{method.name}"
            for service in (DICOM_SERVICE, DATASET_SERVICE, OPERATIONS)
            for method in client.schema.service(service).methods
        }
    assert called == every, f"not called: {sorted(every - called)}"
    return called


@pytest.mark.parametrize("version", CLIENTS)
async def test_every_rpc_answers_requests_built_from_reflection(address: str, version: str) -> None:
    called = await in_thread(call_every_rpc, address, version)
    assert len(called) == 8 + 5 + 5


# --- buf curl --------------------------------------------------------------------------------


def find_buf() -> str | None:
    """$DICOMSTORE_BUF, `buf` on PATH, or the copy tools/buf_lint.sh installs from npm."""
    explicit = os.environ.get("DICOMSTORE_BUF")
    if explicit:
        return explicit
    on_path = shutil.which("buf")
    if on_path:
        return on_path
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    found = sorted(
        glob.glob(os.path.join(cache, "dicomstore", "buf-*", "node_modules", ".bin", "buf"))
    )
    return found[-1] if found else None


BUF = find_buf()


def buf_curl(address: str, path: str, body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    assert BUF is not None
    return subprocess.run(
        [
            BUF,
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "--timeout",
            "10s",
            "--data",
            json.dumps(body),
            f"http://{address}/{path}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def create_store_then_buf_curl(address: str) -> tuple[str, subprocess.CompletedProcess[str]]:
    dataset_id = f"ds-{uuid.uuid4().hex[:12]}"
    dataset = f"{LOCATION}/datasets/{dataset_id}"
    with grpc.insecure_channel(address) as channel:
        client = JsonClient(channel, ReflectedSchema(RawReflection(channel, REFLECTION_V1)))
        client.call(DATASET_SERVICE, "CreateDataset", {"parent": LOCATION, "datasetId": dataset_id})
        client.call(
            DICOM_SERVICE,
            "CreateDicomStore",
            {"parent": dataset, "dicomStoreId": "buf", "dicomStore": {"labels": {"via": "buf"}}},
        )
    store = f"{dataset}/dicomStores/buf"
    return store, buf_curl(address, f"{DICOM_SERVICE}/GetDicomStore", {"name": store})


@pytest.mark.skipif(
    BUF is None,
    reason="buf CLI not found: set DICOMSTORE_BUF, put `buf` on PATH, or run tools/buf_lint.sh"
    " (installs @bufbuild/buf from npm into ~/.cache/dicomstore/buf-VERSION)",
)
async def test_buf_curl_calls_get_dicom_store_through_reflection(address: str) -> None:
    store, result = await in_thread(create_store_then_buf_curl, address)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"name": store, "labels": {"via": "buf"}}
