"""read_header: Part 10 parsing, refusal reasons, truncation, bounded memory, index attributes."""

from __future__ import annotations

import contextlib
import io
import json
import struct
import tempfile
import tracemalloc
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian
from tests.unit.dicom.dicomfiles import (
    INSTANCE,
    PYDICOM_DATA,
    SERIES,
    STUDY,
    data_file,
    new_instance,
    part10,
    pydicom_data_files,
)

from dicomstore.dicom.header import InstanceHeader, InvalidInstance, read_dataset, read_header
from dicomstore.dicom.reasons import FailureReason
from dicomstore.dicom.uids import is_valid_uid

# pydicom warns (UserWarning) about invalid values it still reads; production ignores those
# warnings, so these tests do too, instead of turning them into errors.


@pytest.mark.parametrize(
    "path", pydicom_data_files(), ids=lambda p: str(p.relative_to(PYDICOM_DATA))
)
def test_every_pydicom_test_file_is_read_or_refused_clearly(path: Path) -> None:
    try:
        header = read_header(path)
    except InvalidInstance as refused:
        assert refused.reason in set(FailureReason)
        assert refused.message and str(refused) == refused.message
        return
    for uid in (header.study_uid, header.series_uid, header.sop_uid, header.sop_class_uid):
        assert is_valid_uid(uid)
    assert is_valid_uid(header.transfer_syntax_uid)
    json.dumps(header.metadata, allow_nan=False)


@pytest.mark.parametrize(
    ("name", "reason", "message"),
    [
        ("no_meta.dcm", FailureReason.CANNOT_UNDERSTAND, "not a DICOM Part 10 file"),
        ("ExplVR_BigEndNoMeta.dcm", FailureReason.CANNOT_UNDERSTAND, "not a DICOM Part 10"),
        ("rtstruct.dcm", FailureReason.CANNOT_UNDERSTAND, "not a DICOM Part 10 file"),
        ("README.txt", FailureReason.CANNOT_UNDERSTAND, "not a DICOM Part 10 file"),
        ("meta_missing_tsyntax.dcm", FailureReason.CANNOT_UNDERSTAND, "no Transfer Syntax"),
        ("MR_truncated.dcm", FailureReason.CANNOT_UNDERSTAND, r"truncated: \(7FE0,0010\)"),
        ("rtplan_truncated.dcm", FailureReason.CANNOT_UNDERSTAND, "truncated"),
        ("dicomdirtests/DICOMDIR", FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, "no Study"),
        ("JPEGLSNearLossless_08.dcm", FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, "Study"),
    ],
)
def test_refusals_name_the_reason(name: str, reason: int, message: str) -> None:
    with pytest.raises(InvalidInstance, match=message) as refused:
        read_header(data_file(name))
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "JPEG2000.dcm",
        "MR_small_RLE.dcm",
        "image_dfl.dcm",  # deflated
        "waveform_ecg.dcm",
        "test-SR.dcm",
        "rtdose.dcm",
        "chrH31.dcm",
    ],
)
def test_representative_instances_are_read(name: str) -> None:
    header = read_header(data_file(name))
    ds = pydicom.dcmread(data_file(name))
    assert (header.study_uid, header.series_uid, header.sop_uid, header.sop_class_uid) == (
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        ds.SOPClassUID,
    )
    assert header.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID


def test_ct_small_header_values() -> None:
    header = read_header(data_file("CT_small.dcm"))
    assert header.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert header.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert header.number_of_frames == 1
    attributes = header.attributes
    assert attributes["PatientName"] == "CompressedSamples^CT1"
    assert attributes["PatientID"] == "1CT1"
    assert attributes["StudyDate"] == "20040119"
    assert attributes["Modality"] == "CT"
    assert attributes["SeriesNumber"] == "1"
    assert (attributes["Rows"], attributes["Columns"], attributes["BitsAllocated"]) == (
        "128",
        "128",
        "16",
    )
    assert attributes["SOPInstanceUID"] == header.sop_uid
    assert "AccessionNumber" not in attributes  # absent or empty attributes are left out
    assert header.metadata["7FE00010"] == {"vr": "OW", "BulkDataURI": "bulkdata/7FE00010"}


@pytest.mark.parametrize(
    ("name", "frames"),
    [("rtdose.dcm", 15), ("SC_rgb_rle_2frame.dcm", 2), ("MR_small.dcm", 1), ("test-SR.dcm", 0)],
)
def test_number_of_frames(name: str, frames: int) -> None:
    assert read_header(data_file(name)).number_of_frames == frames


def test_iso_2022_japanese_names_are_decoded() -> None:
    header = read_header(data_file("chrH31.dcm"))
    assert header.attributes["PatientName"] == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert header.metadata["00100010"]["Value"] == [
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
    ]


@pytest.mark.parametrize(
    "path", sorted((PYDICOM_DATA / "charset_files").glob("chr*.dcm")), ids=lambda p: p.name
)
def test_specific_character_sets_decode_as_pydicom_does(path: Path) -> None:
    ds = pydicom.dcmread(path)
    try:
        header = read_header(path)
    except InvalidInstance:
        assert "StudyInstanceUID" not in ds
        return
    assert header.attributes.get("PatientName", "") == str(ds.get("PatientName", "")).strip()


@pytest.mark.parametrize("kind", ["path", "bytesio", "spooled-memory", "spooled-disk", "file"])
def test_sources_give_the_same_header(kind: str) -> None:
    path = data_file("MR_small.dcm")
    expected = read_header(path)
    data = path.read_bytes()
    if kind == "path":
        header = read_header(path)
    elif kind == "bytesio":
        header = read_header(io.BytesIO(data))
    elif kind == "file":
        with path.open("rb") as handle:
            handle.seek(100)  # read from the start whatever the position
            header = read_header(handle)
    else:
        limit = len(data) * 2 if kind == "spooled-memory" else 10
        with tempfile.SpooledTemporaryFile(max_size=limit) as spooled:
            spooled.write(data)
            header = read_header(spooled)
    assert header == expected
    assert header.metadata == expected.metadata


def _uid_case(keyword: str, value: str | None) -> bytes:
    ds = new_instance()
    if value is None:
        delattr(ds, keyword)
    else:
        setattr(ds, keyword, value)
    return part10(ds)


@pytest.mark.google_behaviour("stow-uid-syntax")
@pytest.mark.parametrize(
    ("keyword", "value", "message"),
    [
        ("StudyInstanceUID", None, r"no Study Instance UID \(0020,000D\)"),
        ("SeriesInstanceUID", None, "no Series Instance UID"),
        ("SOPInstanceUID", "", "no SOP Instance UID"),
        ("SOPClassUID", None, "no SOP Class UID"),
        ("StudyInstanceUID", "1.02.3", "invalid Study Instance UID .*'1.02.3'"),
        ("SeriesInstanceUID", "1.2.abc", "invalid Series Instance UID"),
        ("SOPInstanceUID", "1." + "2" * 70, "invalid SOP Instance UID"),
        ("SOPClassUID", "1.2.3\\1.2.4", "invalid SOP Class UID"),
    ],
)
def test_missing_or_malformed_uids_are_refused(
    keyword: str, value: str | None, message: str
) -> None:
    with pytest.raises(InvalidInstance, match=message) as refused:
        read_header(io.BytesIO(_uid_case(keyword, value)))
    assert refused.value.reason == FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS


def test_padded_uids_are_accepted_without_padding() -> None:
    header = read_header(io.BytesIO(part10(new_instance(), ImplicitVRLittleEndian)))
    assert (header.study_uid, header.series_uid, header.sop_uid) == (STUDY, SERIES, INSTANCE)


def test_invalid_transfer_syntax_uid_is_refused() -> None:
    data = part10(new_instance())
    data = data.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.a\x00")
    with pytest.raises(InvalidInstance, match="invalid Transfer Syntax UID"):
        read_header(io.BytesIO(data))


def test_bare_data_set_without_preamble_is_refused() -> None:
    data = part10(new_instance())
    with pytest.raises(InvalidInstance, match="not a DICOM Part 10 file"):
        read_header(io.BytesIO(data[132:]))


# --- truncation -------------------------------------------------------------------------------


def _element_start(path: Path, tag: int) -> int:
    ds = pydicom.dcmread(path, defer_size=16)
    raw = ds.get_item(tag, keep_deferred=True)
    assert isinstance(raw, RawDataElement)
    return int(raw.value_tell) - 8  # explicit VR, 2-byte length


@pytest.mark.parametrize(
    ("name", "cut", "message"),
    [
        ("MR_small.dcm", -300, r"\(7FE0,0010\) has \d+ of its 8192 bytes"),
        ("CT_small.dcm", "inside-header", "do not form a data element"),
        ("JPEG2000.dcm", -20, "no delimiter"),
        ("rtplan.dcm", 2000, "truncated"),
        ("image_dfl.dcm", 2000, "deflated data set is cut short"),
    ],
)
def test_truncated_files_are_refused(name: str, cut: int | str, message: str) -> None:
    path = data_file(name)
    data = path.read_bytes()
    end = _element_start(path, 0x00280010) + 3 if cut == "inside-header" else int(cut)
    with pytest.raises(InvalidInstance, match=message) as refused:
        read_header(io.BytesIO(data[:end]))
    assert refused.value.reason == FailureReason.CANNOT_UNDERSTAND


def test_truncation_never_escapes_as_another_exception() -> None:
    data = data_file("JPEG2000.dcm").read_bytes()
    for end in range(0, len(data), 3):
        with contextlib.suppress(InvalidInstance):
            read_header(io.BytesIO(data[:end]))


def test_deflated_data_set_above_the_cap_is_refused() -> None:
    with pytest.raises(InvalidInstance, match="inflates to more than 100 bytes") as refused:
        read_header(data_file("image_dfl.dcm"), max_inflated_bytes=100)
    assert refused.value.reason == FailureReason.OUT_OF_RESOURCES


def test_deflated_instance_written_here_round_trips() -> None:
    header = read_header(io.BytesIO(part10(new_instance(), DeflatedExplicitVRLittleEndian)))
    assert header.attributes["PatientName"] == "Doe^John"


# --- bounded memory ---------------------------------------------------------------------------

PIXEL_BYTES = 48 * 1024 * 1024


def _large_instance(tmp_path: Path, *, encapsulated: bool, truncate: int = 0) -> Path:
    """An instance with 48 MiB of Pixel Data, written in chunks."""
    ds = new_instance(Rows=4096, Columns=3072, BitsAllocated=16, SamplesPerPixel=1)
    ts = "1.2.840.10008.1.2.4.90" if encapsulated else "1.2.840.10008.1.2.1"
    path = tmp_path / "large.dcm"
    chunk = bytes(range(256)) * 4096  # 1 MiB
    with path.open("wb") as out:
        out.write(part10(ds, ts))
        if encapsulated:
            out.write(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF))
            out.write(struct.pack("<HHL", 0xFFFE, 0xE000, 0))  # empty Basic Offset Table
            for _ in range(PIXEL_BYTES // len(chunk)):
                out.write(struct.pack("<HHL", 0xFFFE, 0xE000, len(chunk)) + chunk)
            out.write(struct.pack("<HHL", 0xFFFE, 0xE0DD, 0))
        else:
            out.write(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, PIXEL_BYTES))
            for _ in range(PIXEL_BYTES // len(chunk)):
                out.write(chunk)
        if truncate:
            out.truncate(out.tell() - truncate)
    return path


@pytest.mark.parametrize("encapsulated", [False, True])
def test_memory_stays_bounded_for_large_pixel_data(tmp_path: Path, encapsulated: bool) -> None:
    path = _large_instance(tmp_path, encapsulated=encapsulated)
    tracemalloc.start()
    try:
        header = read_header(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, peak
    assert header.metadata["7FE00010"]["BulkDataURI"] == "bulkdata/7FE00010"
    assert header.number_of_frames == 1


@pytest.mark.parametrize(
    ("encapsulated", "message"),
    [(False, "past the end of the file"), (True, "no delimiter")],
)
def test_large_pixel_data_cut_short_is_refused(
    tmp_path: Path, encapsulated: bool, message: str
) -> None:
    path = _large_instance(tmp_path, encapsulated=encapsulated, truncate=1000)
    with pytest.raises(InvalidInstance, match=message):
        read_header(path)


def test_header_is_a_frozen_value() -> None:
    header = read_header(data_file("MR_small.dcm"))
    assert isinstance(header, InstanceHeader)
    with pytest.raises(AttributeError):
        header.sop_uid = "1.2"  # type: ignore[misc]
    with pytest.raises(TypeError):
        header.attributes["PatientID"] = "x"  # type: ignore[index]


def test_read_dataset_reads_a_stored_instance_lazily() -> None:
    with data_file("examples_overlay.dcm").open("rb") as handle:
        ds = read_dataset(handle)
        raw = ds.get_item(0x7FE00010, keep_deferred=True)
        assert isinstance(raw, RawDataElement) and raw.value is None  # still in the file
        assert len(ds.PixelData) == raw.length
