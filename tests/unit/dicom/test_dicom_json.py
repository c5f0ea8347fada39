"""DICOM JSON (PS3.18 F.2) with Google's bulk data rules and bulk values
(docs/google-behaviour.md#metadata-bulkdata-rules, #bulkdata-retrieve)."""

from __future__ import annotations

import base64
import io
import json
import struct
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian
from tests.unit.dicom.dicomfiles import data_file, new_instance, part10

from dicomstore.dicom.bulkdata import EncapsulatedPixelData, bulkdata_element, iter_tag_paths
from dicomstore.dicom.dicomjson import to_dicom_json
from dicomstore.dicom.header import DEFER_SIZE, read_header


def uri(path: str) -> str:
    return f"bulk/{path}"


def metadata_of(ds: Dataset, transfer_syntax: str = "1.2.840.10008.1.2.1") -> dict[str, Any]:
    """The metadata read_header produces for `ds` written as a Part 10 file."""
    return read_header(io.BytesIO(part10(ds, transfer_syntax))).metadata


def test_ct_small_spot_values() -> None:
    metadata = read_header(data_file("CT_small.dcm")).metadata
    assert metadata["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "CompressedSamples^CT1"}]}
    assert metadata["7FE00010"] == {"vr": "OW", "BulkDataURI": "bulkdata/7FE00010"}
    assert metadata["00180050"] == {"vr": "DS", "Value": [5.0]}  # Slice Thickness "5.000000"
    assert metadata["00200032"] == {"vr": "DS", "Value": [-158.135803, -179.035797, -75.699997]}
    assert metadata["00200013"] == {"vr": "IS", "Value": [1]}
    assert metadata["00280010"] == {"vr": "US", "Value": [128]}
    assert metadata["00080008"] == {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY", "AXIAL"]}
    assert not any(tag.startswith("0002") for tag in metadata)  # File Meta is not the data set
    assert list(metadata) == sorted(metadata)


@pytest.mark.google_behaviour("metadata-bulkdata-rules", "bulkdata-retrieve")
def test_nested_bulk_data_uses_item_paths() -> None:
    metadata = read_header(data_file("waveform_ecg.dcm")).metadata
    waveform = metadata["54000100"]
    assert waveform["vr"] == "SQ"
    assert waveform["Value"][1]["54001010"] == {
        "vr": "OW",
        "BulkDataURI": "bulkdata/54000100/1/54001010",
    }
    assert "54000100/0/54001010" in set(iter_tag_paths(metadata))


@pytest.mark.google_behaviour("metadata-bulkdata-rules")
def test_pixel_data_in_a_sequence_is_bulk_data() -> None:
    metadata = read_header(data_file("examples_overlay.dcm")).metadata
    icon = metadata["00880200"]["Value"][0]
    assert icon["7FE00010"]["BulkDataURI"] == "bulkdata/00880200/0/7FE00010"
    assert metadata["60003000"]["BulkDataURI"] == "bulkdata/60003000"  # Overlay Data, OW


def _private(ds: Dataset, element: int, vr: str, value: object) -> Dataset:
    ds.add_new(0x00090010, "LO", "TEST")
    ds.add_new(0x00091000 | element, vr, value)
    return ds


@pytest.mark.google_behaviour("metadata-bulkdata-rules")
@pytest.mark.parametrize(
    ("vr", "value", "expected"),
    [
        ("OB", b"\x01\x02", "bulk"),  # OB is always bulk data, however small
        ("OW", b"\x01\x02", "bulk"),
        ("UN", b"\x01\x02", "bulk"),
        ("OD", struct.pack("<256d", *range(256)), "inline"),  # 2048 bytes
        ("OD", struct.pack("<257d", *range(257)), "bulk"),  # 2056 bytes
        ("OF", struct.pack("<512f", *range(512)), "inline"),
        ("OF", struct.pack("<513f", *range(513)), "bulk"),
        ("OL", struct.pack("<513L", *range(513)), "bulk"),
        ("OV", struct.pack("<2Q", 1, 2), "inline"),
        ("US", list(range(512)), "value"),
        ("US", list(range(513)), "bulk"),
        ("UL", list(range(513)), "bulk"),
        ("FL", [0.5] * 513, "bulk"),
        ("FD", [0.5] * 512, "value"),
        ("FD", [0.5] * 513, "bulk"),
        ("AT", [0x00100010] * 513, "bulk"),
        ("SV", list(range(513)), "bulk"),
        ("UV", list(range(513)), "bulk"),
        ("SS", list(range(600)), "value"),  # not in Google's list
        ("SL", list(range(600)), "value"),
    ],
)
def test_bulk_data_follows_googles_thresholds(vr: str, value: object, expected: str) -> None:
    attribute = metadata_of(_private(new_instance(), 0x01, vr, value))["00091001"]
    assert attribute["vr"] == vr
    if expected == "bulk":
        assert attribute == {"vr": vr, "BulkDataURI": "bulkdata/00091001"}
    elif expected == "inline":
        assert attribute["InlineBinary"] == base64.b64encode(value).decode()  # type: ignore[arg-type]
    else:
        assert attribute["Value"] == list(value)  # type: ignore[call-overload]


def test_large_deferred_values_become_uris_without_being_read() -> None:
    ds = new_instance()
    _private(ds, 0x01, "OD", b"\x00" * (DEFER_SIZE + 8))
    ds.add_new(0x00091003, "UT", "x" * (DEFER_SIZE + 1))  # deferred, but text: read inline
    # Explicit VR gives FL a 2-byte length; Implicit VR lets it exceed 64 KiB.
    ds.RWaveTimeVector = [1.0] * (DEFER_SIZE // 4 + 1)
    explicit = metadata_of(ds)
    assert explicit["00091001"] == {"vr": "OD", "BulkDataURI": "bulkdata/00091001"}
    assert explicit["00091003"] == {"vr": "UT", "Value": ["x" * (DEFER_SIZE + 1)]}
    implicit = metadata_of(ds, ImplicitVRLittleEndian)
    assert implicit["00186060"] == {"vr": "FL", "BulkDataURI": "bulkdata/00186060"}
    assert implicit["00091001"] == {"vr": "UN", "BulkDataURI": "bulkdata/00091001"}


@pytest.mark.google_behaviour("metadata-bulkdata-rules")
def test_inline_binary_is_little_endian_for_big_endian_files() -> None:
    ds = _private(new_instance(), 0x01, "OF", struct.pack(">2f", 1.5, -2.0))
    attribute = metadata_of(ds, ExplicitVRBigEndian)["00091001"]
    assert base64.b64decode(attribute["InlineBinary"]) == struct.pack("<2f", 1.5, -2.0)


def test_value_encodings_of_f_2_3() -> None:
    ds = new_instance(
        PatientName="Yamada^Tarou=山田^太郎=やまだ^たろう",
        SpecificCharacterSet="ISO_IR 192",
        SliceThickness="1.50",
        WindowCenter=["10", "-2.5e1"],
        InstanceNumber="007",
        ImageType=["ORIGINAL", "", "AXIAL"],
        AccessionNumber="",
        FrameIncrementPointer=0x00181063,
    )
    ds.add_new(0x00091001, "FD", [float("nan"), float("inf"), -float("inf"), 0.25])
    ds.add_new(0x00090010, "LO", "TEST")
    ds.ReferencedImageSequence = [Dataset(), Dataset()]
    ds.ReferencedImageSequence[1].ReferencedSOPInstanceUID = "1.2.3"
    ds.DerivationCodeSequence = []
    metadata = metadata_of(ds)
    assert metadata["00100010"]["Value"] == [
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
    ]
    assert metadata["00180050"] == {"vr": "DS", "Value": [1.5]}
    assert metadata["00281050"] == {"vr": "DS", "Value": [10, -25.0]}
    assert metadata["00200013"] == {"vr": "IS", "Value": [7]}
    assert metadata["00080008"] == {"vr": "CS", "Value": ["ORIGINAL", None, "AXIAL"]}
    assert metadata["00080050"] == {"vr": "SH"}  # empty value: vr only (F.2.5)
    assert metadata["00280009"] == {"vr": "AT", "Value": ["00181063"]}
    assert metadata["00091001"] == {"vr": "FD", "Value": ["NaN", "Infinity", "-Infinity", 0.25]}
    assert metadata["00081140"] == {
        "vr": "SQ",
        "Value": [{}, {"00081155": {"vr": "UI", "Value": ["1.2.3"]}}],
    }
    assert metadata["00089215"] == {"vr": "SQ"}
    json.dumps(metadata, allow_nan=False)


def test_invalid_numbers_stay_strings() -> None:
    header = read_header(data_file("badVR.dcm"))
    assert header.metadata["00280008"] == {"vr": "IS", "Value": ["1A"]}
    assert header.number_of_frames == 1
    data = part10(new_instance(SliceThickness="12345.6"))
    metadata = read_header(io.BytesIO(data.replace(b"12345.6 ", b"abc     "))).metadata
    assert metadata["00180050"] == {"vr": "DS", "Value": ["abc"]}


def test_to_dicom_json_of_an_in_memory_data_set() -> None:
    ds = new_instance()
    ds.PixelData = b"\x00" * 16
    ds.BitsAllocated = 8
    metadata = to_dicom_json(ds, uri)
    assert metadata["7FE00010"]["BulkDataURI"] == "bulk/7FE00010"
    assert metadata["00100020"] == {"vr": "LO", "Value": ["P1"]}


@pytest.mark.google_behaviour("metadata-large-sequences")
def test_sequences_above_the_size_limit_are_omitted() -> None:
    ds = pydicom.dcmread(data_file("waveform_ecg.dcm"), defer_size=DEFER_SIZE)
    assert "54000100" in to_dicom_json(ds, uri, max_sequence_bytes=1 << 20)
    assert "54000100" not in to_dicom_json(ds, uri, max_sequence_bytes=1000)
    assert "00080005" in to_dicom_json(ds, uri, max_sequence_bytes=1000)


# --- bulk data values (docs/google-behaviour.md#bulkdata-retrieve) ----------------------------


@pytest.mark.google_behaviour("bulkdata-retrieve")
def test_bulkdata_element_returns_little_endian_pixel_data() -> None:
    little = pydicom.dcmread(data_file("MR_small.dcm"))
    big = pydicom.dcmread(data_file("MR_small_bigendian.dcm"))
    assert bulkdata_element(little, "7FE00010") == little.PixelData
    assert bulkdata_element(big, "7FE00010") == little.PixelData


@pytest.mark.parametrize("name", ["rtdose_expb.dcm", "rtdose_expb_1frame.dcm"])
def test_bulkdata_element_swaps_32_bit_big_endian_pixels_whole(name: str) -> None:
    big = pydicom.dcmread(data_file(name))
    little = pydicom.dcmread(data_file(name.replace("_expb", "")))
    assert big.BitsAllocated == 32 and big[0x7FE00010].VR == "OW"
    assert bulkdata_element(big, "7FE00010") == little.PixelData


@pytest.mark.google_behaviour("bulkdata-retrieve")
def test_bulkdata_element_resolves_nested_paths() -> None:
    ds = pydicom.dcmread(data_file("waveform_ecg.dcm"), defer_size=DEFER_SIZE)
    expected = pydicom.dcmread(data_file("waveform_ecg.dcm")).WaveformSequence[1].WaveformData
    assert bulkdata_element(ds, "54000100/1/54001010") == expected


def test_bulkdata_element_packs_numbers_little_endian() -> None:
    ds = new_instance()
    ds.add_new(0x00090010, "LO", "TEST")
    ds.add_new(0x00091001, "US", list(range(600)))
    ds.add_new(0x00091002, "AT", [0x00100010, 0x7FE00010])
    ds.add_new(0x00091003, "FD", [0.5, 2.0])
    read = pydicom.dcmread(io.BytesIO(part10(ds, ExplicitVRBigEndian)))
    assert bulkdata_element(read, "00091001") == struct.pack("<600H", *range(600))
    assert bulkdata_element(read, "00091002") == struct.pack("<4H", 0x10, 0x10, 0x7FE0, 0x10)
    assert bulkdata_element(read, "00091003") == struct.pack("<2d", 0.5, 2.0)


@pytest.mark.parametrize(
    "path",
    ["00100010", "7FE00011", "54000100/9/54001010", "54000100/x/54001010", "54000100/0", "zz"],
)
def test_bulkdata_element_returns_none_for_paths_without_bulk_data(path: str) -> None:
    ds = pydicom.dcmread(data_file("waveform_ecg.dcm"))
    assert bulkdata_element(ds, path) is None


def test_bulkdata_element_refuses_encapsulated_pixel_data() -> None:
    ds = pydicom.dcmread(data_file("JPEG2000.dcm"))
    with pytest.raises(EncapsulatedPixelData, match="7FE00010"):
        bulkdata_element(ds, "7FE00010")


def test_implicit_vr_pixel_data_is_ow() -> None:
    ds = new_instance(BitsAllocated=8, Rows=2, Columns=2, SamplesPerPixel=1)
    ds.PixelData = b"\x00\x01\x02\x03"
    assert metadata_of(ds, ImplicitVRLittleEndian)["7FE00010"]["vr"] == "OW"
