"""Shared fixtures: a real dicomstore App on ephemeral ports over a tmp_path data directory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from google.cloud.healthcare.v1.dataset import dataset_pb2, dataset_pb2_grpc
from google.cloud.healthcare.v1.dicom import dicom_pb2_grpc
from google.longrunning import operations_pb2_grpc

from dicomstore.app import App
from dicomstore.config import Settings
from dicomstore.core import errors
from tests.fake_gcs import fake_gcs_server

LOCATION = "projects/test-project/locations/us-central1"
DATASET = f"{LOCATION}/datasets/test-dataset"


def settings_for(data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"grpc_port": 0, "http_port": 0, "data_dir": data_dir}
    values |= overrides
    return Settings(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def running(tmp_path: Path, **overrides: object) -> AsyncIterator[App]:
    """A server started over `tmp_path`/data with settings `overrides`; stopped (and its catalog
    closed) on leaving."""
    server = App(settings_for(tmp_path / "data", **overrides))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    """A started server; stopped (and its catalog closed) after the test."""
    async with running(tmp_path) as server:
        yield server


@pytest.fixture
async def channel(app: App) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
        yield ch


@pytest.fixture
def dicom(channel: grpc.aio.Channel) -> dicom_pb2_grpc.DicomServiceAsyncStub:
    return dicom_pb2_grpc.DicomServiceStub(channel)


@pytest.fixture
def datasets(channel: grpc.aio.Channel) -> dataset_pb2_grpc.DatasetServiceAsyncStub:
    return dataset_pb2_grpc.DatasetServiceStub(channel)


@pytest.fixture
def operations(channel: grpc.aio.Channel) -> operations_pb2_grpc.OperationsStub:
    return operations_pb2_grpc.OperationsStub(channel)


@pytest.fixture
async def dataset(datasets: dataset_pb2_grpc.DatasetServiceAsyncStub) -> str:
    """The name of a freshly created dataset."""
    await datasets.CreateDataset(
        dataset_pb2.CreateDatasetRequest(parent=LOCATION, dataset_id="test-dataset")
    )
    return DATASET


@pytest.fixture(scope="session")
def fake_gcs_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a fake-gcs-server running for the whole session (each test makes its own
    bucket)."""
    with fake_gcs_server(tmp_path_factory.mktemp("fake-gcs-server")) as url:
        yield url


#: Every error class the core raises on purpose (`dicomstore.core.errors`).
DOMAIN_ERRORS = [
    cls
    for cls in vars(errors).values()
    if isinstance(cls, type)
    and issubclass(cls, errors.DicomStoreError)
    and cls is not errors.DicomStoreError
]
