"""DICOM JSON instances and bulk data parts made Part 10 files (PS3.18 10.5;
docs/google-behaviour.md#stow-json-bulkdata)."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pydicom
import pytest
from pydicom.encaps import generate_frames
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless
from tests.unit.dicom.dicomfiles import INSTANCE, SERIES, STUDY
from tests.unit.dicom.dicomjsonfiles import SC, image, metadata

from dicomstore.dicom.header import InvalidInstance
from dicomstore.dicom.json_instances import (
    BulkPart,
    BulkRef,
    JsonInstance,
    build_part10,
    json_uids,
    parse_instance,
    resolve_transfer_syntax,
)
from dicomstore.dicom.multipart import Part, parse_content_type
from dicomstore.dicom.reasons import FailureReason

JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
UNSUPPORTED = FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED
CANNOT_UNDERSTAND = FailureReason.CANNOT_UNDERSTAND


Bulk = Callable[[bytes, str | None], BulkPart]
#: A bulk data part as a test case names it: its body and Content-Type.
Given = dict[str, list[tuple[bytes, str | None]]]


@pytest.fixture
def bulk() -> Iterator[Bulk]:
    """Makes bulk data parts, closed after the test."""
    made: list[BulkPart] = []

    def make(data: bytes, content_type: str | None = None) -> BulkPart:
        body = tempfile.SpooledTemporaryFile(max_size=1 << 20)  # noqa: SIM115 (closed below)
        body.write(data)
        body.seek(0)
        parsed = parse_content_type(content_type) if content_type else None
        made.append(BulkPart(Part({}, body, len(data)), parsed))
        return made[-1]

    yield make
    for item in made:
        item.part.close()


def build(instance: JsonInstance, parts: dict[str, list[BulkPart]], syntax: str) -> Any:
    with build_part10(instance, parts, UID(syntax), spool_threshold=1 << 20) as built:
        return pydicom.dcmread(io.BytesIO(built.read()))


# (declared, pixel part media type, its transfer-syntax, metadata part's, chosen or refusal)
TRANSFER_SYNTAX_RULES: list[tuple[str | None, str | None, str | None, str | None, str | int]] = [
    (None, None, None, None, ExplicitVRLittleEndian),
    (None, None, None, "1.2.840.10008.1.2", "1.2.840.10008.1.2"),
    ("1.2.840.10008.1.2", "application/octet-stream", None, None, "1.2.840.10008.1.2"),
    (None, "image/jpeg", None, None, JPEGBaseline8Bit),
    (None, "image/jpeg", JPEG_LOSSLESS, None, JPEG_LOSSLESS),
    (JPEG_LOSSLESS, "image/jpeg", None, None, JPEG_LOSSLESS),
    (None, "image/dicom-rle", None, "1.2.840.10008.1.2", RLELossless),
    (RLELossless, "image/jpeg", None, None, UNSUPPORTED),
    (None, "image/jpeg", RLELossless, None, UNSUPPORTED),
    (ExplicitVRLittleEndian, None, None, "1.2.840.10008.1.2", UNSUPPORTED),
    (None, None, None, BIG_ENDIAN, UNSUPPORTED),
    (DEFLATED, None, None, None, UNSUPPORTED),
    ("1.2.3.4", None, None, None, UNSUPPORTED),
    ("not a uid", None, None, None, UNSUPPORTED),
    (None, "image/png", None, None, CANNOT_UNDERSTAND),
]


@pytest.mark.google_behaviour("stow-json-bulkdata")
@pytest.mark.parametrize(
    ("declared", "media_type", "pixel_syntax", "fallback", "outcome"), TRANSFER_SYNTAX_RULES
)
def test_resolve_transfer_syntax_follows_googles_rules(
    declared: str | None,
    media_type: str | None,
    pixel_syntax: str | None,
    fallback: str | None,
    outcome: str | int,
) -> None:
    if isinstance(outcome, str):
        assert resolve_transfer_syntax(declared, media_type, pixel_syntax, fallback) == outcome
        return
    with pytest.raises(InvalidInstance) as caught:
        resolve_transfer_syntax(declared, media_type, pixel_syntax, fallback)
    assert caught.value.reason == outcome


def test_parse_instance_upper_cases_keys_and_lists_bulk_data_references() -> None:
    nested = {"00081140": {"vr": "SQ", "Value": [{"00420011": {"vr": "OB", "BulkDataURI": "n"}}]}}
    parsed = parse_instance({k.lower(): v for k, v in image(**nested).items()}, "1.2.840.10008.1.2")
    assert (parsed.study_uid, parsed.series_uid, parsed.sop_uid) == (STUDY, SERIES, INSTANCE)
    assert parsed.sop_class_uid == SC
    assert parsed.fallback_transfer_syntax == "1.2.840.10008.1.2"
    assert "7FE00010" in parsed.metadata
    assert sorted(parsed.refs, key=lambda ref: ref.uri) == [
        BulkRef(0x00420011, "OB", "n", top=False),
        BulkRef(0x7FE00010, "OB", "pixels", top=True),
    ]
    assert parsed.pixel_ref == BulkRef(0x7FE00010, "OB", "pixels", top=True)
    assert parsed.number_of_frames == 1


@pytest.mark.google_behaviour("stow-json-bulkdata")
@pytest.mark.parametrize(
    ("instance", "reason", "words"),
    [
        ([], CANNOT_UNDERSTAND, "not a DICOM JSON object"),
        (
            {k: v for k, v in metadata().items() if k != "0020000E"},
            FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            "no Series Instance UID",
        ),
        (
            metadata(**{"00080018": {"vr": "UI", "Value": ["1.02"]}}),
            FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            "invalid SOP Instance UID",
        ),
        (
            metadata(xyz={"vr": "OB", "BulkDataURI": "u"}),
            CANNOT_UNDERSTAND,
            "invalid DICOM JSON tag",
        ),
        (
            metadata(**{"7FE00010": {"vr": "OB", "InlineBinary": "AAAA"}}),
            CANNOT_UNDERSTAND,
            "not InlineBinary",
        ),
    ],
)
def test_parse_instance_refuses_what_google_refuses(
    instance: object, reason: int, words: str
) -> None:
    with pytest.raises(InvalidInstance) as caught:
        parse_instance(instance, None)
    assert caught.value.reason == reason
    assert words in caught.value.message


def test_json_uids_leave_out_what_is_not_a_uid() -> None:
    assert json_uids(metadata(**{"00080018": {"vr": "UI", "Value": ["x"]}})) == (
        STUDY,
        SERIES,
        "",
        SC,
    )
    assert json_uids("not an object") == ("", "", "", "")


def test_build_part10_streams_native_pixel_data_padded_to_even_length(bulk: Bulk) -> None:
    instance = parse_instance(image(**{"00020010": {"vr": "UI", "Value": ["9.9"]}}), None)
    stored = build(instance, {"pixels": [bulk(b"\x01\x02\x03", None)]}, ExplicitVRLittleEndian)
    assert stored.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert stored.file_meta.MediaStorageSOPInstanceUID == INSTANCE
    assert stored.SpecificCharacterSet == "ISO_IR 192"
    assert stored.PixelData == b"\x01\x02\x03\x00"


def test_build_part10_encapsulates_one_fragment_per_frame(bulk: Bulk) -> None:
    frames = [b"\xff\xd8frame-01\xff\xd9", b"\xff\xd8frame-02\xff\xd9"]  # even lengths
    instance = parse_instance(image(2), None)
    parts = {"pixels": [bulk(frame, "image/jpeg") for frame in frames]}
    stored = build(instance, parts, JPEGBaseline8Bit)
    assert stored.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert list(generate_frames(stored.PixelData, number_of_frames=2)) == frames


def test_build_part10_reads_nested_bulk_data_into_memory(bulk: Bulk) -> None:
    item = {"00420011": {"vr": "OB", "BulkDataURI": "nested"}}
    instance = parse_instance(metadata(**{"00081140": {"vr": "SQ", "Value": [item]}}), None)
    stored = build(instance, {"nested": [bulk(b"abcd", None)]}, ExplicitVRLittleEndian)
    assert stored[0x00081140][0][0x00420011].value == b"abcd"


@pytest.mark.parametrize(
    ("instance", "given", "words"),
    [
        (
            metadata(**{"00080005": {"vr": "CS", "Value": ["ISO_IR 100"]}}),
            {},
            "Specific Character Set",
        ),
        (image(), {"pixels": [(b"\xff\xd8", "image/jpeg")]}, "compressed bulk data"),
        (image(), {"pixels": [(b"ab", None), (b"cd", None)]}, "2 parts have Content-Location"),
        (
            metadata(
                **{
                    "00081140": {
                        "vr": "SQ",
                        "Value": [{"00420011": {"vr": "OB", "BulkDataURI": "n"}}],
                    }
                }
            ),
            {"n": [(b"ab", "image/jpeg")]},
            "must be one application/octet-stream part",
        ),
        (metadata(**{"00100010": {"vr": "PN", "Value": 7}}), {}, "cannot read the DICOM JSON"),
    ],
)
def test_build_part10_refuses_what_does_not_fit(
    bulk: Bulk, instance: dict[str, Any], given: Given, words: str
) -> None:
    parts = {uri: [bulk(*item) for item in items] for uri, items in given.items()}
    with pytest.raises(InvalidInstance) as caught:
        build_part10(
            parse_instance(instance, None),
            parts,
            UID(ExplicitVRLittleEndian),
            spool_threshold=1 << 20,
        )
    assert caught.value.reason == CANNOT_UNDERSTAND
    assert words in caught.value.message


@pytest.mark.parametrize("attribute", [{"vr": "CS"}, {"vr": "IS"}, {"vr": "US", "Value": []}])
def test_build_part10_writes_utf8_character_set_over_an_empty_one_of_any_vr(
    attribute: dict[str, Any],
) -> None:
    # Found by fuzzing: an empty (0008,0005) of another VR made setting it raise ValueError.
    instance = parse_instance(metadata(**{"00080005": attribute}), None)
    stored = build(instance, {}, ExplicitVRLittleEndian)
    element = stored[0x00080005]
    assert (element.VR, element.value) == ("CS", "ISO_IR 192")
