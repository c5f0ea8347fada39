"""UID syntax (DICOM PS3.5 section 9.1).

A UID is one to 64 characters of digits and dots: components separated by single dots, none
empty, and none with a leading zero unless the component is exactly "0". Google's STOW-RS also
requires UIDs to be "numeric values separated by periods" (Google's DICOMweb how-to;
docs/google-behaviour.md#stow-uid-syntax).
"""

from __future__ import annotations

import re
from typing import Final

MAX_UID_LENGTH: Final = 64
_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")


def is_valid_uid(text: str) -> bool:
    """Whether `text` is a UID as PS3.5 9.1 defines it (no padding: strip it first)."""
    return 0 < len(text) <= MAX_UID_LENGTH and _UID.fullmatch(text) is not None
