"""An import killed with SIGKILL half-way is resumed when the server restarts, and finishes with
every object imported once (what the first run stored counts as success the second time)."""

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
from tests.e2e.server import external_target, start_server
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


def test_import_killed_mid_way_resumes_and_imports_each_object_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    bucket = data_dir / "gcs" / "crash-bucket"
    bucket.mkdir(parents=True)
    for n in range(OBJECTS):
        uids = {"StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.3.4"}
        (bucket / f"{n:05}.dcm").write_bytes(
            part10(new_instance(**uids, SOPInstanceUID=f"1.2.3.4.{n}"))
        )
    with start_server(data_dir) as first, grpc.insecure_channel(first.grpc_address) as channel:
        dataset_pb2_grpc.DatasetServiceStub(channel).CreateDataset(
            dataset_pb2.CreateDatasetRequest(parent=LOCATION, dataset_id="d"), timeout=10
        )
        dicom = dicom_pb2_grpc.DicomServiceStub(channel)
        store = dicom.CreateDicomStore(
            dicom_pb2.CreateDicomStoreRequest(parent=f"{LOCATION}/datasets/d", dicom_store_id="s"),
            timeout=10,
        ).name
        name = dicom.ImportDicomData(
            dicom_pb2.ImportDicomDataRequest(
                name=store, gcs_source=dicom_pb2.GcsSource(uri="gs://crash-bucket/*.dcm")
            ),
            timeout=10,
        ).name
        operations = operations_pb2_grpc.OperationsStub(channel)
        while True:
            running = operations.GetOperation(
                operations_pb2.GetOperationRequest(name=name), timeout=10
            )
            assert not running.done, "the import finished before it could be killed"
            if counter_of(running).counter.success > 0:
                break
            time.sleep(0.005)
        assert first.kill() == -signal.SIGKILL
    with start_server(data_dir) as second, grpc.insecure_channel(second.grpc_address) as channel:
        operations = operations_pb2_grpc.OperationsStub(channel)
        deadline = time.monotonic() + 120
        while True:
            operation = operations.GetOperation(
                operations_pb2.GetOperationRequest(name=name), timeout=10
            )
            if operation.done or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert operation.done
        assert not operation.HasField("error"), operation.error
        counter = counter_of(operation).counter
        assert (counter.success, counter.failure, counter.pending) == (OBJECTS, 0, 0)
        metrics = dicom_pb2_grpc.DicomServiceStub(channel).GetDicomStoreMetrics(
            dicom_pb2.GetDicomStoreMetricsRequest(name=store), timeout=10
        )
        assert metrics.instance_count == OBJECTS
    # Nothing left behind: one blob per instance.
    blobs = [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == OBJECTS
