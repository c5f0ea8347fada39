"""Test data for the JSON instance tests: DICOM JSON instances (PS3.18 F.2) built here."""

from __future__ import annotations

from typing import Any

from tests.unit.dicom.dicomfiles import new_instance

SC = "1.2.840.10008.5.1.4.1.1.7"


def metadata(**extra: Any) -> dict[str, Any]:
    """`new_instance()` in DICOM JSON; keyword arguments add attributes by tag."""
    return {**new_instance().to_json_dict(), **extra}


def image(frames: int = 1, /, **extra: Any) -> dict[str, Any]:
    """1 x 4 8-bit monochrome frames whose Pixel Data is the bulk data part "pixels"."""
    ds = new_instance(NumberOfFrames=frames, PhotometricInterpretation="MONOCHROME2")
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 1, 4, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    pixels = {"7FE00010": {"vr": "OB", "BulkDataURI": "pixels"}}
    return {**ds.to_json_dict(), **pixels, **extra}
