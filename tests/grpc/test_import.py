"""ImportDicomData from the embedded Cloud Storage (files under DATA_DIR/gcs) through a real
gRPC server: what is imported, what fails and why, counters, the log, cancel."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any, TypeAlias

import grpc
import httpx
import pytest
from google.cloud.healthcare.v1.dicom import dicom_pb2, dicom_pb2_grpc
from google.longrunning import operations_pb2, operations_pb2_grpc

from dicomstore.app import App
from tests.grpc.transfers import finished, generated, metadata
from tests.unit.dicom.dicomfiles import PYDICOM_DATA, new_instance, part10

# The stub over an aio channel: mypy-protobuf declares it for type checkers only.
Stub: TypeAlias = "dicom_pb2_grpc.DicomServiceAsyncStub"
Operations: TypeAlias = operations_pb2_grpc.OperationsStub
BUCKET = "import-bucket"


def small(number: int, study: str = "1.2.826.0.1.7") -> bytes:
    return generated(study, f"{study}.1", number)


def put(app: App, name: str, data: bytes) -> None:
    path = app.settings.data_dir / "gcs" / BUCKET / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
async def store(dicom: Stub, dataset: str) -> str:
    created = await dicom.CreateDicomStore(
        dicom_pb2.CreateDicomStoreRequest(parent=dataset, dicom_store_id="s")
    )
    return created.name


async def start_import(dicom: Stub, store: str, uri: str) -> str:
    operation = await dicom.ImportDicomData(
        dicom_pb2.ImportDicomDataRequest(name=store, gcs_source=dicom_pb2.GcsSource(uri=uri))
    )
    name: str = operation.name
    return name


async def instance_count(dicom: Stub, store: str) -> int:
    metrics = await dicom.GetDicomStoreMetrics(dicom_pb2.GetDicomStoreMetricsRequest(name=store))
    return metrics.instance_count


def sample_errors(operation: operations_pb2.Operation) -> list[tuple[str, int, str]]:
    (detail,) = operation.error.details
    errors = dicom_pb2.ImportDicomDataErrorDetails()
    assert detail.Unpack(errors)
    return [(e.resource, e.error.code, e.error.message) for e in errors.sample_errors]


async def log_entries(url: str) -> list[dict[str, Any]]:
    """Every entry of an operation's log, read two at a time."""
    entries: list[dict[str, Any]] = []
    token = ""
    async with httpx.AsyncClient(timeout=10) as http:
        while True:
            answer = await http.get(url, params={"pageSize": 2, "pageToken": token})
            page = answer.json()
            entries += page.get("entries", [])
            token = page.get("nextPageToken", "")
            if not token:
                return entries


@pytest.mark.google_behaviour("import-failures", "import-export-responses", "operation-error-logs")
async def test_imports_every_dicom_object_and_names_each_that_is_not(
    app: App, dicom: Stub, operations: Operations, store: str
) -> None:
    for n in range(5):
        put(app, f"dir/sub{n % 2}/instance{n}.dcm", small(n))
    put(app, "dir/notes.txt", b"not DICOM at all")
    put(app, "dir/sub1/empty.dcm", b"")
    name = await start_import(dicom, store, f"gs://{BUCKET}/dir/**")
    operation = await finished(operations, name)
    counter = metadata(operation).counter
    assert (counter.success, counter.failure, counter.pending) == (5, 2, 0)
    assert await instance_count(dicom, store) == 5
    assert operation.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    logs_url = metadata(operation).logs_url
    assert (
        "2 of 7 objects failed" in operation.error.message and logs_url in operation.error.message
    )
    failed = {f"gs://{BUCKET}/dir/notes.txt", f"gs://{BUCKET}/dir/sub1/empty.dcm"}
    assert {resource for resource, _, _ in sample_errors(operation)} == failed
    entries = await log_entries(logs_url)
    assert {e["jsonPayload"]["source"] for e in entries} == failed
    for entry in entries:
        assert entry["jsonPayload"]["error"]["code"] == 3
        assert entry["jsonPayload"]["error"]["message"]
        assert entry["operation"]["id"] == name


@pytest.mark.google_behaviour("import-wildcards")
async def test_wildcards_pick_the_objects_of_the_reference(
    app: App, dicom: Stub, operations: Operations, store: str
) -> None:
    names = ["d/Example.dcm", "d/Example22.dcm", "d/Example1.dcm", "d/x/Example3.dcm", "e/E.dcm"]
    for n, name in enumerate(names):
        put(app, name, small(n))
    for uri, count in [
        ("d/Example?.dcm", 1),  # Example1 only
        ("d/Example*.dcm", 3),  # not in the subfolder
        ("d/**.dcm", 4),
        ("e/E.dcm", 1),
    ]:
        operation = await finished(
            operations, await start_import(dicom, store, f"gs://{BUCKET}/{uri}")
        )
        assert metadata(operation).counter.success == count, uri
        assert not operation.HasField("error"), uri
    assert await instance_count(dicom, store) == 5


@pytest.mark.google_behaviour("import-duplicates")
async def test_reimport_ignores_identical_instances_and_fails_changed_ones(
    app: App, dicom: Stub, operations: Operations, store: str
) -> None:
    for n in range(3):
        put(app, f"a/{n}.dcm", small(n))
    first = await finished(operations, await start_import(dicom, store, f"gs://{BUCKET}/a/*"))
    assert metadata(first).counter.success == 3
    changed = new_instance(
        StudyInstanceUID="1.2.826.0.1.7",
        SeriesInstanceUID="1.2.826.0.1.7.1",
        SOPInstanceUID="1.2.826.0.1.7.1.1",
        PatientID="someone else",
    )
    put(app, "a/1.dcm", part10(changed))
    put(app, "a/copy-of-0.dcm", small(0))
    again = await finished(operations, await start_import(dicom, store, f"gs://{BUCKET}/a/*"))
    counter = metadata(again).counter
    assert (counter.success, counter.failure) == (3, 1)
    ((resource, code, message),) = sample_errors(again)
    assert resource == f"gs://{BUCKET}/a/1.dcm"
    assert code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert "different bytes" in message
    assert await instance_count(dicom, store) == 3


@pytest.mark.google_behaviour("import-failures")
@pytest.mark.parametrize(
    ("uri", "words"),
    [
        (f"gs://{BUCKET}/nothing/**", "no object matches"),
        ("gs://no-such-bucket/x/**", "no-such-bucket"),
    ],
)
async def test_a_source_naming_nothing_ends_not_found(
    app: App, dicom: Stub, operations: Operations, store: str, uri: str, words: str
) -> None:
    put(app, "elsewhere/1.dcm", small(1))
    operation = await finished(operations, await start_import(dicom, store, uri))
    assert operation.error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert words in operation.error.message
    assert await instance_count(dicom, store) == 0


async def test_pydicom_test_files_import_as_stow_would_store_them(
    app: App, dicom: Stub, operations: Operations, store: str
) -> None:
    files = sorted((PYDICOM_DATA / "test_files").glob("*.dcm"))
    bucket = app.settings.data_dir / "gcs" / BUCKET / "pydicom"
    bucket.mkdir(parents=True)
    for path in files:
        shutil.copy(path, bucket / path.name)
    operation = await finished(
        operations, await start_import(dicom, store, f"gs://{BUCKET}/pydicom/*.dcm")
    )
    counter = metadata(operation).counter
    assert counter.success + counter.failure == len(files)
    # Some are not Part 10 files or lack UIDs; many share the UIDs of another with other bytes
    # (the same image in several transfer syntaxes): every one is named in the log.
    assert counter.success >= 30 and counter.failure > 0
    # An object identical to one imported before it counts as a success, and stores nothing.
    assert counter.success - 2 <= await instance_count(dicom, store) <= counter.success
    entries = await log_entries(metadata(operation).logs_url)
    assert len(entries) == counter.failure
    names = {path.name for path in files}
    for entry in entries:
        source, error = entry["jsonPayload"]["source"], entry["jsonPayload"]["error"]
        assert source.removeprefix(f"gs://{BUCKET}/pydicom/") in names
        assert error["status"] in ("INVALID_ARGUMENT", "ALREADY_EXISTS") and error["message"]


@pytest.mark.google_behaviour("operation-metadata", "operation-cancel")
async def test_counter_moves_while_it_runs_and_cancel_stops_it(
    app: App, dicom: Stub, operations: Operations, store: str
) -> None:
    for n in range(1500):
        put(app, f"many/{n:05}.dcm", small(n))
    name = await start_import(dicom, store, f"gs://{BUCKET}/many/*")
    seen = 0
    while seen == 0:
        operation = await operations.GetOperation(operations_pb2.GetOperationRequest(name=name))
        assert not operation.done
        seen = metadata(operation).counter.success
        await asyncio.sleep(0.005)
    assert 0 < seen < 1500
    await operations.CancelOperation(operations_pb2.CancelOperationRequest(name=name))
    cancelled_at = asyncio.get_running_loop().time()
    operation = await finished(operations, name)
    assert asyncio.get_running_loop().time() - cancelled_at < 5
    assert operation.error.code == grpc.StatusCode.CANCELLED.value[0]
    assert metadata(operation).cancel_requested
    stored = await instance_count(dicom, store)
    assert seen <= stored < 1500
    assert stored == metadata(operation).counter.success


@pytest.mark.google_behaviour(
    "operation-metadata", "import-export-responses", "operation-error-logs"
)
async def test_import_over_rest_reports_through_the_same_operation(
    app: App, store: str, operations: Operations
) -> None:
    put(app, "r/1.dcm", small(1))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as http:
        answer = await http.post(
            f"/v1/{store}:import", json={"gcsSource": {"uri": f"gs://{BUCKET}/r/*.dcm"}}
        )
        assert answer.status_code == 200, answer.text
        name = answer.json()["name"]
        await finished(operations, name)
        body = (await http.get(f"/v1/{name}")).json()
    assert body["done"] is True
    assert body["metadata"]["counter"]["success"] == "1"
    assert body["metadata"]["logsUrl"].endswith(f"/logs/{name}")
    assert body["response"]["@type"].endswith("ImportDicomDataResponse")
