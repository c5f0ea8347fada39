"""Rendered frames against an independent renderer: dcmtk's `dcmj2pnm` (Debian package `dcmtk`).

Both render the same pydicom test file to PNG with the same VOI: `+Wi 1` (the first window) for
files that have one, `+Wm` (min-max window) for files without; `-O` leaves overlays out, as
`/rendered` does. Colour files take no VOI option.

Tolerance, per pixel, in 8-bit levels: a mean absolute difference of at most 1 and a maximum of 1
where both decode the same lossless data. dcmtk truncates where we round the windowed value, so
about half the pixels of a windowed image differ by exactly 1; anything wrong in the pipeline
(a missed rescale, the wrong window, no inversion, a wrong LUT scale) moves levels by tens. Lossy
JPEG sources allow a maximum of 4: dcmtk's IJG decoder and pylibjpeg's libjpeg differ by a few
levels in the inverse DCT and chroma upsampling.

Without dcmj2pnm the test skips, except in CI (the `CI` environment variable), where it fails.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from PIL import Image
from pydicom.pixels.decoders.base import get_decoder

from dicomstore.dicom.render import RenderOptions, render_frame

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
LOSSLESS, LOSSY = 1, 4

CASES = [
    # name, dcmj2pnm VOI options, maximum difference
    ("CT_small.dcm", ["+Wm"], LOSSLESS),  # signed, rescaled, no VOI
    ("MR_small.dcm", ["+Wi", "1"], LOSSLESS),  # signed, one window
    ("examples_overlay.dcm", ["+Wi", "1"], LOSSLESS),  # 12 of 16 bits, two windows: the first
    ("dicomdirtests/77654033/CR1/6154", ["+Wi", "1"], LOSSLESS),  # MONOCHROME1, slope 0.684
    ("dicomdirtests/77654033/CT2/17106", ["+Wi", "1"], LOSSLESS),  # signed, rescaled, window
    ("liver_1frame.dcm", ["+Wm"], LOSSLESS),  # 1 bit
    ("rtdose.dcm", ["+Wm"], LOSSLESS),  # 32 bits
    ("JPGExtended.dcm", ["+Wm"], LOSSY),  # 12-bit lossy JPEG
    ("examples_rgb_color.dcm", [], LOSSLESS),  # RGB
    ("SC_rgb_rle_16bit.dcm", [], LOSSLESS),  # 16-bit RGB, RLE
    ("SC_ybr_full_422_uncompressed.dcm", [], LOSSLESS),  # YBR_FULL_422, native
    ("examples_ybr_color.dcm", [], LOSSY),  # YBR_FULL_422 baseline JPEG
    ("SC_rgb_dcmtk_+eb+cy+np.dcm", [], LOSSY),  # YBR_FULL_422 baseline JPEG by dcmtk
    ("examples_palette.dcm", [], LOSSLESS),  # PALETTE COLOR, 16-bit entries
]


def dcmj2pnm() -> str:
    path = shutil.which("dcmj2pnm")
    if path is None:
        reason = "dcmj2pnm (Debian package dcmtk) is not installed"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must install it")
        pytest.skip(reason)
    return path


def ours(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    frame, meta = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, index=0)
    options = RenderOptions(media_type="image/png")
    png = render_frame(ds, frame, str(meta["photometric_interpretation"]), options)
    return np.asarray(Image.open(io.BytesIO(png)))


def theirs(path: Path, voi: list[str], out: Path) -> np.ndarray:
    command = [dcmj2pnm(), "--quiet", "+on", "-O", *voi, str(path), str(out)]
    subprocess.run(command, check=True, timeout=60)
    return np.asarray(Image.open(out))


@pytest.mark.parametrize(("name", "voi", "maximum"), CASES, ids=[case[0] for case in CASES])
def test_rendering_matches_dcmtk(tmp_path: Path, name: str, voi: list[str], maximum: int) -> None:
    path = TEST_FILES / name
    expected = theirs(path, voi, tmp_path / "dcmtk.png")

    actual = ours(path)

    assert actual.shape == expected.shape
    difference = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    assert difference.mean() <= 1
    assert difference.max() <= maximum
