"""`dicomstore serve --blobs gs://BUCKET/PREFIX` against fake-gcs-server: instances go to the
bucket and every DICOMweb read comes back from it (the stored bytes, metadata, native and
decoded frames, bulk data, rendered and transcoded images), as does export (stored and
transcoded); a study delete removes its objects; a missing bucket stops start-up saying so."""

from __future__ import annotations

import io
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import google.cloud.storage as storage
import httpx
import numpy as np
import pydicom
import pytest
from google.auth.credentials import AnonymousCredentials
from tests.e2e.server import base_environment, external_target, serve_command, start_server
from tests.fake_gcs import create_bucket
from tests.unit.dicom.dicomfiles import data_file

pytestmark = pytest.mark.skipif(
    external_target() is not None, reason="starts its own server over a bucket"
)

STUDY = "1.2.826.0.1.3680043.8.498.7"
DATASET = "v1/projects/p/locations/l/datasets/d"
PREFIX = "hospital/blobs"
#: Stored native, as JPEG 2000 lossless, and as two RLE frames.
FILES = ("CT_small.dcm", "MR_small_jp2klossless.dcm", "SC_rgb_rle_2frame.dcm")


def in_study(name: str) -> tuple[pydicom.Dataset, bytes]:
    """A test file of pydicom moved into STUDY (series and SOP UIDs of its own)."""
    ds = pydicom.dcmread(data_file(name))
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = f"{STUDY}.{FILES.index(name) + 1}"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return ds, out.getvalue()


def bucket_objects(url: str, bucket: str) -> dict[str, int]:
    """Name and size of every object in the bucket, listed with google-cloud-storage."""
    client = storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": url},
    )
    try:
        return {blob.name: blob.size for blob in client.list_blobs(bucket)}
    finally:
        client.close()


@pytest.fixture
def bucket(fake_gcs_url: str) -> str:
    name = f"blobs-{uuid.uuid4().hex[:12]}"
    create_bucket(fake_gcs_url, name)
    return name


@pytest.fixture
def web(tmp_path: Path, fake_gcs_url: str, bucket: str) -> Iterator[httpx.Client]:
    """A client of the DICOMweb root of store `s`, on a server keeping blobs in `bucket`."""
    blobs = f"gs://{bucket}/{PREFIX}"
    with start_server(
        tmp_path / "data", "--blobs", blobs, "--gcs-endpoint", fake_gcs_url
    ) as server:
        base = server.http_url
        httpx.post(f"{base}/v1/projects/p/locations/l/datasets?datasetId=d").raise_for_status()
        httpx.post(f"{base}/{DATASET}/dicomStores?dicomStoreId=s").raise_for_status()
        with httpx.Client(base_url=f"{base}/{DATASET}/dicomStores/s/dicomWeb", timeout=60) as c:
            yield c


def stow(web: httpx.Client, bodies: list[bytes]) -> None:
    boundary = "b0undary"
    parts = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + body + b"\r\n"
        for body in bodies
    )
    stored = web.post(
        "/studies",
        content=parts + f"--{boundary}--\r\n".encode(),
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
        },
    )
    assert stored.status_code == 200, stored.text


def instance_path(ds: pydicom.Dataset) -> str:
    return f"/studies/{STUDY}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def single_part(response: httpx.Response) -> bytes:
    assert response.status_code == 200, response.text
    return response.content


def test_dicomweb_and_export_read_and_write_blobs_in_the_bucket(
    web: httpx.Client, fake_gcs_url: str, bucket: str, tmp_path: Path
) -> None:
    stored = [in_study(name) for name in FILES]
    stow(web, [body for _, body in stored])

    objects = bucket_objects(fake_gcs_url, bucket)
    assert sorted(objects.values()) == sorted(len(body) for _, body in stored)
    assert all(name.startswith(f"{PREFIX}/") and name.endswith(".dcm") for name in objects)
    assert not list((tmp_path / "data").glob("blobs/**/*.dcm"))  # nothing on local disk

    found = web.get("/studies", params={"StudyInstanceUID": STUDY}).json()
    assert len(found) == 1
    assert found[0]["00201208"]["Value"] == [len(FILES)]  # Number of Study Related Instances

    native, j2k, rle = stored
    as_stored = "application/dicom; transfer-syntax=*"
    for ds, body in stored:
        got = web.get(instance_path(ds), headers={"Accept": as_stored})
        assert single_part(got) == body

    transcoded = web.get(instance_path(j2k[0]), headers={"Accept": "application/dicom"})
    decoded = pydicom.dcmread(io.BytesIO(single_part(transcoded)))
    assert decoded.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert np.array_equal(decoded.pixel_array, j2k[0].pixel_array)

    metadata = web.get(f"{instance_path(native[0])}/metadata").json()
    pixel_uri = metadata[0]["7FE00010"]["BulkDataURI"]
    bulk = httpx.get(pixel_uri, headers={"Accept": "application/octet-stream"}, timeout=60)
    assert single_part(bulk) == native[0].PixelData

    frame = web.get(
        f"{instance_path(native[0])}/frames/1", headers={"Accept": "application/octet-stream"}
    )
    assert single_part(frame) == native[0].PixelData
    frames = web.get(
        f"{instance_path(rle[0])}/frames/2", headers={"Accept": "application/octet-stream"}
    )
    expected = np.ascontiguousarray(rle[0].pixel_array[1]).tobytes()
    assert single_part(frames) == expected

    rendered = web.get(f"{instance_path(j2k[0])}/rendered", headers={"Accept": "image/png"})
    assert single_part(rendered).startswith(b"\x89PNG")
    jpeg = web.get(f"{instance_path(rle[0])}/frames/2/rendered")
    assert single_part(jpeg).startswith(b"\xff\xd8")

    root = str(web.base_url).split("/v1/")[0]
    for folder, mime_type in (
        ("stored", ""),
        ("explicit", "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"),
    ):
        export = {"gcsDestination": {"uriPrefix": f"gs://{bucket}/{folder}", "mimeType": mime_type}}
        started = httpx.post(f"{root}/{DATASET}/dicomStores/s:export", json=export)
        assert started.status_code == 200, started.text
        assert "error" not in finished(root, started.json()["name"])
    exported = bucket_objects(fake_gcs_url, bucket)
    stored_sizes = sorted(len(body) for _, body in stored)
    assert sorted(v for k, v in exported.items() if k.startswith("stored/")) == stored_sizes
    assert len([k for k in exported if k.startswith("explicit/")]) == len(FILES)

    deleted = web.delete(f"/studies/{STUDY}")
    assert deleted.status_code == 200, deleted.text
    assert "error" not in finished(root, deleted.json()["name"])
    assert not [name for name in bucket_objects(fake_gcs_url, bucket) if name.startswith(PREFIX)]


def finished(root: str, operation: str) -> dict[str, object]:
    """The operation once done."""
    for _ in range(600):
        state: dict[str, object] = httpx.get(f"{root}/v1/{operation}").json()
        if state.get("done"):
            return state
        time.sleep(0.05)
    raise AssertionError(f"{operation} did not finish")


def test_missing_bucket_stops_start_up_saying_so(tmp_path: Path, fake_gcs_url: str) -> None:
    command = serve_command(
        tmp_path / "data", "--blobs", "gs://no-such-bucket/x", "--gcs-endpoint", fake_gcs_url
    )
    ended = subprocess.run(
        command, env=base_environment(None), capture_output=True, text=True, timeout=60
    )
    assert ended.returncode == 1
    assert "bucket gs://no-such-bucket not found" in ended.stderr.strip().splitlines()[-1]


def test_bad_blobs_uri_is_refused_in_one_line(tmp_path: Path) -> None:
    ended = subprocess.run(
        serve_command(tmp_path / "data"),
        env=base_environment({"DICOMSTORE_BLOBS": "s3://bucket/prefix"}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ended.returncode == 1
    assert ended.stderr.strip().splitlines() == [
        "dicomstore: cannot start: --blobs: must be gs://BUCKET or gs://BUCKET/PREFIX,"
        " got 's3://bucket/prefix'"
    ]
