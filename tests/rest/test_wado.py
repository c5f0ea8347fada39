"""WADO-RS through the ASGI app of a real started server: instances, metadata, bulk data, frames.

Instances are stored through the core's one ingest path (`Instances.ingest`) on the server's
own catalog and blobs, then read back over HTTP with httpx's in-process transport. Streaming
with bounded memory is pinned over a real socket in `tests/e2e/test_wado_stream.py`.
"""

from __future__ import annotations

import asyncio
import io
import random
import struct
from pathlib import Path

import httpx
import pydicom
import pytest
from PIL import Image
from pydicom.uid import ExplicitVRBigEndian

from dicomstore.core.instances import Instances
from dicomstore.core.names import DicomStoreName
from dicomstore.dicom.elements import byteswap
from tests.conftest import DATASET
from tests.rest.support import (
    BASE_URL,
    MULTIPART_DICOM,
    MULTIPART_OCTET,
    SERIES_A,
    SERIES_B,
    STORE,
    STUDY,
    TEST_FILES,
    WEB,
    error_message,
    image,
    ingest,
    instance_path,
    not_acceptable,
    parts_of,
    pixels,
    study_of_three,
)
from tests.unit.dicom.dicomfiles import data_file, new_instance, part10

LE = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


# --- retrieve: study, series, instance ----------------------------------------------------------


@pytest.mark.google_behaviour("retrieve-media-types")
async def test_study_is_multipart_dicom_one_part_per_instance(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    files = await study_of_three(instances)
    response = await client.get(f"{WEB}/studies/{STUDY}", headers={"accept": MULTIPART_DICOM})
    parts = parts_of(response, "application/dicom")
    assert [body for _, body in parts] == files
    assert [headers["content-type"] for headers, _ in parts] == [
        f"application/dicom; transfer-syntax={LE}"
    ] * 3
    assert parts[2][0]["content-location"] == (
        f"{BASE_URL}{WEB}/studies/{STUDY}/series/{SERIES_B}/instances/1.2.826.0.1.3.2.1"
    )


@pytest.mark.google_behaviour("retrieve-media-types")
@pytest.mark.parametrize(
    ("path", "count"),
    [
        (f"/studies/{STUDY}/series/{SERIES_A}", 2),
        (f"/studies/{STUDY}/series/{SERIES_B}", 1),
        (f"/studies/{STUDY}/series/{SERIES_A}/instances/1.2.826.0.1.3.1.2", 1),
    ],
)
async def test_series_and_instance_return_their_own_instances(
    client: httpx.AsyncClient, instances: Instances, path: str, count: int
) -> None:
    await study_of_three(instances)
    parts = parts_of(await client.get(WEB + path), "application/dicom")
    assert len(parts) == count


@pytest.mark.google_behaviour("stow-any-instance")
@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
async def test_every_stored_pydicom_file_comes_back_byte_identical(
    client: httpx.AsyncClient, instances: Instances, path: Path
) -> None:
    data = await asyncio.to_thread(path.read_bytes)
    result = await instances.ingest(DicomStoreName.parse(STORE), io.BytesIO(data))
    if not result.stored:  # refused with a reason (tests/unit/test_ingest.py): nothing to serve
        assert result.failure is not None and result.detail
        missing = await client.get(f"{WEB}/studies/{result.study_uid or '1.2.3'}")
        assert missing.status_code == 404
        return
    single = await client.get(
        instance_path(result), headers={"accept": "application/dicom; transfer-syntax=*"}
    )
    assert single.status_code == 200, single.text
    assert single.content == data
    study = await client.get(
        f"{WEB}/studies/{result.study_uid}",
        headers={"accept": f"{MULTIPART_DICOM}; transfer-syntax=*"},
    )
    ((headers, body),) = parts_of(study, "application/dicom")
    assert body == data
    stored_syntax = pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID
    assert headers["content-type"] == f"application/dicom; transfer-syntax={stored_syntax}"


@pytest.mark.google_behaviour("retrieve-media-types")
async def test_single_part_instance_has_the_stored_syntax_and_length(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    data = data_file("JPEG-lossy.dcm").read_bytes()
    result = await ingest(instances, data)
    response = await client.get(
        instance_path(result), headers={"accept": "application/dicom; transfer-syntax=*"}
    )
    assert (
        response.headers["content-type"]
        == "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.51"
    )
    assert response.headers["content-length"] == str(len(data))


# Accept negotiation on a 16-bit instance stored as Explicit VR Little Endian: (Accept, outcome)
# where the outcome is "multipart", "single", 406 (a type never produced) or 400 (JPEG Baseline,
# which cannot hold 16-bit samples).
LE_ACCEPT_RULES: list[tuple[str | None, str | int]] = [
    (None, "multipart"),
    ("*/*", "multipart"),
    ("multipart/*", "multipart"),
    (MULTIPART_DICOM, "multipart"),
    ("multipart/related; type=application/dicom", "multipart"),
    ('multipart/related; type="*/*"', "multipart"),
    (f"{MULTIPART_DICOM}; transfer-syntax=*", "multipart"),
    (f"{MULTIPART_DICOM}; transfer-syntax={LE}", "multipart"),
    ("application/dicom", "single"),
    ("application/*", "single"),
    ("application/dicom; transfer-syntax=*", "single"),
    (f"application/dicom; transfer-syntax={LE}", "single"),
    (f"application/dicom; q=0.5, {MULTIPART_DICOM}; q=0.9", "multipart"),
    (f"application/dicom; q=1, {MULTIPART_DICOM}; q=0.4", "single"),
    (f"{MULTIPART_DICOM}; q=0, */*", "single"),
    (f"{MULTIPART_DICOM}; transfer-syntax=1.2.840.10008.1.2.4.57, application/dicom", "single"),
    (f"{MULTIPART_DICOM}; transfer-syntax={JPEG_BASELINE}, application/dicom; q=0.1", 400),
    ("application/json", 406),
    (f"{MULTIPART_DICOM}; transfer-syntax={JPEG_BASELINE}", 400),
    (f"{MULTIPART_DICOM}; transfer-syntax=1.2.840.10008.1.2.4.57", 406),
    ('multipart/related; type="application/octet-stream"', 406),
    ("*/*; q=0", 406),
]


@pytest.mark.google_behaviour("accept-negotiation", "retrieve-default-syntax")
@pytest.mark.parametrize(("accept", "outcome"), LE_ACCEPT_RULES)
async def test_accept_negotiation_for_an_explicit_little_endian_instance(
    client: httpx.AsyncClient, instances: Instances, accept: str | None, outcome: str | int
) -> None:
    data = part10(image("1.2.826.0.1.3.1.1"))
    result = await ingest(instances, data)
    headers = {} if accept is None else {"accept": accept}
    response = await client.get(instance_path(result), headers=headers)
    if outcome == 406:
        message = not_acceptable(response)
        assert f"{MULTIPART_DICOM}; transfer-syntax=*" in message
        assert f"application/dicom; transfer-syntax={LE}" in message
    elif outcome == 400:
        message = error_message(response, 400, "INVALID_ARGUMENT")
        assert message.startswith(f"image cannot be transcoded from {LE} to {JPEG_BASELINE}")
    elif outcome == "single":
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == f"application/dicom; transfer-syntax={LE}"
        assert response.content == data
    else:
        ((_, body),) = parts_of(response, "application/dicom")
        assert body == data


@pytest.mark.google_behaviour("retrieve-default-syntax")
@pytest.mark.parametrize(
    "accept",
    [
        None,
        "*/*",
        MULTIPART_DICOM,
        f"{MULTIPART_DICOM}; transfer-syntax={LE}",
        f"{MULTIPART_DICOM}, {MULTIPART_DICOM}; transfer-syntax=*; q=0.2",
    ],
)
async def test_default_syntax_of_a_compressed_instance_is_explicit_little_endian(
    client: httpx.AsyncClient, instances: Instances, accept: str | None
) -> None:
    source = data_file("SC_rgb_jpeg_dcmtk.dcm")
    result = await ingest(instances, source.read_bytes())
    headers = {} if accept is None else {"accept": accept}
    ((part_headers, body),) = parts_of(
        await client.get(instance_path(result), headers=headers), "application/dicom"
    )
    assert part_headers["content-type"] == f"application/dicom; transfer-syntax={LE}"
    decoded = pydicom.dcmread(io.BytesIO(body))
    original = pydicom.dcmread(source)
    assert decoded.file_meta.TransferSyntaxUID == LE
    assert decoded.SOPInstanceUID == original.SOPInstanceUID
    assert decoded.PhotometricInterpretation == "RGB"
    assert (decoded.pixel_array == original.pixel_array).all()


@pytest.mark.google_behaviour("retrieve-default-syntax")
@pytest.mark.parametrize(
    "accept",
    [
        f"{MULTIPART_DICOM}; transfer-syntax=*",
        f"{MULTIPART_DICOM}; transfer-syntax={JPEG_BASELINE}",
    ],
)
async def test_compressed_instance_is_returned_as_stored_when_asked(
    client: httpx.AsyncClient, instances: Instances, accept: str
) -> None:
    data = data_file("SC_rgb_jpeg_dcmtk.dcm").read_bytes()
    result = await ingest(instances, data)
    ((headers, body),) = parts_of(
        await client.get(f"{WEB}/studies/{result.study_uid}", headers={"accept": accept}),
        "application/dicom",
    )
    assert body == data
    assert headers["content-type"] == f"application/dicom; transfer-syntax={JPEG_BASELINE}"


async def test_study_of_mixed_syntaxes_is_returned_in_the_one_asked(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    ds = image("1.2.826.0.1.3.1.1")
    await ingest(instances, part10(ds))
    big = image("1.2.826.0.1.3.1.2")
    little = big.PixelData
    big.PixelData = byteswap(big.PixelData, 2)
    await ingest(instances, part10(big, ExplicitVRBigEndian))
    study = f"{WEB}/studies/{STUDY}"
    parts = parts_of(
        await client.get(study, headers={"accept": f"{MULTIPART_DICOM}; transfer-syntax={LE}"}),
        "application/dicom",
    )
    assert [h["content-type"].rpartition("=")[2] for h, _ in parts] == [LE, LE]
    assert [pydicom.dcmread(io.BytesIO(body)).PixelData for _, body in parts] == [
        ds.PixelData,
        little,
    ]
    parts = parts_of(
        await client.get(study, headers={"accept": f"{MULTIPART_DICOM}; transfer-syntax=*"}),
        "application/dicom",
    )
    assert [h["content-type"].rpartition("=")[2] for h, _ in parts] == [LE, ExplicitVRBigEndian]


@pytest.mark.google_behaviour("accept-negotiation", "retrieve-bad-request")
async def test_malformed_accept_is_400(client: httpx.AsyncClient, instances: Instances) -> None:
    await study_of_three(instances)
    response = await client.get(
        f"{WEB}/studies/{STUDY}", headers={"accept": "multipart/related; q=2"}
    )
    assert "Accept" in error_message(response, 400, "INVALID_ARGUMENT")


@pytest.mark.google_behaviour("retrieve-missing-resource")
@pytest.mark.parametrize(
    "path",
    [
        "/studies/9.9",
        f"/studies/{STUDY}/series/9.9",
        f"/studies/{STUDY}/series/{SERIES_A}/instances/9.9",
        "/studies/9.9/metadata",
        f"/studies/{STUDY}/series/9.9/metadata",
        f"/studies/{STUDY}/series/{SERIES_A}/instances/9.9/metadata",
        f"/studies/{STUDY}/series/{SERIES_A}/instances/9.9/frames/1",
        f"/studies/{STUDY}/series/{SERIES_A}/instances/9.9/bulkdata/7FE00010",
        f"/studies/{STUDY}/series/{SERIES_A}/instances/9.9/rendered",
        f"/studies/{STUDY}/series/{SERIES_A}/instances/9.9/frames/1/rendered",
    ],
)
async def test_missing_resource_is_404_not_403(
    client: httpx.AsyncClient, instances: Instances, path: str
) -> None:
    await study_of_three(instances)
    error_message(await client.get(WEB + path), 404, "NOT_FOUND")


@pytest.mark.google_behaviour("retrieve-missing-resource")
async def test_unknown_store_is_404(client: httpx.AsyncClient, store: str) -> None:
    response = await client.get(f"/v1/{DATASET}/dicomStores/nope/dicomWeb/studies/{STUDY}")
    error_message(response, 404, "NOT_FOUND")


# --- metadata -------------------------------------------------------------------------------------


@pytest.mark.google_behaviour("metadata-media-types")
@pytest.mark.parametrize(
    ("path", "sops"),
    [
        (f"/studies/{STUDY}", ["1.2.826.0.1.3.1.1", "1.2.826.0.1.3.1.2", "1.2.826.0.1.3.2.1"]),
        (f"/studies/{STUDY}/series/{SERIES_B}", ["1.2.826.0.1.3.2.1"]),
        (f"/studies/{STUDY}/series/{SERIES_A}/instances/1.2.826.0.1.3.1.2", ["1.2.826.0.1.3.1.2"]),
    ],
)
async def test_metadata_is_a_dicom_json_array_of_the_instances(
    client: httpx.AsyncClient, instances: Instances, path: str, sops: list[str]
) -> None:
    await study_of_three(instances)
    response = await client.get(f"{WEB}{path}/metadata")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom+json; charset=utf-8"
    body = response.json()
    assert [item["00080018"]["Value"][0] for item in body] == sops
    assert body[0]["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}


@pytest.mark.google_behaviour("metadata-bulkdata-rules")
async def test_metadata_bulkdata_uris_are_absolute_and_retrievable(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    ds = image("1.2.826.0.1.3.1.1")
    await ingest(instances, part10(ds))
    response = await client.get(f"{WEB}/studies/{STUDY}/metadata")
    (item,) = response.json()
    uri = item["7FE00010"]["BulkDataURI"]
    assert uri == (
        f"{BASE_URL}{WEB}/studies/{STUDY}/series/{SERIES_A}/instances/1.2.826.0.1.3.1.1"
        "/bulkdata/7FE00010"
    )
    ((_, body),) = parts_of(await client.get(uri), "application/octet-stream")
    assert body == ds.PixelData


@pytest.mark.google_behaviour("metadata-bulkdata-rules")
async def test_nested_bulkdata_uris_are_rewritten(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    result = await ingest(instances, data_file("waveform_ecg.dcm").read_bytes())
    (item,) = (await client.get(f"{instance_path(result)}/metadata")).json()
    uri = item["54000100"]["Value"][1]["54001010"]["BulkDataURI"]
    assert uri == f"{BASE_URL}{instance_path(result)}/bulkdata/54000100/1/54001010"


@pytest.mark.google_behaviour("metadata-media-types")
@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (None, "application/dicom+json"),
        ("*/*", "application/dicom+json"),
        ("application/*", "application/dicom+json"),
        ("application/dicom+json", "application/dicom+json"),
        ("application/json", "application/json"),
        ("application/json, */*", "application/json"),
        ("application/dicom+json; q=0.5, application/json", "application/json"),
        ("application/dicom+json, application/json; q=0.5", "application/dicom+json"),
        ("application/json; q=0, */*", "application/dicom+json"),
        ('multipart/related; type="application/dicom+xml"', None),
        ("application/dicom", None),
        ("application/dicom+json; q=0, application/json; q=0", None),
    ],
)
async def test_metadata_accept_negotiation(
    client: httpx.AsyncClient, instances: Instances, accept: str | None, media_type: str | None
) -> None:
    await study_of_three(instances)
    headers = {} if accept is None else {"accept": accept}
    response = await client.get(f"{WEB}/studies/{STUDY}/metadata", headers=headers)
    if media_type is None:
        message = not_acceptable(response)
        assert message.endswith("one of application/dicom+json,application/json")
    else:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == f"{media_type}; charset=utf-8"


@pytest.mark.google_behaviour("metadata-media-types")
@pytest.mark.parametrize(
    "path",
    [
        f"/studies/{STUDY}",
        f"/studies/{STUDY}/series/{SERIES_B}",
        f"/studies/{STUDY}/series/{SERIES_A}/instances/1.2.826.0.1.3.1.2",
    ],
)
async def test_metadata_as_application_json_is_the_dicom_json_body(
    client: httpx.AsyncClient, instances: Instances, path: str
) -> None:
    """Google's discovery-based clients send `Accept: application/json` (and `alt=json`)."""
    await study_of_three(instances)
    url = f"{WEB}{path}/metadata"
    plain = await client.get(url, params={"alt": "json"}, headers={"accept": "application/json"})
    dicom_json = await client.get(url, headers={"accept": "application/dicom+json"})
    assert plain.status_code == 200, plain.text
    assert plain.headers["content-type"] == "application/json; charset=utf-8"
    assert plain.json() == dicom_json.json()
    assert plain.json()[0]["7FE00010"]["BulkDataURI"].startswith(f"{BASE_URL}{WEB}/studies/")


@pytest.mark.google_behaviour("metadata-media-types")
async def test_metadata_as_xml_says_it_is_not_available_yet(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    await study_of_three(instances)
    response = await client.get(
        f"{WEB}/studies/{STUDY}/metadata",
        headers={"accept": 'multipart/related; type="application/dicom+xml"'},
    )
    assert "application/dicom+xml" in not_acceptable(response)
    assert "not available yet" in not_acceptable(response)


async def test_metadata_of_many_instances_streams_in_batches(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    for n in range(1, 232):
        ds = new_instance(SOPInstanceUID=f"1.2.826.0.1.3.1.{n}", SeriesInstanceUID=SERIES_A)
        ds.StudyInstanceUID = STUDY
        await ingest(instances, part10(ds))
    body = (await client.get(f"{WEB}/studies/{STUDY}/metadata")).json()
    assert len(body) == 231
    assert len({item["00080018"]["Value"][0] for item in body}) == 231


# --- bulk data ------------------------------------------------------------------------------------


@pytest.mark.google_behaviour("bulkdata-retrieve")
async def test_bulkdata_default_is_one_octet_stream_part(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    ds = image("1.2.826.0.1.3.1.1")
    result = await ingest(instances, part10(ds))
    url = f"{instance_path(result)}/bulkdata/7FE00010"
    ((headers, body),) = parts_of(await client.get(url), "application/octet-stream")
    assert body == ds.PixelData
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-location"] == BASE_URL + url


@pytest.mark.google_behaviour("bulkdata-retrieve")
@pytest.mark.parametrize(
    "accept", ["application/octet-stream", "application/octet-stream; transfer-syntax=*"]
)
async def test_bulkdata_single_part_has_its_length(
    client: httpx.AsyncClient, instances: Instances, accept: str
) -> None:
    ds = image("1.2.826.0.1.3.1.1")
    result = await ingest(instances, part10(ds))
    response = await client.get(
        f"{instance_path(result)}/bulkdata/7fe00010", headers={"accept": accept}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-length"] == str(len(ds.PixelData))
    assert response.content == ds.PixelData


@pytest.mark.parametrize(
    "accept",
    [
        "*/*",
        'multipart/related; type="*/*"',
        f"{MULTIPART_OCTET}; transfer-syntax=*",
        f"{MULTIPART_OCTET}; transfer-syntax={LE}",
    ],
)
async def test_bulkdata_accepts_what_clients_send(
    client: httpx.AsyncClient, instances: Instances, accept: str
) -> None:
    ds = image("1.2.826.0.1.3.1.1")
    result = await ingest(instances, part10(ds))
    response = await client.get(
        f"{instance_path(result)}/bulkdata/7FE00010", headers={"accept": accept}
    )
    ((_, body),) = parts_of(response, "application/octet-stream")
    assert body == ds.PixelData


@pytest.mark.google_behaviour("accept-negotiation")
async def test_bulkdata_in_an_unacceptable_type_is_406(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    result = await ingest(instances, part10(image("1.2.826.0.1.3.1.1")))
    response = await client.get(
        f"{instance_path(result)}/bulkdata/7FE00010", headers={"accept": "image/jpeg"}
    )
    assert f"{MULTIPART_OCTET}; transfer-syntax=*" in not_acceptable(response)


@pytest.mark.google_behaviour("bulkdata-retrieve")
async def test_nested_bulkdata_is_the_item_value(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    result = await ingest(instances, data_file("waveform_ecg.dcm").read_bytes())
    expected = pydicom.dcmread(data_file("waveform_ecg.dcm")).WaveformSequence[1].WaveformData
    response = await client.get(f"{instance_path(result)}/bulkdata/54000100/1/54001010")
    ((_, body),) = parts_of(response, "application/octet-stream")
    assert body == expected


async def test_large_bulkdata_is_read_from_its_window_of_the_file(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    # 300 x 300 x 16 bits: above the 64 KiB pydicom defers, so it is read by ranges.
    little = pixels(300 * 300 * 2)
    ds = image("1.2.826.0.1.3.1.1", rows=300, columns=300, frames=1, data=little)
    result = await ingest(instances, part10(ds))
    response = await client.get(
        f"{instance_path(result)}/bulkdata/7FE00010",
        headers={"accept": "application/octet-stream"},
    )
    assert response.content == little


@pytest.mark.google_behaviour("bulkdata-retrieve")
@pytest.mark.parametrize(("rows", "bits"), [(300, 16), (300, 8), (3, 32), (5, 16)])
async def test_big_endian_bulkdata_is_returned_little_endian(
    client: httpx.AsyncClient, instances: Instances, rows: int, bits: int
) -> None:
    little = pixels(rows * rows * bits // 8 + (rows * rows * bits // 8) % 2)
    ds = image("1.2.826.0.1.3.1.1", rows=rows, columns=rows, frames=1, bits=bits, data=little)
    # PS3.5 A.3: OW values are 16-bit words, wider pixels are whole big-endian numbers.
    ds.PixelData = byteswap(little, max(2, bits // 8))
    ds["PixelData"].VR = "OW"
    result = await ingest(instances, part10(ds, ExplicitVRBigEndian))
    response = await client.get(
        f"{instance_path(result)}/bulkdata/7FE00010",
        headers={"accept": "application/octet-stream"},
    )
    assert response.content == little


@pytest.mark.parametrize(
    ("big", "little"),
    [
        ("MR_small_bigendian.dcm", "MR_small.dcm"),
        ("rtdose_expb.dcm", "rtdose.dcm"),
        ("SC_rgb_small_odd_big_endian.dcm", "SC_rgb_small_odd.dcm"),
    ],
)
async def test_big_endian_pixel_data_of_pydicom_files_matches_the_little_endian_twin(
    client: httpx.AsyncClient, instances: Instances, big: str, little: str
) -> None:
    result = await ingest(instances, data_file(big).read_bytes())
    response = await client.get(
        f"{instance_path(result)}/bulkdata/7FE00010",
        headers={"accept": "application/octet-stream"},
    )
    assert response.content == pydicom.dcmread(data_file(little)).PixelData


async def test_deflated_bulkdata_is_inflated(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    result = await ingest(instances, data_file("image_dfl.dcm").read_bytes())
    response = await client.get(
        f"{instance_path(result)}/bulkdata/7FE00010",
        headers={"accept": "application/octet-stream"},
    )
    assert response.content == pydicom.dcmread(data_file("image_dfl.dcm")).PixelData


async def test_numeric_bulkdata_is_packed_little_endian(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    ds = new_instance()
    ds.add_new(0x00090010, "LO", "TEST")
    ds.add_new(0x00091001, "US", list(range(600)))
    result = await ingest(instances, part10(ds, ExplicitVRBigEndian))
    response = await client.get(
        f"{instance_path(result)}/bulkdata/00091001",
        headers={"accept": "application/octet-stream"},
    )
    assert response.content == struct.pack("<600H", *range(600))


@pytest.mark.google_behaviour("bulkdata-retrieve")
@pytest.mark.parametrize(
    "path", ["00100010", "00091234", "7FE00010/0/00100010", "54000100/9/54001010"]
)
async def test_bulkdata_that_is_not_there_is_404(
    client: httpx.AsyncClient, instances: Instances, path: str
) -> None:
    result = await ingest(instances, data_file("waveform_ecg.dcm").read_bytes())
    error_message(await client.get(f"{instance_path(result)}/bulkdata/{path}"), 404, "NOT_FOUND")


@pytest.mark.google_behaviour("retrieve-bad-request")
@pytest.mark.parametrize("path", ["7FE0001", "7FE00010/x/00100010", "7FE00010/0", "tag", ""])
async def test_malformed_bulkdata_path_is_400(
    client: httpx.AsyncClient, instances: Instances, path: str
) -> None:
    result = await ingest(instances, part10(image("1.2.826.0.1.3.1.1")))
    response = await client.get(f"{instance_path(result)}/bulkdata/{path}")
    assert "bulkdata" in error_message(response, 400, "INVALID_ARGUMENT")


@pytest.mark.google_behaviour("bulkdata-retrieve")
async def test_compressed_pixel_data_bulkdata_is_decoded(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    source = data_file("SC_rgb_rle_2frame.dcm")
    result = await ingest(instances, source.read_bytes())
    response = await client.get(
        f"{instance_path(result)}/bulkdata/7FE00010", headers={"accept": "application/octet-stream"}
    )
    assert response.status_code == 200, response.text
    assert response.content == pydicom.dcmread(source).pixel_array.astype("<u1").tobytes()


# --- frames ---------------------------------------------------------------------------------------


@pytest.mark.google_behaviour("frame-media-types")
async def test_frames_are_one_octet_stream_part_each_in_the_order_asked(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    ds = image("1.2.826.0.1.3.1.1", frames=3)
    result = await ingest(instances, part10(ds))
    size = 4 * 3 * 2
    frames = [ds.PixelData[n * size : (n + 1) * size] for n in range(3)]
    url = f"{instance_path(result)}/frames/3,1,3"
    parts = parts_of(await client.get(url), "application/octet-stream")
    assert [body for _, body in parts] == [frames[2], frames[0], frames[2]]
    assert parts[1][0] == {
        "content-type": f"application/octet-stream; transfer-syntax={LE}",
        "content-location": f"{BASE_URL}{instance_path(result)}/frames/1",
    }


@pytest.mark.google_behaviour("frame-media-types")
@pytest.mark.parametrize(
    "accept", ["application/octet-stream", f"application/octet-stream; transfer-syntax={LE}"]
)
async def test_one_frame_as_single_part_octet_stream(
    client: httpx.AsyncClient, instances: Instances, accept: str
) -> None:
    ds = image("1.2.826.0.1.3.1.1", frames=3)
    result = await ingest(instances, part10(ds))
    response = await client.get(f"{instance_path(result)}/frames/2", headers={"accept": accept})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == f"application/octet-stream; transfer-syntax={LE}"
    assert response.content == ds.PixelData[24:48]


@pytest.mark.google_behaviour("accept-negotiation", "frame-media-types")
@pytest.mark.parametrize(
    ("frames", "accept"),
    [
        ("1,2", "application/octet-stream"),
        ("1", "image/jxl"),
        ("1", f"{MULTIPART_OCTET}; transfer-syntax={JPEG_BASELINE}"),
    ],
)
async def test_frames_in_an_unacceptable_type_are_406(
    client: httpx.AsyncClient, instances: Instances, frames: str, accept: str
) -> None:
    result = await ingest(instances, part10(image("1.2.826.0.1.3.1.1")))
    response = await client.get(
        f"{instance_path(result)}/frames/{frames}", headers={"accept": accept}
    )
    assert f"{MULTIPART_OCTET}; transfer-syntax=*" in not_acceptable(response)


@pytest.mark.google_behaviour("retrieve-bad-request")
@pytest.mark.parametrize("frames", ["4", "0", "1,x", "", "1,,2", "-1", "1.5"])
async def test_bad_or_missing_frame_numbers_are_400(
    client: httpx.AsyncClient, instances: Instances, frames: str
) -> None:
    result = await ingest(instances, part10(image("1.2.826.0.1.3.1.1", frames=3)))
    response = await client.get(f"{instance_path(result)}/frames/{frames}")
    if frames == "":  # no frame list at all: no such resource
        error_message(response, 404, "NOT_FOUND")
        return
    assert "frame" in error_message(response, 400, "INVALID_ARGUMENT")


@pytest.mark.google_behaviour("retrieve-bad-request")
async def test_frames_of_an_instance_without_pixel_data_are_400(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    result = await ingest(instances, part10(new_instance()))
    message = error_message(
        await client.get(f"{instance_path(result)}/frames/1"), 400, "INVALID_ARGUMENT"
    )
    assert "no Pixel Data" in message


@pytest.mark.google_behaviour("frame-media-types")
async def test_frames_of_a_compressed_instance_are_decoded(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    source = data_file("SC_rgb_rle_2frame.dcm")
    result = await ingest(instances, source.read_bytes())
    parts = parts_of(
        await client.get(f"{instance_path(result)}/frames/2,1"), "application/octet-stream"
    )
    frames = pydicom.dcmread(source).pixel_array
    assert [body for _, body in parts] == [frames[1].tobytes(), frames[0].tobytes()]
    assert parts[0][0]["content-type"] == f"application/octet-stream; transfer-syntax={LE}"


async def test_frames_shorter_than_promised_are_400_failed_precondition(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    ds = image("1.2.826.0.1.3.1.1", frames=3, data=pixels(4 * 3 * 2 * 2))
    result = await ingest(instances, part10(ds))
    assert (await client.get(f"{instance_path(result)}/frames/2")).status_code == 200
    error_message(await client.get(f"{instance_path(result)}/frames/3"), 400, "FAILED_PRECONDITION")


async def test_bit_packed_frames_start_at_bit_zero(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    # 3 x 3 pixels of 1 bit: 9 bits a frame, so frames 2 and 3 start inside a byte.
    bits = "".join(random.Random(7).choice("01") for _ in range(27))
    packed = int(bits[::-1], 2).to_bytes(4, "little")  # pixel 0 in the lowest bit
    ds = image("1.2.826.0.1.3.1.1", rows=3, columns=3, frames=3, bits=1, data=packed)
    result = await ingest(instances, part10(ds))
    parts = parts_of(
        await client.get(f"{instance_path(result)}/frames/1,2,3"), "application/octet-stream"
    )
    for n, (_, body) in enumerate(parts):
        frame_bits = bits[9 * n : 9 * n + 9]
        assert body == int(frame_bits[::-1], 2).to_bytes(2, "little")


@pytest.mark.parametrize(
    ("big", "little"),
    [("rtdose_expb.dcm", "rtdose.dcm"), ("MR_small_bigendian.dcm", "MR_small.dcm")],
)
async def test_big_endian_frames_are_little_endian(
    client: httpx.AsyncClient, instances: Instances, big: str, little: str
) -> None:
    expected = pydicom.dcmread(data_file(little))
    frames = int(expected.get("NumberOfFrames", 1))
    size = len(expected.PixelData) // frames
    result = await ingest(instances, data_file(big).read_bytes())
    numbers = ",".join(str(n) for n in range(1, frames + 1))
    parts = parts_of(
        await client.get(f"{instance_path(result)}/frames/{numbers}"), "application/octet-stream"
    )
    assert [body for _, body in parts] == [
        expected.PixelData[n * size : (n + 1) * size] for n in range(frames)
    ]


async def test_frames_of_a_large_instance_are_read_by_range(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    ds = image("1.2.826.0.1.3.1.1", rows=128, columns=128, frames=8, samples=3, bits=8)
    result = await ingest(instances, part10(ds))
    size = 128 * 128 * 3
    response = await client.get(
        f"{instance_path(result)}/frames/8", headers={"accept": "application/octet-stream"}
    )
    assert response.content == ds.PixelData[7 * size : 8 * size]


# --- rendered -------------------------------------------------------------------------------------


@pytest.mark.google_behaviour("rendered-media-types")
@pytest.mark.parametrize("suffix", ["/rendered", "/frames/1/rendered"])
@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (None, "image/jpeg"),
        ("image/jpeg", "image/jpeg"),
        ("image/png", "image/png"),
        ("*/*", "image/jpeg"),
        ("image/png, image/jpeg; q=0.5", "image/png"),
    ],
)
async def test_rendered_is_an_image_of_the_frame(
    client: httpx.AsyncClient,
    instances: Instances,
    suffix: str,
    accept: str | None,
    media_type: str,
) -> None:
    result = await ingest(instances, part10(image("1.2.826.0.1.3.1.1", rows=6, columns=5)))
    headers = {} if accept is None else {"accept": accept}
    response = await client.get(instance_path(result) + suffix, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    picture = Image.open(io.BytesIO(response.content))
    assert (picture.format, picture.size, picture.mode) == (media_type[6:].upper(), (5, 6), "L")


@pytest.mark.google_behaviour("retrieve-bad-request")
async def test_rendered_frame_out_of_range_is_400(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    result = await ingest(instances, part10(image("1.2.826.0.1.3.1.1", frames=3)))
    error_message(
        await client.get(f"{instance_path(result)}/frames/9/rendered"), 400, "INVALID_ARGUMENT"
    )
