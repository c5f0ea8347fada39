"""JSON instances paired with their bulk data parts, in any order (PS3.18 10.5;
docs/google-behaviour.md#stow-json-bulkdata)."""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pydicom
import pytest
from pydicom.encaps import generate_frames
from pydicom.uid import JPEGBaseline8Bit
from tests.unit.dicom.dicomjsonfiles import SC, image, metadata

from dicomstore.dicom.json_batch import JsonBatch, MalformedMetadata, read_metadata
from dicomstore.dicom.json_instances import JsonInstance
from dicomstore.dicom.multipart import Part, parse_content_type
from dicomstore.dicom.reasons import FailureReason
from dicomstore.dicom.stow import FailedInstance

SPOOL = 64
MakePart = Callable[..., Part]


@pytest.fixture
def make_part() -> Iterator[MakePart]:
    """Makes bulk data parts (Content-Location `location`), closed after the test."""
    made: list[Part] = []

    def make(data: bytes, location: str | None = "pixels", content_type: str = "") -> Part:
        body = tempfile.SpooledTemporaryFile(max_size=SPOOL)  # noqa: SIM115 (closed below)
        body.write(data)
        body.seek(0)
        headers = {"content-type": content_type} if content_type else {}
        if location is not None:
            headers["content-location"] = location
        made.append(Part(headers, body, len(data)))
        return made[-1]

    yield make
    for part in made:
        part.close()


@pytest.fixture
def batch() -> Iterator[JsonBatch]:
    batch = JsonBatch(SPOOL)
    yield batch
    batch.close()


def add(batch: JsonBatch, part: Part) -> list[JsonInstance | FailedInstance]:
    content_type = parse_content_type(part.content_type) if part.content_type else None
    return batch.add_bulk(part, content_type)


def built(batch: JsonBatch, instance: JsonInstance | FailedInstance) -> Any:
    assert isinstance(instance, JsonInstance), instance
    result = batch.build(instance)
    assert not isinstance(result, FailedInstance), result
    with result:
        return pydicom.dcmread(io.BytesIO(result.read()))


def failure(outcomes: list[JsonInstance | FailedInstance]) -> FailedInstance:
    (outcome,) = outcomes
    assert isinstance(outcome, FailedInstance), outcome
    return outcome


def test_read_metadata_reads_a_json_array() -> None:
    assert read_metadata(io.BytesIO(json.dumps([metadata()]).encode())) == [metadata()]


@pytest.mark.parametrize(
    ("body", "words"), [(b"[{", "not valid JSON"), (b"\xff", "not valid JSON"), (b"{}", "array")]
)
def test_read_metadata_refuses_anything_but_an_array(body: bytes, words: str) -> None:
    with pytest.raises(MalformedMetadata, match=words):
        read_metadata(io.BytesIO(body))


def test_an_instance_without_bulk_data_is_complete_at_once(batch: JsonBatch) -> None:
    (instance,) = batch.add_metadata([metadata()], None)
    assert built(batch, instance).SOPClassUID == SC
    assert batch.finish() == []


@pytest.mark.parametrize("metadata_first", [True, False])
def test_an_instance_is_complete_when_its_part_arrives(
    batch: JsonBatch, make_part: MakePart, metadata_first: bool
) -> None:
    part = make_part(b"\x01\x02\x03\x04")
    if metadata_first:
        assert batch.add_metadata([image()], None) == []
        (instance,) = add(batch, part)
    else:
        assert add(batch, part) == []
        (instance,) = batch.add_metadata([image()], None)
    assert built(batch, instance).PixelData == b"\x01\x02\x03\x04"
    assert part.body.closed
    assert batch.finish() == []


def test_encapsulated_pixel_data_waits_for_number_of_frames_parts(
    batch: JsonBatch, make_part: MakePart
) -> None:
    frames = [b"\xff\xd8frame-01\xff\xd9", b"\xff\xd8frame-02\xff\xd9"]
    assert batch.add_metadata([image(2)], None) == []
    assert add(batch, make_part(frames[0], content_type="image/jpeg")) == []
    (instance,) = add(batch, make_part(frames[1], content_type="image/jpeg"))
    stored = built(batch, instance)
    assert stored.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert list(generate_frames(stored.PixelData, number_of_frames=2)) == frames


def test_failures_keep_the_order_of_the_array_and_the_uids_they_have(batch: JsonBatch) -> None:
    no_sop_class = {k: v for k, v in metadata().items() if k != "00080016"}
    first, second = batch.add_metadata([no_sop_class, metadata()], None)
    assert isinstance(first, FailedInstance)
    assert (first.sop_class_uid, first.sop_instance_uid) == ("", "1.2.826.0.1.3.4.5")
    assert first.reason == FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    assert isinstance(second, JsonInstance)


@pytest.mark.google_behaviour("stow-json-bulkdata")
def test_a_bulk_data_uri_used_twice_fails_the_instance_that_reuses_it(batch: JsonBatch) -> None:
    other = image(**{"00080018": {"vr": "UI", "Value": ["1.2.3.9"]}})
    assert batch.add_metadata([image()], None) == []
    failed = failure(batch.add_metadata([other], None))
    assert (failed.sop_instance_uid, failed.reason) == ("1.2.3.9", FailureReason.CANNOT_UNDERSTAND)
    assert "used more than once" in failed.detail


@pytest.mark.google_behaviour("stow-json-bulkdata")
def test_a_pixel_data_part_that_contradicts_the_metadata_fails_the_instance(
    batch: JsonBatch, make_part: MakePart
) -> None:
    declared = image(**{"00020010": {"vr": "UI", "Value": ["1.2.840.10008.1.2.5"]}})
    assert batch.add_metadata([declared], None) == []
    part = make_part(b"\xff\xd8\xff\xd9", content_type="image/jpeg")
    failed = failure(add(batch, part))
    assert failed.reason == FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED
    assert part.body.closed
    assert batch.finish() == []


def test_an_instance_that_cannot_be_built_fails_and_frees_its_parts(
    batch: JsonBatch, make_part: MakePart
) -> None:
    latin1 = image(**{"00080005": {"vr": "CS", "Value": ["ISO_IR 100"]}})
    assert batch.add_metadata([latin1], None) == []
    part = make_part(b"\x01\x02\x03\x04")
    (instance,) = add(batch, part)
    assert isinstance(instance, JsonInstance)
    failed = batch.build(instance)
    assert isinstance(failed, FailedInstance)
    assert "Specific Character Set" in failed.detail
    assert part.body.closed


@pytest.mark.parametrize(
    ("frames", "parts", "words"),
    [(1, 0, "no part has Content-Location 'pixels'"), (3, 2, "Number of Frames (0028,0008) is 3")],
)
def test_instances_still_waiting_at_the_end_fail(
    batch: JsonBatch, make_part: MakePart, frames: int, parts: int, words: str
) -> None:
    assert batch.add_metadata([image(frames)], None) == []
    for _ in range(parts):
        assert add(batch, make_part(b"\xff\xd8\xff\xd9", content_type="image/jpeg")) == []
    (failed,) = batch.finish()
    assert (failed.sop_instance_uid, failed.reason) == (
        "1.2.826.0.1.3.4.5",
        FailureReason.CANNOT_UNDERSTAND,
    )
    assert words in failed.detail
    assert batch.finish() == []


def test_a_part_without_content_location_is_closed_at_once(
    batch: JsonBatch, make_part: MakePart
) -> None:
    part = make_part(b"data", location=None)
    assert add(batch, part) == []
    assert part.body.closed


def test_held_parts_spool_to_disk_past_the_threshold(batch: JsonBatch, make_part: MakePart) -> None:
    first, second = make_part(b"a" * 40, "first"), make_part(b"b" * 40, "second")
    add(batch, first)
    add(batch, second)
    # `_rolled` (to disk) is private: typeshed does not declare it.
    assert not first.body._rolled  # type: ignore[attr-defined]
    assert second.body._rolled  # type: ignore[attr-defined]
    batch.close()
    assert first.body.closed and second.body.closed
