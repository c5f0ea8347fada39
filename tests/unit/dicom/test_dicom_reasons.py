"""Failure and warning reason codes (PS3.18 10.5.3 and Annex I, PS3.7 Annex C)."""

from __future__ import annotations

import pytest

from dicomstore.dicom.reasons import FailureReason, WarningReason, reason_text


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        (FailureReason.PROCESSING_FAILURE, 272),
        (FailureReason.SOP_CLASS_NOT_SUPPORTED, 0x0122),
        (FailureReason.OUT_OF_RESOURCES, 0xA700),
        (FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, 0xA900),
        (FailureReason.STUDY_INSTANCE_UID_MISMATCH, 43265),
        (FailureReason.CANNOT_UNDERSTAND, 0xC000),
        (FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED, 0xC122),
        (WarningReason.COERCION_OF_DATA_ELEMENTS, 0xB000),
        (WarningReason.ELEMENTS_DISCARDED, 0xB006),
        (WarningReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, 0xB007),
    ],
)
def test_reason_codes_match_the_standard(reason: int, code: int) -> None:
    assert reason == code


def test_reason_text_has_a_default_for_every_code() -> None:
    for reason in [*FailureReason, *WarningReason]:
        assert reason_text(reason) == reason.text
        assert reason.text


def test_reason_text_renders_unknown_codes_in_hex() -> None:
    assert reason_text(0xC409) == "status 0xC409"
