"""Generated DICOM instances for the benchmarks: a template patched in place, and the ids of
a corpus of studies (10 instances in 2 series of 5, two studies per patient, ~3 studies a day).

Instances are Secondary Capture, Explicit VR Little Endian, built once per size with pydicom; their
UIDs, patient, date, accession, modality and numbers are fixed-width values patched into a copy, so
generating one costs a buffer copy and never competes with the servers measured.
"""

from __future__ import annotations

import datetime as dt
import io
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

ROOT = "1.2.826.0.1.3680043.8.498"  # pydicom's UID root
PER_STUDY, PER_SERIES = 10, 5
MODALITIES = ("CT", "MR", "US", "CR", "DX", "NM", "PT", "XA")
BOUNDARY = "dicomstore-bench-boundary"
DICOM_PART = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
MULTIPART_DICOM = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


@dataclass(frozen=True)
class Ids:
    """What varies between generated instances; every text value has a fixed width."""

    study: int  # < 10**9
    series: int  # < 10**3
    instance: int  # < 10**6
    patient: int  # < 10**9
    date: str  # YYYYMMDD
    modality: str  # two letters

    @property
    def study_uid(self) -> str:
        return f"{ROOT}.1{self.study:09d}"

    @property
    def series_uid(self) -> str:
        return f"{self.study_uid}.1{self.series:03d}"

    @property
    def sop_uid(self) -> str:
        return f"{self.series_uid}.1{self.instance:06d}"

    def values(self) -> dict[tuple[int, int], str]:
        """(group, element) -> value, for every patched element."""
        return {
            (0x0002, 0x0003): self.sop_uid,
            (0x0008, 0x0018): self.sop_uid,
            (0x0008, 0x0020): self.date,
            (0x0008, 0x0050): f"A{self.study:09d}",
            (0x0008, 0x0060): self.modality,
            (0x0010, 0x0010): f"BENCH^P{self.patient:09d}",
            (0x0010, 0x0020): f"P{self.patient:09d}",
            (0x0020, 0x000D): self.study_uid,
            (0x0020, 0x000E): self.series_uid,
            (0x0020, 0x0011): f"{self.series + 1:>3d}",
            (0x0020, 0x0013): f"{self.instance + 1:>6d}",
        }


PLACEHOLDER = Ids(999_999_999, 999, 999_999, 999_999_999, "19991231", "OT")
VRS = {
    (0x0002, 0x0003): b"UI",
    (0x0008, 0x0018): b"UI",
    (0x0008, 0x0020): b"DA",
    (0x0008, 0x0050): b"SH",
    (0x0008, 0x0060): b"CS",
    (0x0010, 0x0010): b"PN",
    (0x0010, 0x0020): b"LO",
    (0x0020, 0x000D): b"UI",
    (0x0020, 0x000E): b"UI",
    (0x0020, 0x0011): b"IS",
    (0x0020, 0x0013): b"IS",
}


class Template:
    """A Part 10 instance encoded once by pydicom; `render` patches the varying values in."""

    def __init__(self, label: str, rows: int, columns: int, bits: int) -> None:
        self.label = label
        values = PLACEHOLDER.values()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = UID(values[(0x0002, 0x0003)])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.StudyTime = "120000"
        ds.ReferringPhysicianName = "BENCH^REFERRER"
        ds.StudyDescription = "dicomstore-dicomweb-bench"
        ds.SeriesDescription = f"{label} instances"
        ds.StudyID = "1"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.ConversionType = "WSD"
        for (group, element), value in values.items():
            if group != 0x0002:
                vr = VRS[(group, element)].decode()
                ds.add_new((group << 16) | element, vr, value)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = rows, columns
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
        ds.PixelRepresentation = 0
        ds.PixelData = random.Random(rows * columns * bits).randbytes(rows * columns * bits // 8)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        self.data = buffer.getvalue()
        pixels = self.data.rfind(b"\xe0\x7f\x10\x00")
        self.offsets: list[tuple[tuple[int, int], int]] = []
        for key, value in values.items():
            raw = value.encode()
            padded = len(raw) + len(raw) % 2
            header = struct.pack("<HH", *key) + VRS[key] + struct.pack("<H", padded)
            at = self.data.find(header, 0, pixels)
            if at < 0 or self.data.find(header, at + 1, pixels) >= 0:
                raise RuntimeError(f"template {label}: element {key} not found exactly once")
            self.offsets.append((key, at + len(header)))

    @property
    def size(self) -> int:
        return len(self.data)

    def render(self, ids: Ids) -> bytes:
        buffer = bytearray(self.data)
        values = ids.values()
        for key, offset in self.offsets:
            raw = values[key].encode()
            buffer[offset : offset + len(raw)] = raw
        return bytes(buffer)


def multipart(instances: Sequence[bytes]) -> bytes:
    """A `multipart/related; type="application/dicom"` body (PS3.18 8.6.1.2)."""
    chunks: list[bytes] = []
    for data in instances:
        chunks += [DICOM_PART, data, b"\r\n"]
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(chunks)


@dataclass(frozen=True)
class Corpus:
    """Numbering of one workload's instances: studies from `base`, ~3 study dates per day."""

    base: int
    days: int

    def ids(self, k: int) -> Ids:
        relative = k // PER_STUDY
        study = self.base + relative
        series = (k % PER_STUDY) // PER_SERIES
        day = dt.date(2010, 1, 1) + dt.timedelta(days=(relative * 7919) % self.days)
        modality = MODALITIES[(study + 3 * series) % len(MODALITIES)]
        return Ids(study, series, k % PER_STUDY, study // 2, f"{day:%Y%m%d}", modality)


def qido_queries(
    corpus: Corpus, studies: int, per_kind: int, rng: random.Random
) -> list[tuple[str, str]]:
    """(kind, QIDO path relative to the DICOMweb root): the benchmarks' fixed mix over the first
    `studies` studies of `corpus`, interleaved, each kind `per_kind` times, all of them
    matching."""
    out: list[tuple[str, str]] = []

    def any_study() -> Ids:
        return corpus.ids(rng.randrange(studies) * PER_STUDY)

    for _ in range(per_kind):
        out.append(("studies by PatientID", f"/studies?PatientID=P{any_study().patient:09d}"))
        start = dt.datetime.strptime(any_study().date, "%Y%m%d")
        window = f"{start:%Y%m%d}-{start + dt.timedelta(days=6):%Y%m%d}"
        out.append(("studies by StudyDate range", f"/studies?StudyDate={window}"))
        number = any_study().study
        out.append(("studies by AccessionNumber", f"/studies?AccessionNumber=A{number:09d}"))
        study = any_study()
        path = f"/studies/{study.study_uid}/series?Modality={study.modality}"
        out.append(("series of a study by Modality", path))
        series = corpus.ids(rng.randrange(studies) * PER_STUDY + rng.choice((0, PER_SERIES)))
        path = f"/studies/{series.study_uid}/series/{series.series_uid}/instances"
        out.append(("instances of a series", path))
    return out
