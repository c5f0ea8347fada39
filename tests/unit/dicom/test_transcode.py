"""Decoding and transcoding every pixel-bearing file of pydicom's test data (PS3.5 8, A.4).

A file counts as decodable when pydicom's own `pixel_array` decodes all its frames; the source
of truth for pixel values is that array. Each decodable file goes to each syntax of
`PRODUCIBLE`: a lossless output must give back exactly the same array, a lossy one stays within
its bound (JPEG Baseline and lossy JPEG 2000: a PSNR floor; near-lossless JPEG-LS: no sample off
by more than its NEAR value), and every output must read back through pydicom as a consistent
Part 10 file that kept every attribute but those a transcode changes.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels.utils import pixel_array
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSNearLossless,
    RLELossless,
)
from tests.unit.dicom.dicomfiles import PYDICOM_DATA, data_file, new_instance, part10

from dicomstore.dicom import transcode
from dicomstore.dicom.pixel_encode import JLS_ERROR, LOSSY_METHODS, PRODUCIBLE, CannotTranscode
from dicomstore.dicom.pixel_source import PixelSource

#: Attributes a transcode may change (besides the pixel data and the file meta).
CHANGED = {
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "LossyImageCompression",
    "LossyImageCompressionMethod",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
}
#: What the outputs cannot hold, or their encoders refuse, in the words of the refusal.
KNOWN_LIMITS = (
    "1-bit and float pixel data go only to native syntaxes",
    "JPEG Baseline holds 8-bit unsigned samples",
    "palette colour indices cannot be lossy-compressed",
    "JPEG 2000 output needs at least 32 rows and columns",
    "Invalid 'bits_stored' value '32', must be in the range [1, 24]",  # openjpeg
    "is not valid for pixel data encoded with 'RLE Lossless'",  # 32-bit colour
    "is not valid for pixel data encoded with 'JPEG-LS",  # over 16 bits
    "The destination buffer is too small to hold all the output",  # CharLS, tiny noisy images
)
#: Lowest PSNR (dB, over the frame's value range) of each lossy output.
PSNR_FLOOR: dict[str, float] = {JPEGBaseline8Bit: 30.0, JPEG2000: 38.0}


@cache
def reference(path: Path) -> list[np.ndarray[Any, Any]] | None:
    """Every frame as pydicom decodes the file, or None when pydicom cannot."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            if "PixelData" not in ds:
                return None
            frames = int(ds.get("NumberOfFrames") or 1)
            return [pixel_array(ds, index=i) for i in range(frames)]
    except Exception:
        return None


def decodable_files() -> Iterator[Path]:
    for path in sorted((PYDICOM_DATA / "test_files").rglob("*")):
        if path.is_file() and reference(path) is not None:
            yield path


DECODABLE = list(decodable_files())
IDS = [str(path.relative_to(PYDICOM_DATA / "test_files")) for path in DECODABLE]


def transcoded(path: Path, target: str) -> bytes:
    with PixelSource.open(path) as source:
        plan, body = transcode.head(source, str(path), target)
        return body + transcode.frames(source, plan, 2, plan.frames + 1) + transcode.tail(plan)


def psnr(expected: np.ndarray[Any, Any], got: np.ndarray[Any, Any]) -> float:
    a, b = expected.astype(np.float64), got.astype(np.float64)
    mse = float(np.mean((a - b) ** 2))
    span = max(float(a.max() - a.min()), 1.0)
    return float("inf") if mse == 0 else 10 * np.log10(span**2 / mse)


def attributes(ds: Dataset) -> dict[str, Any]:
    """The attributes to compare: public ones by value; private ones, whose VR an implicit VR
    upload does not carry (so it reads back as another), by presence."""
    return {
        element.keyword or str(element.tag): None if element.tag.is_private else element.value
        for element in ds
        # Group lengths are retired (PS3.5 7.2) and pydicom's writer leaves them out.
        if element.keyword not in CHANGED and element.tag < 0x7FE00000 and element.tag.element
    }


def test_the_decodable_files_cover_every_compressed_syntax_pydicom_ships() -> None:
    syntaxes = {str(pydicom.dcmread(path).file_meta.TransferSyntaxUID) for path in DECODABLE}
    assert {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.5",
    } <= syntaxes
    assert len(DECODABLE) >= 58


@pytest.mark.parametrize("path", DECODABLE, ids=IDS)
def test_every_frame_decodes_as_pydicom_decodes_it(path: Path) -> None:
    expected = reference(path)
    assert expected is not None
    with PixelSource.open(path) as source:
        got = [source.decode(n).array for n in range(1, source.image.number_of_frames + 1)]
    assert len(got) == len(expected)
    for a, b in zip(expected, got, strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("target", PRODUCIBLE)
@pytest.mark.parametrize("path", DECODABLE, ids=IDS)
def test_transcode_keeps_the_pixels_and_every_attribute(path: Path, target: str) -> None:
    try:
        body = transcoded(path, target)
    except CannotTranscode as exc:
        # Beyond what the output can hold or its encoder can write: refused, saying why.
        assert str(exc).startswith("image cannot be transcoded from ")
        assert any(limit in str(exc) for limit in KNOWN_LIMITS), exc
        return
    out = pydicom.dcmread(io.BytesIO(body))
    original = pydicom.dcmread(path, stop_before_pixels=True)
    assert out.file_meta.TransferSyntaxUID == target
    # The file meta names the data set's own instance (PS3.10 7.1), even where the upload's
    # disagreed with it.
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.SOPInstanceUID == original.SOPInstanceUID
    assert attributes(out) == attributes(original)
    expected = reference(path)
    assert expected is not None
    got = [pixel_array(out, index=i) for i in range(len(expected))]
    if target in LOSSY_METHODS:
        assert out.LossyImageCompression == "01"
        assert LOSSY_METHODS[target] in out.LossyImageCompressionMethod
    for a, b in zip(expected, got, strict=True):
        assert a.shape == b.shape
        if target == JPEGLSNearLossless:
            assert np.abs(a.astype(np.int64) - b.astype(np.int64)).max() <= JLS_ERROR
        elif target in PSNR_FLOOR:
            assert psnr(a, b) >= PSNR_FLOOR[target]
        else:
            assert np.array_equal(a, b)


@pytest.mark.google_behaviour("transcode-errors")
@pytest.mark.parametrize(
    ("build", "target", "reason"),
    [
        (lambda: new_instance(BitsAllocated=16), JPEGBaseline8Bit, "8-bit unsigned"),
        (lambda: new_instance(BitsAllocated=1, BitsStored=1, HighBit=0), RLELossless, "1-bit"),
        (
            lambda: new_instance(PhotometricInterpretation="PALETTE COLOR"),
            JPEGBaseline8Bit,
            "palette",
        ),
        (lambda: new_instance(), "1.2.840.10008.1.2.4.57", "this server produces"),
    ],
)
def test_impossible_transcode_says_why(
    tmp_path: Path, build: Any, target: str, reason: str
) -> None:
    ds = build()
    rows, columns = 8, 8
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.setdefault("BitsAllocated", 8)
    ds.setdefault("BitsStored", ds.BitsAllocated)
    ds.setdefault("HighBit", ds.BitsAllocated - 1)
    ds.PixelRepresentation = 0
    ds.setdefault("PhotometricInterpretation", "MONOCHROME2")
    ds.PixelData = bytes((rows * columns * ds.BitsAllocated + 7) // 8)
    path = tmp_path / "instance.dcm"
    path.write_bytes(part10(ds))
    with pytest.raises(CannotTranscode, match=reason) as raised:
        transcoded(path, target)
    assert str(raised.value).startswith(
        f"image cannot be transcoded from {ExplicitVRLittleEndian} to {target}:"
    )


@pytest.mark.parametrize(
    ("name", "target", "photometric"),
    [
        ("SC_rgb_rle_2frame.dcm", JPEG2000, "YBR_ICT"),
        ("SC_rgb_rle_2frame.dcm", "1.2.840.10008.1.2.4.90", "YBR_RCT"),
        ("SC_rgb_rle_2frame.dcm", JPEGBaseline8Bit, "YBR_FULL"),
        ("SC_rgb_jpeg_dcmtk.dcm", ExplicitVRLittleEndian, "RGB"),
        ("SC_rgb_jpeg_dcmtk.dcm", RLELossless, "RGB"),
    ],
)
def test_colour_photometric_follows_the_encoding(name: str, target: str, photometric: str) -> None:
    out = pydicom.dcmread(io.BytesIO(transcoded(data_file(name), target)))
    assert (out.PhotometricInterpretation, out.PlanarConfiguration) == (photometric, 0)
