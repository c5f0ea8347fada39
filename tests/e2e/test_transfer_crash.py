"""An import or an export killed with SIGKILL half-way is resumed when the server restarts and
finishes: the import with every object imported once (what the first run stored counts as
success the second time), the export with every instance written (the first run's objects
overwritten)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
import pytest
from google.cloud.healthcare.v1.dataset import dataset_pb2, dataset_pb2_grpc
from google.cloud.healthcare.v1.dicom import dicom_pb2, dicom_pb2_grpc
from google.cloud.healthcare.v1.operation_pb2 import OperationMetadata
from google.longrunning import operations_pb2, operations_pb2_grpc
from tests.e2e.operations import wait_done
from tests.e2e.server import ServerProcess, external_target, start_server
from tests.unit.dicom.dicomfiles import new_instance, part10

LOCATION = "projects/p/locations/l"
OBJECTS = 1200

pytestmark = pytest.mark.skipif(
    external_target() is not None,
    reason="DICOMSTORE_TEST_TARGET is set: this test kills and restarts its own server",
)


def counter_of(operation: operations_pb2.Operation) -> OperationMetadata:
    found = OperationMetadata()
    assert operation.metadata.Unpack(found)
    return found


def fill_bucket(bucket: Path) -> None:
    bucket.mkdir(parents=True)
    for n in range(OBJECTS):
        uids = {"StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.3.4"}
        (bucket / f"{n:05}.dcm").write_bytes(
            part10(new_instance(**uids, SOPInstanceUID=f"1.2.3.4.{n}"))
        )


def new_store(channel: grpc.Channel) -> str:
    dataset_pb2_grpc.DatasetServiceStub(channel).CreateDataset(
        dataset_pb2.CreateDatasetRequest(parent=LOCATION, dataset_id="d"), timeout=10
    )
    return (
        dicom_pb2_grpc.DicomServiceStub(channel)
        .CreateDicomStore(
            dicom_pb2.CreateDicomStoreRequest(parent=f"{LOCATION}/datasets/d", dicom_store_id="s"),
            timeout=10,
        )
        .name
    )


def kill_once_under_way(server: ServerProcess, channel: grpc.Channel, name: str) -> None:
    operations = operations_pb2_grpc.OperationsStub(channel)
    while True:
        running = operations.GetOperation(operations_pb2.GetOperationRequest(name=name), timeout=10)
        assert not running.done, "the operation finished before it could be killed"
        if counter_of(running).counter.success > 0:
            break
        time.sleep(0.005)
    assert server.kill() == -signal.SIGKILL


def finished(channel: grpc.Channel, name: str) -> operations_pb2.Operation:
    operation = wait_done(operations_pb2_grpc.OperationsStub(channel), name, timeout=120)
    assert operation.done
    assert not operation.HasField("error"), operation.error
    counter = counter_of(operation).counter
    assert (counter.success, counter.failure) == (OBJECTS, 0)
    return operation


def test_import_killed_mid_way_resumes_and_imports_each_object_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    fill_bucket(data_dir / "gcs" / "crash-bucket")
    with start_server(data_dir) as first, grpc.insecure_channel(first.grpc_address) as channel:
        store = new_store(channel)
        name = (
            dicom_pb2_grpc.DicomServiceStub(channel)
            .ImportDicomData(
                dicom_pb2.ImportDicomDataRequest(
                    name=store, gcs_source=dicom_pb2.GcsSource(uri="gs://crash-bucket/*.dcm")
                ),
                timeout=10,
            )
            .name
        )
        kill_once_under_way(first, channel, name)
    with start_server(data_dir) as second, grpc.insecure_channel(second.grpc_address) as channel:
        finished(channel, name)
        metrics = dicom_pb2_grpc.DicomServiceStub(channel).GetDicomStoreMetrics(
            dicom_pb2.GetDicomStoreMetricsRequest(name=store), timeout=10
        )
        assert metrics.instance_count == OBJECTS
    # Nothing left behind: one blob per instance.
    blobs = [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == OBJECTS


def test_export_killed_mid_way_resumes_and_writes_every_instance(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    fill_bucket(data_dir / "gcs" / "source")
    (data_dir / "gcs" / "target").mkdir()
    with start_server(data_dir) as first, grpc.insecure_channel(first.grpc_address) as channel:
        store = new_store(channel)
        dicom = dicom_pb2_grpc.DicomServiceStub(channel)
        imported = dicom.ImportDicomData(
            dicom_pb2.ImportDicomDataRequest(
                name=store, gcs_source=dicom_pb2.GcsSource(uri="gs://source/*.dcm")
            ),
            timeout=10,
        ).name
        finished(channel, imported)
        name = dicom.ExportDicomData(
            dicom_pb2.ExportDicomDataRequest(
                name=store, gcs_destination=dicom_pb2.GcsDestination(uri_prefix="gs://target/x")
            ),
            timeout=10,
        ).name
        kill_once_under_way(first, channel, name)
    with start_server(data_dir) as second, grpc.insecure_channel(second.grpc_address) as channel:
        finished(channel, name)
    written = sorted((data_dir / "gcs" / "target" / "x" / "1.2.3" / "1.2.3.4").iterdir())
    assert [p.name for p in written] == sorted(f"1.2.3.4.{n}.dcm" for n in range(OBJECTS))
    source = data_dir / "gcs" / "source"
    assert all(
        p.read_bytes() == (source / f"{int(p.stem.rsplit('.', 1)[1]):05}.dcm").read_bytes()
        for p in written
    )
