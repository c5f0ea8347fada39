"""STOW-RS through a real started App: httpx over the ASGI app for breadth, a real socket for
streaming, and dicomweb-client (when installed) as a real DICOMweb client.

Every bad input is checked to have stored nothing, through the store's metrics.
"""

from __future__ import annotations

import asyncio
import io
import json
import tracemalloc
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.encaps import generate_frames
from pydicom.uid import JPEGBaseline8Bit, JPEGLSLossless

from dicomstore.api.rest.dicomweb.stow import SPOOL_THRESHOLD
from dicomstore.app import App
from dicomstore.core.ingest import IN_FLIGHT, PENDING_ROWS
from dicomstore.core.names import DicomStoreName
from dicomstore.dicom.reasons import FailureReason
from tests.conftest import DATASET, running
from tests.rest.support import (
    BASE_URL,
    BOUNDARY,
    DICOM,
    DICOM_JSON,
    MULTIPART,
    MULTIPART_JSON,
    TEST_FILES,
    client_for,
    create_dataset_and_store,
    howto_metadata,
    jpeg_frames,
    multipart_body,
)
from tests.unit.dicom.dicomfiles import data_file, new_instance, part10

STORE = f"{DATASET}/dicomStores/s"
STUDIES = f"/v1/{STORE}/dicomWeb/studies"
DICOM_XML = "application/dicom+xml"
ACCEPT_JSON = {"Accept": DICOM_JSON}
PROCESSING_FAILURE = 0x0110
FAILED_SOP = "00081198"
REFERENCED_SOP = "00081199"
RETRIEVE_URL = "00081190"
FAILURE_REASON = "00081197"
FAILURE_DETAIL = "00091097"
SOP_INSTANCE = "00081155"


@asynccontextmanager
async def stow_client(tmp_path: Path, **overrides: object) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a fresh server (settings `overrides`) that already has the store."""
    async with running(tmp_path, **overrides) as app:
        assert app.http_app is not None
        async with client_for(app.http_app) as http:
            await create_dataset_and_store(http, "s")
            yield http


@pytest.fixture
async def client(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The client, with the store STORE created."""
    await create_dataset_and_store(client, "s")
    return client


async def instance_count(client: httpx.AsyncClient) -> int:
    response = await client.get(f"/v1/{STORE}:getDICOMStoreMetrics")
    assert response.status_code == 200, response.text
    return int(response.json().get("instanceCount", "0"))


async def stored_bytes(app: App, study: str, series: str, sop: str) -> bytes:
    (found,) = await app.catalog.find_instances(DicomStoreName.parse(STORE), study, series, sop)
    chunks = app.blobs.read(found.key.store_key, found.key.instance_key)
    return b"".join([chunk async for chunk in chunks])


def dicom_parts(*bodies: bytes) -> bytes:
    return multipart_body(({"Content-Type": DICOM}, body) for body in bodies)


def instance(number: int, study: str = "1.2.826.0.1.3") -> bytes:
    return part10(
        new_instance(
            StudyInstanceUID=study,
            SeriesInstanceUID=f"{study}.4",
            SOPInstanceUID=f"{study}.4.{number}",
        )
    )


def instance_of_size(size: int, number: int = 1) -> bytes:
    """An instance of exactly `size` bytes (even): rows of 512 16-bit pixels, topped up with a
    comment."""

    def build(rows: int, comment: str) -> bytes:
        return part10(
            new_instance(
                StudyInstanceUID="1.2.826.0.1.3",
                SeriesInstanceUID="1.2.826.0.1.3.4",
                SOPInstanceUID=f"1.2.826.0.1.3.4.{number}",
                Rows=rows,
                Columns=512,
                BitsAllocated=16,
                BitsStored=16,
                HighBit=15,
                PixelRepresentation=0,
                SamplesPerPixel=1,
                PhotometricInterpretation="MONOCHROME2",
                ImageComments=comment,
                PixelData=bytes([number]) * (rows * 1024),
            )
        )

    rows, extra = divmod(size - len(build(0, "")), 1024)
    payload = build(rows, "x" * extra)
    assert len(payload) == size
    return payload


async def retrieved(client: httpx.AsyncClient, number: int) -> bytes:
    """Instance `number` of study 1.2.826.0.1.3 as stored (WADO-RS, no transcoding)."""
    response = await client.get(
        f"{STUDIES}/1.2.826.0.1.3/series/1.2.826.0.1.3.4/instances/1.2.826.0.1.3.4.{number}",
        headers={"Accept": f"{DICOM}; transfer-syntax=*"},
    )
    assert response.status_code == 200, response.text
    return response.content


async def in_chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def values(dataset: Mapping[str, Any], tag: str) -> list[Any]:
    return list(dataset.get(tag, {}).get("Value", []))


def referenced_uids(body: Mapping[str, Any]) -> list[str]:
    return [item[SOP_INSTANCE]["Value"][0] for item in values(body, REFERENCED_SOP)]


def failures(body: Mapping[str, Any]) -> list[tuple[int, str]]:
    return [
        (item[FAILURE_REASON]["Value"][0], item[FAILURE_DETAIL]["Value"][0])
        for item in values(body, FAILED_SOP)
    ]


def error_message(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message: str = response.json()["error"]["message"]
    return message


# --- every file pydicom ships -------------------------------------------------------------------


def read(path: Path) -> bytes:
    return path.read_bytes()


def test_pydicom_ships_its_test_files() -> None:
    assert len(TEST_FILES) >= 70


@pytest.mark.google_behaviour("stow-any-instance")
@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
async def test_every_pydicom_file_is_stored_or_refused_with_a_reason(
    app: App, client: httpx.AsyncClient, path: Path
) -> None:
    payload = read(path)
    response = await client.post(
        STUDIES, content=payload, headers={"Content-Type": DICOM, **ACCEPT_JSON}
    )
    assert response.status_code in (200, 409), response.text
    assert response.headers["content-type"] == DICOM_JSON
    body = response.json()
    if response.status_code == 200:
        (item,) = values(body, REFERENCED_SOP)
        url = item[RETRIEVE_URL]["Value"][0]
        study, series, sop = url.split("/studies/")[1].split("/")[0::2]
        assert item[SOP_INSTANCE]["Value"] == [sop]
        assert values(body, RETRIEVE_URL) == [f"{BASE_URL}{STUDIES}/{study}"]
        assert await stored_bytes(app, study, series, sop) == payload
        assert await instance_count(client) == 1
    else:
        ((reason, detail),) = failures(body)
        assert reason in set(FailureReason)
        assert detail
        assert REFERENCED_SOP not in body
        assert RETRIEVE_URL not in body
        assert await instance_count(client) == 0


# --- multipart ----------------------------------------------------------------------------------


@pytest.mark.google_behaviour("stow-request-types")
async def test_multipart_of_three_instances_stores_each(client: httpx.AsyncClient) -> None:
    response = await client.post(
        STUDIES,
        content=dicom_parts(instance(1), instance(2), instance(3)),
        headers={"Content-Type": MULTIPART, **ACCEPT_JSON},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert referenced_uids(body) == [f"1.2.826.0.1.3.4.{n}" for n in (1, 2, 3)]
    assert values(body, RETRIEVE_URL) == [f"{BASE_URL}{STUDIES}/1.2.826.0.1.3"]
    assert FAILED_SOP not in body
    assert await instance_count(client) == 3


async def blob_keys(app: App) -> set[int]:
    """The instance keys of the blobs on disk in the test store."""
    store_key = await app.catalog.dicom_store_key(DicomStoreName.parse(STORE))
    return await app.blobs.instance_keys(store_key)


async def test_large_multipart_keeps_part_order_and_leaves_no_stray_blob(
    app: App, client: httpx.AsyncClient
) -> None:
    count = PENDING_ROWS + IN_FLIGHT + 3  # past a staging of rows, with parts in flight
    bodies = [instance(n) for n in range(1, count + 1)]
    bodies.insert(5, b"not DICOM at all")
    bodies.append(instance(1))  # the first instance again
    response = await client.post(
        STUDIES, content=dicom_parts(*bodies), headers={"Content-Type": MULTIPART, **ACCEPT_JSON}
    )
    assert response.status_code == 409, response.text
    body = response.json()
    assert referenced_uids(body) == [f"1.2.826.0.1.3.4.{n}" for n in range(1, count + 1)]
    (garbage, duplicate) = failures(body)
    assert garbage[0] != PROCESSING_FAILURE
    assert duplicate[0] == PROCESSING_FAILURE and "already exists" in duplicate[1]
    assert await instance_count(client) == count
    store = DicomStoreName.parse(STORE)
    stored = {i.key.instance_key for i in await app.catalog.find_instances(store, "1.2.826.0.1.3")}
    assert await blob_keys(app) == stored


async def test_request_failing_with_parts_in_flight_leaves_no_row_and_no_blob(
    app: App, client: httpx.AsyncClient
) -> None:
    body = dicom_parts(*(instance(n) for n in range(1, 3 * IN_FLIGHT)))
    cut = body[: body.rindex(f"--{BOUNDARY}".encode()) - 5]  # inside the last part
    response = await client.post(STUDIES, content=cut, headers={"Content-Type": MULTIPART})
    assert error_message(response, 400)
    assert await instance_count(client) == 0
    assert await blob_keys(app) == set()
    store_key = await app.catalog.dicom_store_key(DicomStoreName.parse(STORE))
    assert await app.catalog.instance_keys(store_key) == set()


@pytest.mark.google_behaviour("stow-request-types")
async def test_unquoted_type_parameter_is_accepted(client: httpx.AsyncClient) -> None:
    content_type = f"multipart/related; type={DICOM}; boundary={BOUNDARY}"
    response = await client.post(
        STUDIES, content=dicom_parts(instance(1)), headers={"Content-Type": content_type}
    )
    assert response.status_code == 200, response.text
    assert await instance_count(client) == 1


@pytest.mark.google_behaviour("stow-response-shape")
async def test_instances_of_several_studies_have_no_top_level_retrieve_url(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        STUDIES,
        content=dicom_parts(instance(1, study="1.2.3"), instance(1, study="1.2.4")),
        headers={"Content-Type": MULTIPART, **ACCEPT_JSON},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert RETRIEVE_URL not in body
    urls = [item[RETRIEVE_URL]["Value"][0] for item in values(body, REFERENCED_SOP)]
    assert urls == [
        f"{BASE_URL}{STUDIES}/1.2.3/series/1.2.3.4/instances/1.2.3.4.1",
        f"{BASE_URL}{STUDIES}/1.2.4/series/1.2.4.4/instances/1.2.4.4.1",
    ]


async def test_part_of_another_media_type_fails_as_an_item(client: httpx.AsyncClient) -> None:
    body = multipart_body(
        [({"Content-Type": DICOM}, instance(1)), ({"Content-Type": "image/png"}, b"x")]
    )
    response = await client.post(
        STUDIES, content=body, headers={"Content-Type": MULTIPART, **ACCEPT_JSON}
    )
    assert response.status_code == 409, response.text
    ((reason, detail),) = failures(response.json())
    assert reason == FailureReason.CANNOT_UNDERSTAND
    assert "image/png" in detail
    assert await instance_count(client) == 1


async def test_part_without_content_type_is_taken_as_dicom(client: httpx.AsyncClient) -> None:
    response = await client.post(
        STUDIES, content=multipart_body([({}, instance(1))]), headers={"Content-Type": MULTIPART}
    )
    assert response.status_code == 200, response.text


@pytest.mark.google_behaviour("stow-status")
@pytest.mark.parametrize(("mode", "status"), [("google", 409), ("standard", 202)])
async def test_mixed_batch_status_follows_the_mode(tmp_path: Path, mode: str, status: int) -> None:
    async with stow_client(tmp_path, dicomweb_mode=mode) as client:
        response = await client.post(
            STUDIES,
            content=dicom_parts(instance(1), b"this is not DICOM"),
            headers={"Content-Type": MULTIPART, **ACCEPT_JSON},
        )
        assert response.status_code == status, response.text
        body = response.json()
        assert referenced_uids(body) == ["1.2.826.0.1.3.4.1"]
        ((reason, detail),) = failures(body)
        assert reason == FailureReason.CANNOT_UNDERSTAND
        assert "Part 10" in detail
        assert await instance_count(client) == 1


@pytest.mark.google_behaviour("stow-response-format")
async def test_standard_mode_xml_has_the_native_dicom_namespace(tmp_path: Path) -> None:
    async with stow_client(tmp_path, dicomweb_mode="standard") as client:
        response = await client.post(STUDIES, content=instance(1), headers={"Content-Type": DICOM})
    assert response.status_code == 200, response.text
    root = ET.fromstring(response.content)
    assert root.tag == "{http://dicom.nema.org/PS3.19/models/NativeDICOM}NativeDicomModel"


# --- failures of one instance -------------------------------------------------------------------


@pytest.mark.google_behaviour("stow-duplicate")
async def test_duplicate_fails_with_processing_failure_and_keeps_the_stored_copy(
    app: App, client: httpx.AsyncClient
) -> None:
    path = data_file("CT_small.dcm")
    original = path.read_bytes()
    headers = {"Content-Type": DICOM, **ACCEPT_JSON}
    first = await client.post(STUDIES, content=original, headers=headers)
    assert first.status_code == 200, first.text
    ds = pydicom.dcmread(path)
    changed = io.BytesIO()
    ds.PatientName = "Someone^Else"
    ds.save_as(changed, enforce_file_format=True)
    again = await client.post(STUDIES, content=changed.getvalue(), headers=headers)
    assert again.status_code == 409, again.text
    body = again.json()
    ((reason, detail),) = failures(body)
    assert reason == PROCESSING_FAILURE == 272
    assert "already exists" in detail
    (item,) = values(body, FAILED_SOP)
    assert item[SOP_INSTANCE]["Value"] == [ds.SOPInstanceUID]
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert await stored_bytes(app, *uids) == original
    assert await instance_count(client) == 1


@pytest.mark.google_behaviour("stow-study-mismatch")
async def test_instance_of_another_study_than_the_path_fails(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{STUDIES}/1.2.999",
        content=instance(1),
        headers={"Content-Type": DICOM, **ACCEPT_JSON},
    )
    assert response.status_code == 409, response.text
    body = response.json()
    ((reason, detail),) = failures(body)
    assert reason == FailureReason.STUDY_INSTANCE_UID_MISMATCH
    assert "1.2.999" in detail
    assert RETRIEVE_URL not in body
    assert await instance_count(client) == 0


@pytest.mark.google_behaviour("stow-study-mismatch")
async def test_instance_of_the_path_study_is_stored(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{STUDIES}/1.2.826.0.1.3",
        content=instance(1),
        headers={"Content-Type": DICOM, **ACCEPT_JSON},
    )
    assert response.status_code == 200, response.text
    assert values(response.json(), RETRIEVE_URL) == [f"{BASE_URL}{STUDIES}/1.2.826.0.1.3"]


@pytest.mark.google_behaviour("stow-any-instance", "stow-status")
@pytest.mark.parametrize(
    "payload",
    [instance(1)[:-7], instance(1)[:200], b"garbage " * 100, b"\0" * 128 + b"DICM"],
    ids=["truncated-value", "truncated-header", "garbage", "preamble-only"],
)
async def test_bad_dicom_is_an_item_failure(client: httpx.AsyncClient, payload: bytes) -> None:
    response = await client.post(
        STUDIES, content=payload, headers={"Content-Type": DICOM, **ACCEPT_JSON}
    )
    assert response.status_code == 409, response.text
    ((reason, detail),) = failures(response.json())
    assert reason in (
        FailureReason.CANNOT_UNDERSTAND,
        FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    )
    assert detail
    assert await instance_count(client) == 0


async def test_truncated_dicom_part_is_an_item_failure(client: httpx.AsyncClient) -> None:
    response = await client.post(
        STUDIES,
        content=dicom_parts(instance(1)[:-7]),
        headers={"Content-Type": MULTIPART, **ACCEPT_JSON},
    )
    assert response.status_code == 409, response.text
    ((reason, detail),) = failures(response.json())
    assert reason == FailureReason.CANNOT_UNDERSTAND
    assert "truncated" in detail
    assert await instance_count(client) == 0


async def test_concurrent_stow_of_one_instance_stores_exactly_one(
    client: httpx.AsyncClient,
) -> None:
    payload = data_file("CT_small.dcm").read_bytes()
    responses = await asyncio.gather(
        *(
            client.post(STUDIES, content=payload, headers={"Content-Type": DICOM, **ACCEPT_JSON})
            for _ in range(8)
        )
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [409] * 7
    for response in responses:
        if response.status_code == 409:
            ((reason, detail),) = failures(response.json())
            assert reason == PROCESSING_FAILURE
            assert "already exists" in detail
    assert await instance_count(client) == 1


# --- response representations -------------------------------------------------------------------


def xml_attributes(element: ET.Element) -> dict[str, ET.Element]:
    return {child.attrib["tag"]: child for child in element.findall("DicomAttribute")}


@pytest.mark.google_behaviour("stow-response-format")
async def test_response_is_xml_by_default(client: httpx.AsyncClient) -> None:
    response = await client.post(STUDIES, content=instance(1), headers={"Content-Type": DICOM})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == DICOM_XML
    root = ET.fromstring(response.content)
    assert root.tag == "NativeDicomModel"
    top = xml_attributes(root)
    assert top[RETRIEVE_URL].attrib == {"tag": RETRIEVE_URL, "vr": "UR", "keyword": "RetrieveURL"}
    assert top[RETRIEVE_URL].findtext("Value") == f"{BASE_URL}{STUDIES}/1.2.826.0.1.3"
    assert top[REFERENCED_SOP].attrib["keyword"] == "ReferencedSOPSequence"
    (item,) = top[REFERENCED_SOP].findall("Item")
    assert item.attrib["number"] == "1"
    fields = xml_attributes(item)
    assert fields["00081150"].findtext("Value") == "1.2.840.10008.5.1.4.1.1.7"
    assert fields[SOP_INSTANCE].findtext("Value") == "1.2.826.0.1.3.4.1"
    assert fields[RETRIEVE_URL].findtext("Value") == (
        f"{BASE_URL}{STUDIES}/1.2.826.0.1.3/series/1.2.826.0.1.3.4/instances/1.2.826.0.1.3.4.1"
    )


@pytest.mark.google_behaviour("stow-failure-detail")
async def test_xml_failure_has_google_failure_detail(client: httpx.AsyncClient) -> None:
    response = await client.post(STUDIES, content=b"not dicom", headers={"Content-Type": DICOM})
    assert response.status_code == 409, response.text
    (item,) = xml_attributes(ET.fromstring(response.content))[FAILED_SOP].findall("Item")
    fields = xml_attributes(item)
    assert fields[FAILURE_REASON].findtext("Value") == str(int(FailureReason.CANNOT_UNDERSTAND))
    detail = fields["00090097"]
    assert detail.attrib["privateCreator"] == "GOOGLE"
    assert detail.attrib["keyword"] == "FailureDetail"
    assert "Part 10" in (detail.findtext("Value") or "")


@pytest.mark.google_behaviour("stow-response-format", "accept-negotiation")
@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        ("*/*", DICOM_XML),
        ("application/*", DICOM_XML),
        ("*", DICOM_XML),
        (DICOM_XML, DICOM_XML),
        (DICOM_JSON, DICOM_JSON),
        ("application/json", "application/json"),
        (f"{DICOM_JSON}, */*", DICOM_JSON),
        (f"{DICOM_XML};q=0.5, {DICOM_JSON}", DICOM_JSON),
        (f"{DICOM_JSON};q=0.2, {DICOM_XML};q=0.9", DICOM_XML),
        (f"*/*;q=0.1, {DICOM_XML};q=0", DICOM_JSON),
        ("image/png, application/dicom+json; charset=utf-8", DICOM_JSON),
    ],
)
async def test_accept_picks_the_representation(
    client: httpx.AsyncClient, accept: str, media_type: str
) -> None:
    response = await client.post(
        STUDIES, content=instance(1), headers={"Content-Type": DICOM, "Accept": accept}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    if media_type == DICOM_XML:
        assert ET.fromstring(response.content).tag == "NativeDicomModel"
    else:
        assert referenced_uids(response.json()) == ["1.2.826.0.1.3.4.1"]


# --- request-level errors: nothing stored --------------------------------------------------------


@pytest.mark.google_behaviour("stow-request-types")
@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/json",
        DICOM_JSON,
        f"multipart/related; boundary={BOUNDARY}",
        f'multipart/related; type="application/dicom+xml"; boundary={BOUNDARY}',
        f'multipart/mixed; type="{DICOM}"; boundary={BOUNDARY}',
        "not a media type",
    ],
)
async def test_unsupported_content_type_is_415(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post(STUDIES, content=dicom_parts(instance(1)), headers=headers)
    message = error_message(response, 415)
    assert 'multipart/related; type="application/dicom"' in message
    assert 'multipart/related; type="application/dicom+json"' in message
    assert await instance_count(client) == 0


@pytest.mark.google_behaviour("accept-negotiation")
@pytest.mark.parametrize(
    "accept",
    ["image/png", "text/html, text/*", f"{DICOM_JSON};q=0, {DICOM_XML};q=0", "application/dicom"],
)
async def test_unsatisfiable_accept_is_406(client: httpx.AsyncClient, accept: str) -> None:
    response = await client.post(
        STUDIES, content=instance(1), headers={"Content-Type": DICOM, "Accept": accept}
    )
    message = error_message(response, 406)
    assert all(media_type in message for media_type in (DICOM_XML, DICOM_JSON))
    assert await instance_count(client) == 0


async def test_content_type_is_checked_before_the_store(client: httpx.AsyncClient) -> None:
    missing = STUDIES.replace("/dicomStores/s/", "/dicomStores/missing/")
    response = await client.post(missing, content=b"x", headers={"Content-Type": "text/plain"})
    error_message(response, 415)
    response = await client.post(missing, content=instance(1), headers={"Content-Type": DICOM})
    assert "not found" in error_message(response, 404)


@pytest.mark.google_behaviour("stow-uid-syntax")
async def test_invalid_study_uid_in_path_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{STUDIES}/not-a-uid", content=instance(1), headers={"Content-Type": DICOM}
    )
    assert "not-a-uid" in error_message(response, 400)
    assert await instance_count(client) == 0


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        (DICOM, b"", "empty"),
        (MULTIPART, b"", "empty"),
        (MULTIPART, f"--{BOUNDARY}--\r\n".encode(), "no parts"),
        (MULTIPART, dicom_parts(instance(1))[:-40], "close delimiter"),
        (MULTIPART, b"no boundary anywhere in this body", "close delimiter"),
        (MULTIPART, f"--{BOUNDARY}\r\nbroken header\r\n\r\nx\r\n--{BOUNDARY}--".encode(), "header"),
        (f'multipart/related; type="{DICOM}"', dicom_parts(instance(1)), "boundary"),
        (f'multipart/related; type="{DICOM}"; boundary="a "', dicom_parts(instance(1)), "boundary"),
    ],
    ids=[
        "empty-single",
        "empty-multipart",
        "no-parts",
        "truncated-body",
        "no-delimiter",
        "bad-part-header",
        "no-boundary",
        "invalid-boundary",
    ],
)
async def test_malformed_request_is_400(
    client: httpx.AsyncClient, content_type: str, body: bytes, expected: str
) -> None:
    response = await client.post(STUDIES, content=body, headers={"Content-Type": content_type})
    assert expected in error_message(response, 400)
    assert await instance_count(client) == 0


async def test_malformed_body_after_a_complete_part_stores_nothing_of_the_request(
    client: httpx.AsyncClient,
) -> None:
    body = dicom_parts(instance(1), instance(2))
    cut = body[: body.rindex(f"--{BOUNDARY}".encode()) - 5]  # inside the second part
    response = await client.post(STUDIES, content=cut, headers={"Content-Type": MULTIPART})
    assert error_message(response, 400)
    assert await instance_count(client) == 0
    again = await client.post(STUDIES, content=body, headers={"Content-Type": MULTIPART})
    assert again.status_code == 200, again.text
    assert await instance_count(client) == 2


@pytest.mark.google_behaviour("request-limits")
@pytest.mark.parametrize("form", ["single", "single-chunked", "multipart"])
async def test_instance_over_the_limit_is_413(tmp_path: Path, form: str) -> None:
    payload = instance(1)
    async with stow_client(tmp_path, max_instance_bytes=len(payload) - 1) as client:
        if form == "multipart":
            content: Any = dicom_parts(payload)
            headers = {"Content-Type": MULTIPART}
        else:
            headers = {"Content-Type": DICOM}
            content = payload

            if form == "single-chunked":  # no Content-Length: the limit applies while reading

                async def chunks() -> AsyncIterator[bytes]:
                    yield payload[:100]
                    yield payload[100:]

                content = chunks()
        response = await client.post(STUDIES, content=content, headers=headers)
        assert "larger than" in error_message(response, 413)
        assert await instance_count(client) == 0


@pytest.mark.google_behaviour("request-limits")
async def test_instance_at_the_limit_is_stored(tmp_path: Path) -> None:
    payload = instance(1)
    async with stow_client(tmp_path, max_instance_bytes=len(payload)) as client:
        response = await client.post(STUDIES, content=payload, headers={"Content-Type": DICOM})
        assert response.status_code == 200, response.text
        response = await client.post(
            STUDIES, content=dicom_parts(instance(2)), headers={"Content-Type": MULTIPART}
        )
        assert response.status_code == 200, response.text


# A body up to SPOOL_THRESHOLD is held in memory, a larger one spools to disk; either way the
# stored instance is the uploaded one, byte for byte.
AROUND_THE_SPOOL_THRESHOLD = pytest.mark.parametrize(
    "size",
    [SPOOL_THRESHOLD - 2, SPOOL_THRESHOLD, SPOOL_THRESHOLD + 2, 3 * SPOOL_THRESHOLD],
    ids=["under", "at", "over", "far-over"],
)


@AROUND_THE_SPOOL_THRESHOLD
@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "chunked"])
async def test_single_part_body_around_the_spool_threshold_is_stored_intact(
    client: httpx.AsyncClient, size: int, chunked: bool
) -> None:
    payload = instance_of_size(size)
    content: Any = in_chunks(payload, 100_000) if chunked else payload
    response = await client.post(STUDIES, content=content, headers={"Content-Type": DICOM})
    assert response.status_code == 200, response.text
    assert await retrieved(client, 1) == payload


@AROUND_THE_SPOOL_THRESHOLD
async def test_multipart_parts_around_the_spool_threshold_are_stored_intact(
    client: httpx.AsyncClient, size: int
) -> None:
    payloads = [instance_of_size(size, 1), instance(2)]
    response = await client.post(
        STUDIES, content=dicom_parts(*payloads), headers={"Content-Type": MULTIPART}
    )
    assert response.status_code == 200, response.text
    assert [await retrieved(client, n) for n in (1, 2)] == payloads


async def test_chunked_instance_over_the_limit_past_the_spool_threshold_is_413(
    tmp_path: Path,
) -> None:
    payload = instance_of_size(3 * SPOOL_THRESHOLD)
    async with stow_client(tmp_path, max_instance_bytes=2 * SPOOL_THRESHOLD) as client:
        response = await client.post(
            STUDIES, content=in_chunks(payload, 100_000), headers={"Content-Type": DICOM}
        )
        assert "larger than" in error_message(response, 413)
        assert await instance_count(client) == 0


@pytest.mark.parametrize("content_type", [DICOM, MULTIPART], ids=["single", "multipart"])
async def test_client_gone_mid_upload_is_499_and_stores_nothing(
    app: App, client: httpx.AsyncClient, content_type: str
) -> None:
    body = dicom_parts(instance(1), instance(2)) if content_type == MULTIPART else instance(1)
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": body[: len(body) - 100], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Mapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Mapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "server": ("dicomstore.test", 80),
        "client": ("127.0.0.1", 50000),
        "root_path": "",
        "path": STUDIES,
        "raw_path": STUDIES.encode(),
        "query_string": b"",
        "headers": [(b"host", b"dicomstore.test"), (b"content-type", content_type.encode())],
    }
    assert app.http_app is not None
    await app.http_app(scope, receive, send)
    assert sent[0]["status"] == 499
    assert await instance_count(client) == 0


# --- JSON metadata and bulk data (docs/google-behaviour.md#stow-json-bulkdata) ---------------


async def stored_dataset(app: App, sop: str = "1.2.826.0.1.3.4.5") -> pydicom.Dataset:
    data = await stored_bytes(app, "1.2.826.0.1.3", "1.2.826.0.1.3.4", sop)
    return pydicom.dcmread(io.BytesIO(data))


@pytest.mark.google_behaviour("stow-json-bulkdata")
async def test_howto_json_and_jpeg_example_creates_a_retrievable_instance(
    app: App, client: httpx.AsyncClient
) -> None:
    source, (jpeg,) = jpeg_frames("SC_rgb_dcmtk_+eb+cy+np.dcm")
    # Built exactly as the how-to's opening.file, instance.json, middle.file, image.jpg and
    # closing.file.
    opening = b"--DICOMwebBoundary\r\nContent-Type: application/dicom+json\r\n\r\n"
    middle = (
        b"\r\n--DICOMwebBoundary\r\nContent-Location: jpeg-image\r\n"
        b"Content-Type: image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50\r\n\r\n"
    )
    closing = b"\r\n--DICOMwebBoundary--"
    body = opening + json.dumps([howto_metadata(source)]).encode() + middle + jpeg + closing
    response = await client.post(
        STUDIES,
        content=body,
        headers={
            "Content-Type": 'multipart/related; type="application/dicom+json"; '
            "boundary=DICOMwebBoundary"
        },
    )
    assert response.status_code == 200, response.text
    top = xml_attributes(ET.fromstring(response.content))
    assert top[RETRIEVE_URL].findtext("Value") == f"{BASE_URL}{STUDIES}/1.2.826.0.1.3"
    (item,) = top[REFERENCED_SOP].findall("Item")
    assert xml_attributes(item)[SOP_INSTANCE].findtext("Value") == "1.2.826.0.1.3.4.5"
    stored = await stored_dataset(app)
    assert stored.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert stored.file_meta.MediaStorageSOPInstanceUID == "1.2.826.0.1.3.4.5"
    assert (stored.Rows, stored.Columns) == (source.Rows, source.Columns)
    assert stored.PhotometricInterpretation == "YBR_FULL_422"
    assert stored.SpecificCharacterSet == "ISO_IR 192"
    (frame,) = generate_frames(stored.PixelData, number_of_frames=1)
    assert frame.rstrip(b"\0") == jpeg.rstrip(b"\0")
    assert await instance_count(client) == 1


@pytest.mark.google_behaviour("stow-json-bulkdata")
async def test_json_multi_frame_jpeg_takes_one_part_per_frame(
    app: App, client: httpx.AsyncClient
) -> None:
    source, frames = jpeg_frames("examples_ybr_color.dcm")
    metadata = howto_metadata(source, **{"00280008": {"vr": "IS", "Value": [len(frames)]}})
    parts = [({"Content-Type": DICOM_JSON}, json.dumps([metadata]).encode())]
    parts += [
        ({"Content-Type": "image/jpeg", "Content-Location": "jpeg-image"}, frame)
        for frame in frames
    ]
    response = await client.post(
        STUDIES,
        content=multipart_body(parts),
        headers={"Content-Type": MULTIPART_JSON, **ACCEPT_JSON},
    )
    assert response.status_code == 200, response.text
    stored = await stored_dataset(app)
    assert list(generate_frames(stored.PixelData, number_of_frames=len(frames))) == frames


@pytest.mark.google_behaviour("stow-json-bulkdata")
async def test_json_native_pixel_data_from_an_octet_stream_part(
    app: App, client: httpx.AsyncClient
) -> None:
    pixels = bytes(range(256)) * 3 + b"\x01"  # odd length: padded to an even one
    metadata = {
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.7"]},
        "00080018": {"vr": "UI", "Value": ["1.2.826.0.1.3.4.5"]},
        "0020000D": {"vr": "UI", "Value": ["1.2.826.0.1.3"]},
        "0020000E": {"vr": "UI", "Value": ["1.2.826.0.1.3.4"]},
        "00280002": {"vr": "US", "Value": [1]},
        "00280004": {"vr": "CS", "Value": ["MONOCHROME2"]},
        "00280010": {"vr": "US", "Value": [1]},
        "00280011": {"vr": "US", "Value": [769]},
        "00280100": {"vr": "US", "Value": [8]},
        "00280101": {"vr": "US", "Value": [8]},
        "00280102": {"vr": "US", "Value": [7]},
        "00280103": {"vr": "US", "Value": [0]},
        "7FE00010": {"vr": "OB", "BulkDataURI": "https://client.example/pixels"},
    }  # no Transfer Syntax UID (Explicit VR Little Endian) nor Specific Character Set (added)
    parts = [
        ({"Content-Type": f"{DICOM_JSON}"}, json.dumps([metadata]).encode()),
        (
            {
                "Content-Type": "application/octet-stream",
                "Content-Location": "https://client.example/pixels",
            },
            pixels,
        ),
    ]
    response = await client.post(
        STUDIES,
        content=multipart_body(parts),
        headers={"Content-Type": MULTIPART_JSON, **ACCEPT_JSON},
    )
    assert response.status_code == 200, response.text
    stored = await stored_dataset(app)
    assert stored.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert stored.SpecificCharacterSet == "ISO_IR 192"
    assert stored.PixelData == pixels + b"\0"


async def test_json_bulk_part_may_come_before_its_metadata(client: httpx.AsyncClient) -> None:
    source, (jpeg,) = jpeg_frames("SC_rgb_dcmtk_+eb+cy+np.dcm")
    parts = [
        ({"Content-Type": "image/jpeg", "Content-Location": "jpeg-image"}, jpeg),
        ({"Content-Type": DICOM_JSON}, json.dumps([howto_metadata(source)]).encode()),
    ]
    response = await client.post(
        STUDIES, content=multipart_body(parts), headers={"Content-Type": MULTIPART_JSON}
    )
    assert response.status_code == 200, response.text


async def test_json_instances_without_bulk_data_and_a_dicom_part(
    client: httpx.AsyncClient,
) -> None:
    def minimal(number: int) -> dict[str, Any]:
        return {
            "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.7"]},
            "00080018": {"vr": "UI", "Value": [f"1.2.826.0.1.3.4.{number}"]},
            "0020000D": {"vr": "UI", "Value": ["1.2.826.0.1.3"]},
            "0020000E": {"vr": "UI", "Value": ["1.2.826.0.1.3.4"]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Ünïcode^Ñame"}]},
        }

    parts = [
        ({"Content-Type": DICOM_JSON}, json.dumps([minimal(7), minimal(8)]).encode()),
        ({"Content-Type": DICOM}, instance(9)),
    ]
    response = await client.post(
        STUDIES,
        content=multipart_body(parts),
        headers={"Content-Type": MULTIPART_JSON, **ACCEPT_JSON},
    )
    assert response.status_code == 200, response.text
    assert sorted(referenced_uids(response.json())) == [f"1.2.826.0.1.3.4.{n}" for n in (7, 8, 9)]
    assert await instance_count(client) == 3


def jpeg_request(metadata: dict[str, Any], jpeg: bytes, content_type: str) -> bytes:
    return multipart_body(
        [
            ({"Content-Type": DICOM_JSON}, json.dumps([metadata]).encode()),
            ({"Content-Type": content_type, "Content-Location": "jpeg-image"}, jpeg),
        ]
    )


@pytest.mark.google_behaviour("stow-json-bulkdata")
@pytest.mark.parametrize(
    ("change", "part_type", "reason", "expected"),
    [
        ({"7FE00010": {"vr": "OB", "BulkDataURI": "elsewhere"}}, "image/jpeg", 0xC000, "elsewhere"),
        ({}, f"image/jpeg; transfer-syntax={JPEGLSLossless}", 0xC122, "cannot carry"),
        ({}, "image/jls", 0xC122, "does not match"),
        ({}, "image/gif", 0xC000, "not supported"),
        (
            {"00020010": {"vr": "UI", "Value": ["1.2.840.10008.1.2.2"]}},
            "application/octet-stream",
            0xC122,
            "big-endian",
        ),
        ({"00280008": {"vr": "IS", "Value": [2]}}, "image/jpeg", 0xC000, "Number of Frames"),
        ({"00080005": {"vr": "CS", "Value": ["ISO_IR 100"]}}, "image/jpeg", 0xC000, "ISO_IR 192"),
        ({"7FE00010": {"vr": "OB", "InlineBinary": "AAAA"}}, "image/jpeg", 0xC000, "InlineBinary"),
        (
            {"00080018": {"vr": "UI", "Value": ["1.2.abc"]}},
            "image/jpeg",
            0xA900,
            "SOP Instance UID",
        ),
        ({"0020000D": {"vr": "UI"}}, "image/jpeg", 0xA900, "no Study Instance UID"),
        ({"00280010": {"vr": "US", "Value": ["many"]}}, "image/jpeg", 0xC000, "JSON"),
    ],
    ids=[
        "missing-bulk-part",
        "part-syntax-not-for-media-type",
        "media-type-not-for-declared-syntax",
        "unsupported-media-type",
        "big-endian",
        "too-few-frames",
        "charset",
        "inline-pixel-data",
        "bad-uid",
        "missing-uid",
        "bad-value",
    ],
)
async def test_json_instance_problems_are_item_failures(
    client: httpx.AsyncClient,
    change: dict[str, Any],
    part_type: str,
    reason: int,
    expected: str,
) -> None:
    source, (jpeg,) = jpeg_frames("SC_rgb_dcmtk_+eb+cy+np.dcm")
    body = jpeg_request(howto_metadata(source, **change), jpeg, part_type)
    response = await client.post(
        STUDIES, content=body, headers={"Content-Type": MULTIPART_JSON, **ACCEPT_JSON}
    )
    assert response.status_code == 409, response.text
    ((got, detail),) = failures(response.json())
    assert (got, expected in detail) == (reason, True), detail
    assert await instance_count(client) == 0


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [(b"{not json", "not valid JSON"), (b'{"00080016": {}}', "JSON array")],
)
async def test_unreadable_metadata_part_is_400(
    client: httpx.AsyncClient, metadata: bytes, expected: str
) -> None:
    body = multipart_body([({"Content-Type": DICOM_JSON}, metadata)])
    response = await client.post(STUDIES, content=body, headers={"Content-Type": MULTIPART_JSON})
    assert expected in error_message(response, 400)
    assert await instance_count(client) == 0


async def test_empty_metadata_array_is_400(client: httpx.AsyncClient) -> None:
    body = multipart_body([({"Content-Type": DICOM_JSON}, b"[]")])
    response = await client.post(STUDIES, content=body, headers={"Content-Type": MULTIPART_JSON})
    assert "no DICOM instance" in error_message(response, 400)


# --- a real socket: streaming, and a real DICOMweb client ---------------------------------------


async def post_in_chunks(
    http: httpx.AsyncClient, body: bytes, headers: dict[str, str]
) -> tuple[httpx.Response, int]:
    """POST `body` to STUDIES in 64 KiB chunks; the response and the peak of the memory
    traced meanwhile (server and client share this process)."""
    tracemalloc.start()
    try:
        response = await http.post(
            STUDIES, content=in_chunks(body, 64 << 10), headers=headers, timeout=60
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return response, peak


async def test_large_multipart_body_streams_in_bounded_memory(app: App) -> None:
    payloads = [instance_of_size(16 << 20, n) for n in (1, 2, 3)]
    body = dicom_parts(*payloads)
    del payloads
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as http:
        await create_dataset_and_store(http, "s")
        headers = {"Content-Type": MULTIPART, **ACCEPT_JSON}
        response, peak = await post_in_chunks(http, body, headers)
        assert response.status_code == 200, response.text
        assert len(referenced_uids(response.json())) == 3
        # Three 16 MiB instances in a 48 MiB body: nothing near one instance is held in memory.
        assert peak < 12 << 20, peak
        assert await instance_count(http) == 3
    (found,) = await app.catalog.find_instances(
        DicomStoreName.parse(STORE), "1.2.826.0.1.3", "1.2.826.0.1.3.4", "1.2.826.0.1.3.4.2"
    )
    assert found.blob_size == len(instance_of_size(16 << 20, 2))


async def test_large_single_part_body_streams_in_bounded_memory(app: App) -> None:
    payload = instance_of_size(16 << 20, 1)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as http:
        await create_dataset_and_store(http, "s")
        response, peak = await post_in_chunks(http, payload, {"Content-Type": DICOM})
        assert response.status_code == 200, response.text
        # Past SPOOL_THRESHOLD the body goes to disk: nothing near the 16 MiB is held in memory.
        assert peak < 8 << 20, peak
        assert await instance_count(http) == 1


async def test_dicomweb_client_stores_instances(app: App) -> None:
    web = pytest.importorskip("dicomweb_client.api")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as http:
        await create_dataset_and_store(http, "s")
        client = web.DICOMwebClient(url=f"http://127.0.0.1:{app.http_port}/v1/{STORE}/dicomWeb")
        datasets = [pydicom.dcmread(io.BytesIO(instance(n))) for n in (1, 2)]
        result = await asyncio.to_thread(client.store_instances, datasets)
        stored = sorted(item.ReferencedSOPInstanceUID for item in result.ReferencedSOPSequence)
        assert stored == ["1.2.826.0.1.3.4.1", "1.2.826.0.1.3.4.2"]
        assert result.RetrieveURL.endswith(f"{STUDIES}/1.2.826.0.1.3")
        assert await instance_count(http) == 2
