"""The STOW-RS response body (PS3.18 10.5.3), in DICOM JSON and in the Native DICOM Model.

The Store Instances Response Module holds the study's Retrieve URL (0008,1190); a Referenced SOP
Sequence (0008,1199) item per stored instance (Referenced SOP Class UID (0008,1150), Referenced
SOP Instance UID (0008,1155), the instance's Retrieve URL and, when it was stored with a
warning, Warning Reason (0008,1196)); a Failed SOP Sequence (0008,1198) item per instance not
stored (the two UIDs when known and Failure Reason (0008,1197)); and Other Failures Sequence
(0008,119A) for failures tied to no instance.

Google adds a detail text to each failed item (docs/google-behaviour.md#stow-failure-detail;
dcmjs-org/dcmjs #249):
in JSON the private attribute FailureDetailJSON (0009,1097) LT, with its private creator
"GOOGLE" at (0009,0010); in XML the same attribute written the PS3.19 way, as tag "00090097"
with privateCreator="GOOGLE" and keyword "FailureDetail". Google's XML has no namespace, so the
namespace of PS3.19 A.1 is opt-in (`xmlns=True`) for the standard mode. Google leaves out the
UIDs of an item it could not read; so does this module when they are empty.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final
from xml.sax.saxutils import escape, quoteattr

PRIVATE_CREATOR: Final = "GOOGLE"
NATIVE_DICOM_NAMESPACE: Final = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
# XML 1.0 forbids most control characters, even escaped; a detail text may hold any.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class StoredInstance:
    """A Referenced SOP Sequence item: an instance that was stored."""

    sop_class_uid: str
    sop_instance_uid: str
    retrieve_url: str
    #: Warning Reason (0008,1196), e.g. `WarningReason.COERCION_OF_DATA_ELEMENTS`.
    warning_reason: int | None = None


@dataclass(frozen=True)
class FailedInstance:
    """A Failed SOP Sequence item; UIDs are "" when the part could not be read."""

    sop_class_uid: str
    sop_instance_uid: str
    reason: int
    detail: str = ""


@dataclass(frozen=True)
class OtherFailure:
    """An Other Failures Sequence item: a failure tied to no instance."""

    reason: int
    detail: str = ""


@dataclass(frozen=True)
class StoreResponse:
    """The result of one STOW-RS request, as the core reports it."""

    retrieve_url: str | None
    referenced: Sequence[StoredInstance] = ()
    failed: Sequence[FailedInstance] = ()
    other_failures: Sequence[OtherFailure] = ()


# (tag, vr, keyword) of the attributes written below.
_RETRIEVE_URL = ("00081190", "UR", "RetrieveURL")
_FAILED_SOP = ("00081198", "SQ", "FailedSOPSequence")
_REFERENCED_SOP = ("00081199", "SQ", "ReferencedSOPSequence")
_OTHER_FAILURES = ("0008119A", "SQ", "OtherFailuresSequence")
_SOP_CLASS = ("00081150", "UI", "ReferencedSOPClassUID")
_SOP_INSTANCE = ("00081155", "UI", "ReferencedSOPInstanceUID")
_WARNING_REASON = ("00081196", "US", "WarningReason")
_FAILURE_REASON = ("00081197", "US", "FailureReason")
_CREATOR_JSON = ("00090010", "LO", "PrivateCreator")
_DETAIL_JSON = ("00091097", "LT", "FailureDetailJSON")
_DETAIL_XML = ("00090097", "LT", "FailureDetail")

_Attribute = tuple[tuple[str, str, str], Any]


def to_json(response: StoreResponse) -> dict[str, Any]:
    """The response as DICOM JSON (PS3.18 F.2), for `application/dicom+json`."""
    return _json_dataset(_attributes(response, xml=False))


def to_xml(response: StoreResponse, *, xmlns: bool = False) -> str:
    """The response as a Native DICOM Model document (PS3.19 A.1), for `application/dicom+xml`.

    Without `xmlns`, the root element has no namespace, as Google writes it
    (docs/google-behaviour.md#stow-response-format).
    """
    opening = "<NativeDicomModel"
    if xmlns:
        opening += f' xmlns="{NATIVE_DICOM_NAMESPACE}"'
    body = "".join(_xml_attribute(spec, value) for spec, value in _attributes(response, xml=True))
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{opening}>{body}</NativeDicomModel>'


def _attributes(response: StoreResponse, *, xml: bool) -> list[_Attribute]:
    """The module's attributes in tag order; sequences hold lists of attribute lists."""
    attributes: list[_Attribute] = []
    if response.retrieve_url:
        attributes.append((_RETRIEVE_URL, response.retrieve_url))
    if response.failed:
        items = [
            [
                *_uids(failure.sop_class_uid, failure.sop_instance_uid),
                (_FAILURE_REASON, int(failure.reason)),
                *_detail(failure.detail, xml=xml),
            ]
            for failure in response.failed
        ]
        attributes.append((_FAILED_SOP, items))
    if response.referenced:
        stored_items = []
        for stored in response.referenced:
            item = [
                *_uids(stored.sop_class_uid, stored.sop_instance_uid),
                (_RETRIEVE_URL, stored.retrieve_url),
            ]
            if stored.warning_reason is not None:
                item.append((_WARNING_REASON, int(stored.warning_reason)))
            stored_items.append(item)
        attributes.append((_REFERENCED_SOP, stored_items))
    if response.other_failures:
        other_items = [
            [(_FAILURE_REASON, int(failure.reason)), *_detail(failure.detail, xml=xml)]
            for failure in response.other_failures
        ]
        attributes.append((_OTHER_FAILURES, other_items))
    return attributes


def _uids(sop_class_uid: str, sop_instance_uid: str) -> list[_Attribute]:
    uids: list[_Attribute] = []
    if sop_class_uid:
        uids.append((_SOP_CLASS, sop_class_uid))
    if sop_instance_uid:
        uids.append((_SOP_INSTANCE, sop_instance_uid))
    return uids


def _detail(detail: str, *, xml: bool) -> list[_Attribute]:
    if not detail:
        return []
    if xml:
        return [(_DETAIL_XML, detail)]
    return [(_CREATOR_JSON, PRIVATE_CREATOR), (_DETAIL_JSON, detail)]


def _json_dataset(attributes: list[_Attribute]) -> dict[str, Any]:
    dataset: dict[str, Any] = {}
    for (tag, vr, _keyword), value in attributes:
        if vr == "SQ":
            dataset[tag] = {"vr": vr, "Value": [_json_dataset(item) for item in value]}
        else:
            dataset[tag] = {"vr": vr, "Value": [value]}
    return dataset


def _xml_attribute(spec: tuple[str, str, str], value: Any) -> str:
    tag, vr, keyword = spec
    opening = (
        f"<DicomAttribute tag={quoteattr(tag)} vr={quoteattr(vr)} keyword={quoteattr(keyword)}"
    )
    if spec == _DETAIL_XML:
        opening += f" privateCreator={quoteattr(PRIVATE_CREATOR)}"
    if vr == "SQ":
        items = "".join(
            f'<Item number="{number}">'
            + "".join(_xml_attribute(child, child_value) for child, child_value in item)
            + "</Item>"
            for number, item in enumerate(value, start=1)
        )
        return f"{opening}>{items}</DicomAttribute>"
    text = escape(_NOT_XML.sub("\ufffd", str(value)))
    return f'{opening}><Value number="1">{text}</Value></DicomAttribute>'
