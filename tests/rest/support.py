"""What the REST tests share: an httpx client over a server's ASGI app, Google's JSON answers
and error bodies, stores and operations made over REST, the DICOMweb store the retrieve tests
read (with the images they ingest into it), and STOW-RS request bodies.

Fixtures over these are in `conftest.py`.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import pydicom
from google.cloud.healthcare.v1.dicom import dicom_pb2
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from starlette.types import ASGIApp

from dicomstore.api.rest.app import SERVICE_CONFIG_HTTP, create_app
from dicomstore.app import App
from dicomstore.core.instances import Ingested, Instances
from dicomstore.core.names import DicomStoreName
from dicomstore.dicom.multipart import MultipartReader, multipart_chunks, parse_content_type
from dicomstore.logs import AccessLog
from tests.conftest import DATASET, DOMAIN_ERRORS, LOCATION
from tests.unit.dicom.dicomfiles import PYDICOM_DATA, data_file, new_instance, part10

BASE_URL = "http://dicomstore.test"
JSON = "application/json; charset=utf-8"
OPERATION_METADATA = "type.googleapis.com/google.cloud.healthcare.v1.OperationMetadata"
TEST_FILES = sorted((PYDICOM_DATA / "test_files").glob("*.dcm"))


# --- clients and apps -----------------------------------------------------------------------------


def client_for(app: ASGIApp) -> httpx.AsyncClient:
    """A client of `app` through httpx's in-process ASGI transport (no lifespan, whole bodies)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)


def rest_app(
    *services: tuple[Any, object], http_config: str = SERVICE_CONFIG_HTTP
) -> tuple[ASGIApp, io.StringIO]:
    """An HTTP app over the given services, logging to a buffer."""
    stream = io.StringIO()
    app = create_app(
        lambda: True, list(services), AccessLog(stream, "json"), http_config=http_config
    )
    return app, stream


DICOM_SERVICE = dicom_pb2.DESCRIPTOR.services_by_name["DicomService"]


class Failing:
    """DicomService handlers whose GetDicomStore raises the error its store id names."""

    async def GetDicomStore(self, request: dicom_pb2.GetDicomStoreRequest) -> dicom_pb2.DicomStore:
        store_id = request.name.rsplit("/", 1)[-1]
        for cls in DOMAIN_ERRORS:
            if cls.__name__ == store_id:
                raise cls(f"{cls.__name__} happened", field="name")
        if store_id == "fine":
            return dicom_pb2.DicomStore(name=request.name)
        raise RuntimeError("secret internal detail")


# --- Google's answers -----------------------------------------------------------------------------


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == JSON
    return response.json()


def error(response: httpx.Response, http: int, status: str) -> str:
    """Google's error body: exactly code, message and status. Returns the message."""
    assert response.status_code == http, response.text
    assert response.headers["content-type"] == JSON
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "status"}
    assert body["error"]["code"] == http
    assert body["error"]["status"] == status
    message: str = body["error"]["message"]
    return message


def error_message(response: httpx.Response, http: int, status: str) -> str:
    """The message of an error answered with HTTP status `http` and status name `status`."""
    assert response.status_code == http, response.text
    body = response.json()["error"]
    assert (body["code"], body["status"]) == (http, status)
    message: str = body["message"]
    return message


# The HTTP status of each canonical code as google/rpc/code.proto maps them (the README's table),
# plus the statuses DICOMweb answers that no canonical code maps to (406, 413, 415), whose body
# says INVALID_ARGUMENT.
STATUS_OF_HTTP = {
    400: {"INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE"},
    401: {"UNAUTHENTICATED"},
    403: {"PERMISSION_DENIED"},
    404: {"NOT_FOUND"},
    406: {"INVALID_ARGUMENT"},
    409: {"ALREADY_EXISTS", "ABORTED"},
    413: {"INVALID_ARGUMENT"},
    415: {"INVALID_ARGUMENT"},
    429: {"RESOURCE_EXHAUSTED"},
    499: {"CANCELLED"},
    500: {"INTERNAL", "UNKNOWN", "DATA_LOSS"},
    501: {"UNIMPLEMENTED"},
    503: {"UNAVAILABLE"},
    504: {"DEADLINE_EXCEEDED"},
}


def agrees(response: httpx.Response) -> None:
    """A JSON error body is Google's, and its status is one its HTTP code stands for."""
    if response.status_code < 400 or "json" not in response.headers.get("content-type", ""):
        return
    body = json.loads(response.content)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "status"}
    assert body["error"]["code"] == response.status_code
    assert body["error"]["status"] in STATUS_OF_HTTP[response.status_code], body


async def check_agreement(response: httpx.Response) -> None:
    """`agrees` as an httpx response hook."""
    await response.aread()
    agrees(response)


# --- datasets, stores, operations -----------------------------------------------------------------


async def create_store(client: httpx.AsyncClient, store_id: str, **body: Any) -> Any:
    """Create store `store_id` of DATASET with `body`; the store."""
    return ok(
        await client.post(
            f"/v1/{DATASET}/dicomStores", params={"dicomStoreId": store_id}, json=body
        )
    )


async def create_dataset_and_store(client: httpx.AsyncClient, store_id: str) -> str:
    """Create DATASET and its store `store_id`; the store's name."""
    response = await client.post(
        f"/v1/{LOCATION}/datasets", params={"datasetId": DATASET.rsplit("/", 1)[1]}
    )
    assert response.status_code == 200, response.text
    await create_store(client, store_id)
    return f"{DATASET}/dicomStores/{store_id}"


async def wait_done(client: httpx.AsyncClient, name: str) -> Any:
    """Operation `name` once done (5 s at most)."""
    for _ in range(500):
        operation = ok(await client.get(f"/v1/{name}"))
        if operation.get("done"):
            return operation
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} did not finish")


# --- the DICOMweb store the retrieve tests read -------------------------------------------------

STORE = f"{DATASET}/dicomStores/wado"
WEB = f"/v1/{STORE}/dicomWeb"
STUDY = "1.2.826.0.1.3"
SERIES_A, SERIES_B = "1.2.826.0.1.3.1", "1.2.826.0.1.3.2"
MULTIPART_DICOM = 'multipart/related; type="application/dicom"'
MULTIPART_OCTET = 'multipart/related; type="application/octet-stream"'


async def create_wado_store(client: httpx.AsyncClient) -> str:
    """Create the dataset and the store STORE over REST."""
    return await create_dataset_and_store(client, STORE.rsplit("/", 1)[1])


def core_instances(app: App) -> Instances:
    """The core's instances over the server's own catalog, blobs and operations."""
    assert app.operations is not None
    return Instances(app.catalog, app.blobs, app.operations)


async def ingest(instances: Instances, data: bytes) -> Ingested:
    result = await instances.ingest(DicomStoreName.parse(STORE), io.BytesIO(data))
    assert result.stored, result.detail
    return result


def instance_path(result: Ingested) -> str:
    return f"{WEB}/studies/{result.study_uid}/series/{result.series_uid}/instances/{result.sop_uid}"


def parts_of(response: httpx.Response, part_type: str) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related response of root type `part_type`."""
    assert response.status_code == 200, response.text
    content_type = parse_content_type(response.headers["content-type"])
    assert content_type.media_type == "multipart/related"
    assert content_type.type == part_type
    assert content_type.boundary is not None
    reader = MultipartReader(content_type.boundary, 1 << 30, 1 << 30)
    found = reader.feed(response.content)
    reader.close()
    parts = []
    for part in found:
        with part:
            parts.append((dict(part.headers), part.body.read()))
    return parts


def not_acceptable(response: httpx.Response) -> str:
    """A 406 in Google's error shape; returns its message."""
    assert response.status_code == 406, response.text
    assert response.headers["content-type"] == JSON
    body = response.json()["error"]
    assert body["code"] == 406
    assert body["message"].startswith("no supported media type found in [")
    message: str = body["message"]
    return message


def pixels(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def image(
    sop: str,
    series: str = SERIES_A,
    *,
    rows: int = 4,
    columns: int = 3,
    frames: int = 3,
    bits: int = 16,
    samples: int = 1,
    data: bytes | None = None,
) -> Dataset:
    """A native multi-frame image; its Pixel Data is `data` or random bytes of the right size."""
    ds = new_instance(SOPInstanceUID=sop, SeriesInstanceUID=series, StudyInstanceUID=STUDY)
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, samples
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "MONOCHROME2" if samples == 1 else "RGB"
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.NumberOfFrames = frames
    if data is None:
        size = (rows * columns * samples * bits * frames + 7) // 8
        data = pixels(size + size % 2, seed=hash(sop) % 1000)
    ds.PixelData = data
    return ds


async def study_of_three(instances: Instances) -> list[bytes]:
    """Study STUDY: two instances in series A, one in series B; the stored files in order."""
    files = [
        part10(image("1.2.826.0.1.3.1.1")),
        part10(image("1.2.826.0.1.3.1.2")),
        part10(image("1.2.826.0.1.3.2.1", SERIES_B)),
    ]
    for data in files:
        await ingest(instances, data)
    return files


# --- STOW-RS bodies -------------------------------------------------------------------------------

BOUNDARY = "0f3cf5c0-70e0-41ef-baef-c6f9f65ec3e1"
DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
MULTIPART = f'multipart/related; type="{DICOM}"; boundary={BOUNDARY}'
MULTIPART_JSON = f'multipart/related; type="{DICOM_JSON}"; boundary={BOUNDARY}'


def multipart_body(
    parts: Iterable[tuple[Mapping[str, str], bytes]], boundary: str = BOUNDARY
) -> bytes:
    return b"".join(multipart_chunks(((h, [b]) for h, b in parts), boundary))


def jpeg_frames(name: str) -> tuple[pydicom.Dataset, list[bytes]]:
    ds = pydicom.dcmread(data_file(name))
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1))))
    return ds, frames


def howto_metadata(ds: pydicom.Dataset, **extra: Any) -> dict[str, Any]:
    """The instance.json template of Google's DICOMweb how-to, its placeholders filled from `ds`."""
    metadata: dict[str, Any] = {
        "00020010": {"vr": "UI", "Value": ["1.2.840.10008.1.2.4.50"]},
        "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.7"]},
        "00080018": {"vr": "UI", "Value": ["1.2.826.0.1.3.4.5"]},
        "0020000D": {"vr": "UI", "Value": ["1.2.826.0.1.3"]},
        "0020000E": {"vr": "UI", "Value": ["1.2.826.0.1.3.4"]},
        "00280002": {"vr": "US", "Value": [3]},
        "00280004": {"vr": "CS", "Value": ["YBR_FULL_422"]},
        "00280006": {"vr": "US", "Value": [0]},
        "00280008": {"vr": "IS", "Value": [1]},
        "00280010": {"vr": "US", "Value": [ds.Rows]},
        "00280011": {"vr": "US", "Value": [ds.Columns]},
        "00280100": {"vr": "US", "Value": [8]},
        "00280101": {"vr": "US", "Value": [8]},
        "00280102": {"vr": "US", "Value": [7]},
        "00280103": {"vr": "US", "Value": [0]},
        "7FE00010": {"vr": "OB", "BulkDataURI": "jpeg-image"},
    }
    metadata.update(extra)
    return metadata
