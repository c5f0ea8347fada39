"""QIDO-RS searches (PS3.18 10.6): typed filters turned into query parameters, and DICOM JSON
results turned into keyword -> text rows for display."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Level = Literal["studies", "series", "instances"]
LEVELS: tuple[Level, ...] = ("studies", "series", "instances")
DateLike = datetime.date | str
#: (from, to), either end open with None: `StudyDate` FROM-TO, FROM- or -TO.
DateRange = tuple[DateLike | None, DateLike | None]

# The attributes QIDO-RS answers by default at each level (Google's conformance statement),
# and those the typed filters name; other tags are shown by their number.
KEYWORDS: dict[str, str] = {
    "00080005": "SpecificCharacterSet",
    "00080016": "SOPClassUID",
    "00080018": "SOPInstanceUID",
    "00080020": "StudyDate",
    "00080021": "SeriesDate",
    "00080030": "StudyTime",
    "00080050": "AccessionNumber",
    "00080056": "InstanceAvailability",
    "00080060": "Modality",
    "00080061": "ModalitiesInStudy",
    "00080090": "ReferringPhysicianName",
    "00080201": "TimezoneOffsetFromUTC",
    "00081030": "StudyDescription",
    "0008103E": "SeriesDescription",
    "00081190": "RetrieveURL",
    "00100010": "PatientName",
    "00100020": "PatientID",
    "00100030": "PatientBirthDate",
    "00100040": "PatientSex",
    "0020000D": "StudyInstanceUID",
    "0020000E": "SeriesInstanceUID",
    "00200010": "StudyID",
    "00200011": "SeriesNumber",
    "00200013": "InstanceNumber",
    "00201206": "NumberOfStudyRelatedSeries",
    "00201208": "NumberOfStudyRelatedInstances",
    "00201209": "NumberOfSeriesRelatedInstances",
    "00280008": "NumberOfFrames",
    "00280010": "Rows",
    "00280011": "Columns",
}

#: The columns of a table of results, per level.
COLUMNS: dict[Level, tuple[str, ...]] = {
    "studies": (
        "PatientName",
        "PatientID",
        "StudyDate",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedInstances",
        "StudyInstanceUID",
    ),
    "series": (
        "PatientID",
        "StudyDate",
        "Modality",
        "SeriesNumber",
        "NumberOfSeriesRelatedInstances",
        "StudyInstanceUID",
        "SeriesInstanceUID",
    ),
    "instances": (
        "PatientID",
        "Modality",
        "InstanceNumber",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
    ),
}


def _date(value: DateLike | None) -> str:
    if value is None:
        return ""
    return value.strftime("%Y%m%d") if isinstance(value, datetime.date) else value


@dataclass(frozen=True)
class Query:
    """A QIDO-RS search. Each set field is one matching key; `filters` adds any other key by
    keyword or tag (`{"00100030": "19700101"}`); `fuzzy` turns on fuzzy matching of person
    names; `include_fields` adds attributes to the results (`("all",)` for all)."""

    patient_id: str | None = None
    patient_name: str | None = None
    study_date: DateLike | DateRange | None = None
    accession_number: str | None = None
    modality: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    filters: Mapping[str, str] = field(default_factory=dict)
    include_fields: Sequence[str] = ()
    fuzzy: bool = False
    limit: int | None = None
    offset: int | None = None

    def params(self) -> list[tuple[str, str]]:
        keys = {
            "PatientID": self.patient_id,
            "PatientName": self.patient_name,
            "StudyDate": self._study_date(),
            "AccessionNumber": self.accession_number,
            "Modality": self.modality,
            "StudyInstanceUID": self.study_instance_uid,
            "SeriesInstanceUID": self.series_instance_uid,
            "SOPInstanceUID": self.sop_instance_uid,
        }
        params = [(key, value) for key, value in keys.items() if value is not None]
        params += list(self.filters.items())
        params += [("includefield", name) for name in self.include_fields]
        if self.fuzzy:
            params.append(("fuzzymatching", "true"))
        if self.limit is not None:
            params.append(("limit", str(self.limit)))
        if self.offset is not None:
            params.append(("offset", str(self.offset)))
        return params

    def _study_date(self) -> str | None:
        if self.study_date is None or isinstance(self.study_date, DateLike):
            return None if self.study_date is None else _date(self.study_date)
        start, end = self.study_date
        return f"{_date(start)}-{_date(end)}"


def _text(value: Any) -> str:
    if isinstance(value, dict):  # a Person Name: its alphabetic form first
        return str(
            value.get("Alphabetic") or value.get("Ideographic") or value.get("Phonetic") or ""
        )
    return str(value)


def keyword_row(dataset: Mapping[str, Any]) -> dict[str, str]:
    """A DICOM JSON result as keyword -> text (values joined by `\\`; sequences and bulk data
    as `...`); unknown tags keep their number."""
    row: dict[str, str] = {}
    for tag, attribute in dataset.items():
        name = KEYWORDS.get(tag.upper(), tag)
        values = attribute.get("Value", []) if isinstance(attribute, dict) else []
        if isinstance(attribute, dict) and (
            attribute.get("vr") == "SQ" or "BulkDataURI" in attribute or "InlineBinary" in attribute
        ):
            row[name] = "..."
        else:
            row[name] = "\\".join(_text(value) for value in values)
    return row
