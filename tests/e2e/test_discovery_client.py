"""Google's discovery-based Python client, unchanged, against dicomstore's REST surface.

The client is google-api-python-client built from the `healthcare.v1.json` discovery document it
ships, with no credentials and its endpoint pointed at dicomstore: every request it sends (paths,
verbs, `{+name}` expansion and percent-encoding, query parameters such as `alt=json`, JSON bodies)
is Google's client's own, so a drift from `healthcare.googleapis.com/v1` fails here.

The server is the in-process `app` (uvicorn on a real socket) or
`DICOMSTORE_TEST_TARGET=host:grpcport,httpport`. The client blocks, so each call runs in a worker
thread while the in-process server keeps serving on the test's event loop.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import googleapiclient
import httplib2
import httpx
import pydicom
import pytest
from googleapiclient.discovery import build_from_document
from googleapiclient.errors import HttpError
from tests.e2e.server import external_target
from tests.unit.dicom.dicomfiles import data_file

from dicomstore.app import App

DOCUMENT = (
    Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "healthcare.v1.json"
)
OPERATION_METADATA = "type.googleapis.com/google.cloud.healthcare.v1.OperationMetadata"
TIMEOUT = 10


@pytest.fixture
def endpoint(request: pytest.FixtureRequest) -> str:
    """Base URL of a server: the external target if one is named, else the in-process `app`."""
    target = external_target()
    if target is not None:
        return target.http_url
    app: App = request.getfixturevalue("app")
    return f"http://127.0.0.1:{app.http_port}"


@pytest.fixture
def healthcare(endpoint: str) -> Iterator[Any]:
    http = httplib2.Http(timeout=TIMEOUT)
    yield build_from_document(
        DOCUMENT.read_text(encoding="utf-8"),
        http=http,
        client_options={"api_endpoint": f"{endpoint}/"},
    )
    http.close()


async def call(request: Any) -> Any:
    """Execute a built client request in a worker thread."""
    return await asyncio.to_thread(request.execute)


async def http_error(request: Any) -> HttpError:
    with pytest.raises(HttpError) as caught:
        await call(request)
    return caught.value


@pytest.fixture
def location() -> str:
    # A project of its own, so tests can share an external server.
    return f"projects/discovery-{uuid.uuid4().hex[:12]}/locations/us-central1"


@pytest.fixture
async def dataset(healthcare: Any, location: str) -> AsyncIterator[str]:
    datasets = healthcare.projects().locations().datasets()
    operation = await call(datasets.create(parent=location, datasetId="hospital", body={}))
    assert operation["done"] is True
    name = f"{location}/datasets/hospital"
    yield name
    try:
        await call(datasets.delete(name=name))
    except HttpError as exc:  # the test deleted it already
        assert exc.status_code == 404


def stores(healthcare: Any) -> Any:
    return healthcare.projects().locations().datasets().dicomStores()


def operations(healthcare: Any) -> Any:
    return healthcare.projects().locations().datasets().operations()


async def wait_done(healthcare: Any, name: str) -> Any:
    for _ in range(500):
        operation = await call(operations(healthcare).get(name=name))
        if operation.get("done"):
            return operation
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} did not finish")


async def test_dataset_create_get_list_patch_delete(healthcare: Any, location: str) -> None:
    datasets = healthcare.projects().locations().datasets()
    operation = await call(
        datasets.create(parent=location, datasetId="hospital", body={"timeZone": "UTC"})
    )
    name = f"{location}/datasets/hospital"
    assert operation["name"].startswith(f"{name}/operations/")
    assert operation["metadata"]["@type"] == OPERATION_METADATA
    assert operation["response"]["name"] == name
    assert await call(datasets.get(name=name)) == {"name": name, "timeZone": "UTC"}
    listed = await call(datasets.list(parent=location, pageSize=10))
    assert [d["name"] for d in listed["datasets"]] == [name]
    patched = await call(
        datasets.patch(name=name, updateMask="timeZone", body={"timeZone": "America/New_York"})
    )
    assert patched == {"name": name, "timeZone": "America/New_York"}
    assert await call(datasets.delete(name=name)) == {}
    error = await http_error(datasets.get(name=name))
    assert error.status_code == 404


@pytest.mark.google_behaviour("rest-bindings")
async def test_dicom_store_create_get_list_patch_metrics_delete(
    healthcare: Any, dataset: str
) -> None:
    created = await call(
        stores(healthcare).create(
            parent=dataset, dicomStoreId="ct", body={"labels": {"modality": "ct"}}
        )
    )
    name = f"{dataset}/dicomStores/ct"
    assert created == {"name": name, "labels": {"modality": "ct"}}
    await call(stores(healthcare).create(parent=dataset, dicomStoreId="mr", body={}))
    assert await call(stores(healthcare).get(name=name)) == created
    listed = await call(stores(healthcare).list(parent=dataset, filter="labels.modality=ct"))
    assert [s["name"] for s in listed["dicomStores"]] == [name]
    first = await call(stores(healthcare).list(parent=dataset, pageSize=1))
    second = await call(
        stores(healthcare).list(parent=dataset, pageSize=1, pageToken=first["nextPageToken"])
    )
    assert [s["name"] for s in first["dicomStores"] + second["dicomStores"]] == [
        name,
        f"{dataset}/dicomStores/mr",
    ]
    patched = await call(
        stores(healthcare).patch(
            name=name, updateMask="labels", body={"labels": {"modality": "ct", "site": "north"}}
        )
    )
    assert patched["labels"] == {"modality": "ct", "site": "north"}
    metrics = await call(stores(healthcare).getDICOMStoreMetrics(name=name))
    assert metrics == {"name": name}
    assert await call(stores(healthcare).delete(name=name)) == {}
    error = await http_error(stores(healthcare).get(name=name))
    assert error.status_code == 404


@pytest.mark.google_behaviour("store-id")
async def test_store_id_with_space_and_accent_round_trips(healthcare: Any, dataset: str) -> None:
    store_id = "scanner é 1"
    created = await call(stores(healthcare).create(parent=dataset, dicomStoreId=store_id, body={}))
    assert created["name"] == f"{dataset}/dicomStores/{store_id}"
    assert await call(stores(healthcare).get(name=created["name"])) == created
    metrics = await call(stores(healthcare).getDICOMStoreMetrics(name=created["name"]))
    assert metrics["name"] == created["name"]


async def test_import_export_and_operations(healthcare: Any, dataset: str) -> None:
    store = await call(stores(healthcare).create(parent=dataset, dicomStoreId="ct", body={}))
    imported = await call(
        stores(healthcare).import_(
            name=store["name"], body={"gcsSource": {"uri": "gs://bucket/dicom/**.dcm"}}
        )
    )
    assert imported["name"].startswith(f"{dataset}/operations/")
    assert imported["metadata"]["apiMethodName"].endswith("ImportDicomData")
    exported = await call(
        stores(healthcare).export(
            name=store["name"], body={"gcsDestination": {"uriPrefix": "gs://bucket/out"}}
        )
    )
    assert exported["metadata"]["apiMethodName"].endswith("ExportDicomData")
    finished = await wait_done(healthcare, imported["name"])
    await wait_done(healthcare, exported["name"])
    assert finished["metadata"]["@type"] == OPERATION_METADATA
    listed = await call(operations(healthcare).list(name=dataset, filter="done=true"))
    assert {imported["name"], exported["name"]} <= {o["name"] for o in listed["operations"]}
    page = await call(operations(healthcare).list(name=dataset, pageSize=1))
    assert len(page["operations"]) == 1 and page["nextPageToken"]
    assert await call(operations(healthcare).cancel(name=imported["name"], body={})) == {}
    assert await call(operations(healthcare).get(name=imported["name"])) == finished


@pytest.mark.google_behaviour("error-model")
async def test_missing_store_is_http_error_404_not_found(healthcare: Any, dataset: str) -> None:
    error = await http_error(stores(healthcare).get(name=f"{dataset}/dicomStores/missing"))
    assert error.status_code == 404
    assert error.resp["content-type"] == "application/json; charset=utf-8"
    assert "missing" in error.reason


async def test_bad_filter_is_http_error_400(healthcare: Any, dataset: str) -> None:
    error = await http_error(stores(healthcare).list(parent=dataset, filter="labels.x=("))
    assert error.status_code == 400
    assert error.reason.startswith("filter")


async def store_ct_and_mr(endpoint: str, store: str) -> list[pydicom.Dataset]:
    """STOW CT_small and MR_small (the discovery client has no way to send DICOM bodies)."""
    files = [data_file("CT_small.dcm"), data_file("MR_small.dcm")]
    async with httpx.AsyncClient(base_url=endpoint) as http:
        for path in files:
            response = await http.post(
                f"/v1/{store}/dicomWeb/studies",
                content=path.read_bytes(),
                headers={"content-type": "application/dicom"},
            )
            assert response.status_code == 200, response.text
    return [pydicom.dcmread(path, stop_before_pixels=True) for path in files]


@pytest.mark.google_behaviour("metadata-media-types", "qido-media-types")
async def test_dicomweb_metadata_and_search_answer_the_default_accept(
    healthcare: Any, dataset: str, endpoint: str
) -> None:
    """The client sends `Accept: application/json` and `alt=json`; metadata is DICOM JSON."""
    store = (await call(stores(healthcare).create(parent=dataset, dicomStoreId="web", body={})))[
        "name"
    ]
    ct, mr = await store_ct_and_mr(endpoint, store)
    studies = stores(healthcare).studies()
    study_path = f"studies/{ct.StudyInstanceUID}"
    series_path = f"{study_path}/series/{ct.SeriesInstanceUID}"
    instance_path = f"{series_path}/instances/{ct.SOPInstanceUID}"
    for method, path in [
        (studies.retrieveMetadata, study_path),
        (studies.series().retrieveMetadata, series_path),
        (studies.series().instances().retrieveMetadata, instance_path),
    ]:
        (item,) = await call(method(parent=store, dicomWebPath=f"{path}/metadata"))
        assert item["00080018"] == {"vr": "UI", "Value": [ct.SOPInstanceUID]}
        assert item["00100010"]["Value"] == [{"Alphabetic": str(ct.PatientName)}]
        assert item["7FE00010"]["BulkDataURI"] == (
            f"{endpoint}/v1/{quote(store)}/dicomWeb/{instance_path}/bulkdata/7FE00010"
        )
    found = await call(
        stores(healthcare).searchForInstances(parent=store, dicomWebPath="instances")
    )
    assert {i["00080018"]["Value"][0] for i in found} == {ct.SOPInstanceUID, mr.SOPInstanceUID}
    series = await call(studies.searchForSeries(parent=store, dicomWebPath=f"{study_path}/series"))
    assert [s["0020000E"]["Value"] for s in series] == [[ct.SeriesInstanceUID]]
