"""Every method of Google's DICOM surface either works or answers 501 UNIMPLEMENTED naming it.

The methods are walked from the discovery document `healthcare.v1.json` that
google-api-python-client ships: the methods of `projects.locations.datasets`, of
`...datasets.dicomStores` and of every resource nested under it (studies, series, instances,
frames, bulkdata, dicomWeb...), and of `...datasets.operations`. For each one the request is built
from its `flatPath` (plausible ids of a dataset, store, instance and operation set up first), its
HTTP method and a minimal body, and sent to a real started server (httpx over the ASGI app).

Which methods work, and which are not implemented yet, is written out in `WORKING` and
`UNIMPLEMENTED` below: a working method that regresses to 501 (or 404, 405, 415) fails, and so
does an unimplemented one that stops saying so. A method of a newer discovery document that is in
neither table must answer 501 too (the server's general rule for verbs it does not have).
Unimplemented methods are also called through google-api-python-client itself, on a real socket.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import googleapiclient
import httplib2
import httpx
import pydicom
import pytest
from googleapiclient.discovery import build_from_document
from googleapiclient.errors import HttpError
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicomstore.app import App
from tests.conftest import DATASET, LOCATION
from tests.rest.support import check_agreement
from tests.unit.dicom.dicomfiles import new_instance, part10

DOCUMENT = (
    Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "healthcare.v1.json"
)
PREFIX = "healthcare.projects.locations."
STORE_ID = "s1"
STORE = f"{DATASET}/dicomStores/{STORE_ID}"
STUDY, SERIES, INSTANCE = (
    "1.2.826.0.1.3680043.10.9",
    "1.2.826.0.1.3680043.10.9.1",
    "1.2.826.0.1.3680043.10.9.1.1",
)
NESTED_BULKDATA = "00880200/0/7FE00010"  # Icon Image Sequence, item 0, Pixel Data
UNIMPLEMENTED_STATUSES = {404, 405, 415, 501}


@dataclass(frozen=True)
class Call:
    """What a method's request carries besides its path, and the status it answers."""

    query: Mapping[str, str] = field(default_factory=dict)
    body: Any = None  # JSON
    content: str = ""  # "instance": a new DICOM instance of STUDY, as application/dicom
    headers: Mapping[str, str] = field(default_factory=dict)
    status: int = 200


# Method ids without "healthcare.projects.locations.".
WORKING: dict[str, Call] = {
    "datasets.create": Call(query={"datasetId": "other"}, body={}),
    "datasets.delete": Call(),
    "datasets.get": Call(),
    "datasets.list": Call(),
    "datasets.patch": Call(query={"updateMask": "timeZone"}, body={"timeZone": "Europe/Paris"}),
    "datasets.dicomStores.create": Call(query={"dicomStoreId": "other"}, body={}),
    "datasets.dicomStores.delete": Call(),
    "datasets.dicomStores.export": Call(
        body={"gcsDestination": {"uriPrefix": "gs://export-bucket/out"}}
    ),
    "datasets.dicomStores.get": Call(),
    "datasets.dicomStores.getDICOMStoreMetrics": Call(),
    "datasets.dicomStores.import": Call(body={"gcsSource": {"uri": "gs://import-bucket/in/**"}}),
    "datasets.dicomStores.list": Call(),
    "datasets.dicomStores.patch": Call(query={"updateMask": "labels"}, body={"labels": {"k": "v"}}),
    "datasets.dicomStores.searchForInstances": Call(),
    "datasets.dicomStores.searchForSeries": Call(),
    "datasets.dicomStores.searchForStudies": Call(),
    "datasets.dicomStores.storeInstances": Call(content="instance"),
    "datasets.dicomStores.studies.delete": Call(),
    "datasets.dicomStores.studies.retrieveMetadata": Call(),
    "datasets.dicomStores.studies.retrieveStudy": Call(),
    "datasets.dicomStores.studies.searchForInstances": Call(),
    "datasets.dicomStores.studies.searchForSeries": Call(),
    "datasets.dicomStores.studies.storeInstances": Call(content="instance"),
    "datasets.dicomStores.studies.series.delete": Call(),
    "datasets.dicomStores.studies.series.retrieveMetadata": Call(),
    "datasets.dicomStores.studies.series.retrieveSeries": Call(),
    "datasets.dicomStores.studies.series.searchForInstances": Call(),
    "datasets.dicomStores.studies.series.instances.delete": Call(),
    "datasets.dicomStores.studies.series.instances.retrieveInstance": Call(),
    "datasets.dicomStores.studies.series.instances.retrieveMetadata": Call(),
    "datasets.dicomStores.studies.series.instances.bulkdata.retrieveBulkdata": Call(),
    "datasets.dicomStores.studies.series.instances.frames.retrieveFrames": Call(),
    "datasets.dicomStores.studies.series.instances.retrieveRendered": Call(),
    "datasets.dicomStores.studies.series.instances.frames.retrieveRendered": Call(),
    "datasets.operations.cancel": Call(body={}),
    "datasets.operations.get": Call(),
    "datasets.operations.list": Call(),
}

_IAM_POLICY = {"policy": {"bindings": [{"role": "roles/viewer", "members": ["user:a@b.c"]}]}}
_BLOB_SETTINGS = {"blobStorageSettings": {"blobStorageClass": "NEARLINE"}}
UNIMPLEMENTED: dict[str, Call] = {
    "datasets.deidentify": Call(
        body={"destinationDataset": f"{LOCATION}/datasets/copy", "config": {}}
    ),
    "datasets.getIamPolicy": Call(),
    "datasets.setIamPolicy": Call(body=_IAM_POLICY),
    "datasets.testIamPermissions": Call(body={"permissions": ["healthcare.datasets.get"]}),
    "datasets.dicomStores.deidentify": Call(
        body={"destinationStore": f"{DATASET}/dicomStores/copy", "config": {}}
    ),
    "datasets.dicomStores.getIamPolicy": Call(),
    "datasets.dicomStores.setBlobStorageSettings": Call(body=_BLOB_SETTINGS),
    "datasets.dicomStores.setIamPolicy": Call(body=_IAM_POLICY),
    "datasets.dicomStores.testIamPermissions": Call(
        body={"permissions": ["healthcare.dicomStores.get"]}
    ),
    "datasets.dicomStores.dicomWeb.studies.getStudyMetrics": Call(),
    "datasets.dicomStores.dicomWeb.studies.setBlobStorageSettings": Call(body=_BLOB_SETTINGS),
    "datasets.dicomStores.dicomWeb.studies.series.getSeriesMetrics": Call(),
    "datasets.dicomStores.dicomWeb.studies.series.instances.getStorageInfo": Call(),
}


# --- the discovery document ---------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    id: str
    http_method: str
    flat_path: str
    path: str  # with the parameters, `v1/{+parent}/dicomWeb/{+dicomWebPath}`
    parameters: Mapping[str, Any]
    parameter_order: tuple[str, ...]

    @property
    def short_id(self) -> str:
        return self.id.removeprefix(PREFIX)


def _methods(resource: Mapping[str, Any]) -> Iterator[Method]:
    for method in resource.get("methods", {}).values():
        yield Method(
            method["id"],
            method["httpMethod"],
            method["flatPath"],
            method["path"],
            method.get("parameters", {}),
            tuple(method.get("parameterOrder", ())),
        )
    for nested in resource.get("resources", {}).values():
        yield from _methods(nested)


def surface() -> list[Method]:
    """The methods of datasets, dicomStores (and all beneath) and operations, in document order."""
    document = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    datasets = document["resources"]["projects"]["resources"]["locations"]["resources"]["datasets"]
    methods = list(_methods({"methods": datasets["methods"]}))
    for name in ("dicomStores", "operations"):
        methods.extend(_methods(datasets["resources"][name]))
    return methods


SURFACE = surface()


def test_the_tables_name_methods_of_the_document() -> None:
    ids = {method.short_id for method in SURFACE}
    assert len(ids) == len(SURFACE) >= len(WORKING) + len(UNIMPLEMENTED)
    assert set(WORKING) <= ids
    assert set(UNIMPLEMENTED) <= ids
    assert not set(WORKING) & set(UNIMPLEMENTED)


# --- the server, and what the paths name -------------------------------------------------------


def instance_bytes(sop_uid: str = INSTANCE) -> bytes:
    """An 8-bit 4x4 image of STUDY/SERIES with a 2x2 icon (its Pixel Data is nested bulk data)."""
    icon = Dataset()
    icon.SamplesPerPixel = 1
    icon.PhotometricInterpretation = "MONOCHROME2"
    icon.Rows = icon.Columns = 2
    icon.BitsAllocated = icon.BitsStored = 8
    icon.HighBit = 7
    icon.PixelRepresentation = 0
    icon.PixelData = bytes(range(4))
    ds = new_instance(
        StudyInstanceUID=STUDY,
        SeriesInstanceUID=SERIES,
        SOPInstanceUID=sop_uid,
        SamplesPerPixel=1,
        PhotometricInterpretation="MONOCHROME2",
        Rows=4,
        Columns=4,
        BitsAllocated=8,
        BitsStored=8,
        HighBit=7,
        PixelRepresentation=0,
        PixelData=bytes(range(0, 256, 16)),
        IconImageSequence=pydicom.Sequence([icon]),
    )
    return part10(ds)


@pytest.fixture
def surface_client(client: httpx.AsyncClient) -> httpx.AsyncClient:
    client.event_hooks["response"].append(check_agreement)
    return client


async def set_up(http: httpx.AsyncClient) -> dict[str, str]:
    """A dataset, a store holding one instance, an operation: the ids the paths use."""
    dataset_id = DATASET.rsplit("/", 1)[1]
    created = await http.post(f"/v1/{LOCATION}/datasets", params={"datasetId": dataset_id})
    assert created.status_code == 200, created.text
    operation_id = created.json()["name"].rsplit("/", 1)[1]
    store = await http.post(f"/v1/{DATASET}/dicomStores", params={"dicomStoreId": STORE_ID})
    assert store.status_code == 200, store.text
    stored = await http.post(
        f"/v1/{STORE}/dicomWeb/studies",
        content=instance_bytes(),
        headers={"content-type": "application/dicom", "accept": "application/dicom+json"},
    )
    assert stored.status_code == 200, stored.text
    metadata = await http.get(
        f"/v1/{STORE}/dicomWeb/studies/{STUDY}/series/{SERIES}/instances/{INSTANCE}/metadata",
        headers={"accept": "application/dicom+json"},
    )
    [icon] = metadata.json()[0]["00880200"]["Value"]
    assert icon["7FE00010"]["BulkDataURI"].endswith(f"/bulkdata/{NESTED_BULKDATA}")
    location = LOCATION.split("/")
    return {
        "projectsId": location[1],
        "locationsId": location[3],
        "datasetsId": dataset_id,
        "dicomStoresId": STORE_ID,
        "studiesId": STUDY,
        "seriesId": SERIES,
        "instancesId": INSTANCE,
        "framesId": "1",
        "bulkdataId": NESTED_BULKDATA.split("/", 1)[0],
        "bulkdataId1": NESTED_BULKDATA.split("/", 1)[1],
        "operationsId": operation_id,
    }


def path_of(method: Method, ids: Mapping[str, str]) -> str:
    return "/" + re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], method.flat_path)


async def send(http: httpx.AsyncClient, method: Method, call: Call, ids: Mapping[str, str]) -> Any:
    headers = dict(call.headers)
    content: bytes | None = None
    if call.content == "instance":
        content = instance_bytes(generate_uid())
        headers["content-type"] = "application/dicom"
    elif call.body is not None:
        content = json.dumps(call.body).encode()
        headers["content-type"] = "application/json"
    return await http.request(
        method.http_method,
        path_of(method, ids),
        params=dict(call.query),
        content=content,
        headers=headers,
    )


def expected_message(method: Method) -> str:
    return f"method {method.id} is not implemented by this server"


# --- the walk ----------------------------------------------------------------------------------


@pytest.mark.google_behaviour(
    "rest-bindings",
    "unimplemented-methods",
    "study-series-metrics",
    "deidentify",
    "iam-and-auth",
    "blob-storage-classes",
)
@pytest.mark.parametrize("method", SURFACE, ids=lambda m: m.short_id)
async def test_every_method_works_or_is_501_naming_it(
    surface_client: httpx.AsyncClient, method: Method
) -> None:
    ids = await set_up(surface_client)
    if method.short_id in WORKING:
        call = WORKING[method.short_id]
        response = await send(surface_client, method, call, ids)
        assert response.status_code not in UNIMPLEMENTED_STATUSES, response.text
        assert response.status_code == call.status, response.text
    else:
        call = UNIMPLEMENTED.get(method.short_id, Call())
        response = await send(surface_client, method, call, ids)
        assert response.status_code == 501, response.text
        assert response.json() == {
            "error": {"code": 501, "message": expected_message(method), "status": "UNIMPLEMENTED"}
        }


@pytest.mark.google_behaviour("unimplemented-methods")
@pytest.mark.parametrize(
    "method",
    [m for m in SURFACE if m.short_id not in WORKING and ":" in m.flat_path],
    ids=lambda m: m.short_id,
)
async def test_unimplemented_custom_method_is_501_whether_or_not_its_resource_exists(
    surface_client: httpx.AsyncClient, method: Method
) -> None:
    ids = {name: "missing" for name in re.findall(r"\{(\w+)\}", method.flat_path)}
    ids |= {"projectsId": "p", "locationsId": "l", "studiesId": "1.2", "seriesId": "1.2.3"}
    response = await send(surface_client, method, UNIMPLEMENTED.get(method.short_id, Call()), ids)
    assert response.status_code == 501, response.text
    assert response.json()["error"]["message"] == expected_message(method)


async def test_verb_on_a_study_is_not_a_stow(surface_client: httpx.AsyncClient) -> None:
    await set_up(surface_client)
    response = await surface_client.post(
        f"/v1/{STORE}/dicomWeb/studies/{STUDY}:setBlobStorageSettings",
        content=instance_bytes(generate_uid()),
        headers={"content-type": "application/dicom"},
    )
    assert response.status_code == 501, response.text
    metrics = await surface_client.get(f"/v1/{STORE}:getDICOMStoreMetrics")
    assert metrics.json()["instanceCount"] == "1"


# --- google-api-python-client, unchanged, on a real socket ---------------------------------------


@pytest.fixture
def healthcare(app: App) -> Iterator[Any]:
    http = httplib2.Http(timeout=10)
    yield build_from_document(
        DOCUMENT.read_text(encoding="utf-8"),
        http=http,
        client_options={"api_endpoint": f"http://127.0.0.1:{app.http_port}/"},
    )
    http.close()


def path_parameters(method: Method, ids: Mapping[str, str]) -> dict[str, str]:
    """The values of a method's path parameters (`{+parent}`...) that give its flat path."""

    def parameter(match: re.Match[str]) -> str:
        name = match.group(1)
        pattern = str(method.parameters[name]["pattern"]).removeprefix("^").removesuffix("$")
        return f"(?P<{name}>{pattern})"

    literals = re.split(r"(\{\+\w+\})", method.path)
    regex = "".join(
        re.sub(r"\{\+(\w+)\}", parameter, piece) if piece.startswith("{") else re.escape(piece)
        for piece in literals
    )
    match = re.fullmatch(regex, path_of(method, ids).removeprefix("/"))
    assert match is not None, (method.path, path_of(method, ids))
    return match.groupdict()


def client_request(healthcare: Any, method: Method, call: Call, ids: Mapping[str, str]) -> Any:
    """The discovery client's request for `method`, with the parameters of its flat path."""
    resource = healthcare
    for name in method.id.split(".")[1:-1]:
        resource = getattr(resource, name)()
    kwargs: dict[str, Any] = path_parameters(method, ids)
    assert set(kwargs) == set(method.parameter_order)
    if call.body is not None:
        kwargs["body"] = call.body
    return getattr(resource, method.id.rsplit(".", 1)[1])(**kwargs)


@pytest.mark.google_behaviour("unimplemented-methods")
@pytest.mark.parametrize(
    "method", [m for m in SURFACE if m.short_id in UNIMPLEMENTED], ids=lambda m: m.short_id
)
async def test_discovery_client_gets_501_naming_the_method(
    healthcare: Any, surface_client: httpx.AsyncClient, method: Method
) -> None:
    ids = await set_up(surface_client)
    request = client_request(healthcare, method, UNIMPLEMENTED[method.short_id], ids)
    with pytest.raises(HttpError) as caught:
        await asyncio.to_thread(request.execute)
    assert caught.value.status_code == 501
    assert caught.value.reason == expected_message(method)
    assert json.loads(caught.value.content)["error"]["status"] == "UNIMPLEMENTED"
