"""Failure and warning reasons of a STOW-RS response (PS3.18 10.5.3 and Annex I; PS3.7 Annex C).

Failure Reason (0008,1197) and Warning Reason (0008,1196) are DIMSE-style status codes (US).
PS3.18's Store Instances response table lists A7xx (out of resources), A9xx (data set does not
match SOP class), Cxxx (cannot understand), C122 (transfer syntax not supported), 0110
(processing failure) and 0122 (SOP class not supported), and lets an origin server define more
codes inside those ranges. Google reports most failures, duplicates included, as 0110 (272) with
a detail text (docs/google-behaviour.md#stow-duplicate,
docs/google-behaviour.md#stow-failure-detail).
"""

from __future__ import annotations

import enum


class FailureReason(enum.IntEnum):
    """Failure Reason (0008,1197) values."""

    #: PS3.7 C.4.4: general failure; Google's reason for "already exists" and most errors.
    PROCESSING_FAILURE = 0x0110
    #: PS3.7 C.4.5 Duplicate SOP Instance (standard mode; Google uses PROCESSING_FAILURE).
    DUPLICATE_SOP_INSTANCE = 0x0111
    #: PS3.18 / PS3.7 C.4.12: Referenced SOP Class not supported.
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    #: PS3.18 A7xx / PS3.4 B.2.3: Refused, out of resources.
    OUT_OF_RESOURCES = 0xA700
    #: PS3.18 A9xx / PS3.4 B.2.3: the data set does not match the SOP class (a required
    #: attribute is missing or invalid).
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    #: A9xx: the instance's Study Instance UID differs from the `studies/{study}` of the request.
    #: No standard code exists; 0xA901 (43265) is what Microsoft's DICOM server returns, inside
    #: the A9xx range PS3.18 reserves for data set errors (dcm4chee uses 0xC409).
    STUDY_INSTANCE_UID_MISMATCH = 0xA901
    #: PS3.18 Cxxx / PS3.4 B.2.3: the data set cannot be parsed.
    CANNOT_UNDERSTAND = 0xC000
    #: PS3.18 C122: Referenced Transfer Syntax not supported.
    TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122

    @property
    def text(self) -> str:
        """A short default detail text."""
        return _FAILURE_TEXT[self]


class WarningReason(enum.IntEnum):
    """Warning Reason (0008,1196) values (PS3.18 10.5.3, PS3.4 B.2.3)."""

    COERCION_OF_DATA_ELEMENTS = 0xB000
    ELEMENTS_DISCARDED = 0xB006
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xB007

    @property
    def text(self) -> str:
        """A short default detail text."""
        return _WARNING_TEXT[self]


_FAILURE_TEXT = {
    FailureReason.PROCESSING_FAILURE: "processing failure",
    FailureReason.DUPLICATE_SOP_INSTANCE: "duplicate SOP instance",
    FailureReason.SOP_CLASS_NOT_SUPPORTED: "SOP class not supported",
    FailureReason.OUT_OF_RESOURCES: "out of resources",
    FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS: "data set does not match SOP class",
    FailureReason.STUDY_INSTANCE_UID_MISMATCH: (
        "Study Instance UID does not match the study of the request"
    ),
    FailureReason.CANNOT_UNDERSTAND: "cannot understand",
    FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED: "transfer syntax not supported",
}

_WARNING_TEXT = {
    WarningReason.COERCION_OF_DATA_ELEMENTS: "coercion of data elements",
    WarningReason.ELEMENTS_DISCARDED: "elements discarded",
    WarningReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS: "data set does not match SOP class",
}


def reason_text(code: int) -> str:
    """The default text of a failure or warning code; a hex rendering for unknown codes."""
    if code in FailureReason.__members__.values():
        return FailureReason(code).text
    if code in WarningReason.__members__.values():
        return WarningReason(code).text
    return f"status 0x{code:04X}"
