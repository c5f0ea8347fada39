"""`dicomstore serve` as a process: readiness, restart, crash, graceful shutdown, logs, flags, TLS.

Each test starts its own server on ephemeral ports over its own data directory. With
`DICOMSTORE_TEST_TARGET=host:grpcport,httpport` the tests that need no process control run against
that server instead, and the others are skipped.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import ipaddress
import queue
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.cloud.healthcare.v1.dataset import dataset_pb2, dataset_pb2_grpc
from google.cloud.healthcare.v1.dicom import dicom_pb2, dicom_pb2_grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import field_mask_pb2, message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from tests.e2e.operations import wait_done
from tests.e2e.server import (
    ServerProcess,
    Target,
    external_target,
    launch,
    start_server,
)
from tests.unit.dicom.dicomfiles import data_file

from dicomstore.catalog.sqlite import SqliteCatalog
from dicomstore.config import Settings
from dicomstore.core.model import Dataset, Job, Operation
from dicomstore.core.names import DatasetName, LocationName, OperationName

LOCATION = "projects/e2e-project/locations/us-central1"
GET_STORE = "/google.cloud.healthcare.v1.dicom.DicomService/GetDicomStore"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
CALL_TIMEOUT = 10.0

needs_process = pytest.mark.skipif(
    external_target() is not None,
    reason="DICOMSTORE_TEST_TARGET is set: this test starts, signals or restarts its own server",
)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


# --- helpers ---------------------------------------------------------------------------------


def stubs(
    channel: grpc.Channel,
) -> tuple[
    dataset_pb2_grpc.DatasetServiceStub,
    dicom_pb2_grpc.DicomServiceStub,
    operations_pb2_grpc.OperationsStub,
]:
    return (
        dataset_pb2_grpc.DatasetServiceStub(channel),
        dicom_pb2_grpc.DicomServiceStub(channel),
        operations_pb2_grpc.OperationsStub(channel),
    )


def health_check(channel: grpc.Channel, timeout: float = CALL_TIMEOUT) -> int:
    response = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=timeout
    )
    status: int = response.status
    return status


def create_world(channel: grpc.Channel) -> dict[str, Any]:
    """Two datasets, stores with every kind of configuration, and a finished import operation."""
    datasets, dicom, _ = stubs(channel)
    names: dict[str, Any] = {"datasets": [], "stores": [], "operations": []}
    for dataset_id, time_zone in (("first", "Europe/Paris"), ("second", "")):
        created = datasets.CreateDataset(
            dataset_pb2.CreateDatasetRequest(
                parent=LOCATION,
                dataset_id=dataset_id,
                dataset=dataset_pb2.Dataset(time_zone=time_zone),
            ),
            timeout=CALL_TIMEOUT,
        )
        names["datasets"].append(f"{LOCATION}/datasets/{dataset_id}")
        names["operations"].append(created.name)
    first = names["datasets"][0]
    stores = {
        "labelled": dicom_pb2.DicomStore(labels={"team": "radiology", "tier": ""}),
        "notified": dicom_pb2.DicomStore(
            notification_config=dicom_pb2.NotificationConfig(
                pubsub_topic="projects/e2e-project/topics/legacy", send_for_bulk_import=True
            ),
            notification_configs=[
                dicom_pb2.DicomNotificationConfig(pubsub_topic="projects/e2e-project/topics/new")
            ],
        ),
        "streamed": dicom_pb2.DicomStore(
            stream_configs=[
                dicom_pb2.StreamConfig(
                    bigquery_destination=dicom_pb2.BigQueryDestination(
                        table_uri="bq://e2e-project.dicom.instances",
                        force=True,
                        write_disposition=dicom_pb2.BigQueryDestination.WRITE_APPEND,
                        include_source_store=True,
                        schema_flattened=dicom_pb2.SchemaFlattened(),
                    )
                ),
                dicom_pb2.StreamConfig(
                    bigquery_destination=dicom_pb2.BigQueryDestination(
                        table_uri="bq://e2e-project.dicom.json",
                        schema_json=dicom_pb2.SchemaJSON(),
                    )
                ),
            ]
        ),
        "plain": dicom_pb2.DicomStore(),
    }
    for store_id, store in stores.items():
        dicom.CreateDicomStore(
            dicom_pb2.CreateDicomStoreRequest(
                parent=first, dicom_store_id=store_id, dicom_store=store
            ),
            timeout=CALL_TIMEOUT,
        )
        names["stores"].append(f"{first}/dicomStores/{store_id}")
    imported = dicom.ImportDicomData(
        dicom_pb2.ImportDicomDataRequest(
            name=names["stores"][0],
            gcs_source=dicom_pb2.GcsSource(uri="gs://e2e-bucket/dir/**.dcm"),
        ),
        timeout=CALL_TIMEOUT,
    )
    names["operations"].append(imported.name)
    names["import"] = imported.name
    return names


def snapshot(channel: grpc.Channel, names: dict[str, Any]) -> dict[str, message.Message]:
    """Every resource of `names` as the server answers Get and List for it."""
    datasets, dicom, operations = stubs(channel)
    seen: dict[str, message.Message] = {
        "ListDatasets": datasets.ListDatasets(
            dataset_pb2.ListDatasetsRequest(parent=LOCATION), timeout=CALL_TIMEOUT
        )
    }
    for name in names["datasets"]:
        seen[f"GetDataset {name}"] = datasets.GetDataset(
            dataset_pb2.GetDatasetRequest(name=name), timeout=CALL_TIMEOUT
        )
        seen[f"ListDicomStores {name}"] = dicom.ListDicomStores(
            dicom_pb2.ListDicomStoresRequest(parent=name), timeout=CALL_TIMEOUT
        )
        seen[f"ListOperations {name}"] = operations.ListOperations(
            operations_pb2.ListOperationsRequest(name=f"{name}/operations"), timeout=CALL_TIMEOUT
        )
    for name in names["stores"]:
        seen[f"GetDicomStore {name}"] = dicom.GetDicomStore(
            dicom_pb2.GetDicomStoreRequest(name=name), timeout=CALL_TIMEOUT
        )
    for name in names["operations"]:
        seen[f"GetOperation {name}"] = operations.GetOperation(
            operations_pb2.GetOperationRequest(name=name), timeout=CALL_TIMEOUT
        )
    return seen


def assert_same(before: dict[str, message.Message], after: dict[str, message.Message]) -> None:
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert after[key] == value, f"{key} changed across the restart"


def write_unfinished_operations(data_dir: Path, kinds: dict[str, Job]) -> dict[str, str]:
    """Put unfinished operations straight into the catalog, as a crash mid-job leaves them."""
    dataset = DatasetName(LocationName("e2e-project", "us-central1"), "interrupted")

    async def write() -> dict[str, str]:
        catalog = SqliteCatalog(Settings(data_dir=data_dir).catalog_path)
        await catalog.open()
        try:
            await catalog.create_dataset(Dataset(dataset))
            names = {}
            for index, (label, job) in enumerate(kinds.items()):
                name = OperationName(dataset, f"{1_000_000_000_000_000_000 + index:019d}")
                await catalog.create_operation(
                    Operation(
                        name=name,
                        api_method_name="google.cloud.healthcare.v1.dicom.DicomService.Test",
                        create_time=datetime.datetime.now(datetime.UTC),
                        job=job,
                    )
                )
                names[label] = str(name)
            return names
        finally:
            await catalog.close()

    return asyncio.run(write())


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1 and its key, as PEM files."""
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        subprocess.run(
            [
                shutil.which("openssl") or "openssl",
                *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
                *("-nodes", "-days", "1", "-subj", "/CN=localhost"),
                *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
                *("-keyout", str(key_path), "-out", str(cert_path)),
            ],
            check=True,
            capture_output=True,
        )
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Target]:
    """A running server: the external target if one is named, else a fresh process."""
    target = external_target()
    if target is not None:
        yield target
        return
    with start_server(tmp_path / "data") as server:
        yield server.target


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with start_server(tmp_path / "data") as process:
        yield process


# --- ready -----------------------------------------------------------------------------------


def test_ready_health_check_answers_serving(live: Target) -> None:
    with grpc.insecure_channel(live.grpc_address) as channel:
        assert health_check(channel) == SERVING


def test_ready_healthz_answers_200(live: Target) -> None:
    response = httpx.get(f"{live.http_url}/healthz", timeout=CALL_TIMEOUT)
    assert response.status_code == 200


# --- restart and crash -----------------------------------------------------------------------


@needs_process
def test_restart_after_sigterm_answers_identically(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with start_server(data_dir) as first, grpc.insecure_channel(first.grpc_address) as channel:
        names = create_world(channel)
        imported = wait_done(stubs(channel)[2], names["import"])
        assert imported.done
        assert imported.error.code == grpc.StatusCode.NOT_FOUND.value[0]  # no such bucket
        before = snapshot(channel, names)
        assert first.terminate() == 0
    with start_server(data_dir) as second, grpc.insecure_channel(second.grpc_address) as channel:
        assert_same(before, snapshot(channel, names))


@needs_process
def test_restart_after_kill_keeps_acknowledged_writes(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with start_server(data_dir) as first, grpc.insecure_channel(first.grpc_address) as channel:
        names = create_world(channel)
        datasets, dicom, _ = stubs(channel)
        late = dicom.UpdateDicomStore(
            dicom_pb2.UpdateDicomStoreRequest(
                dicom_store=dicom_pb2.DicomStore(name=names["stores"][3], labels={"late": "yes"}),
                update_mask=field_mask_pb2.FieldMask(paths=["labels"]),
            ),
            timeout=CALL_TIMEOUT,
        )
        gone_store, gone_dataset = names["stores"].pop(2), names["datasets"].pop(1)
        dicom.DeleteDicomStore(
            dicom_pb2.DeleteDicomStoreRequest(name=gone_store), timeout=CALL_TIMEOUT
        )
        datasets.DeleteDataset(
            dataset_pb2.DeleteDatasetRequest(name=gone_dataset), timeout=CALL_TIMEOUT
        )
        names["operations"].pop(1)  # the deleted dataset's CreateDataset operation
        before = snapshot(channel, names)
        assert first.kill() == -signal.SIGKILL
    with start_server(data_dir) as second, grpc.insecure_channel(second.grpc_address) as channel:
        after = snapshot(channel, names)
        # The import may have been interrupted by the kill: it is resumed or already finished.
        imported = wait_done(stubs(channel)[2], names["import"])
        datasets, dicom, _ = stubs(channel)
        for get in (
            lambda: dicom.GetDicomStore(dicom_pb2.GetDicomStoreRequest(name=gone_store), timeout=9),
            lambda: datasets.GetDataset(
                dataset_pb2.GetDatasetRequest(name=gone_dataset), timeout=9
            ),
        ):
            with pytest.raises(grpc.RpcError) as deleted:
                get()
            assert deleted.value.code() == grpc.StatusCode.NOT_FOUND
    assert imported.error.code == grpc.StatusCode.NOT_FOUND.value[0]  # no such bucket
    assert after[f"GetDicomStore {late.name}"] == late
    unchanged = [k for k in before if not k.startswith(("ListOperations", "GetOperation"))]
    for key in unchanged:
        assert after[key] == before[key], f"{key} changed across the crash"
    for key in before:
        if key.startswith("ListOperations"):
            listed = {o.name for o in after[key].operations}  # type: ignore[attr-defined]
            assert listed == {o.name for o in before[key].operations}  # type: ignore[attr-defined]


# --- graceful shutdown -----------------------------------------------------------------------

REFLECTION_INFO = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
LIST_SERVICES = reflection_pb2.ServerReflectionRequest(list_services="")


class OpenStream:
    """A reflection stream kept open: an in-flight call for as long as the test wants."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._requests: queue.Queue[reflection_pb2.ServerReflectionRequest | None] = queue.Queue()
        call = channel.stream_stream(
            REFLECTION_INFO,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        self.responses = call(iter(self._requests.get, None), timeout=CALL_TIMEOUT)

    def ask(self) -> reflection_pb2.ServerReflectionResponse:
        self._requests.put(LIST_SERVICES)
        return next(self.responses)

    def close(self) -> grpc.StatusCode:
        self._requests.put(None)
        for _ in self.responses:
            pass
        return self.responses.code()


@pytest.fixture
def draining(tmp_path: Path) -> Iterator[tuple[ServerProcess, OpenStream]]:
    """A server that got SIGTERM while a stream was open: it drains until the stream ends."""
    with (
        start_server(tmp_path / "data", "--shutdown-grace", "8") as server,
        grpc.insecure_channel(server.grpc_address) as channel,
    ):
        stream = OpenStream(channel)
        assert stream.ask().list_services_response.service
        server.signal(signal.SIGTERM)
        server.wait_for_records(lambda r: r.get("message") == "shutting down")
        try:
            yield server, stream
        finally:
            stream.close()


def wait_for_status(url: str, status: int, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        code = httpx.get(url, timeout=CALL_TIMEOUT).status_code
        if code == status or time.monotonic() > deadline:
            return code
        time.sleep(0.02)


@needs_process
def test_sigterm_turns_health_watch_not_serving(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT
        )
        assert next(watch).status == SERVING
        server.signal(signal.SIGTERM)
        assert next(watch).status == NOT_SERVING
        watch.cancel()
    assert server.wait() == 0


@needs_process
def test_sigterm_turns_healthz_503_while_draining(
    draining: tuple[ServerProcess, OpenStream],
) -> None:
    server, _ = draining
    assert wait_for_status(f"{server.http_url}/healthz", 503) == 503


@needs_process
def test_sigterm_refuses_new_calls_while_draining(
    draining: tuple[ServerProcess, OpenStream],
) -> None:
    server, _ = draining
    assert wait_for_status(f"{server.http_url}/healthz", 503) == 503
    with grpc.insecure_channel(server.grpc_address) as channel:
        assert health_check(channel) == NOT_SERVING
        _, dicom, _ = stubs(channel)
        with pytest.raises(grpc.RpcError) as refused:
            dicom.GetDicomStore(
                dicom_pb2.GetDicomStoreRequest(name=f"{LOCATION}/datasets/d/dicomStores/s"),
                timeout=CALL_TIMEOUT,
            )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in (refused.value.details() or "")


@needs_process
def test_sigterm_lets_an_open_stream_finish_then_exits_zero(
    draining: tuple[ServerProcess, OpenStream],
) -> None:
    server, stream = draining
    assert stream.ask().list_services_response.service
    assert server.process.poll() is None
    assert stream.close() == grpc.StatusCode.OK
    assert server.wait() == 0


@dataclass(frozen=True)
class Outcome:
    request_id: str
    call: Any  # a finished grpc future
    finished_after_signal: float
    """Seconds between SIGTERM and the call's end (negative: it ended before)."""
    logged_code: str | None
    """The code of the call's access-log line; None if no handler ever saw the call."""


@pytest.fixture(scope="module")
def sigterm_under_load(tmp_path_factory: pytest.TempPathFactory) -> list[Outcome]:
    """300 concurrent ListDicomStores over 1000 stores; SIGTERM once the first one finished."""
    dataset = f"{LOCATION}/datasets/many"
    finished: dict[str, float] = {}

    def ended(request_id: str, _: object) -> None:
        finished.setdefault(request_id, time.monotonic())

    with (
        start_server(tmp_path_factory.mktemp("load") / "data") as server,
        grpc.insecure_channel(server.grpc_address) as channel,
    ):
        datasets, dicom, _ = stubs(channel)
        datasets.CreateDataset(
            dataset_pb2.CreateDatasetRequest(parent=LOCATION, dataset_id="many"),
            timeout=CALL_TIMEOUT,
        )
        created = [
            dicom.CreateDicomStore.future(
                dicom_pb2.CreateDicomStoreRequest(parent=dataset, dicom_store_id=f"s{i:04d}"),
                timeout=CALL_TIMEOUT,
            )
            for i in range(1000)
        ]
        for creating in created:
            creating.result()
        request = dicom_pb2.ListDicomStoresRequest(parent=dataset, page_size=1000)
        sent = []
        for _ in range(300):
            request_id = uuid.uuid4().hex[:16]
            future = dicom.ListDicomStores.future(
                request, timeout=30, metadata=(("x-request-id", request_id),)
            )
            future.add_done_callback(functools.partial(ended, request_id))
            sent.append((request_id, future))
        server.wait_for_records(lambda r: r.get("method", "").endswith("/ListDicomStores"))
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        for _, future in sent:
            future.exception()  # waits for the call's end
        deadline = time.monotonic() + CALL_TIMEOUT
        while len(finished) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.01)  # done callbacks run on grpc's thread, just after the futures end
        assert server.wait() == 0
    logged = {
        r["request_id"]: r["code"]
        for r in server.records()
        if r.get("method", "").endswith("/ListDicomStores")
    }
    return [
        Outcome(request_id, future, finished[request_id] - signalled, logged.get(request_id))
        for request_id, future in sent
    ]


@needs_process
def test_sigterm_completes_calls_already_dispatched(sigterm_under_load: list[Outcome]) -> None:
    dispatched = [o for o in sigterm_under_load if o.logged_code == "OK"]
    for outcome in dispatched:
        assert outcome.call.code() == grpc.StatusCode.OK
        assert len(outcome.call.result().dicom_stores) == 1000
    refused = [o for o in sigterm_under_load if o.logged_code == "UNAVAILABLE"]
    for outcome in refused:
        assert outcome.call.code() == grpc.StatusCode.UNAVAILABLE
    assert len(dispatched) + len(refused) == len(sigterm_under_load)
    assert [o for o in dispatched if o.finished_after_signal > 0], (
        "no call was still running when SIGTERM arrived"
    )


@needs_process
def test_sigterm_cancels_no_received_call(sigterm_under_load: list[Outcome]) -> None:
    codes = Counter(o.call.code() for o in sigterm_under_load)
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes


@needs_process
def test_sigterm_exits_zero_and_later_calls_are_unavailable(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_address) as channel:
        assert health_check(channel) == SERVING
        assert server.terminate() == 0
        with pytest.raises(grpc.RpcError) as refused:
            health_check(channel)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert [r for r in server.records() if r.get("message") == "stopped"]


# --- access log ------------------------------------------------------------------------------


@needs_process
def test_access_log_has_one_json_line_per_call(server: ServerProcess) -> None:
    missing = f"{LOCATION}/datasets/nothing/dicomStores/missing"
    with grpc.insecure_channel(server.grpc_address) as channel:
        dicom = dicom_pb2_grpc.DicomServiceStub(channel)
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as failed:
                dicom.GetDicomStore(
                    dicom_pb2.GetDicomStoreRequest(name=missing), timeout=CALL_TIMEOUT
                )
            assert failed.value.code() == grpc.StatusCode.NOT_FOUND
        request_id = uuid.uuid4().hex[:16]
        health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""),
            timeout=CALL_TIMEOUT,
            metadata=[("x-request-id", request_id)],
        )
    # Lines are written in order: once the last call's line is there, so are the others.
    last = server.wait_for_records(lambda r: r.get("request_id") == request_id)
    assert len(last) == 1
    assert last[0]["method"] == HEALTH_CHECK
    assert last[0]["code"] == "OK"
    lines = [r for r in server.records() if r.get("method") == GET_STORE]
    assert len(lines) == 3
    for line in lines:
        assert line["message"] == "rpc"
        assert line["code"] == "NOT_FOUND"
        assert isinstance(line["duration_ms"], int | float)
        assert line["duration_ms"] >= 0
    assert len({line["request_id"] for line in lines}) == 3


# --- settings: env twins and invalid values --------------------------------------------------


@needs_process
def test_env_data_dir_is_used_without_flag(tmp_path: Path) -> None:
    env_dir = tmp_path / "from-env"
    with start_server(None, env={"DICOMSTORE_DATA_DIR": str(env_dir)}, cwd=tmp_path) as server:
        serving = server.wait_for_records(lambda r: r.get("message") == "serving")
        assert serving[0]["data_dir"] == str(env_dir)
        assert (env_dir / "catalog.sqlite").exists()
        assert not (tmp_path / "data").exists()


@needs_process
def test_flag_data_dir_wins_over_env(tmp_path: Path) -> None:
    env_dir, flag_dir = tmp_path / "from-env", tmp_path / "from-flag"
    with start_server(flag_dir, env={"DICOMSTORE_DATA_DIR": str(env_dir)}) as server:
        serving = server.wait_for_records(lambda r: r.get("message") == "serving")
        assert serving[0]["data_dir"] == str(flag_dir)
        assert (flag_dir / "catalog.sqlite").exists()
        assert not env_dir.exists()


@needs_process
def test_env_log_format_text_is_used(tmp_path: Path) -> None:
    with start_server(tmp_path / "data", env={"DICOMSTORE_LOG_FORMAT": "text"}) as server:
        assert server.records() == []
        assert any("dicomstore: serving" in line for line in server.lines)


@needs_process
def test_flag_log_format_wins_over_env(tmp_path: Path) -> None:
    with start_server(
        tmp_path / "data", "--log-format", "json", env={"DICOMSTORE_LOG_FORMAT": "text"}
    ) as server:
        assert [r for r in server.records() if r.get("message") == "serving"]


@needs_process
def test_flag_port_wins_over_invalid_env(tmp_path: Path) -> None:
    env = {"DICOMSTORE_GRPC_PORT": "abc", "DICOMSTORE_HTTP_PORT": "abc"}
    with (
        start_server(tmp_path / "data", env=env) as server,
        grpc.insecure_channel(server.grpc_address) as channel,
    ):
        assert health_check(channel) == SERVING


@needs_process
def test_env_shutdown_grace_is_used(tmp_path: Path) -> None:
    with start_server(tmp_path / "data", env={"DICOMSTORE_SHUTDOWN_GRACE": "2.5"}) as server:
        assert server.terminate() == 0
        shutting = [r for r in server.records() if r.get("message") == "shutting down"]
        assert shutting[0]["grace_seconds"] == 2.5


# (name of the setting's flag, invalid value) and, when the bug is known, why it still fails.
INVALID_VALUES = [
    pytest.param("--grpc-port", "abc", id="grpc-port-abc"),
    pytest.param("--http-port", "8o8o", id="http-port-8o8o"),
    pytest.param("--dicomweb-mode", "nope", id="dicomweb-mode-nope"),
    pytest.param("--log-level", "loud", id="log-level-loud"),
    pytest.param("--log-format", "xml", id="log-format-xml"),
    pytest.param("--shutdown-grace", "soon", id="shutdown-grace-soon"),
    pytest.param("--operation-workers", "many", id="operation-workers-many"),
]

OUT_OF_RANGE = [
    pytest.param("--grpc-port", "70000", id="grpc-port-70000"),
    pytest.param("--grpc-port", "-1", id="grpc-port-negative"),
    pytest.param("--http-port", "70000", id="http-port-70000"),
    pytest.param("--operation-workers", "0", id="operation-workers-0"),
    pytest.param("--operation-workers", "-3", id="operation-workers-negative"),
    pytest.param("--shutdown-grace", "nan", id="shutdown-grace-nan"),
    pytest.param("--shutdown-grace", "-1", id="shutdown-grace-negative"),
]


def assert_refused(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, names: str
) -> None:
    """The server exits non-zero naming `names`, without serving or touching its data dir."""
    data_dir = tmp_path / "data"
    # A port's env twin only counts without the port flags, which would win over it.
    ports = not any(name.endswith("_PORT") for name in env or {})
    with launch(data_dir, *args, env=env, ports=ports) as process:
        if process.started():
            pytest.fail(f"started serving on gRPC port {process.grpc_port} with {args or env}")
        code = process.wait()
    assert code != 0
    assert names in process.stderr(), process.stderr()
    assert "Traceback" not in process.stderr()
    assert not data_dir.exists(), "the data directory was opened before the flag was checked"


@needs_process
@pytest.mark.parametrize(("flag", "value"), INVALID_VALUES + OUT_OF_RANGE)
def test_invalid_flag_value_exits_naming_flag(tmp_path: Path, flag: str, value: str) -> None:
    assert_refused(tmp_path, flag, value, names=flag)


@needs_process
@pytest.mark.parametrize(("flag", "value"), INVALID_VALUES)
def test_invalid_env_value_exits_naming_variable(tmp_path: Path, flag: str, value: str) -> None:
    variable = "DICOMSTORE_" + flag.removeprefix("--").replace("-", "_").upper()
    assert_refused(tmp_path, env={variable: value}, names=variable)


@needs_process
def test_port_in_use_exits_naming_address(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with launch(
            tmp_path / "data", "--grpc-port", str(port), "--http-port", "0", ports=False
        ) as process:
            assert not process.started()
            assert process.wait() == 1
    assert f"cannot start: cannot bind gRPC to 127.0.0.1:{port}" in process.stderr()
    assert "Traceback" not in process.stderr()


@needs_process
def test_tls_cert_without_key_exits_naming_both(tmp_path: Path) -> None:
    cert, _ = self_signed_certificate(tmp_path)
    assert_refused(tmp_path, "--tls-cert", str(cert), names="--tls-key")


# --- interrupted operations ------------------------------------------------------------------


@needs_process
def test_interrupted_operation_of_unknown_kind_ends_aborted(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    names = write_unfinished_operations(data_dir, {"unknown": Job("defragment_everything")})
    with start_server(data_dir) as server, grpc.insecure_channel(server.grpc_address) as channel:
        operation = stubs(channel)[2].GetOperation(
            operations_pb2.GetOperationRequest(name=names["unknown"]), timeout=CALL_TIMEOUT
        )
    assert operation.done
    assert operation.error.code == grpc.StatusCode.ABORTED.value[0]
    assert operation.error.message


@needs_process
def test_interrupted_import_is_rerun_and_ends_with_its_own_error(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = f"{LOCATION}/datasets/interrupted/dicomStores/gone"
    job = Job(
        "import_dicom_data", {"store": store, "uri": "gs://e2e-bucket/a/*.dcm", "storage_class": ""}
    )
    names = write_unfinished_operations(data_dir, {"import": job})
    (data_dir / "gcs" / "e2e-bucket" / "a").mkdir(parents=True)
    (data_dir / "gcs" / "e2e-bucket" / "a" / "1.dcm").write_bytes(
        data_file("CT_small.dcm").read_bytes()
    )
    with start_server(data_dir) as server, grpc.insecure_channel(server.grpc_address) as channel:
        operation = wait_done(stubs(channel)[2], names["import"])
    assert operation.done
    assert operation.error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "dicomStores/gone" in operation.error.message


# --- TLS -------------------------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, bytes]]:
    cert, key = self_signed_certificate(tmp_path)
    with start_server(tmp_path / "data", "--tls-cert", str(cert), "--tls-key", str(key)) as server:
        yield server, cert.read_bytes()


@needs_process
def test_tls_channel_with_the_root_certificate_works(
    tls_server: tuple[ServerProcess, bytes],
) -> None:
    server, root = tls_server
    credentials = grpc.ssl_channel_credentials(root_certificates=root)
    with grpc.secure_channel(server.grpc_address, credentials) as channel:
        assert health_check(channel) == SERVING


@needs_process
def test_tls_insecure_channel_fails(tls_server: tuple[ServerProcess, bytes]) -> None:
    server, _ = tls_server
    with (
        grpc.insecure_channel(server.grpc_address) as channel,
        pytest.raises(grpc.RpcError) as failed,
    ):
        health_check(channel, timeout=5)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE


@needs_process
def test_tls_channel_with_another_root_fails(
    tls_server: tuple[ServerProcess, bytes], tmp_path: Path
) -> None:
    server, _ = tls_server
    other = tmp_path / "other"
    other.mkdir()
    other_cert, _ = self_signed_certificate(other)
    credentials = grpc.ssl_channel_credentials(root_certificates=other_cert.read_bytes())
    with (
        grpc.secure_channel(server.grpc_address, credentials) as channel,
        pytest.raises(grpc.RpcError) as failed,
    ):
        health_check(channel, timeout=5)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
