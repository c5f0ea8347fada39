"""Replicas: independent `dicomstore serve` processes (each its own data directory and ports)
over one PostgreSQL catalog (tests/postgres.py) and one Cloud Storage bucket (fake-gcs-server,
tests/fake_gcs.py). What is stored, created or deleted through one is seen at once through the
others; a replica starting while another is in the middle of a STOW-RS leaves that work alone;
the import of a replica killed with SIGKILL is finished by another."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import google.cloud.storage as storage
import grpc
import httpx
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud.healthcare.v1.dicom import dicom_pb2, dicom_pb2_grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from tests.e2e.operations import wait_done
from tests.e2e.server import ServerProcess, external_target, start_server
from tests.e2e.test_transfer_crash import counter_of
from tests.fake_gcs import create_bucket
from tests.postgres import (
    PostgresCluster,
    database_url,
    drop_database,
    postgres_cluster,  # noqa: F401  (the session's cluster)
)
from tests.unit.dicom.dicomfiles import new_instance, part10

pytestmark = pytest.mark.skipif(
    external_target() is not None, reason="starts its own replicas over PostgreSQL and a bucket"
)

LOCATION = "projects/p/locations/l"
DATASET = f"v1/{LOCATION}/datasets/d"
STORE = f"{DATASET}/dicomStores/s"
WEB = f"{STORE}/dicomWeb"
STUDY = "1.2.826.0.1.3680043.10.7"
BOUNDARY = "replica-test-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
AS_STORED = {"Accept": "application/dicom; transfer-syntax=*"}
READY_TIMEOUT = 60.0  # several interpreters start on a busy machine


@pytest.fixture
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database of the session's cluster, dropped after the test."""
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    request.addfinalizer(lambda: drop_database(tmp_path))
    assert cluster.port
    return database_url(tmp_path)


@pytest.fixture
def shared(fake_gcs_url: str, catalog_url: str) -> tuple[str, ...]:
    """The flags every replica of a test shares: the catalog, the blob bucket, the endpoint."""
    bucket = f"replicas-{uuid.uuid4().hex[:12]}"
    create_bucket(fake_gcs_url, bucket)
    return (
        "--catalog",
        catalog_url,
        "--blobs",
        f"gs://{bucket}/blobs",
        "--gcs-endpoint",
        fake_gcs_url,
    )


def replica(tmp_path: Path, name: str, flags: tuple[str, ...]) -> ServerProcess:
    return start_server(tmp_path / name, *flags, ready_timeout=READY_TIMEOUT)


@contextlib.contextmanager
def replicas(tmp_path: Path, flags: tuple[str, ...], count: int) -> Iterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    with contextlib.ExitStack() as stack:
        for n in range(count):
            servers.append(stack.enter_context(replica(tmp_path, f"replica-{n}", flags)))
        yield servers


def payload(n: int) -> bytes:
    """About 10 KB: the server reads a body a megabyte at a time."""
    return part10(
        new_instance(
            StudyInstanceUID=STUDY,
            SeriesInstanceUID=f"{STUDY}.1",
            SOPInstanceUID=f"{STUDY}.1.{n}",
            ImageComments="x" * 10_000,
        )
    )


def instance_url(base: str, n: int, store: str = STORE) -> str:
    return f"{base}/{store}/dicomWeb/studies/{STUDY}/series/{STUDY}.1/instances/{STUDY}.1.{n}"


def create_store(base: str, store_id: str = "s") -> None:
    created = httpx.post(f"{base}/{DATASET}/dicomStores?dicomStoreId={store_id}", timeout=30)
    created.raise_for_status()


def stow(base: str, body: bytes, store: str = STORE) -> httpx.Response:
    return httpx.post(
        f"{base}/{store}/dicomWeb/studies",
        content=body,
        headers={"Content-Type": "application/dicom", "Accept": "application/dicom+json"},
        timeout=30,
    )


def sop_uids(base: str) -> set[str]:
    found = httpx.get(f"{base}/{WEB}/studies/{STUDY}/instances", timeout=30)
    found.raise_for_status()
    return {item["00080018"]["Value"][0] for item in found.json()} if found.content else set()


def setup_dataset(base: str) -> None:
    httpx.post(f"{base}/v1/{LOCATION}/datasets?datasetId=d", timeout=30).raise_for_status()
    create_store(base)


def test_instance_stored_through_one_is_found_and_retrieved_through_another(
    tmp_path: Path, shared: tuple[str, ...]
) -> None:
    with replicas(tmp_path, shared, 2) as (a, b):
        setup_dataset(a.http_url)
        body = payload(1)
        assert stow(a.http_url, body).status_code == 200
        assert sop_uids(b.http_url) == {f"{STUDY}.1.1"}
        got = httpx.get(instance_url(b.http_url, 1), headers=AS_STORED, timeout=30)
        assert got.status_code == 200, got.text
        assert got.content == body


def test_stores_created_and_deleted_through_one_are_seen_by_the_others(
    tmp_path: Path, shared: tuple[str, ...]
) -> None:
    with replicas(tmp_path, shared, 3) as (a, b, c):
        setup_dataset(a.http_url)
        create_store(b.http_url, "made-by-b")
        listed = httpx.get(f"{c.http_url}/{DATASET}/dicomStores", timeout=30).json()
        assert {s["name"].rsplit("/", 1)[1] for s in listed["dicomStores"]} == {"s", "made-by-b"}
        other = f"{DATASET}/dicomStores/made-by-b"
        assert stow(c.http_url, payload(1), other).status_code == 200
        httpx.delete(f"{a.http_url}/{other}", timeout=30).raise_for_status()
        refused = stow(b.http_url, payload(2), other)
        assert refused.status_code == 404, refused.text
        assert stow(b.http_url, payload(3)).status_code == 200  # the other store serves on


async def invisible_rows(url: str) -> int:
    db = await asyncpg.connect(url)
    try:
        return int(await db.fetchval("SELECT count(*) FROM instances WHERE state = 0"))
    finally:
        await db.close()


def paused_multipart(count: int, halfway: threading.Event, go: threading.Event) -> Iterator[bytes]:
    """A multipart body of `count` instances that stops after the first half until `go`."""
    for n in range(count):
        if n == count // 2:
            halfway.set()
            go.wait(60)
        yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        yield payload(n) + b"\r\n"
    yield f"--{BOUNDARY}--\r\n".encode()


def test_replica_starting_mid_stow_leaves_that_work_alone(
    tmp_path: Path, shared: tuple[str, ...], catalog_url: str
) -> None:
    count = 300  # the first half outgrows a batch's rows in memory: recorded invisible
    with replica(tmp_path, "replica-a", shared) as a:
        setup_dataset(a.http_url)
        halfway, go = threading.Event(), threading.Event()
        answers: list[httpx.Response] = []
        sender = threading.Thread(
            target=lambda: answers.append(
                httpx.post(
                    f"{a.http_url}/{WEB}/studies",
                    content=paused_multipart(count, halfway, go),
                    headers={"Content-Type": MULTIPART, "Accept": "application/dicom+json"},
                    timeout=120,
                )
            )
        )
        sender.start()
        try:
            assert halfway.wait(30)
            deadline = time.monotonic() + 30
            while asyncio.run(invisible_rows(catalog_url)) < 64:
                assert time.monotonic() < deadline, "the first half was never recorded"
                time.sleep(0.1)
            staged = asyncio.run(invisible_rows(catalog_url))
            with replica(tmp_path, "replica-b", shared) as b:  # its start-up recovery runs
                assert asyncio.run(invisible_rows(catalog_url)) == staged
                go.set()
                sender.join(60)
                (answer,) = answers
                assert answer.status_code == 200, answer.text
                assert len(sop_uids(b.http_url)) == count
                for n in (0, count // 2 - 1, count - 1):
                    got = httpx.get(instance_url(b.http_url, n), headers=AS_STORED, timeout=30)
                    assert got.content == payload(n)
        finally:
            go.set()
            sender.join(60)


def fill_source(url: str, bucket: str, count: int) -> None:
    client = storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": url}
    )
    try:
        target = client.bucket(bucket)
        for n in range(count):
            target.blob(f"in/{n:05}.dcm").upload_from_string(payload(n))
    finally:
        client.close()


def running_op(channel: grpc.Channel, name: str) -> operations_pb2.Operation:
    return operations_pb2_grpc.OperationsStub(channel).GetOperation(
        operations_pb2.GetOperationRequest(name=name), timeout=10
    )


@pytest.mark.timeout(300)
def test_import_of_a_killed_replica_is_finished_by_another(
    tmp_path: Path, shared: tuple[str, ...], fake_gcs_url: str
) -> None:
    objects = 600
    source = f"source-{uuid.uuid4().hex[:12]}"
    create_bucket(fake_gcs_url, source)
    fill_source(fake_gcs_url, source, objects)
    with replicas(tmp_path, shared, 2) as (a, b):
        setup_dataset(a.http_url)
        store = STORE.removeprefix("v1/")
        with grpc.insecure_channel(a.grpc_address) as channel:
            name = (
                dicom_pb2_grpc.DicomServiceStub(channel)
                .ImportDicomData(
                    dicom_pb2.ImportDicomDataRequest(
                        name=store, gcs_source=dicom_pb2.GcsSource(uri=f"gs://{source}/in/*")
                    ),
                    timeout=10,
                )
                .name
            )
        with grpc.insecure_channel(b.grpc_address) as channel:
            while True:  # asked of the other replica
                running = running_op(channel, name)
                assert not running.done, "the import finished before it could be killed"
                if counter_of(running).counter.success > 0:
                    break
            a.kill()
            killed = time.monotonic()
            done = wait_done(operations_pb2_grpc.OperationsStub(channel), name, timeout=180)
            assert done.done, "the operation was left running"
            assert not done.HasField("error"), done.error
            counter = counter_of(done).counter
            assert (counter.success, counter.failure) == (objects, 0)
            metrics = dicom_pb2_grpc.DicomServiceStub(channel).GetDicomStoreMetrics(
                dicom_pb2.GetDicomStoreMetricsRequest(name=store), timeout=10
            )
            assert metrics.instance_count == objects
        assert time.monotonic() - killed < 120
        assert len(sop_uids(b.http_url)) == objects
        got = httpx.get(instance_url(b.http_url, objects - 1), headers=AS_STORED, timeout=30)
        assert got.content == payload(objects - 1)


@pytest.mark.timeout(300)
def test_study_delete_of_a_killed_replica_is_finished_by_another(
    tmp_path: Path, shared: tuple[str, ...]
) -> None:
    count = 600
    with replicas(tmp_path, shared, 2) as (a, b):
        setup_dataset(a.http_url)
        go = threading.Event()
        go.set()
        stored = httpx.post(
            f"{a.http_url}/{WEB}/studies",
            content=b"".join(paused_multipart(count, threading.Event(), go)),
            headers={"Content-Type": MULTIPART, "Accept": "application/dicom+json"},
            timeout=120,
        )
        assert stored.status_code == 200, stored.text
        deleted = httpx.delete(f"{a.http_url}/{WEB}/studies/{STUDY}", timeout=30)
        assert deleted.status_code == 200, deleted.text
        name = deleted.json()["name"]
        with grpc.insecure_channel(b.grpc_address) as channel:
            while True:  # asked of the other replica
                running = running_op(channel, name)
                assert not running.done, "the delete finished before it could be killed"
                if counter_of(running).counter.success > 0:
                    break
            a.kill()
            done = wait_done(operations_pb2_grpc.OperationsStub(channel), name, timeout=120)
            assert done.done, "the operation was left running"
            assert not done.HasField("error"), done.error
        assert sop_uids(b.http_url) == set()
        # The study takes instances again once its delete is done.
        assert stow(b.http_url, payload(1)).status_code == 200
