"""Which attributes belong to the study and series levels (PS3.18 Table 10.6.1-5, -6; PS3.3
C.7.2.1, C.7.3.1), kept once per study and series so QIDO answers without reading instances."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

# DICOM JSON tags ("GGGGEEEE") of patient and study attributes.
STUDY_TAGS: Final = frozenset(
    {
        "00080005",  # SpecificCharacterSet
        "00080020",  # StudyDate
        "00080030",  # StudyTime
        "00080050",  # AccessionNumber
        "00080090",  # ReferringPhysicianName
        "00080201",  # TimezoneOffsetFromUTC
        "00081030",  # StudyDescription
        "00100010",  # PatientName
        "00100020",  # PatientID
        "00100021",  # IssuerOfPatientID
        "00100030",  # PatientBirthDate
        "00100040",  # PatientSex
        "00101010",  # PatientAge
        "0020000D",  # StudyInstanceUID
        "00200010",  # StudyID
    }
)

# DICOM JSON tags of series attributes.
SERIES_TAGS: Final = frozenset(
    {
        "00080005",  # SpecificCharacterSet
        "00080021",  # SeriesDate
        "00080031",  # SeriesTime
        "00080060",  # Modality
        "00080201",  # TimezoneOffsetFromUTC
        "0008103E",  # SeriesDescription
        "00180015",  # BodyPartExamined
        "0020000E",  # SeriesInstanceUID
        "00200011",  # SeriesNumber
        "00200060",  # Laterality
        "00400244",  # PerformedProcedureStepStartDate
        "00400245",  # PerformedProcedureStepStartTime
        "00400275",  # RequestAttributesSequence
    }
)


def select(metadata: Mapping[str, Any], tags: frozenset[str]) -> dict[str, Any]:
    """The attributes of `metadata` (DICOM JSON) whose tags are in `tags`."""
    return {tag: value for tag, value in metadata.items() if tag in tags}
