"""STOW-RS response rendering (PS3.18 10.5.3; docs/google-behaviour.md#stow-response-format,
#stow-response-shape, #stow-failure-detail)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from dicomstore.dicom.reasons import FailureReason, WarningReason
from dicomstore.dicom.stow import (
    NATIVE_DICOM_NAMESPACE,
    FailedInstance,
    OtherFailure,
    StoredInstance,
    StoreResponse,
    to_json,
    to_xml,
)

STUDY_URL = "http://h/v1/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb/studies/1.2.3"
CT = "1.2.840.10008.5.1.4.1.1.2"

SUCCESS = StoreResponse(
    retrieve_url=STUDY_URL,
    referenced=[
        StoredInstance(CT, "1.2.3.4.1", f"{STUDY_URL}/series/1.2.3.4/instances/1.2.3.4.1"),
        StoredInstance(CT, "1.2.3.4.2", f"{STUDY_URL}/series/1.2.3.4/instances/1.2.3.4.2"),
    ],
)
MIXED = StoreResponse(
    retrieve_url=STUDY_URL,
    referenced=[
        StoredInstance(
            CT,
            "1.2.3.4.1",
            f"{STUDY_URL}/series/1.2.3.4/instances/1.2.3.4.1",
            warning_reason=WarningReason.COERCION_OF_DATA_ELEMENTS,
        )
    ],
    failed=[
        FailedInstance(CT, "1.2.3.4.2", FailureReason.PROCESSING_FAILURE, "already exists"),
        FailedInstance("", "", FailureReason.CANNOT_UNDERSTAND, 'bad <part> & "quotes"\x01'),
    ],
)


def _item(uid: str) -> dict[str, object]:
    return {
        "00081150": {"vr": "UI", "Value": [CT]},
        "00081155": {"vr": "UI", "Value": [uid]},
        "00081190": {"vr": "UR", "Value": [f"{STUDY_URL}/series/1.2.3.4/instances/{uid}"]},
    }


@pytest.mark.google_behaviour("stow-response-shape")
def test_json_success_lists_the_study_url_and_each_instance() -> None:
    assert to_json(SUCCESS) == {
        "00081190": {"vr": "UR", "Value": [STUDY_URL]},
        "00081199": {"vr": "SQ", "Value": [_item("1.2.3.4.1"), _item("1.2.3.4.2")]},
    }


@pytest.mark.google_behaviour("stow-failure-detail")
def test_json_failure_carries_reason_and_google_failure_detail() -> None:
    body = to_json(MIXED)
    assert list(body) == ["00081190", "00081198", "00081199"]
    duplicate, unreadable = body["00081198"]["Value"]
    assert duplicate == {
        "00081150": {"vr": "UI", "Value": [CT]},
        "00081155": {"vr": "UI", "Value": ["1.2.3.4.2"]},
        "00081197": {"vr": "US", "Value": [272]},
        "00090010": {"vr": "LO", "Value": ["GOOGLE"]},
        "00091097": {"vr": "LT", "Value": ["already exists"]},
    }
    assert "00081150" not in unreadable and "00081155" not in unreadable
    assert unreadable["00081197"] == {"vr": "US", "Value": [0xC000]}
    stored = body["00081199"]["Value"][0]
    assert stored["00081196"] == {"vr": "US", "Value": [0xB000]}
    json.dumps(body, allow_nan=False)


def test_json_other_failures_sequence_when_given() -> None:
    body = to_json(StoreResponse(None, other_failures=[OtherFailure(0xA700, "disk full")]))
    assert body == {
        "0008119A": {
            "vr": "SQ",
            "Value": [
                {
                    "00081197": {"vr": "US", "Value": [0xA700]},
                    "00090010": {"vr": "LO", "Value": ["GOOGLE"]},
                    "00091097": {"vr": "LT", "Value": ["disk full"]},
                }
            ],
        }
    }


def _attributes(element: ET.Element) -> dict[str, ET.Element]:
    return {child.attrib["tag"]: child for child in element.findall("DicomAttribute")}


@pytest.mark.google_behaviour("stow-response-shape", "stow-response-format")
def test_xml_success_has_googles_shape() -> None:
    text = to_xml(SUCCESS)
    root = ET.fromstring(text)
    assert root.tag == "NativeDicomModel"  # Google's documents carry no namespace
    top = _attributes(root)
    assert list(top) == ["00081190", "00081199"]
    assert top["00081190"].attrib == {"tag": "00081190", "vr": "UR", "keyword": "RetrieveURL"}
    assert top["00081190"].findtext("Value") == STUDY_URL
    items = top["00081199"].findall("Item")
    assert [item.attrib["number"] for item in items] == ["1", "2"]
    first = _attributes(items[0])
    assert [a.attrib["keyword"] for a in first.values()] == [
        "ReferencedSOPClassUID",
        "ReferencedSOPInstanceUID",
        "RetrieveURL",
    ]
    assert first["00081155"].find("Value").attrib == {"number": "1"}  # type: ignore[union-attr]
    assert first["00081155"].findtext("Value") == "1.2.3.4.1"


@pytest.mark.google_behaviour("stow-failure-detail")
def test_xml_failure_detail_is_private_0009_0097_with_creator_google() -> None:
    root = ET.fromstring(to_xml(MIXED))
    top = _attributes(root)
    assert list(top) == ["00081190", "00081198", "00081199"]
    duplicate, unreadable = top["00081198"].findall("Item")
    attrs = _attributes(duplicate)
    assert attrs["00081197"].findtext("Value") == "272"
    assert attrs["00090097"].attrib == {
        "tag": "00090097",
        "vr": "LT",
        "keyword": "FailureDetail",
        "privateCreator": "GOOGLE",
    }
    assert attrs["00090097"].findtext("Value") == "already exists"
    assert "00090010" not in attrs
    detail = _attributes(unreadable)["00090097"].findtext("Value")
    assert detail == 'bad <part> & "quotes"\ufffd'  # escaped, control character replaced
    assert "00081150" not in _attributes(unreadable)


@pytest.mark.google_behaviour("stow-response-format")
def test_xml_namespace_is_opt_in_for_the_standard_mode() -> None:
    root = ET.fromstring(to_xml(SUCCESS, xmlns=True))
    assert root.tag == f"{{{NATIVE_DICOM_NAMESPACE}}}NativeDicomModel"


def test_xml_empty_response_is_an_empty_model() -> None:
    root = ET.fromstring(to_xml(StoreResponse(None)))
    assert list(root) == []
