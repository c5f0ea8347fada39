"""DatasetService through a real grpc.aio server."""

from __future__ import annotations

from typing import TypeAlias

import grpc
import pytest
from google.cloud.healthcare.v1 import operation_pb2
from google.cloud.healthcare.v1.dataset import dataset_pb2, dataset_pb2_grpc
from google.cloud.healthcare.v1.dicom import dicom_pb2, dicom_pb2_grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import field_mask_pb2

from tests.conftest import LOCATION
from tests.grpc.test_dicom_service import status_of

# The stub over an aio channel: mypy-protobuf declares it for type checkers only.
Stub: TypeAlias = "dataset_pb2_grpc.DatasetServiceAsyncStub"


@pytest.mark.google_behaviour("create-returns", "operation-method-names")
async def test_create_returns_done_operation_with_dataset(
    datasets: Stub, operations: operations_pb2_grpc.OperationsStub
) -> None:
    operation = await datasets.CreateDataset(
        dataset_pb2.CreateDatasetRequest(
            parent=LOCATION,
            dataset_id="ds-1",
            dataset=dataset_pb2.Dataset(time_zone="America/New_York"),
        )
    )
    assert operation.done
    dataset = dataset_pb2.Dataset()
    assert operation.response.Unpack(dataset)
    assert dataset == dataset_pb2.Dataset(
        name=f"{LOCATION}/datasets/ds-1", time_zone="America/New_York"
    )
    metadata = operation_pb2.OperationMetadata()
    assert operation.metadata.Unpack(metadata)
    assert metadata.api_method_name == (
        "google.cloud.healthcare.v1.dataset.DatasetService.CreateDataset"
    )
    assert metadata.create_time.seconds > 0
    assert metadata.end_time.ToDatetime() >= metadata.create_time.ToDatetime()
    polled = await operations.GetOperation(operations_pb2.GetOperationRequest(name=operation.name))
    assert polled == operation


async def test_time_zone_defaults_to_utc(datasets: Stub) -> None:
    await datasets.CreateDataset(dataset_pb2.CreateDatasetRequest(parent=LOCATION, dataset_id="d"))
    got = await datasets.GetDataset(dataset_pb2.GetDatasetRequest(name=f"{LOCATION}/datasets/d"))
    assert got.time_zone == "UTC"


@pytest.mark.parametrize(
    ("dataset_id", "time_zone", "field"),
    [
        ("", "", "dataset_id"),
        ("has space", "", "dataset_id"),
        ("a/b", "", "dataset_id"),
        ("x" * 257, "", "dataset_id"),
        ("ok", "Mars/Olympus", "dataset.time_zone"),
        ("ok", "../../etc/passwd", "dataset.time_zone"),
    ],
)
async def test_create_with_bad_input_is_invalid_and_creates_nothing(
    datasets: Stub, dataset_id: str, time_zone: str, field: str
) -> None:
    error = await status_of(
        datasets.CreateDataset(
            dataset_pb2.CreateDatasetRequest(
                parent=LOCATION,
                dataset_id=dataset_id,
                dataset=dataset_pb2.Dataset(time_zone=time_zone),
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith(field)
    listed = await datasets.ListDatasets(dataset_pb2.ListDatasetsRequest(parent=LOCATION))
    assert list(listed.datasets) == []


@pytest.mark.google_behaviour("dataset-id-rules")
async def test_unicode_and_dotted_dataset_ids_are_accepted(datasets: Stub) -> None:
    for dataset_id in ("données_2024", "a.b-c"):
        await datasets.CreateDataset(
            dataset_pb2.CreateDatasetRequest(parent=LOCATION, dataset_id=dataset_id)
        )
    listed = await datasets.ListDatasets(dataset_pb2.ListDatasetsRequest(parent=LOCATION))
    assert [d.name.rsplit("/", 1)[1] for d in listed.datasets] == ["a.b-c", "données_2024"]


async def test_create_duplicate_is_already_exists(datasets: Stub) -> None:
    request = dataset_pb2.CreateDatasetRequest(parent=LOCATION, dataset_id="d")
    await datasets.CreateDataset(request)
    error = await status_of(datasets.CreateDataset(request))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.google_behaviour("list-paging")
async def test_list_pages_through_datasets(datasets: Stub) -> None:
    for i in range(7):
        await datasets.CreateDataset(
            dataset_pb2.CreateDatasetRequest(parent=LOCATION, dataset_id=f"d{i}")
        )
    other = "projects/other/locations/us"
    await datasets.CreateDataset(dataset_pb2.CreateDatasetRequest(parent=other, dataset_id="x"))
    names: list[str] = []
    token = ""
    while True:
        page = await datasets.ListDatasets(
            dataset_pb2.ListDatasetsRequest(parent=LOCATION, page_size=3, page_token=token)
        )
        names += [d.name for d in page.datasets]
        token = page.next_page_token
        if not token:
            break
    assert names == [f"{LOCATION}/datasets/d{i}" for i in range(7)]


async def test_patch_changes_time_zone_only_with_mask(datasets: Stub) -> None:
    name = f"{LOCATION}/datasets/d"
    await datasets.CreateDataset(dataset_pb2.CreateDatasetRequest(parent=LOCATION, dataset_id="d"))
    patched = await datasets.PatchDataset(
        dataset_pb2.PatchDatasetRequest(
            dataset=dataset_pb2.Dataset(name=name, time_zone="Europe/Paris"),
            update_mask=field_mask_pb2.FieldMask(paths=["time_zone"]),
        )
    )
    assert patched.time_zone == "Europe/Paris"
    for paths in ([], ["name"]):
        error = await status_of(
            datasets.PatchDataset(
                dataset_pb2.PatchDatasetRequest(
                    dataset=dataset_pb2.Dataset(name=name, time_zone="Asia/Tokyo"),
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                )
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "update_mask" in (error.details() or "")
    got = await datasets.GetDataset(dataset_pb2.GetDatasetRequest(name=name))
    assert got.time_zone == "Europe/Paris"


@pytest.mark.google_behaviour("delete-store")
async def test_delete_removes_dataset_with_its_stores(
    datasets: Stub, dicom: dicom_pb2_grpc.DicomServiceAsyncStub, dataset: str
) -> None:
    await dicom.CreateDicomStore(
        dicom_pb2.CreateDicomStoreRequest(parent=dataset, dicom_store_id="s")
    )
    await datasets.DeleteDataset(dataset_pb2.DeleteDatasetRequest(name=dataset))
    for call in (
        datasets.GetDataset(dataset_pb2.GetDatasetRequest(name=dataset)),
        dicom.GetDicomStore(dicom_pb2.GetDicomStoreRequest(name=f"{dataset}/dicomStores/s")),
        datasets.DeleteDataset(dataset_pb2.DeleteDatasetRequest(name=dataset)),
    ):
        error = await status_of(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND
