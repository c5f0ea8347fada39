"""A full disk under a real `dicomstore serve`: STOW-RS is refused with RESOURCE_EXHAUSTED (429)
and loses nothing; reads go on; writes work again once space is freed.

The data directory lives on a small tmpfs that the test mounts (root: CI runs as root). A filler
file takes the space, leaving either less than the new instance's blob (the blob write fails)
or room for the blob but not for the catalog's commit (instances with a large text value, whose
DICOM JSON the catalog keeps: its write-ahead log must grow, and cannot).
"""

from __future__ import annotations

import contextlib
import io
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from google.cloud.healthcare.v1.dicom import dicom_pb2, dicom_pb2_grpc
from tests.e2e.server import ServerProcess, external_target, start_server
from tests.faults import blob_files, catalog_state, fill, orphans, require_root, tmpfs
from tests.unit.dicom.dicomfiles import new_instance, part10

pytestmark = pytest.mark.skipif(
    external_target() is not None, reason="mounts its own disk under its own server"
)

DATASET = "projects/p/locations/l/datasets/d"
STORE = f"{DATASET}/dicomStores/s"
WEB = f"v1/{STORE}/dicomWeb"
STUDY = "1.2.826.0.1.3680043.10.9"
SERIES = f"{STUDY}.1"
BOUNDARY = "full-disk-boundary"
DISK_BYTES = 8 << 20
#: A blob this large cannot be written in the room left for the blob case.
PIXEL_BYTES = 300_000
#: Text kept in the catalog's DICOM JSON of each instance in the catalog case.
TEXT_CHARS = 200_000


def instance(number: int, *, pixels: int = 0, text: int = 0) -> bytes:
    attributes: dict[str, object] = {}
    if pixels:
        attributes |= {
            "Rows": pixels // 1000,
            "Columns": 500,
            "BitsAllocated": 16,
            "BitsStored": 16,
            "HighBit": 15,
            "PixelRepresentation": 0,
            "SamplesPerPixel": 1,
            "PhotometricInterpretation": "MONOCHROME2",
            "PixelData": bytes([number % 256]) * pixels,
        }
    if text:
        attributes["TextValue"] = "t" * text  # UT: kept in the catalog's DICOM JSON
    return part10(
        new_instance(
            StudyInstanceUID=STUDY,
            SeriesInstanceUID=SERIES,
            SOPInstanceUID=f"{SERIES}.{number}",
            **attributes,
        )
    )


def multipart(bodies: Sequence[bytes]) -> bytes:
    parts = [
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + body + b"\r\n"
        for body in bodies
    ]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def stow(client: httpx.Client, bodies: Sequence[bytes], form: str) -> httpx.Response:
    if form == "staged":
        form = "multipart"
    if form == "single":
        (body,) = bodies
        headers = {"Content-Type": "application/dicom"}
    else:
        body = multipart(bodies)
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
        }
    headers["Accept"] = "application/dicom+json"
    return client.post(f"/{WEB}/studies", content=body, headers=headers)


def stored_uids(client: httpx.Client) -> set[str]:
    found = client.get(f"/{WEB}/studies/{STUDY}/instances")
    if found.status_code == 204:
        return set()
    assert found.status_code == 200, found.text
    return {item["00080018"]["Value"][0] for item in found.json()}


def retrieve(client: httpx.Client, number: int) -> bytes:
    got = client.get(
        f"/{WEB}/studies/{STUDY}/series/{SERIES}/instances/{SERIES}.{number}",
        headers={"Accept": "application/dicom; transfer-syntax=*"},
    )
    assert got.status_code == 200, got.text
    return got.content


@dataclass
class Disk:
    root: Path
    data_dir: Path
    server: ServerProcess
    client: httpx.Client

    @property
    def filler(self) -> Path:
        return self.root / "filler"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    """A server whose data directory is on a full-to-order tmpfs, with a store holding three
    small instances (1, 2, 3)."""
    require_root()
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(tmpfs(tmp_path / "disk", DISK_BYTES))
        data_dir = root / "data"
        server = stack.enter_context(start_server(data_dir))
        client = stack.enter_context(httpx.Client(base_url=server.http_url, timeout=30))
        client.post(f"/v1/{DATASET.rsplit('/', 2)[0]}/datasets?datasetId=d").raise_for_status()
        client.post(f"/v1/{DATASET}/dicomStores?dicomStoreId=s").raise_for_status()
        for number in (1, 2, 3):
            assert stow(client, [instance(number)], "single").status_code == 200
        yield Disk(root, data_dir, server, client)


def assert_insufficient_storage(response: httpx.Response) -> str:
    """The answer is Google's error body for RESOURCE_EXHAUSTED; its request id."""
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert error["code"] == 429
    assert "insufficient storage" in error["message"]
    assert "Traceback" not in response.text
    match = re.search(r"\(request id (\S+)\)", error["message"])
    assert match is not None, error["message"]
    assert match[1] == response.headers["x-request-id"]
    return match[1]


def assert_nothing_lost(disk: Disk) -> None:
    """Only instances 1-3 are visible and read back; no blob without its row, no partial file,
    and the catalog is sound. (Rows a request recorded invisibly before the disk was full may
    stay, without their blobs, until the next write removes them.)"""
    assert stored_uids(disk.client) == {f"{SERIES}.{n}" for n in (1, 2, 3)}
    for number in (1, 2, 3):
        assert retrieve(disk.client, number) == instance(number)
    check, keys, invisible = catalog_state(disk.data_dir)
    assert check == "ok"
    assert len(keys) - invisible == 3
    assert orphans(disk.data_dir) == []
    assert not [name for name in blob_files(disk.data_dir) if not name.endswith(".dcm")]


CASES = {
    # (what runs out of space, form): (new instances, room left besides their blobs)
    ("blob", "single"): ([instance(10, pixels=PIXEL_BYTES)], -PIXEL_BYTES // 2),
    ("blob", "multipart"): (
        [instance(n, pixels=PIXEL_BYTES) for n in (10, 11, 12)],
        -PIXEL_BYTES - PIXEL_BYTES // 2,
    ),
    # More instances than a request records at once (PENDING_ROWS): room for every blob and
    # for the rows of the first 64, recorded invisibly as the request goes, not for the rest.
    ("catalog", "staged"): ([instance(n, pixels=16_000) for n in range(10, 90)], 100 << 10),
    ("catalog", "single"): ([instance(10, text=TEXT_CHARS)], 8192),
    ("catalog", "multipart"): ([instance(n, text=TEXT_CHARS) for n in (10, 11)], 8192),
}


def _room(bodies: Sequence[bytes], extra: int) -> int:
    """Room for the blobs (each in whole 4 KiB pages) plus `extra` (negative: less)."""
    return sum(-(-len(body) // 4096) * 4096 for body in bodies) + extra


@pytest.mark.parametrize(("where", "form"), list(CASES), ids=lambda v: str(v))
def test_full_disk_refuses_stow_with_resource_exhausted_and_loses_nothing(
    disk: Disk, where: str, form: str
) -> None:
    bodies, extra = CASES[(where, form)]
    fill(disk.filler, _room(bodies, extra))

    request_id = assert_insufficient_storage(stow(disk.client, bodies, form))

    # The log says which write failed, with the request id the client was given.
    logged = disk.server.wait_for_records(
        lambda r: r.get("request_id") == request_id and r.get("level") == "error"
    )
    assert logged, disk.server.stderr()[-3000:]
    assert f"writing {'a blob' if where == 'blob' else 'the catalog'}" in logged[0]["message"]
    # Still full: reads go on, nothing of the request is visible or left on disk.
    assert_nothing_lost(disk)
    if form == "staged":  # rows recorded before the disk was full, not removable yet
        assert catalog_state(disk.data_dir)[2] > 0

    disk.filler.unlink()
    again = stow(disk.client, bodies, form)
    assert again.status_code == 200, again.text
    new = {f"{SERIES}.{n}" for n in range(10, 10 + len(bodies))}
    assert stored_uids(disk.client) == {f"{SERIES}.{n}" for n in (1, 2, 3)} | new
    for offset, body in enumerate(bodies):
        assert retrieve(disk.client, 10 + offset) == body
    assert disk.server.terminate() == 0
    check, keys, invisible = catalog_state(disk.data_dir)
    assert (check, len(keys), invisible) == ("ok", 3 + len(bodies), 0)
    assert orphans(disk.data_dir) == []


def test_full_disk_answers_grpc_writes_resource_exhausted_then_recovers(disk: Disk) -> None:
    fill(disk.filler, 0)
    labels = {f"k{n}": "v" * 63 for n in range(64)}
    with grpc.insecure_channel(disk.server.grpc_address) as channel:
        dicom = dicom_pb2_grpc.DicomServiceStub(channel)
        caught = None
        # The catalog's log may still have room for a few stores; it cannot for many.
        for number in range(500):
            try:
                dicom.CreateDicomStore(
                    dicom_pb2.CreateDicomStoreRequest(
                        parent=DATASET,
                        dicom_store_id=f"full{number}",
                        dicom_store=dicom_pb2.DicomStore(labels=labels),
                    ),
                    timeout=30,
                )
            except grpc.RpcError as exc:
                caught = exc
                break
        assert caught is not None, "500 stores were created on a full disk"
        assert caught.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = caught.details() or ""
        assert "insufficient storage" in details
        # types-grpcio's metadatum is no (key, value) pair; grpc's is a namedtuple of two.
        trailer: dict[str, str] = dict(caught.trailing_metadata() or ())  # type: ignore[arg-type]
        assert f"(request id {trailer['x-request-id']})" in details
        assert_nothing_lost(disk)

        disk.filler.unlink()
        created = dicom.CreateDicomStore(
            dicom_pb2.CreateDicomStoreRequest(parent=DATASET, dicom_store_id="after"), timeout=30
        )
        assert created.name == f"{DATASET}/dicomStores/after"


def test_dicomweb_client_retrying_stores_once_space_is_freed(disk: Disk) -> None:
    """dicomweb-client retries 429 (with backoff): its store succeeds once space is freed."""
    dataset = pydicom.dcmread(io.BytesIO(instance(10, pixels=PIXEL_BYTES)))
    client = DICOMwebClient(url=f"{disk.server.http_url}/{WEB}")
    client.set_http_retry_params(max_attempts=20, wait_exponential_multiplier=50)
    fill(disk.filler, 0)
    outcome: list[object] = []
    storing = threading.Thread(target=lambda: outcome.append(client.store_instances([dataset])))
    storing.start()
    refused = disk.server.wait_for_records(
        lambda r: r.get("message") == "rpc" and r.get("code") == "RESOURCE_EXHAUSTED", timeout=60
    )
    assert refused, disk.server.stderr()[-3000:]
    disk.filler.unlink()
    storing.join(120)
    assert len(outcome) == 1, "the client gave up"
    assert stored_uids(disk.client) == {f"{SERIES}.{n}" for n in (1, 2, 3, 10)}
    assert retrieve(disk.client, 10) == instance(10, pixels=PIXEL_BYTES)
