"""ExportDicomData to the embedded Cloud Storage (files under DATA_DIR/gcs) through a real gRPC
server: object names, bytes, overwrite, filter files, MIME types, failures."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TypeAlias

import grpc
import pydicom
import pytest
from google.cloud.healthcare.v1.dicom import dicom_pb2, dicom_pb2_grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from PIL import Image

from dicomstore.app import App
from tests.grpc.transfers import finished, generated, metadata, stow
from tests.unit.dicom.dicomfiles import data_file

# The stub over an aio channel: mypy-protobuf declares it for type checkers only.
Stub: TypeAlias = "dicom_pb2_grpc.DicomServiceAsyncStub"
Operations: TypeAlias = operations_pb2_grpc.OperationsStub
STUDY = "1.2.826.0.1.8"
SERIES = (f"{STUDY}.1", f"{STUDY}.2")
CT = pydicom.dcmread(data_file("CT_small.dcm"))


def instance(series: str, number: int) -> bytes:
    return generated(STUDY, series, number)


@pytest.fixture
async def store(app: App, dicom: Stub, dataset: str) -> str:
    """A store holding two series of two instances and CT_small.dcm (its own study)."""
    created = await dicom.CreateDicomStore(
        dicom_pb2.CreateDicomStoreRequest(parent=dataset, dicom_store_id="s")
    )
    bodies = [instance(s, n) for s in SERIES for n in (1, 2)]
    await stow(app, created.name, *bodies, data_file("CT_small.dcm").read_bytes())
    return created.name


def bucket(app: App, name: str = "out") -> Path:
    path = app.settings.data_dir / "gcs" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


async def export(
    dicom: Stub, operations: Operations, store: str, prefix: str, **fields: object
) -> operations_pb2.Operation:
    request = dicom_pb2.ExportDicomDataRequest(
        name=store,
        gcs_destination=dicom_pb2.GcsDestination(
            uri_prefix=prefix, mime_type=str(fields.pop("mime_type", ""))
        ),
        **fields,  # type: ignore[arg-type]
    )
    return await finished(operations, (await dicom.ExportDicomData(request)).name)


def counter(operation: operations_pb2.Operation) -> tuple[int, int]:
    found = metadata(operation)
    return found.counter.success, found.counter.failure


def exported(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.google_behaviour("export-gcs-object-names")
async def test_every_instance_becomes_an_object_named_by_its_uids_with_its_bytes(
    app: App, dicom: Stub, operations: Operations, store: str
) -> None:
    root = bucket(app)
    operation = await export(dicom, operations, store, "gs://out/exports/today")
    assert not operation.HasField("error") and counter(operation) == (5, 0)
    assert operation.response.type_url.endswith("ExportDicomDataResponse")
    objects = exported(root)
    for series in SERIES:
        for n in (1, 2):
            key = f"exports/today/{STUDY}/{series}/{series}.{n}.dcm"
            assert objects.pop(key) == instance(series, n)
    ((key, data),) = objects.items()
    assert key.startswith("exports/today/") and key.endswith(".dcm")
    assert data == data_file("CT_small.dcm").read_bytes()


@pytest.mark.google_behaviour("export-gcs-object-names")
async def test_a_prefix_that_ends_in_a_slash_or_is_the_bucket_and_overwrites(
    app: App, dicom: Stub, operations: Operations, store: str
) -> None:
    root = bucket(app)
    stale = root / STUDY / SERIES[0] / f"{SERIES[0]}.1.dcm"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    await export(dicom, operations, store, "gs://out")
    await export(dicom, operations, store, "gs://out/x/")
    objects = exported(root)
    assert objects[f"{STUDY}/{SERIES[0]}/{SERIES[0]}.1.dcm"] == instance(SERIES[0], 1)
    assert f"x/{STUDY}/{SERIES[1]}/{SERIES[1]}.2.dcm" in objects
    assert len(objects) == 10


@pytest.mark.google_behaviour("export-filter-file")
async def test_a_filter_file_exports_the_resources_it_names(
    app: App, dicom: Stub, operations: Operations, store: str
) -> None:
    root = bucket(app)
    filters = bucket(app, "filters")
    (filters / "list.txt").write_bytes(
        f"/studies/{STUDY}/series/{SERIES[0]}\r\n\n"
        f"/studies/{STUDY}/series/{SERIES[1]}/instances/{SERIES[1]}.2\n"
        f"/studies/{STUDY}/series/{SERIES[0]}/instances/{SERIES[0]}.1\n"
        "/studies/9.9.9\n".encode()
    )
    operation = await export(
        dicom,
        operations,
        store,
        "gs://out/f",
        filter_config=dicom_pb2.DicomFilterConfig(resource_paths_gcs_uri="gs://filters/list.txt"),
    )
    assert counter(operation) == (3, 1)
    assert "1 of 4 instances failed" in operation.error.message
    assert operation.error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert sorted(exported(root)) == [
        f"f/{STUDY}/{SERIES[0]}/{SERIES[0]}.1.dcm",
        f"f/{STUDY}/{SERIES[0]}/{SERIES[0]}.2.dcm",
        f"f/{STUDY}/{SERIES[1]}/{SERIES[1]}.2.dcm",
    ]


@pytest.mark.google_behaviour("export-filter-file")
async def test_a_malformed_filter_line_is_named_and_nothing_is_exported(
    app: App, dicom: Stub, operations: Operations, store: str
) -> None:
    root = bucket(app)
    filters = bucket(app, "filters")
    (filters / "bad.txt").write_bytes(f"/studies/{STUDY}\n/series/{SERIES[0]}\n".encode())
    operation = await export(
        dicom,
        operations,
        store,
        "gs://out/f",
        filter_config=dicom_pb2.DicomFilterConfig(resource_paths_gcs_uri="gs://filters/bad.txt"),
    )
    assert operation.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "line 2" in operation.error.message
    assert exported(root) == {}


@pytest.mark.google_behaviour("export-gcs-mime-types")
async def test_a_dicom_mime_type_transcodes_each_instance_or_fails_it_saying_why(
    app: App, dicom: Stub, operations: Operations, store: str
) -> None:
    root = bucket(app)
    jpeg = "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50"
    operation = await export(dicom, operations, store, "gs://out/j", mime_type=jpeg)
    assert counter(operation) == (4, 1)  # CT_small's 16-bit pixels cannot be JPEG Baseline
    (detail,) = operation.error.details
    errors = dicom_pb2.ExportDicomDataErrorDetails()
    assert detail.Unpack(errors)
    (sample,) = errors.sample_errors
    assert sample.resource.endswith(f"/instances/{CT.SOPInstanceUID}")
    assert sample.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "cannot be transcoded" in sample.error.message
    written = exported(root)
    assert len(written) == 4
    for body in written.values():
        assert pydicom.dcmread(io.BytesIO(body)).file_meta.TransferSyntaxUID == jpeg[-22:]
    j2k = "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.90"
    operation = await export(dicom, operations, store, "gs://out/k", mime_type=j2k)
    assert counter(operation) == (5, 0)
    ct = exported(root)[f"k/{CT.StudyInstanceUID}/{CT.SeriesInstanceUID}/{CT.SOPInstanceUID}.dcm"]
    assert (pydicom.dcmread(io.BytesIO(ct)).pixel_array == CT.pixel_array).all()


@pytest.mark.google_behaviour("export-gcs-mime-types")
@pytest.mark.parametrize(
    ("mime", "extension"),
    [
        ("image/png", ".png"),
        ("image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50", ".jpg"),
        ("application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1", ""),
    ],
)
async def test_a_frame_mime_type_writes_a_file_per_frame(
    app: App, dicom: Stub, operations: Operations, store: str, mime: str, extension: str
) -> None:
    root = bucket(app)
    rgb = pydicom.dcmread(data_file("SC_rgb_rle_2frame.dcm"))
    await stow(app, store, data_file("SC_rgb_rle_2frame.dcm").read_bytes())
    operation = await export(dicom, operations, store, "gs://out/f", mime_type=mime)
    assert counter(operation) == (2, 4)  # the four generated instances have no Pixel Data
    ct = f"f/{CT.StudyInstanceUID}/{CT.SeriesInstanceUID}/{CT.SOPInstanceUID}{extension}"
    frames = f"f/{rgb.StudyInstanceUID}/{rgb.SeriesInstanceUID}/{rgb.SOPInstanceUID}"
    written = exported(root)
    assert set(written) == {ct, f"{frames}/1{extension}", f"{frames}/2{extension}"}
    if extension:
        picture = Image.open(io.BytesIO(written[f"{frames}/2{extension}"]))
        assert (picture.size, picture.mode) == ((rgb.Columns, rgb.Rows), "RGB")
    else:
        assert written[ct] == CT.pixel_array.astype("<i2").tobytes()
        assert written[f"{frames}/2"] == rgb.pixel_array[1].tobytes()


@pytest.mark.google_behaviour("export-gcs-object-names")
async def test_export_to_a_missing_bucket_ends_not_found(
    app: App, dicom: Stub, operations: Operations, store: str
) -> None:
    operation = await export(dicom, operations, store, "gs://no-such-bucket/x")
    assert operation.error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "no-such-bucket" in operation.error.message
