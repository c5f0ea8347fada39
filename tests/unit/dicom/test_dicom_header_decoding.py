"""`read_header` takes two shortcuts through pydicom: it reads the data set alone after the File
Meta Information it parsed itself (not the whole file with `dcmread`), and it decodes plain
attributes itself instead of through pydicom's value conversion. Its header (UIDs, index
attributes, frames, DICOM JSON metadata) and its refusals must be exactly those of the long way,
which `reference_outcome` forces."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from pydicom import config, dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from tests.unit.dicom.dicomfiles import PYDICOM_DATA, new_instance, part10, pydicom_data_files

from dicomstore.dicom import header, raw_values
from dicomstore.dicom.header import InstanceHeader, InvalidInstance, read_header

Outcome = tuple[InstanceHeader, dict[str, Any], int] | tuple[int, str]


def outcome(source: Path | bytes) -> Outcome:
    """The header with its metadata (compared apart: InstanceHeader leaves it out of ==), or
    the refusal."""
    try:
        header = read_header(source if isinstance(source, Path) else io.BytesIO(source))
    except InvalidInstance as refused:
        return refused.reason, str(refused)
    return header, header.metadata, header.number_of_frames


class _Every:
    def __contains__(self, item: object) -> bool:
        return True


def reference_outcome(source: Path | bytes) -> Outcome:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(raw_values, "converts_as_assumed", lambda: False)
        # Every transfer syntax then takes the `dcmread` path of deflated and private ones.
        patch.setattr(header, "PrivateTransferSyntaxes", _Every())
        return outcome(source)


def dicom_files() -> list[Path]:
    return [path for path in pydicom_data_files() if path.suffix.lower() != ".json"]


@pytest.mark.parametrize("path", dicom_files(), ids=lambda p: str(p.relative_to(PYDICOM_DATA)))
def test_every_pydicom_file_reads_as_with_pydicoms_conversion(path: Path) -> None:
    assert outcome(path) == reference_outcome(path)


def test_the_fast_path_is_taken_for_plain_attributes() -> None:
    """Without it this module would compare pydicom with itself."""
    data = part10(new_instance(SpecificCharacterSet="ISO_IR 100", PatientName="Doe^Jane"))
    found = raw_values.decode_values(_dataset(data), {0x00100010, 0x0020000D})
    assert found == {
        0x00100010: raw_values.Decoded("PN", ["Doe^Jane"]),
        0x0020000D: raw_values.Decoded("UI", ["1.2.826.0.1.3"]),
    }


def _dataset(data: bytes) -> Dataset:
    return dcmread(io.BytesIO(data), defer_size=1024)


#: Attribute values that stress each decoder: padding, empty values, multiple values with empty
#: ones, PN groups, numbers that are not plain, text outside ASCII, binary values.
ODD_VALUES: dict[str, list[tuple[str, Any]]] = {
    "text": [
        ("PatientID", " P1 "),
        ("PatientID", ""),
        ("AccessionNumber", "A\\\\B"),
        ("StudyDescription", "trailing spaces   "),
        ("StudyComments", "line one\r\nline two  "),
        ("InstitutionAddress", "  leading kept"),
        ("PatientComments", "x\\y"),
        ("ImageComments", "Müller"),
    ],
    "names": [
        ("PatientName", "Yamada^Tarou=^=="),
        ("PatientName", "=Ideo^Graphic"),
        ("PatientName", "A^B\\C^D"),
        ("PatientName", "A^B\\"),
        ("PatientName", "==Phon^Etic"),
        ("ReferringPhysicianName", ""),
        ("PatientName", "Ünal^Ayşe"),
    ],
    "as written by others": [
        ("PatientName", b"Yamada^Tarou=^=="),
        ("PatientName", b"A^B==\\C^D="),
        ("PatientName", b"A^B \x00"),
        ("PatientID", b"P1\x00\x00"),
        ("PatientID", b" P1\\ "),
        ("StudyDescription", b"x\x00 y "),
        ("Modality", b"CT\x00 "),
        ("StudyDate", b"2024\x00\x00"),
        ("SeriesNumber", b"+12 "),
        ("SeriesNumber", b"1 \\ 2 "),
        ("SeriesNumber", b"0x10"),
        ("SliceThickness", b" 1.5\\2 "),
        ("SliceThickness", b"1.5.\x00"),
        ("SliceThickness", b"1,50"),
        ("StudyComments", b"\x00 text \x00"),
        ("RetrieveAETitle", b" A\\ "),
        ("PixelDataProviderURL", b"u \x00"),
    ],
    "codes": [
        ("Modality", "CT "),
        ("ImageType", "ORIGINAL\\PRIMARY\\\\AXIAL"),
        ("StudyDate", "20240101-20240131"),
        ("StudyTime", "101010.123456 "),
        ("AcquisitionDateTime", "20240101101010.1+0100"),
        ("PatientAge", "042Y"),
        ("RetrieveAETitle", " AE ONE \\ AE2 "),
        ("StorageMediaFileSetUID", "1.2.3\x00"),
        ("RelatedGeneralSOPClassUID", ["1.2.3", "1.2.4"]),
        ("PixelDataProviderURL", "http://x/y  "),
    ],
    "numbers": [
        ("SeriesNumber", " 42 "),
        ("SeriesNumber", "+7"),
        ("SeriesNumber", "-0"),
        ("InstanceNumber", "1.0"),
        ("NumberOfFrames", "3"),
        ("NumberOfFrames", "0"),
        ("SliceThickness", "1.25"),
        ("SliceThickness", ".5"),
        ("SliceThickness", "1e3"),
        ("SliceThickness", " -2.50E-02 "),
        ("PixelSpacing", "0.5\\0.5"),
        ("ImagePositionPatient", "1\\\\3"),
        ("WindowCenter", "nan"),
        ("Rows", 512),
        ("SmallestImagePixelValue", 3),
        ("RescaleIntercept", "-1024"),
        ("FrameIncrementPointer", 0x00181063),
        ("ReferencedFrameNumbers", [1, 2, 3]),
        ("ReferencedFrameNumber", ["1", "2", "3"]),
    ],
}


def odd_instance(keyword: str, value: Any, charset: str | None, syntax: str) -> bytes:
    """An instance with `keyword` set to `value`; a `bytes` value is put in as it is (pydicom
    would tidy it when writing), so it must have an even length."""
    ds = new_instance()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    numeric = dictionary_VR(keyword) in ("IS", "DS")
    placeholder = (b"7" if numeric else b"Z") * len(value) if isinstance(value, bytes) else None
    with config.disable_value_validation():
        setattr(ds, keyword, placeholder.decode() if placeholder else value)
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.PixelRepresentation = 2, 2, 16, 0
    ds.PixelData = b"\x01\x00\x02\x00\x03\x00\x04\x00"
    data = part10(ds, syntax)
    if placeholder:
        assert data.count(placeholder) == 1
        data = data.replace(placeholder, value)
    return data


SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
CHARSETS = [None, "ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 6"]


@pytest.mark.parametrize("syntax", SYNTAXES, ids=["explicit", "implicit", "big-endian"])
@pytest.mark.parametrize("charset", CHARSETS, ids=lambda c: str(c))
@pytest.mark.parametrize(
    ("keyword", "value"),
    [case for cases in ODD_VALUES.values() for case in cases],
    ids=lambda v: repr(v)[:30],
)
def test_odd_values_read_as_with_pydicoms_conversion(
    keyword: str, value: Any, charset: str | None, syntax: str
) -> None:
    data = odd_instance(keyword, value, charset, syntax)
    assert outcome(data) == reference_outcome(data)


@pytest.mark.parametrize(
    "uid",
    ["1.2.826.0.1.3 ", "1.2.826.0.1.3\x00", "1.2.826..3", "1.2.826.0.1.3\\1.2.3", " ", ""],
    ids=["space", "null", "malformed", "two", "blank", "empty"],
)
def test_odd_uids_are_read_or_refused_as_with_pydicoms_conversion(uid: str) -> None:
    ds = new_instance()
    ds.add_new(0x0020000D, "UI", uid)
    data = part10(ds)
    assert outcome(data) == reference_outcome(data)


def test_other_conversion_settings_fall_back_to_pydicom() -> None:
    """Under settings the decoders do not follow, pydicom decodes everything."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(config, "datetime_conversion", True)
        data = part10(new_instance(StudyDate="20240101"))
        found = raw_values.decode_values(_dataset(data), {0x00080020})
    assert found == {0x00080020: None}
