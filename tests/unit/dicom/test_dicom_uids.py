"""UID syntax (PS3.5 9.1): digits and dots, no empty component, no leading zero, 1-64 chars."""

from __future__ import annotations

import pytest

from dicomstore.dicom.uids import is_valid_uid


@pytest.mark.google_behaviour("stow-uid-syntax")
@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("1.2.840.10008.1.2.1", True),
        ("0", True),
        ("1", True),
        ("0.0", True),
        ("1.0.2", True),
        ("2.25.329800735698586629295641978511506172918", True),
        ("1." + "2" * 62, True),  # 64 characters
        ("1." + "2" * 63, False),  # 65 characters
        ("", False),
        (".", False),
        ("1.", False),
        (".1", False),
        ("1..2", False),
        ("1.02", False),  # leading zero in a component
        ("01.2", False),
        ("00", False),
        ("1.2a", False),
        ("1.2 ", False),  # padding must be stripped by the caller
        (" 1.2", False),
        ("1.2\x00", False),
        ("1,2", False),
        ("-1.2", False),
        ("1.2.٣", False),  # a non-ASCII digit
    ],
)
def test_is_valid_uid_follows_ps3_5_9_1(text: str, valid: bool) -> None:
    assert is_valid_uid(text) is valid
