"""QIDO-RS know-how, without I/O: attribute ids, matching rules, index values, result sets.

- Attribute ids (PS3.18 8.3.4.1): a keyword (`PatientID`) or eight hex digits (`00100020`).
- Matching (PS3.4 C.2.2.2): single value; universal (empty value); range on DA and TM
  (`20200101-20200131`, open-ended `20200101-` and `-20200131`, C.2.2.2.5); and, where the mode
  allows, wildcards `*` `?` on text VRs (C.2.2.2.4) and UID lists `a,b` or `a\\b` (C.2.2.2.2).
  With `fuzzymatching=true` a Person Name matches when any word of the query is a prefix of any
  word of the stored name, both sides tokenised and normalised (`name_tokens`; Google's
  conformance statement, docs/google-behaviour.md#qido-fuzzy-matching).
- Index values (`index_entries`): one per value of a multi-valued attribute, so a query matches
  any of them; a Person Name is kept without trailing empty components and groups
  (PS3.5 6.2.1: `Doe^John^^^` is `Doe^John`), and one with ideographic or phonetic groups is
  also kept as its alphabetic group alone, so `Yamada^Tarou` finds `Yamada^Tarou=山田^太郎`.
- Results (PS3.18 10.6.3.3; docs/google-behaviour.md#qido-default-attributes and
  #qido-missing-attributes): each level's default attributes,
  those of the levels above when the search is not scoped to them, requested ones
  (`includefield`, matching keys), computed ones, and a VR-only placeholder for each one missing.
"""

from __future__ import annotations

import enum
import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Final, Protocol

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from dicomstore.dicom import levels


class Level(enum.Enum):
    """What a search returns, named as in its path (`/studies`, `/series`, `/instances`)."""

    STUDIES = "studies"
    SERIES = "series"
    INSTANCES = "instances"


class InvalidQuery(ValueError):
    """A query parameter breaks a rule; `key` is the parameter, `message` says what is wrong."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass(frozen=True)
class Attribute:
    """A data element named by a query: keyword ("" for a private or unknown tag), tag, VR."""

    keyword: str
    tag: str
    vr: str


# Attributes the search computes rather than reads (PS3.18 Table 10.6.3-3, -4, -5).
INSTANCE_AVAILABILITY: Final = "00080056"
MODALITIES_IN_STUDY: Final = "00080061"
NUMBER_OF_STUDY_RELATED_SERIES: Final = "00201206"
NUMBER_OF_STUDY_RELATED_INSTANCES: Final = "00201208"
NUMBER_OF_SERIES_RELATED_INSTANCES: Final = "00201209"

#: Default result attributes per level: Google's conformance statement
#: (docs/google-behaviour.md#qido-default-attributes) plus the
#: counts and modalities PS3.18 Tables 10.6.3-3 and -4 list.
DEFAULT_TAGS: Final[Mapping[Level, tuple[str, ...]]] = {
    Level.STUDIES: (
        "00080005",  # SpecificCharacterSet
        "00080020",  # StudyDate
        "00080030",  # StudyTime
        "00080050",  # AccessionNumber
        INSTANCE_AVAILABILITY,
        MODALITIES_IN_STUDY,
        "00080090",  # ReferringPhysicianName
        "00080201",  # TimezoneOffsetFromUTC
        "00100010",  # PatientName
        "00100020",  # PatientID
        "00100030",  # PatientBirthDate
        "00100040",  # PatientSex
        "0020000D",  # StudyInstanceUID
        "00200010",  # StudyID
        NUMBER_OF_STUDY_RELATED_SERIES,
        NUMBER_OF_STUDY_RELATED_INSTANCES,
    ),
    Level.SERIES: (
        "00080005",  # SpecificCharacterSet
        "00080060",  # Modality
        "00080201",  # TimezoneOffsetFromUTC
        "0008103E",  # SeriesDescription
        "0020000E",  # SeriesInstanceUID
        NUMBER_OF_SERIES_RELATED_INSTANCES,
        "00400244",  # PerformedProcedureStepStartDate
        "00400245",  # PerformedProcedureStepStartTime
        "00400275",  # RequestAttributesSequence
    ),
    Level.INSTANCES: (
        "00080005",  # SpecificCharacterSet
        "00080016",  # SOPClassUID
        "00080018",  # SOPInstanceUID
        INSTANCE_AVAILABILITY,
        "00080201",  # TimezoneOffsetFromUTC
        "00200013",  # InstanceNumber
        "00280008",  # NumberOfFrames
        "00280010",  # Rows
        "00280011",  # Columns
        "00280100",  # BitsAllocated
    ),
}

#: Attributes `includefield` may not name: Google refuses AvailableTransferSyntaxUID
#: (docs/google-behaviour.md#qido-unsupported-key), and dicomstore does not compute it in
#: either mode.
UNSUPPORTED_INCLUDEFIELDS: Final = frozenset({"00083002"})

#: Matching keys that stand for another indexed attribute: ModalitiesInStudy matches a study
#: with an instance of that Modality (PS3.18 Table 10.6.1-5).
KEY_ALIASES: Final[Mapping[str, str]] = {"ModalitiesInStudy": "Modality"}

PERSON_NAME_KEYWORDS: Final = frozenset({"PatientName", "ReferringPhysicianName"})

_HEX_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_DATE = re.compile(r"\d{8}")
_TIME = re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?")
_TOKEN_SEPARATORS = re.compile(r"[\W_]+")
WILDCARD_VRS: Final = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_INTEGER_VRS: Final = frozenset({"IS", "US", "UL", "SS", "SL", "SV", "UV"})
RANGE_VRS: Final = frozenset({"DA", "TM"})
_HIGHEST: Final = "\U0010ffff"


def attribute(attribute_id: str) -> Attribute | None:
    """The attribute a keyword or an eight-digit hex tag names; None when it names none.

    A tag need not be in the dictionary (private attributes can be asked for by tag).
    """
    if _HEX_TAG.fullmatch(attribute_id):
        number = int(attribute_id, 16)
        return Attribute(keyword_for_tag(number), attribute_id.upper(), _vr(number))
    known = tag_for_keyword(attribute_id) if attribute_id else None
    if known is None:
        return None
    return Attribute(attribute_id, f"{known:08X}", _vr(known))


@functools.cache
def _vr(number: int) -> str:
    try:
        vr = str(dictionary_VR(number))
    except KeyError:
        return "UN"
    return vr.split(" or ")[0]  # "US or SS": the first, as pydicom writes it


def placeholder(tag: str) -> dict[str, Any]:
    """A present-but-empty attribute: its VR alone
    (docs/google-behaviour.md#qido-missing-attributes)."""
    return {"vr": _vr(int(tag, 16))}


# --- index values --------------------------------------------------------------------------


def person_name(text: str) -> str:
    """A Person Name without trailing empty components or groups (PS3.5 6.2.1)."""
    groups = [group.rstrip("^ ") for group in text.split("=")]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def name_tokens(text: str) -> list[str]:
    """The words of a name, compatibility-decomposed, without accents, case-folded.

    "Müller^Jo Ann=山田" -> ["muller", "jo", "ann", "山田"]; the same on both sides of a fuzzy
    match, so "JO", "jo" and "Jö" all find "Jo".
    """
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return [token for token in _TOKEN_SEPARATORS.split(bare) if token]


def index_entries(attributes: Mapping[str, str]) -> list[tuple[str, str]]:
    """(keyword, value) rows of the search index for an instance's index attributes.

    `attributes` are `InstanceHeader.attributes`: values joined by a backslash.
    """
    rows: set[tuple[str, str]] = set()
    for keyword, text in attributes.items():
        for one in text.split("\\"):
            value = one.strip()
            if keyword in PERSON_NAME_KEYWORDS:
                value = person_name(value)
                alphabetic = value.split("=", 1)[0]
                if alphabetic and alphabetic != value:
                    rows.add((keyword, alphabetic))
            if value:
                rows.add((keyword, value))
    return sorted(rows)


def token_entries(attributes: Mapping[str, str]) -> list[tuple[str, str]]:
    """(keyword, token) rows of the fuzzy Person Name index."""
    return sorted(
        {
            (keyword, token)
            for keyword in PERSON_NAME_KEYWORDS
            if keyword in attributes
            for token in name_tokens(attributes[keyword])
        }
    )


# --- matching keys ---------------------------------------------------------------------------


def single_value(key: str, vr: str, text: str) -> str:
    if vr == "PN":
        return person_name(text)
    if vr in _INTEGER_VRS:
        if not text.lstrip("+-").isdigit():
            raise InvalidQuery(key, f"{key}: {text!r} is not an integer")
        return str(int(text))
    if vr in RANGE_VRS:
        _check_date_or_time(key, vr, text)
    return text


def range_values(key: str, vr: str, text: str) -> tuple[str, str]:
    low, _, high = (part.strip() for part in text.partition("-"))
    if "-" in high or not (low or high):
        raise InvalidQuery(key, f"{key}: {text!r} is not a range (expected FROM-TO, FROM- or -TO)")
    for bound in (low, high):
        if bound:
            _check_date_or_time(key, vr, bound)
    if low and high and low > high:
        raise InvalidQuery(key, f"{key}: the range {text!r} ends before it starts")
    return low, high


def _check_date_or_time(key: str, vr: str, text: str) -> None:
    if vr == "DA":
        valid = bool(_DATE.fullmatch(text))
        if valid:
            try:
                date(int(text[:4]), int(text[4:6]), int(text[6:]))
            except ValueError:
                valid = False
        if not valid:
            raise InvalidQuery(key, f"{key}: {text!r} is not a date (YYYYMMDD)")
    elif not _TIME.fullmatch(text) or int(text[:2]) > 23:
        raise InvalidQuery(key, f"{key}: {text!r} is not a time (HHMMSS.FFFFFF)")


def wildcard_prefix(pattern: str) -> str:
    """The literal text a wildcard pattern starts with ("" if it starts with a wildcard)."""
    cut = min((i for i in (pattern.find("*"), pattern.find("?")) if i >= 0), default=len(pattern))
    return pattern[:cut]


def glob_pattern(pattern: str) -> str:
    """A PS3.4 wildcard pattern as an SQL GLOB pattern (`[` and `]` taken literally)."""
    return "".join({"[": "[[]", "]": "[]]"}.get(c, c) for c in pattern)


def prefix_bounds(prefix: str) -> tuple[str, str]:
    """(low, high) such that every string starting with `prefix` is in [low, high)."""
    return prefix, prefix + _HIGHEST


# --- results ---------------------------------------------------------------------------------


class Found(Protocol):
    """What a result is built from: a study, series or instance a search found (the core's
    `queries.Match`)."""

    @property
    def study_attributes(self) -> Mapping[str, Any]: ...
    @property
    def series_attributes(self) -> Mapping[str, Any]: ...
    @property
    def metadata(self) -> Mapping[str, Any]: ...
    @property
    def modalities(self) -> tuple[str, ...]: ...
    @property
    def series_count(self) -> int: ...
    @property
    def instance_count(self) -> int: ...


@dataclass(frozen=True)
class Selection:
    """Which attributes each result carries: `tags` always (a placeholder when missing), and
    with `include_all` every attribute the level has."""

    level: Level
    tags: tuple[str, ...]
    include_all: bool = False
    with_study: bool = False
    """Series results of an unscoped search also carry their study's attributes."""


def selection(
    level: Level,
    *,
    study_scoped: bool,
    series_scoped: bool,
    requested: Iterable[str] = (),
    include_all: bool = False,
) -> Selection:
    """The attributes of each result (PS3.18 10.6.3.3.1): the level's defaults, the defaults
    of the levels above it that the path does not fix, and the `requested` tags."""
    tags = list(DEFAULT_TAGS[level])
    with_study = level is not Level.STUDIES and not study_scoped
    if with_study:
        tags += DEFAULT_TAGS[Level.STUDIES]
    if level is Level.INSTANCES and not series_scoped:
        tags += DEFAULT_TAGS[Level.SERIES]
    # Counts describe the result's own level: a series result has no study counts.
    tags = [t for t in tags if t not in _COUNTS or t in DEFAULT_TAGS[level]]
    return Selection(level, tuple(dict.fromkeys([*tags, *requested])), include_all, with_study)


_COUNTS: Final = frozenset(
    {
        MODALITIES_IN_STUDY,
        NUMBER_OF_STUDY_RELATED_SERIES,
        NUMBER_OF_STUDY_RELATED_INSTANCES,
        NUMBER_OF_SERIES_RELATED_INSTANCES,
    }
)


def result(match: Found, chosen: Selection) -> dict[str, Any]:
    """The DICOM JSON object (PS3.18 F.2) of one match, attributes in tag order."""
    level = chosen.level
    computed: dict[str, Any] = {INSTANCE_AVAILABILITY: {"vr": "CS", "Value": ["ONLINE"]}}
    if level is Level.STUDIES:
        source = dict(match.study_attributes)
        everything = levels.STUDY_TAGS
        computed |= {
            MODALITIES_IN_STUDY: _values("CS", list(match.modalities)),
            NUMBER_OF_STUDY_RELATED_SERIES: _values("IS", [match.series_count]),
            NUMBER_OF_STUDY_RELATED_INSTANCES: _values("IS", [match.instance_count]),
        }
    elif level is Level.SERIES:
        source = {**match.study_attributes, **match.series_attributes}
        everything = levels.SERIES_TAGS | (levels.STUDY_TAGS if chosen.with_study else set())
        computed[NUMBER_OF_SERIES_RELATED_INSTANCES] = _values("IS", [match.instance_count])
    else:
        source = _without_bulk_data(match.metadata)
        everything = None
    found: dict[str, Any] = {}
    if chosen.include_all:
        found = {t: v for t, v in source.items() if everything is None or t in everything}
    for tag in chosen.tags:
        if tag not in found:
            found[tag] = computed.get(tag) or source.get(tag) or placeholder(tag)
    return dict(sorted(found.items()))


def _values(vr: str, values: list[Any]) -> dict[str, Any]:
    return {"vr": vr, "Value": values} if values else {"vr": vr}


def _without_bulk_data(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Instance attributes as search results show them: bulk data left to WADO-RS."""
    kept: dict[str, Any] = {}
    for tag, element in metadata.items():
        if not isinstance(element, dict) or "BulkDataURI" in element:
            continue
        if element.get("vr") == "SQ" and element.get("Value"):
            element = {**element, "Value": [_without_bulk_data(i) for i in element["Value"]]}
        kept[tag] = element
    return kept
