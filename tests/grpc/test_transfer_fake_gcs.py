"""Import from and export to the real Cloud Storage JSON API (fake-gcs-server, started by the
tests on loopback) through a server configured with --gcs-endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs
from google.cloud.healthcare.v1.dicom import dicom_pb2, dicom_pb2_grpc
from google.longrunning import operations_pb2_grpc

from dicomstore.app import App
from tests.conftest import running
from tests.contract.conftest import new_emulator_bucket
from tests.grpc.transfers import finished, generated, metadata


@pytest.fixture
async def app(tmp_path: Path, fake_gcs_url: str) -> AsyncIterator[App]:
    """A started server whose gs:// URIs go to fake-gcs-server."""
    async with running(tmp_path, gcs_endpoint=fake_gcs_url) as server:
        yield server


def instance(number: int) -> bytes:
    return generated("1.2.7", "1.2.7.1", number)


async def test_import_then_export_through_the_gcs_json_api(
    app: App,
    fake_gcs_url: str,
    dicom: dicom_pb2_grpc.DicomServiceAsyncStub,
    operations: operations_pb2_grpc.OperationsStub,
    dataset: str,
) -> None:
    name = new_emulator_bucket(fake_gcs_url)
    client = gcs.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": fake_gcs_url},
    )
    bucket = client.bucket(name)
    for n in range(3):
        bucket.blob(f"in/sub/{n}.dcm").upload_from_string(instance(n))
    bucket.blob("in/readme.txt").upload_from_string(b"not DICOM")
    store = (
        await dicom.CreateDicomStore(
            dicom_pb2.CreateDicomStoreRequest(parent=dataset, dicom_store_id="s")
        )
    ).name
    imported = await finished(
        operations,
        (
            await dicom.ImportDicomData(
                dicom_pb2.ImportDicomDataRequest(
                    name=store, gcs_source=dicom_pb2.GcsSource(uri=f"gs://{name}/in/**")
                )
            )
        ).name,
    )
    counter = metadata(imported).counter
    assert (counter.success, counter.failure) == (3, 1)
    exported = await finished(
        operations,
        (
            await dicom.ExportDicomData(
                dicom_pb2.ExportDicomDataRequest(
                    name=store,
                    gcs_destination=dicom_pb2.GcsDestination(uri_prefix=f"gs://{name}/out"),
                )
            )
        ).name,
    )
    assert not exported.HasField("error"), exported.error
    written = {b.name: b.download_as_bytes() for b in client.list_blobs(name, prefix="out/")}
    assert written == {f"out/1.2.7/1.2.7.1/1.2.7.1.{n}.dcm": instance(n) for n in range(3)}
    client.close()
