"""Native frames read straight from their byte range of the blob, with no parse of the file and
no pixel worker (`InstancePixels.frame` over `FrameReader.span` and `BlobStore.read_range`): the
same bytes `FrameReader.frame` gives, and the same refusals. Then the local copies of blobs in
Cloud Storage that pixel work holds."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import io
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, JPEG2000Lossless
from tests.fake_gcs import create_bucket
from tests.unit.dicom.dicomfiles import data_file, new_instance, part10

from dicomstore.blobs.gcs import GcsBlobStore
from dicomstore.blobs.local import LocalBlobStore
from dicomstore.core.errors import FailedPrecondition, InvalidArgument
from dicomstore.core.instance_pixels import InstancePixels
from dicomstore.core.model import InstanceKey, StoredInstance
from dicomstore.dicom.frames import FrameReader
from dicomstore.dicom.pixel_encode import NATIVE_FRAME, STORED_FRAME
from dicomstore.dicom.values import InstanceFile
from dicomstore.pixel_workers import PixelWorkers

KEY = InstanceKey(1, 7)
FRAMES = 4


def image(syntax: str = ExplicitVRLittleEndian) -> bytes:
    """A 16-bit image of four 128 x 128 frames: above the size read with the header."""
    pixels = np.arange(FRAMES * 128 * 128, dtype="<u2").reshape(FRAMES, 128, 128)
    ds = new_instance(Rows=128, Columns=128, SamplesPerPixel=1, NumberOfFrames=FRAMES)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    big = syntax == ExplicitVRBigEndian
    ds.PixelData = pixels.astype(">u2" if big else "<u2").tobytes()
    return part10(ds, syntax)


def stored(data: bytes, syntax: str = ExplicitVRLittleEndian) -> StoredInstance:
    return StoredInstance(KEY, "1.2", "1.2.3", "1.2.3.4", "1.2.840.10008.5.1.4.1.1.7", syntax,
                          FRAMES, len(data))  # fmt: skip


@pytest.fixture
async def blobs(tmp_path: Path) -> LocalBlobStore:
    store = LocalBlobStore(tmp_path / "blobs")
    await store.open()
    return store


@pytest.fixture
async def workers() -> AsyncIterator[PixelWorkers]:
    work = PixelWorkers(processes=1, memory_limit=1 << 28)  # started only if used
    yield work
    await work.close()


def expected_frames(data: bytes) -> list[bytes]:
    with InstanceFile(io.BytesIO(data)) as file:
        reader = FrameReader(file)
        return [reader.frame(n) for n in range(1, FRAMES + 1)]


@pytest.mark.parametrize("media", [NATIVE_FRAME, STORED_FRAME])
async def test_frames_read_by_span_are_those_the_reader_gives(
    blobs: LocalBlobStore, workers: PixelWorkers, media: str
) -> None:
    data = image()
    await blobs.write(KEY.store_key, KEY.instance_key, io.BytesIO(data))
    pixels = InstancePixels(blobs, workers)
    frames = [await pixels.frame(stored(data), n, media) for n in range(1, FRAMES + 1)]
    assert frames == expected_frames(data)
    assert [f async for f in pixels.frames(stored(data), [3, 1], media)] == [frames[2], frames[0]]
    assert workers._pool is None  # no worker was needed


async def test_frame_outside_the_span_is_refused(
    blobs: LocalBlobStore, workers: PixelWorkers
) -> None:
    data = image()
    await blobs.write(KEY.store_key, KEY.instance_key, io.BytesIO(data))
    with pytest.raises(InvalidArgument, match="frame 5 does not exist"):
        await InstancePixels(blobs, workers).frame(stored(data), 5, NATIVE_FRAME)


async def test_file_cut_inside_a_frame_is_refused(
    blobs: LocalBlobStore, workers: PixelWorkers
) -> None:
    data = image()
    await blobs.write(KEY.store_key, KEY.instance_key, io.BytesIO(data))
    pixels = InstancePixels(blobs, workers)
    assert await pixels.frame(stored(data), 1, NATIVE_FRAME)  # the frames' span is known now
    frame_bytes = 128 * 128 * 2
    await blobs.write(KEY.store_key, KEY.instance_key, io.BytesIO(data[: -frame_bytes // 2]))
    with pytest.raises(FailedPrecondition, match="ends inside frame 4"):
        await pixels.frame(stored(data), 4, NATIVE_FRAME)


async def test_big_endian_frames_are_swapped_by_a_reader(
    blobs: LocalBlobStore, workers: PixelWorkers
) -> None:
    # Their bytes must be swapped: they have no span and are read through FrameReader instead.
    data = image(ExplicitVRBigEndian)
    await blobs.write(KEY.store_key, KEY.instance_key, io.BytesIO(data))
    pixels = InstancePixels(blobs, workers)
    frame = await pixels.frame(stored(data, ExplicitVRBigEndian), 2, NATIVE_FRAME)
    assert frame == expected_frames(image())[1]


# Work in the pixel workers holds a local copy of a blob kept in Cloud Storage until its body
# ends, or until a body nobody read is collected.


@pytest.fixture
async def gcs_blobs(fake_gcs_url: str, tmp_path: Path) -> AsyncIterator[GcsBlobStore]:
    bucket = f"pixels-{uuid.uuid4().hex[:12]}"
    create_bucket(fake_gcs_url, bucket)
    store = GcsBlobStore(fake_gcs_url, bucket, "", tmp_path / "copies", anonymous=True,
                         spool_limit=0)  # fmt: skip
    await store.open()
    yield store
    await store.close()


def copies(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "copies").glob("*/*.dcm"))


@pytest.mark.parametrize("read", [True, False], ids=["read", "never-read"])
async def test_transcoded_body_holds_its_copy_until_it_ends(
    gcs_blobs: GcsBlobStore, workers: PixelWorkers, tmp_path: Path, read: bool
) -> None:
    data = data_file("MR_small_jp2klossless.dcm").read_bytes()
    await gcs_blobs.write(KEY.store_key, KEY.instance_key, io.BytesIO(data))
    instance = dataclasses.replace(stored(data, JPEG2000Lossless), number_of_frames=1)
    body = await InstancePixels(gcs_blobs, workers).transcoded(instance, ExplicitVRLittleEndian)
    assert len(copies(tmp_path)) == 1
    if read:
        assert pydicom.dcmread(io.BytesIO(b"".join([p async for p in body]))).pixel_array.any()
    else:
        del body
        gc.collect()
    for _ in range(100):
        if not copies(tmp_path):
            break
        await asyncio.sleep(0.01)
    assert copies(tmp_path) == []  # released, then over the limit of 0 bytes
