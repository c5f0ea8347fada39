"""The management client (sync and async) against a real `dicomstore serve`, and the shape of
its requests as Google's endpoint would receive them (a recording gRPC server standing in)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.cloud.healthcare.v1 import operation_pb2
from google.cloud.healthcare.v1.dataset import dataset_pb2
from google.cloud.healthcare.v1.dicom import dicom_pb2
from google.longrunning import operations_pb2
from google.protobuf import any_pb2
from google.rpc import status_pb2

from dicomstore_client.connection import Connection
from dicomstore_client.errors import ClientError, ExitCode, OperationError
from dicomstore_client.management import ManagementClient
from dicomstore_client.management_async import AsyncManagementClient
from dicomstore_client.operations import Counter
from tests.clients.conftest import LOCATION, PROJECT, LiveServer, unique_id
from tests.clients.grpc_recorder import recording_server
from tests.e2e.test_process import self_signed_certificate

DICOM_SERVICE = "/google.cloud.healthcare.v1.dicom.DicomService/"
DATASET_SERVICE = "/google.cloud.healthcare.v1.dataset.DatasetService/"
OPERATIONS = "/google.longrunning.Operations/"


def test_datasets_are_created_listed_described_updated_and_deleted(
    live_server: LiveServer,
) -> None:
    dataset_id = unique_id("ds")
    with live_server.client() as client:
        created = client.create_dataset(dataset_id, time_zone="Europe/Paris")
        name = f"projects/{PROJECT}/locations/{LOCATION}/datasets/{dataset_id}"
        assert (created.name, created.time_zone) == (name, "Europe/Paris")
        assert name in [d.name for d in client.list_datasets()]
        assert client.update_dataset(dataset_id, time_zone="UTC").time_zone == "UTC"
        assert client.get_dataset(dataset_id).time_zone == "UTC"
        client.delete_dataset(dataset_id)
        with pytest.raises(ClientError) as missing:
            client.get_dataset(dataset_id)
    assert missing.value.exit_code is ExitCode.NOT_FOUND


def test_stores_are_created_filtered_updated_measured_and_deleted(
    live_server: LiveServer, dataset: str
) -> None:
    with live_server.client(dataset) as client:
        store = client.create_store("ct", labels={"modality": "ct"})
        client.create_store("mr", labels={"modality": "mr"})
        assert store.name.endswith(f"/datasets/{dataset}/dicomStores/ct")
        assert [s.name for s in client.list_stores(filter="labels.modality=ct")] == [store.name]
        updated = client.update_store("ct", labels={"modality": "ct", "site": "north"})
        assert dict(updated.labels) == {"modality": "ct", "site": "north"}
        assert dict(client.get_store("ct").labels) == {"modality": "ct", "site": "north"}
        assert client.store_metrics("ct").instance_count == 0
        client.delete_store("ct")
        assert [s.name for s in client.list_stores()] == [store.name.replace("/ct", "/mr")]


def test_full_names_need_no_scope(live_server: LiveServer, dataset: str) -> None:
    dataset_name = f"projects/{PROJECT}/locations/{LOCATION}/datasets/{dataset}"
    with ManagementClient(live_server.connection()) as client:
        store = client.create_store(f"{dataset_name}/dicomStores/full")
        assert client.get_store(store.name).name == store.name
        assert client.get_dataset(dataset_name).name == dataset_name
        assert [s.name for s in client.list_stores(dataset_name)] == [store.name]


def test_a_short_id_without_its_scope_is_a_usage_error(live_server: LiveServer) -> None:
    with (
        ManagementClient(live_server.connection(), project=PROJECT) as client,
        pytest.raises(ClientError, match="no location given") as failed,
    ):
        client.get_store("ct")
    assert failed.value.exit_code is ExitCode.USAGE


def test_import_wait_reports_the_counter_and_returns_the_done_operation(
    live_server: LiveServer, dataset: str, scans: str
) -> None:
    seen: list[Counter] = []
    with live_server.client(dataset) as client:
        client.create_store("ct")
        operation = client.import_dicom("ct", f"{scans}/study/*.dcm")
        done = client.wait(operation, on_progress=seen.append, timeout=60)
        metrics = client.store_metrics("ct")
    assert done.done and not done.HasField("error")
    assert seen[-1] == Counter(success=2, failure=0, pending=0)
    assert len(seen) == len(set(seen)), "a callback per change, not per poll"
    assert metrics.instance_count == 2


def test_import_with_a_failed_item_raises_an_operation_error_that_exits_failed(
    live_server: LiveServer, dataset: str, scans: str
) -> None:
    with live_server.client(dataset) as client:
        client.create_store("ct")
        operation = client.import_dicom("ct", f"{scans}/study/**")
        with pytest.raises(OperationError) as failed:
            client.wait(operation.name)
    error = failed.value
    assert (error.failed_items, error.exit_code) == (1, ExitCode.FAILED)
    assert "1 of 3 objects failed" in str(error)
    assert error.operation.done


def test_import_of_a_missing_bucket_exits_not_found(live_server: LiveServer, dataset: str) -> None:
    with live_server.client(dataset) as client:
        client.create_store("ct")
        with pytest.raises(OperationError) as failed:
            client.wait(client.import_dicom("ct", f"gs://{unique_id('none')}/*.dcm"))
    assert (failed.value.status, failed.value.exit_code) == ("NOT_FOUND", ExitCode.NOT_FOUND)


def test_exports_write_cloud_storage_files_and_bigquery_rows(
    live_server: LiveServer, dataset: str, scans: str
) -> None:
    out = unique_id("out")
    live_server.bucket(out)
    with live_server.client(dataset) as client:
        client.create_store("ct")
        client.wait(client.import_dicom("ct", f"{scans}/study/*.dcm"))
        to_gcs = client.wait(client.export_to_gcs("ct", f"gs://{out}/today"))
        table = f"bq://{PROJECT}.{dataset.replace('-', '_')}.instances"
        to_bigquery = client.wait(client.export_to_bigquery("ct", table))
        with pytest.raises(OperationError) as refused:
            client.wait(client.export_to_bigquery("ct", table, write_disposition="WRITE_EMPTY"))
        appended = client.wait(
            client.export_to_bigquery("ct", table, write_disposition="write_append")
        )
    files = sorted((live_server.data_dir / "gcs" / out / "today").rglob("*.dcm"))
    assert len(files) == 2
    for done in (to_gcs, to_bigquery, appended):
        assert (done.done, done.HasField("error")) == (True, False)
    assert refused.value.exit_code is ExitCode.INVALID  # FAILED_PRECONDITION: table not empty


def test_operations_are_listed_described_and_cancelled(
    live_server: LiveServer, dataset: str, scans: str
) -> None:
    with live_server.client(dataset) as client:
        client.create_store("ct")
        done = client.wait(client.import_dicom("ct", f"{scans}/study/*.dcm"))
        listed = client.list_operations()
        described = client.get_operation(done.name.rsplit("/", 1)[-1])
        client.cancel_operation(done.name)  # a finished operation stays as it ended
        after = client.get_operation(done.name)
        with pytest.raises(ClientError) as missing:
            client.cancel_operation("123")
    assert done.name in [o.name for o in listed]
    assert described.name == done.name
    assert (after.done, after.HasField("error")) == (True, False)
    assert missing.value.exit_code is ExitCode.NOT_FOUND


@pytest.mark.parametrize(
    ("action", "status", "exit_code"),
    [
        (lambda c: c.get_store("missing"), "NOT_FOUND", ExitCode.NOT_FOUND),
        (lambda c: c.create_store("twice"), "ALREADY_EXISTS", ExitCode.CONFLICT),
        (lambda c: c.create_store("a/b"), "INVALID_ARGUMENT", ExitCode.INVALID),
        (lambda c: c.update_store("twice", labels={"BAD": "x"}), "INVALID_ARGUMENT", 5),
        (lambda c: c.import_dicom("twice", "file:///etc"), "INVALID_ARGUMENT", 5),
    ],
)
def test_rpc_failures_are_client_errors_with_the_exit_code_of_their_kind(
    live_server: LiveServer, dataset: str, action, status: str, exit_code: int
) -> None:
    with live_server.client(dataset) as client:
        client.create_store("twice")
        with pytest.raises(ClientError) as failed:
            action(client)
    assert not isinstance(failed.value, grpc.RpcError)
    assert (failed.value.status, failed.value.exit_code) == (status, exit_code)


def test_an_unreachable_endpoint_is_unavailable() -> None:
    connection = Connection(grpc_target="127.0.0.1:1")
    with (
        ManagementClient(connection, project="p", location="l") as client,
        pytest.raises(ClientError) as failed,
    ):
        client.list_datasets()
    assert (failed.value.status, failed.value.exit_code) == ("UNAVAILABLE", ExitCode.UNAVAILABLE)


async def test_async_client_manages_stores_and_waits_for_an_import(
    live_server: LiveServer, scans: str
) -> None:
    dataset_id = unique_id("ds")
    seen: list[Counter] = []
    async with AsyncManagementClient(
        live_server.connection(), project=PROJECT, location=LOCATION, dataset=dataset_id
    ) as client:
        assert (await client.create_dataset(dataset_id)).name.endswith(dataset_id)
        await client.create_store("ct", labels={"modality": "ct"})
        updated = await client.update_store("ct", labels={"modality": "mr"})
        operation = await client.import_dicom("ct", f"{scans}/study/*.dcm")
        done = await client.wait(operation, on_progress=seen.append)
        metrics = await client.store_metrics("ct")
        listed = await client.list_operations()
        stores = await client.list_stores()
        with pytest.raises(ClientError) as missing:
            await client.get_store("missing")
        await client.delete_store("ct")
        await client.delete_dataset()
    assert dict(updated.labels) == {"modality": "mr"}
    assert (done.done, seen[-1], metrics.instance_count) == (True, Counter(2, 0, 0), 2)
    assert done.name in [o.name for o in listed]
    assert [s.name for s in stores] == [updated.name]
    assert missing.value.exit_code is ExitCode.NOT_FOUND


# What Google would receive: a recording gRPC server in place of healthcare.googleapis.com.


def _operation(*, done: bool, code: int = 0, failure: int = 0) -> operations_pb2.Operation:
    metadata = any_pb2.Any()
    metadata.Pack(
        operation_pb2.OperationMetadata(counter=operation_pb2.ProgressCounter(failure=failure))
    )
    operation = operations_pb2.Operation(name="projects/p/locations/l/datasets/d/operations/1")
    operation.done = done
    operation.metadata.CopyFrom(metadata)
    if code:
        operation.error.CopyFrom(status_pb2.Status(code=code, message="stopped"))
    return operation


def test_requests_reach_google_methods_with_the_bearer_token_and_routing_header() -> None:
    store = "projects/p/locations/l/datasets/d/dicomStores/s"
    with recording_server() as (recorder, port):
        connection = Connection(grpc_target=f"127.0.0.1:{port}", token="ya29.token")
        with ManagementClient(connection, project="p", location="l", dataset="d") as client:
            client.delete_store("s")
            client.update_store("s", labels={"k": "v"})
            client.export_to_bigquery("s", "bq://p.d.t", write_disposition="WRITE_TRUNCATE")
            client.cancel_operation("7")
    delete, update, export, cancel = recorder.received
    assert delete.method == DICOM_SERVICE + "DeleteDicomStore"
    assert delete.metadata["authorization"] == "Bearer ya29.token"
    assert delete.metadata["x-goog-request-params"] == f"name={store}"
    assert delete.parsed(dicom_pb2.DeleteDicomStoreRequest).name == store
    assert update.metadata["x-goog-request-params"] == f"dicom_store.name={store}"
    sent = update.parsed(dicom_pb2.UpdateDicomStoreRequest)
    assert (list(sent.update_mask.paths), dict(sent.dicom_store.labels)) == (["labels"], {"k": "v"})
    destination = export.parsed(dicom_pb2.ExportDicomDataRequest).bigquery_destination
    assert (destination.table_uri, destination.write_disposition) == (
        "bq://p.d.t",
        dicom_pb2.BigQueryDestination.WRITE_TRUNCATE,
    )
    assert cancel.method == OPERATIONS + "CancelOperation"
    assert cancel.parsed(operations_pb2.CancelOperationRequest).name == (
        "projects/p/locations/l/datasets/d/operations/7"
    )


def test_create_dataset_sends_parent_and_id_as_google_names_them() -> None:
    def answer(method: str) -> operations_pb2.Operation:
        operation = _operation(done=True)
        operation.response.Pack(dataset_pb2.Dataset(name="projects/p/locations/l/datasets/d"))
        return operation

    with recording_server(answer) as (recorder, port):
        connection = Connection(grpc_target=f"127.0.0.1:{port}")
        with ManagementClient(connection, project="p", location="l") as client:
            created = client.create_dataset("d", time_zone="UTC")
    (request,) = recorder.received
    assert request.method == DATASET_SERVICE + "CreateDataset"
    sent = request.parsed(dataset_pb2.CreateDatasetRequest)
    assert (sent.parent, sent.dataset_id, sent.dataset.time_zone) == (
        "projects/p/locations/l",
        "d",
        "UTC",
    )
    assert "authorization" not in request.metadata
    assert created.name == "projects/p/locations/l/datasets/d"


def test_the_bearer_token_goes_as_call_credentials_over_tls(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    with recording_server(tls=(cert.read_bytes(), key.read_bytes())) as (recorder, port):
        connection = Connection(
            grpc_target=f"localhost:{port}",
            token="ya29.token",
            tls=True,
            root_certificates=cert.read_bytes(),
        )
        assert connection.grpc_metadata() == ()  # not as plain metadata: credentials add it
        with ManagementClient(connection, project="p", location="l", dataset="d") as client:
            client.delete_dataset()
    assert recorder.last().metadata["authorization"] == "Bearer ya29.token"


def test_wait_gives_up_after_its_timeout() -> None:
    with recording_server(lambda method: _operation(done=False)) as (recorder, port):
        connection = Connection(grpc_target=f"127.0.0.1:{port}")
        with (
            ManagementClient(connection) as client,
            pytest.raises(ClientError, match=r"still running after 0\.5 s") as failed,
        ):
            client.wait(_operation(done=False), timeout=0.5)
    assert failed.value.exit_code is ExitCode.UNAVAILABLE
    assert all(r.method == OPERATIONS + "GetOperation" for r in recorder.received)


@pytest.mark.parametrize(
    ("code", "failure", "exit_code"),
    [
        (grpc.StatusCode.CANCELLED.value[0], 0, ExitCode.CANCELLED),
        (grpc.StatusCode.CANCELLED.value[0], 3, ExitCode.CANCELLED),
        (grpc.StatusCode.NOT_FOUND.value[0], 2, ExitCode.FAILED),
        (grpc.StatusCode.PERMISSION_DENIED.value[0], 0, ExitCode.DENIED),
    ],
)
async def test_an_operation_error_exits_by_its_kind_or_failed_when_items_failed(
    code: int, failure: int, exit_code: ExitCode
) -> None:
    ended = _operation(done=True, code=code, failure=failure)
    with recording_server(lambda method: ended) as (_, port):
        connection = Connection(grpc_target=f"127.0.0.1:{port}")
        async with AsyncManagementClient(connection) as client:
            with pytest.raises(OperationError) as failed:
                await client.wait(ended.name)
    assert failed.value.exit_code is exit_code
