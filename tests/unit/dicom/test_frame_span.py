"""Native frames read straight from their byte range, with no parse of the file
(`FrameReader.span`, `pixel_jobs.read_frame`): the same bytes `FrameReader.frame` gives, and
the same refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import ExplicitVRBigEndian
from tests.unit.dicom.dicomfiles import new_instance, part10

from dicomstore import pixel_jobs
from dicomstore.dicom.frames import FrameOutOfRange, FrameReader
from dicomstore.dicom.pixel_source import PixelDataError
from dicomstore.dicom.values import InstanceFile


def stored(tmp_path: Path, frames: int = 4, syntax: str = "1.2.840.10008.1.2.1") -> Path:
    """A 16-bit image of `frames` 128 x 128 frames: above the size read with the header."""
    pixels = np.arange(frames * 128 * 128, dtype="<u2").reshape(frames, 128, 128)
    ds = new_instance(Rows=128, Columns=128, SamplesPerPixel=1, NumberOfFrames=frames)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    big = syntax == ExplicitVRBigEndian
    ds.PixelData = pixels.astype(">u2" if big else "<u2").tobytes()
    path = tmp_path / "instance.dcm"
    path.write_bytes(part10(ds, syntax))
    return path


def test_frames_read_by_span_are_those_the_reader_gives(tmp_path: Path) -> None:
    path = stored(tmp_path)
    span = pixel_jobs.frame_span(str(path))
    assert span is not None
    with InstanceFile.open(path) as file:
        reader = FrameReader(file)
        expected = [reader.frame(n) for n in range(1, 5)]
    assert [pixel_jobs.read_frame(str(path), span, n) for n in range(1, 5)] == expected


def test_frame_outside_the_span_is_refused(tmp_path: Path) -> None:
    path = stored(tmp_path)
    span = pixel_jobs.frame_span(str(path))
    assert span is not None
    with pytest.raises(FrameOutOfRange):
        pixel_jobs.read_frame(str(path), span, 5)


def test_file_cut_inside_a_frame_is_refused(tmp_path: Path) -> None:
    path = stored(tmp_path)
    span = pixel_jobs.frame_span(str(path))
    assert span is not None
    path.write_bytes(path.read_bytes()[: -span.frame_bytes // 2])
    with pytest.raises(PixelDataError, match="ends inside frame 4"):
        pixel_jobs.read_frame(str(path), span, 4)


def test_big_endian_frames_have_no_span(tmp_path: Path) -> None:
    # Their bytes must be swapped: they are read through FrameReader instead.
    assert pixel_jobs.frame_span(str(stored(tmp_path, syntax=ExplicitVRBigEndian))) is None
