"""Pixel work over HTTP: transcoded retrieves, frames in image media types, rendered images, and
the process pool behind them (its memory limit, a worker that dies, the two modes' parameters).

The codecs themselves are pinned file by file in `tests/unit/dicom/test_transcode.py` and
`test_render.py`; here each resource is driven through a real started server.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import generate_frames
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from dicomstore.app import App
from dicomstore.core.errors import Unavailable
from dicomstore.core.instances import Instances
from dicomstore.pixel_jobs import ping
from tests.conftest import DATASET, running
from tests.rest.support import (
    MULTIPART_DICOM,
    MULTIPART_JSON,
    MULTIPART_OCTET,
    client_for,
    core_instances,
    create_wado_store,
    error_message,
    howto_metadata,
    image,
    ingest,
    instance_path,
    jpeg_frames,
    multipart_body,
    not_acceptable,
    parts_of,
)
from tests.unit.dicom.dicomfiles import data_file, new_instance, part10


@pytest.fixture
async def client(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The client, with the store `support.STORE` created."""
    await create_wado_store(client)
    return client


@pytest.fixture
def instances(app: App, client: httpx.AsyncClient) -> Instances:
    return core_instances(app)


def ct(frames: int = 1, rows: int = 64, columns: int = 48) -> pydicom.Dataset:
    """A 16-bit signed CT-like image with a window, smooth enough to compress well."""
    y, x = np.mgrid[0:rows, 0:columns]
    pixels = np.stack([(x * 20 + y * 10 + 100 * n - 1000) for n in range(frames)]).astype("<i2")
    ds = image(
        "1.2.826.0.1.3.1.1", rows=rows, columns=columns, frames=frames, data=pixels.tobytes()
    )
    ds.PixelRepresentation = 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.WindowCenter, ds.WindowWidth = 0, 2000
    return ds


# --- transcoded retrieve --------------------------------------------------------------------------


@pytest.mark.google_behaviour("retrieve-transcode-targets")
@pytest.mark.parametrize(
    "target", [ExplicitVRLittleEndian, "1.2.840.10008.1.2", RLELossless, JPEG2000Lossless]
)
async def test_instance_is_transcoded_to_the_syntax_asked(
    client: httpx.AsyncClient, instances: Instances, target: str
) -> None:
    source = ct(frames=3)
    result = await ingest(instances, part10(source))
    response = await client.get(
        instance_path(result), headers={"accept": f"application/dicom; transfer-syntax={target}"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == f"application/dicom; transfer-syntax={target}"
    out = pydicom.dcmread(io.BytesIO(response.content))
    assert out.file_meta.TransferSyntaxUID == target
    assert np.array_equal(out.pixel_array, source.pixel_array)


async def test_multi_frame_transcode_streams_every_frame_in_order(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    # 40 frames of 256 x 256 x 2 bytes: several worker jobs of `PIECE_BYTES` each.
    source = ct(frames=40, rows=256, columns=256)
    stored = pydicom.dcmread(io.BytesIO(part10(source)))
    stored.compress(RLELossless, generate_instance_uid=False)
    result = await ingest(instances, part10(stored, RLELossless))
    ((headers, body),) = parts_of(
        await client.get(instance_path(result), headers={"accept": MULTIPART_DICOM}),
        "application/dicom",
    )
    assert headers["content-type"] == f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
    out = pydicom.dcmread(io.BytesIO(body))
    assert out.NumberOfFrames == 40
    assert np.array_equal(out.pixel_array, source.pixel_array)


@pytest.mark.google_behaviour("transcode-errors")
async def test_impossible_transcode_is_400_in_googles_words(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    result = await ingest(instances, part10(ct()))
    accept = f"{MULTIPART_DICOM}; transfer-syntax={JPEGBaseline8Bit}"
    message = error_message(
        await client.get(f"/v1/{result_study(result)}", headers={"accept": accept}),
        400,
        "INVALID_ARGUMENT",
    )
    assert message.startswith(
        f"image cannot be transcoded from {ExplicitVRLittleEndian} to {JPEGBaseline8Bit}"
    )


def result_study(result: object) -> str:
    path = instance_path(result)  # type: ignore[arg-type]
    return path[len("/v1/") : path.index("/series/")]


@pytest.mark.google_behaviour("retrieve-transcode-targets", "accept-negotiation")
async def test_syntax_never_produced_is_406_listing_those_that_are(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    result = await ingest(instances, part10(ct()))
    accept = f"{MULTIPART_DICOM}; transfer-syntax=1.2.840.10008.1.2.4.70"
    message = not_acceptable(await client.get(instance_path(result), headers={"accept": accept}))
    for syntax in (ExplicitVRLittleEndian, JPEG2000, RLELossless, JPEGLSLossless):
        assert f"{MULTIPART_DICOM}; transfer-syntax={syntax}" in message


async def test_instance_without_pixel_data_is_rewritten_in_the_syntax_asked(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    report = new_instance(SOPInstanceUID="1.2.826.0.1.3.1.9", StudyInstanceUID="1.2.826.0.1.3")
    report.PatientName = "Report^Only"
    result = await ingest(instances, part10(report, "1.2.840.10008.1.2"))
    ((headers, body),) = parts_of(await client.get(instance_path(result)), "application/dicom")
    assert headers["content-type"] == f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
    out = pydicom.dcmread(io.BytesIO(body))
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (out.SOPInstanceUID, out.PatientName) == (report.SOPInstanceUID, "Report^Only")
    assert "PixelData" not in out


# --- frames ---------------------------------------------------------------------------------------


def decode_frame(data: bytes, like: pydicom.Dataset, syntax: str) -> np.ndarray:
    from pydicom.encaps import encapsulate
    from pydicom.pixels.utils import as_pixel_options

    options = as_pixel_options(like)
    options.update(number_of_frames=1, transfer_syntax_uid=syntax)
    array, _ = get_decoder(syntax).as_array(encapsulate([data]), index=0, **options)
    return array


@pytest.mark.google_behaviour("frame-media-types")
@pytest.mark.parametrize(
    ("accept", "syntax"),
    [
        ("image/jp2", JPEG2000Lossless),
        ("image/dicom-rle", RLELossless),
        ("image/jls", JPEGLSLossless),
        (f"{'multipart/related; type=image/jp2'}; transfer-syntax={JPEG2000Lossless}", None),
    ],
)
async def test_frames_are_encoded_in_the_image_type_asked(
    client: httpx.AsyncClient, instances: Instances, accept: str, syntax: str | None
) -> None:
    source = ct(frames=3)
    result = await ingest(instances, part10(source))
    response = await client.get(f"{instance_path(result)}/frames/2", headers={"accept": accept})
    if syntax is None:  # the multipart form
        ((headers, body),) = parts_of(response, "image/jp2")
        assert headers["content-type"] == f"image/jp2; transfer-syntax={JPEG2000Lossless}"
        syntax = JPEG2000Lossless
    else:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == f"{accept}; transfer-syntax={syntax}"
        body = response.content
    assert np.array_equal(decode_frame(body, source, syntax), source.pixel_array[1])


async def test_png_frame_is_the_lossless_frame(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    source = image("1.2.826.0.1.3.1.1", rows=5, columns=7, frames=2, bits=8)
    result = await ingest(instances, part10(source))
    response = await client.get(
        f"{instance_path(result)}/frames/2", headers={"accept": "image/png"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(response.content))), source.pixel_array[1]
    )


async def test_jpeg_frame_of_an_eight_bit_colour_image(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    result = await ingest(instances, data_file("SC_rgb_rle_2frame.dcm").read_bytes())
    response = await client.get(
        f"{instance_path(result)}/frames/2", headers={"accept": "image/jpeg"}
    )
    assert response.status_code == 200, response.text
    picture = Image.open(io.BytesIO(response.content))
    expected = pydicom.dcmread(data_file("SC_rgb_rle_2frame.dcm")).pixel_array[1]
    assert (picture.format, picture.mode, picture.size) == ("JPEG", "RGB", (100, 100))
    assert np.abs(np.asarray(picture).astype(int) - expected.astype(int)).mean() < 3


@pytest.mark.google_behaviour("frame-media-types")
async def test_frame_stored_in_the_syntax_asked_is_sent_as_stored(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    path = data_file("MR_small_jp2klossless.dcm")
    result = await ingest(instances, path.read_bytes())
    response = await client.get(
        f"{instance_path(result)}/frames/1", headers={"accept": "image/jp2"}
    )
    assert response.status_code == 200, response.text
    (stored,) = generate_frames(pydicom.dcmread(path).PixelData, number_of_frames=1)
    assert response.content == stored


@pytest.mark.google_behaviour("transcode-errors")
async def test_jpeg_frame_of_sixteen_bit_data_is_400(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    result = await ingest(instances, part10(ct()))
    response = await client.get(
        f"{instance_path(result)}/frames/1", headers={"accept": "image/jpeg"}
    )
    assert "JPEG Baseline holds 8-bit unsigned samples" in error_message(
        response, 400, "INVALID_ARGUMENT"
    )


@pytest.mark.google_behaviour("retrieve-bad-request")
async def test_frame_out_of_range_names_the_valid_range(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    result = await ingest(instances, part10(ct(frames=3)))
    response = await client.get(
        f"{instance_path(result)}/frames/2,4", headers={"accept": MULTIPART_OCTET}
    )
    assert "numbered 1 to 3" in error_message(response, 400, "INVALID_ARGUMENT")


# --- rendered -------------------------------------------------------------------------------------


@pytest.mark.google_behaviour("rendered-parameters")
async def test_rendered_viewport_fits_the_image(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    result = await ingest(instances, part10(ct(rows=64, columns=48)))
    response = await client.get(
        f"{instance_path(result)}/rendered",
        params={"viewport": "24,24"},
        headers={"accept": "image/png"},
    )
    assert response.status_code == 200, response.text
    assert Image.open(io.BytesIO(response.content)).size == (18, 24)


@pytest.mark.google_behaviour("rendered-media-types")
async def test_rendered_frame_is_that_frame(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    source = ct(frames=3)
    result = await ingest(instances, part10(source))
    pictures = []
    for number in (1, 3):
        response = await client.get(
            f"{instance_path(result)}/frames/{number}/rendered", headers={"accept": "image/png"}
        )
        pictures.append(np.asarray(Image.open(io.BytesIO(response.content))))
    first, third = pictures
    # Frame 3 is frame 1 plus 200 in value, so brighter everywhere the window does not clip.
    assert int(third.astype(int).sum()) > int(first.astype(int).sum())


@pytest.mark.google_behaviour("rendered-media-types")
async def test_rendered_several_frames_is_400(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    result = await ingest(instances, part10(ct(frames=3)))
    response = await client.get(f"{instance_path(result)}/frames/1,2/rendered")
    assert "one frame number" in error_message(response, 400, "INVALID_ARGUMENT")


@pytest.mark.google_behaviour("rendered-limits")
async def test_malformed_viewport_is_400(client: httpx.AsyncClient, instances: Instances) -> None:
    result = await ingest(instances, part10(ct()))
    response = await client.get(f"{instance_path(result)}/rendered", params={"viewport": "0,x"})
    assert "viewport" in error_message(response, 400, "INVALID_ARGUMENT")


@pytest.mark.google_behaviour("rendered-parameters")
@pytest.mark.parametrize(("mode", "honoured"), [("google", False), ("standard", True)])
async def test_window_and_quality_are_standard_mode_parameters(
    tmp_path: Path, mode: str, honoured: bool
) -> None:
    async with running(tmp_path, dicomweb_mode=mode) as app:
        assert app.http_app is not None
        async with client_for(app.http_app) as client:
            await create_wado_store(client)
            result = await ingest(core_instances(app), part10(ct()))
            url = f"{instance_path(result)}/rendered"
            plain = (await client.get(url)).content
            windowed = await client.get(url, params={"window": "-500,100,linear"})
            small = await client.get(url, params={"quality": "5"})
            assert windowed.status_code == small.status_code == 200
            assert (windowed.content != plain) is honoured
            assert (len(small.content) < len(plain)) is honoured


async def test_jpeg_stored_through_json_and_bulk_data_renders(
    client: httpx.AsyncClient,
) -> None:
    source, (jpeg,) = jpeg_frames("SC_rgb_dcmtk_+eb+cy+np.dcm")
    metadata = howto_metadata(source)
    parts = [
        ({"Content-Type": "application/dicom+json"}, json.dumps([metadata]).encode()),
        ({"Content-Type": "image/jpeg", "Content-Location": "jpeg-image"}, jpeg),
    ]
    created = await client.post(f"/v1/{DATASET}/dicomStores", params={"dicomStoreId": "s"})
    assert created.status_code == 200, created.text
    studies = f"/v1/{DATASET}/dicomStores/s/dicomWeb/studies"
    response = await client.post(
        studies, content=multipart_body(parts), headers={"Content-Type": MULTIPART_JSON}
    )
    assert response.status_code == 200, response.text
    study = metadata["0020000D"]["Value"][0]
    series = metadata["0020000E"]["Value"][0]
    sop = metadata["00080018"]["Value"][0]
    url = f"{studies}/{study}/series/{series}/instances/{sop}/rendered"
    rendered = await client.get(url, headers={"accept": "image/png"})
    assert rendered.status_code == 200, rendered.text
    picture = Image.open(io.BytesIO(rendered.content))
    assert (picture.mode, picture.size) == ("RGB", (source.Columns, source.Rows))


# --- the pool -------------------------------------------------------------------------------------


@pytest.mark.google_behaviour("rendered-limits")
async def test_request_over_the_memory_limit_is_refused(tmp_path: Path) -> None:
    async with running(tmp_path, pixel_memory_limit=1 << 20) as app:
        assert app.http_app is not None
        async with client_for(app.http_app) as client:
            await create_wado_store(client)
            # 512 x 512 x 2 bytes = 512 KiB a frame: frames fit, rendering's copies do not.
            result = await ingest(core_instances(app), part10(ct(rows=512, columns=512)))
            frame = await client.get(f"{instance_path(result)}/frames/1")
            assert frame.status_code == 200, frame.text
            rendered = await client.get(f"{instance_path(result)}/rendered")
            assert "--pixel-memory-limit" in error_message(rendered, 400, "FAILED_PRECONDITION")


async def test_pool_survives_a_worker_that_dies(
    app: App, client: httpx.AsyncClient, instances: Instances
) -> None:
    result = await ingest(instances, part10(ct()))
    url = f"{instance_path(result)}/rendered"
    assert (await client.get(url)).status_code == 200
    first = await app.pixels.run(ping)
    with pytest.raises(Unavailable, match="pixel worker process died"):
        await app.pixels.run(os._exit, 3)
    response = await client.get(url)
    assert response.status_code == 200, response.text
    assert await app.pixels.run(ping) != first


async def test_workers_are_not_forked_from_the_server(app: App) -> None:
    # A fork server's children have the fork server, not the server, as their parent.
    pid = await app.pixels.run(ping)
    stat = Path(f"/proc/{pid}/stat").read_text()  # noqa: ASYNC240 - a procfs read, instant
    parent = int(stat.rsplit(")", 1)[1].split()[1])
    assert parent != os.getpid()
