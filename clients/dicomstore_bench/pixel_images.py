"""The instances of `dicomstore-pixel-bench`, generated with numpy and pydicom from a fixed seed:

- a 512x512 CT, 16-bit signed, MONOCHROME2, Rescale 1/-1024, Window 40/400, Explicit VR Little
  Endian: a body outline, fat, lungs, a heart, a spine, soft gradients and noise;
- the same pixels as JPEG 2000 lossless (1.2.840.10008.1.2.4.90) under its own SOP Instance UID;
- an 8-frame Multi-frame Grayscale Word Secondary Capture of such slices (12 bits stored),
  JPEG 2000 lossless.
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.utils import compress
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
)

from dicomstore_bench.corpus import ROOT

SEED = 20250611
SIZE = 512
FRAMES = 8
WINDOW = (40.0, 400.0)  # center, width (HU)
INTERCEPT = -1024.0
STUDY_UID = f"{ROOT}.7.1"


@dataclass(frozen=True)
class Image:
    """One generated instance: its UIDs, Part 10 bytes and stored pixel values."""

    label: str
    series: int
    data: bytes
    pixels: npt.NDArray[np.int16] | npt.NDArray[np.uint16]  # frames x rows x columns
    hu: npt.NDArray[np.float32]  # the first frame after the modality LUT

    study_uid = STUDY_UID

    @property
    def series_uid(self) -> str:
        return f"{self.study_uid}.{self.series}"

    @property
    def sop_uid(self) -> str:
        return f"{self.series_uid}.1"

    @property
    def path(self) -> str:
        """The instance's PS3.18 path under a DICOMweb root."""
        return f"/studies/{self.study_uid}/series/{self.series_uid}/instances/{self.sop_uid}"

    def frame(self, number: int) -> bytes:
        """Frame `number` (from 1) as native little-endian bytes."""
        pixels = self.pixels[number - 1]
        return np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<")).tobytes()


def slice_hu(rng: np.random.Generator, z: float) -> npt.NDArray[np.float32]:
    """An axial slice, in Hounsfield units, `z` in [0, 1) along the body."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)

    def ellipse(cx: float, cy: float, rx: float, ry: float) -> npt.NDArray[np.bool_]:
        inside: npt.NDArray[np.bool_] = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1
        return inside

    hu = np.full((SIZE, SIZE), -1000.0, np.float32)
    hu[ellipse(256, 270, 210, 160 + 8 * z)] = -100  # subcutaneous fat
    hu[ellipse(256, 270, 196, 146 + 8 * z)] = 45  # muscle and organs
    hu += np.where(hu > -500, 12 * np.sin(x / 41) * np.cos(y / 57), 0).astype(np.float32)
    for cx in (170.0, 342.0):
        lung = ellipse(cx, 245, 70 - 10 * z, 95)
        hu[lung] = -850 + 40 * np.cos((y[lung] - 245) / 30)
    hu[ellipse(285, 250, 55 + 10 * z, 50)] = 40  # heart
    hu[ellipse(256, 372, 26, 24)] = 700  # vertebral cortex
    hu[ellipse(256, 372, 18, 16)] = 250  # cancellous bone
    hu[ellipse(256, 402, 11, 10)] = 30  # spinal canal
    hu += rng.normal(0, 10, hu.shape).astype(np.float32)
    rounded: npt.NDArray[np.float32] = np.round(hu)
    return rounded


def window_reference(hu: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """8-bit grey levels of the linear VOI LUT function (PS3.3 C.11.2.1.2.1) at WINDOW."""
    center, width = WINDOW
    scaled = ((hu - (center - 0.5)) / (width - 1) + 0.5) * 255
    clipped: npt.NDArray[np.float32] = np.clip(scaled, 0, 255)
    return clipped


def _dataset(sop_class: UID, series: int, frames: npt.NDArray[np.int16 | np.uint16]) -> Dataset:
    series_uid = f"{STUDY_UID}.{series}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = UID(f"{series_uid}.1")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyDate, ds.StudyTime = "20250611", "120000"
    ds.Modality = "CT" if sop_class == CTImageStorage else "OT"
    ds.PatientName, ds.PatientID = "BENCH^PIXEL", "PIXEL1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY_UID, series_uid
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", series, 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = SIZE, SIZE
    signed = frames.dtype == np.int16
    ds.BitsAllocated, ds.BitsStored = 16, 16 if signed else 12
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, int(signed)
    ds.ImagePositionPatient = [-179.2, -179.2, 0.0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 1.0
    ds.RescaleIntercept, ds.RescaleSlope = INTERCEPT, 1
    ds.RescaleType = "HU"
    ds.WindowCenter, ds.WindowWidth = WINDOW
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    ds.PixelData = frames.astype(frames.dtype.newbyteorder("<")).tobytes()
    return ds


def _encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _j2k(ds: Dataset, series: int) -> bytes:
    """`ds` as JPEG 2000 lossless, with a UID of its own."""
    out = copy.deepcopy(ds)
    compress(out, JPEG2000Lossless, generate_instance_uid=False)
    out.SeriesInstanceUID = f"{STUDY_UID}.{series}"
    out.SOPInstanceUID = UID(f"{out.SeriesInstanceUID}.1")
    out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    out.SeriesNumber = series
    return _encode(out)


def generate() -> dict[str, Image]:
    """The CT, its JPEG 2000 twin and the JPEG 2000 multi-frame instance, by name."""
    rng = np.random.default_rng(SEED)
    hu = slice_hu(rng, 0.0)
    ct = (hu - INTERCEPT).astype(np.int16)[np.newaxis]
    ct_ds = _dataset(CTImageStorage, 1, ct)
    stack = np.stack([slice_hu(rng, z / FRAMES) for z in range(FRAMES)])
    multi = np.clip(stack - INTERCEPT, 0, 4095).astype(np.uint16)
    multi_ds = _dataset(MultiFrameGrayscaleWordSecondaryCaptureImageStorage, 3, multi)
    return {
        "ct": Image("CT", 1, _encode(ct_ds), ct, hu),
        "j2k": Image("CT JPEG 2000", 2, _j2k(ct_ds, 2), ct, hu),
        "multi": Image("8-frame JPEG 2000", 3, _j2k(multi_ds, 3), multi, stack[0]),
    }
