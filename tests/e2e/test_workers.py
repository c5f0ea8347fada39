"""`dicomstore serve --workers N`: a supervisor and N processes sharing both ports and one data
directory. Requests land on every process; what one process changes every other sees at once;
a worker killed is restarted while the others keep answering; its long-running operation is
finished by another; SIGTERM stops them all and exits 0.

Which process answered a request is read from the access log, whose lines name their pid with
`--workers`; each request goes on a fresh connection, which the kernel hands to any worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.cloud.healthcare.v1.dicom import dicom_pb2, dicom_pb2_grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests.e2e.operations import wait_done
from tests.e2e.server import ServerProcess, external_target, launch, start_server
from tests.e2e.test_replicas import MULTIPART, paused_multipart
from tests.e2e.test_replicas import STUDY as STUDY_UID
from tests.e2e.test_transfer_crash import OBJECTS, counter_of, fill_bucket, new_store
from tests.fake_gcs import create_bucket
from tests.unit.dicom.dicomfiles import data_file, new_instance, part10

pytestmark = pytest.mark.skipif(
    external_target() is not None,
    reason="DICOMSTORE_TEST_TARGET is set: these tests start and signal their own servers",
)

PARENT = "v1/projects/p/locations/l/datasets/d"
STORE = f"{PARENT}/dicomStores/s"
WEB = f"{STORE}/dicomWeb"
SERVING = health_pb2.HealthCheckResponse.SERVING
READY_TIMEOUT = 60.0  # three interpreters start on a busy machine


def workers(tmp_path: Path, count: str = "2", *flags: str) -> ServerProcess:
    return start_server(tmp_path / "data", "--workers", count, *flags, ready_timeout=READY_TIMEOUT)


def worker_pids(server: ServerProcess) -> list[int]:
    (serving,) = server.wait_for_records(lambda r: r.get("message") == "serving")
    pids: list[int] = serving["pids"]
    return pids


def tagged() -> dict[str, str]:
    return {"x-request-id": uuid.uuid4().hex}


def answered_by(server: ServerProcess, request_ids: list[str]) -> list[int]:
    """The pid that logged each request, in order."""
    wanted = set(request_ids)
    lines = server.wait_for_records(
        lambda r: r.get("message") == "rpc" and r.get("request_id") in wanted, len(wanted)
    )
    by_id = {line["request_id"]: line["pid"] for line in lines}
    return [by_id[request_id] for request_id in request_ids]


def fresh(method: str, url: str, **kwargs: Any) -> tuple[httpx.Response, str]:
    """One request on a connection of its own (closed after it): the kernel picks a worker."""
    headers = tagged() | kwargs.pop("headers", {})
    with httpx.Client(timeout=30) as client:
        return client.request(method, url, headers=headers, **kwargs), headers["x-request-id"]


def create_store(base: str) -> None:
    httpx.post(f"{base}/v1/projects/p/locations/l/datasets?datasetId=d").raise_for_status()
    httpx.post(f"{base}/{PARENT}/dicomStores?dicomStoreId=s").raise_for_status()


def instance(n: int) -> bytes:
    return part10(
        new_instance(
            StudyInstanceUID="1.2.3", SeriesInstanceUID="1.2.3.4", SOPInstanceUID=f"1.2.3.4.{n}"
        )
    )


def stow(base: str, n: int) -> tuple[httpx.Response, str]:
    return fresh(
        "POST",
        f"{base}/{WEB}/studies",
        content=instance(n),
        headers={"Content-Type": "application/dicom", "Accept": "application/dicom+json"},
    )


def descendants(root: int) -> set[int]:
    """Every process below `root`, from /proc."""
    children: dict[int, set[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, set()).add(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# A connection the kernel gave to a worker as it was being killed is reset (UNAVAILABLE): a
# client retries it, as gRPC's own retry policy does.
RETRY_UNAVAILABLE = [
    (
        "grpc.service_config",
        json.dumps(
            {
                "methodConfig": [
                    {
                        "name": [{}],
                        "retryPolicy": {
                            "maxAttempts": 5,
                            "initialBackoff": "0.2s",
                            "maxBackoff": "2s",
                            "backoffMultiplier": 2,
                            "retryableStatusCodes": ["UNAVAILABLE"],
                        },
                    }
                ]
            }
        ),
    )
]


def kill(pid: int) -> None:
    """SIGKILL a worker and wait until it is gone: connections the kernel queued on its socket
    meanwhile are reset (a client retries them), later ones go to the others."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_two_workers_serve_both_transports_and_stow_lands_on_both(tmp_path: Path) -> None:
    with workers(tmp_path) as server:
        pids = worker_pids(server)
        assert len(set(pids)) == 2 and server.process.pid not in pids
        with grpc.insecure_channel(server.grpc_address) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            assert check(health_pb2.HealthCheckRequest(service=""), timeout=10).status == SERVING
        create_store(server.http_url)
        ids = []
        for n in range(40):
            response, request_id = stow(server.http_url, n)
            assert response.status_code == 200, response.text
            ids.append(request_id)
        assert set(answered_by(server, ids)) == set(pids)
        found = httpx.get(f"{server.http_url}/{WEB}/studies/1.2.3/instances", timeout=30)
        assert len(found.json()) == 40
        grpc_ids = []
        for _ in range(20):  # gRPC on fresh channels reaches both processes too
            with grpc.insecure_channel(server.grpc_address) as channel:
                request_id = uuid.uuid4().hex
                metrics = dicom_pb2_grpc.DicomServiceStub(channel).GetDicomStoreMetrics(
                    dicom_pb2.GetDicomStoreMetricsRequest(
                        name=STORE.removeprefix("v1/"),
                    ),
                    metadata=(("x-request-id", request_id),),
                    timeout=10,
                )
                assert metrics.instance_count == 40
                grpc_ids.append(request_id)
        assert set(answered_by(server, grpc_ids)) == set(pids)


def test_change_through_one_process_is_seen_at_once_through_the_others(tmp_path: Path) -> None:
    with workers(tmp_path) as server:
        pids = worker_pids(server)
        base = server.http_url
        create_store(base)
        listed = [fresh("GET", f"{base}/{PARENT}/dicomStores") for _ in range(16)]
        assert all([s["name"] for s in r.json()["dicomStores"]] == [STORE[3:]] for r, _ in listed)
        assert set(answered_by(server, [i for _, i in listed])) == set(pids)
        stored = [stow(base, n) for n in range(10)]  # both processes have used the store
        assert all(r.status_code == 200 for r, _ in stored)
        deleted, _ = fresh("DELETE", f"{base}/{STORE}")
        assert deleted.status_code == 200, deleted.text
        refused = [stow(base, 100 + n) for n in range(16)]
        assert [r.status_code for r, _ in refused] == [404] * 16
        assert set(answered_by(server, [i for _, i in refused])) == set(pids)
        # Re-created (a new internal key): every process stores into the new store.
        httpx.post(f"{base}/{PARENT}/dicomStores?dicomStoreId=s").raise_for_status()
        again = [stow(base, 200 + n) for n in range(16)]
        assert [r.status_code for r, _ in again] == [200] * 16
        assert set(answered_by(server, [i for _, i in again])) == set(pids)


def test_killed_worker_is_restarted_and_the_service_keeps_answering(tmp_path: Path) -> None:
    with workers(tmp_path) as server:
        first, second = worker_pids(server)
        create_store(server.http_url)
        kill(first)
        codes = []
        deadline = time.monotonic() + 30
        restarted: list[dict[str, Any]] = []
        n = 0
        while not restarted and time.monotonic() < deadline:
            response, _ = stow(server.http_url, n)
            codes.append(response.status_code)
            n += 1
            restarted = [
                r
                for r in server.records()
                if r.get("message") == "worker serving" and r["pid"] not in (first, second)
            ]
        assert restarted, server.stderr()[-3000:]
        assert set(codes) == {200}, codes
        assert server.wait_for_records(lambda r: r.get("message") == "worker died; restarting it")
        new = restarted[0]["pid"]
        ids = [stow(server.http_url, 1000 + n)[1] for n in range(30)]
        assert set(answered_by(server, ids)) == {second, new}
        assert server.process.poll() is None


def test_sigterm_stops_every_process_and_exits_0(tmp_path: Path) -> None:
    with workers(tmp_path) as server:
        pids = worker_pids(server)
        base = server.http_url
        create_store(base)
        stored = httpx.post(
            f"{base}/{WEB}/studies",
            content=data_file("CT_small.dcm").read_bytes(),
            headers={"Content-Type": "application/dicom", "Accept": "application/dicom+json"},
            timeout=30,
        )
        assert stored.status_code == 200, stored.text
        url = stored.json()["00081199"]["Value"][0]["00081190"]["Value"][0]
        ids = []
        for _ in range(16):  # pixel work in both processes: each starts its pool
            response, request_id = fresh("GET", f"{url}/rendered", headers={"Accept": "image/png"})
            assert response.status_code == 200
            ids.append(request_id)
        assert set(answered_by(server, ids)) == set(pids)
        everyone = descendants(server.process.pid)
        assert len(everyone) > 2  # the workers and their pixel processes
        assert server.terminate() == 0
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in everyone) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in everyone if alive(pid)]
        assert server.wait_for_records(lambda r: r.get("message") == "stopped", count=3)


def import_objects(server: ServerProcess, store: str) -> tuple[str, int]:
    """Start importing the bucket's objects: the operation's name, and the pid that runs it
    (the process that took the call)."""
    request_id = uuid.uuid4().hex
    with grpc.insecure_channel(server.grpc_address) as channel:
        name = (
            dicom_pb2_grpc.DicomServiceStub(channel)
            .ImportDicomData(
                dicom_pb2.ImportDicomDataRequest(
                    name=store, gcs_source=dicom_pb2.GcsSource(uri="gs://crash-bucket/*.dcm")
                ),
                metadata=(("x-request-id", request_id),),
                timeout=10,
            )
            .name
        )
    (owner,) = answered_by(server, [request_id])
    return name, owner


@pytest.mark.timeout(240)
def test_import_of_a_killed_worker_is_finished_by_another(tmp_path: Path) -> None:
    fill_bucket(tmp_path / "data" / "gcs" / "crash-bucket")
    with workers(tmp_path) as server:
        with grpc.insecure_channel(server.grpc_address) as channel:
            store = new_store(channel)
        name, owner = import_objects(server, store)
        # Kill the process running the import once it is under way (asked of any process).
        while True:
            with grpc.insecure_channel(server.grpc_address) as channel:
                running = operations_pb2_grpc.OperationsStub(channel).GetOperation(
                    operations_pb2.GetOperationRequest(name=name), timeout=10
                )
            assert not running.done, "the import finished before it could be killed"
            if counter_of(running).counter.success > 0:
                break
        kill(owner)
        with grpc.insecure_channel(server.grpc_address, options=RETRY_UNAVAILABLE) as channel:
            done = wait_done(operations_pb2_grpc.OperationsStub(channel), name, timeout=120)
            assert done.done, "the operation was left running"
            assert not done.HasField("error"), done.error
            counter = counter_of(done).counter
            assert (counter.success, counter.failure) == (OBJECTS, 0)
            metrics = dicom_pb2_grpc.DicomServiceStub(channel).GetDicomStoreMetrics(
                dicom_pb2.GetDicomStoreMetricsRequest(name=store), timeout=10
            )
            assert metrics.instance_count == OBJECTS


def invisible_rows(data_dir: Path) -> dict[str, int]:
    """Owner -> rows of the instances recorded invisible (a multipart STOW-RS in progress)."""
    db = sqlite3.connect(f"file:{data_dir / 'catalog.sqlite'}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT owner, count(*) FROM instances WHERE state = 0 GROUP BY owner")
        return dict(rows.fetchall())
    finally:
        db.close()


def stow_many(base: str, body: Iterator[bytes] | bytes) -> httpx.Response:
    return httpx.post(
        f"{base}/{WEB}/studies",
        content=body,
        headers={"Content-Type": MULTIPART, "Accept": "application/dicom+json"},
        timeout=120,
    )


def test_leftovers_of_a_killed_worker_are_removed_while_the_others_serve(tmp_path: Path) -> None:
    count = 300
    with workers(tmp_path) as server:
        create_store(server.http_url)
        halfway, go = threading.Event(), threading.Event()

        def send() -> None:
            with contextlib.suppress(httpx.HTTPError):  # its worker is killed mid-request
                stow_many(server.http_url, paused_multipart(count, halfway, go))

        sender = threading.Thread(target=send)
        sender.start()
        try:
            assert halfway.wait(30)
            deadline = time.monotonic() + 30
            while not (staged := invisible_rows(tmp_path / "data")):
                assert time.monotonic() < deadline, "the first half was never recorded"
                time.sleep(0.1)
            (owner,) = staged
            kill(int(owner.split(":")[1]))  # owner ids hold their process's pid
        finally:
            go.set()
            sender.join(60)
        # Another worker finds it dead at its next sweep (every 30 s) and removes its rows,
        # which freed their UIDs: the same request, sent again, is stored whole.
        deadline = time.monotonic() + 60
        while invisible_rows(tmp_path / "data"):
            assert time.monotonic() < deadline, "the killed worker's rows were never removed"
            time.sleep(0.5)
        body = b"".join(paused_multipart(count, threading.Event(), go))  # `go` is set
        answer = stow_many(server.http_url, body)
        assert answer.status_code == 200, answer.text
        found = httpx.get(f"{server.http_url}/{WEB}/studies/{STUDY_UID}/instances", timeout=30)
        assert len(found.json()) == count


def test_workers_auto_starts_one_per_core(tmp_path: Path) -> None:
    with workers(tmp_path, "auto") as server:
        assert len(worker_pids(server)) == (os.cpu_count() or 1)


@pytest.mark.parametrize("value", ["0", "-2", "many", "1.5", "257"])
def test_bad_workers_value_is_refused(tmp_path: Path, value: str) -> None:
    with launch(tmp_path / "data", "--workers", value) as process:
        assert not process.started()
        assert process.wait() != 0
    assert "--workers" in process.stderr()
    assert "Traceback" not in process.stderr()
    assert not (tmp_path / "data").exists()


def test_workers_share_blobs_in_cloud_storage(tmp_path: Path, fake_gcs_url: str) -> None:
    bucket = f"blobs-{uuid.uuid4().hex[:12]}"
    create_bucket(fake_gcs_url, bucket)
    blobs = ("--blobs", f"gs://{bucket}/w", "--gcs-endpoint", fake_gcs_url)
    with workers(tmp_path, "2", *blobs) as server:
        pids = worker_pids(server)
        create_store(server.http_url)
        ids = []
        for n in range(30):
            response, request_id = stow(server.http_url, n)
            assert response.status_code == 200, response.text
            ids.append(request_id)
        assert set(answered_by(server, ids)) == set(pids)
        readers = []
        for n in range(30):  # each read from the bucket by whichever process takes it
            response, request_id = fresh(
                "GET",
                f"{server.http_url}/{WEB}/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.{n}",
                headers={"Accept": "application/dicom; transfer-syntax=*"},
            )
            assert response.status_code == 200, response.text
            assert response.content == instance(n)
            readers.append(request_id)
        assert set(answered_by(server, readers)) == set(pids)
        assert server.terminate() == 0
    assert not list((tmp_path / "data" / "blobs").rglob("*.dcm"))  # all in the bucket


def test_worker_that_cannot_start_ends_the_whole_with_its_reason(tmp_path: Path) -> None:
    pem = tmp_path / "garbage.pem"  # readable (the supervisor checks that), not a certificate
    pem.write_text("garbage\n")
    tls = ("--tls-cert", str(pem), "--tls-key", str(pem))
    with launch(tmp_path / "data", "--workers", "2", *tls) as process:
        assert not process.started(READY_TIMEOUT)
        assert process.wait() == 1
    stderr = process.stderr()
    assert "dicomstore: cannot start: cannot bind gRPC" in stderr.splitlines()[-1], stderr[-2000:]
    assert "Traceback" not in stderr
    # Each worker tried three times before the whole gave up.
    assert stderr.count('"message": "worker failed to start"') >= 3
