"""Test data for the dicom/ tests: pydicom's test files and small Part 10 instances built here."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom.data
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

PYDICOM_DATA = Path(pydicom.data.__file__).parent
STUDY, SERIES, INSTANCE = "1.2.826.0.1.3", "1.2.826.0.1.3.4", "1.2.826.0.1.3.4.5"


def pydicom_data_files() -> list[Path]:
    """Every file pydicom ships as test data (DICOM or not), without downloading anything."""
    return sorted(
        path
        for path in PYDICOM_DATA.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    )


def data_file(name: str) -> Path:
    path = PYDICOM_DATA / "test_files" / name
    if not path.exists():
        path = PYDICOM_DATA / "charset_files" / name
    return path


def new_instance(**attributes: object) -> Dataset:
    """A minimal Secondary Capture data set; keyword arguments add or replace attributes."""
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = INSTANCE
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = SERIES
    ds.PatientName = "Doe^John"
    ds.PatientID = "P1"
    ds.Modality = "OT"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def part10(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    """`ds` as a DICOM Part 10 file in `transfer_syntax`."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta.MediaStorageSOPClassUID = ds.get("SOPClassUID") or SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID") or UID(INSTANCE)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
