"""An instance's DICOM JSON as one row of Google's DICOM BigQuery schema (docs/bigquery.md).

One column per data element present, named by its keyword in pydicom's data dictionary, typed
by its VR (AE AS CS DA DS DT IS LO LT SH ST TM UC UI UR UT, PN, FL FD, AT SL SS UL US SV UV, SQ),
NULLABLE when the dictionary gives VM 1 and REPEATED otherwise; Person Name as a record of
Alphabetic/Ideographic/Phonetic records of the five name components (PS3.5 6.2.1.1); a
sequence as a REPEATED RECORD of its items, built by the same rules.

What cannot be exported is listed in the repeated record `DroppedTags` {TagName, TagReference}
and its value left NULL: binary VRs (OB OD OF OL OV OW UN) and bulk data, values that do not
parse as their type (a DA that is not a date, an integer beyond INT64, several values where the
dictionary says VM 1 for a non-text VR), and a second element with a keyword already used at
the same level (repeating groups such as Overlay Data 60xx). TagReference is the element's tag
path as in bulk data URIs (`7FE00010`, `00081115/0/00081199`).

Private and unknown elements: a sequence becomes the column `Tag_GGGGEEEE`; any other element
goes to the repeated record `OtherElements` {Tag (GGGGEEEE), Data (its values as text)} of its
level. Then Google's bookkeeping columns: SourceDicomStore (when asked), Type, LastUpdated,
StorageClass, BlobStorageSize.

DA, TM and DT follow PS3.5 6.2 (and the ACR-NEMA forms `YYYY.MM.DD`, `HH:MM:SS`); a DT without
an offset is in Timezone Offset From UTC (0008,0201) when the data set has it (PS3.3
C.12.1.1.8), else in UTC.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from functools import lru_cache
from typing import Any, Final

from pydicom.datadict import dictionary_VM, dictionary_VR, keyword_for_tag

from dicomstore.dicom.bigquery_schema import BigQueryRow, Column, ColumnType, union

STRING, INTEGER, FLOAT = ColumnType.STRING, ColumnType.INTEGER, ColumnType.FLOAT
DATE, TIME, TIMESTAMP, RECORD = (
    ColumnType.DATE,
    ColumnType.TIME,
    ColumnType.TIMESTAMP,
    ColumnType.RECORD,
)

#: Google's VR to BigQuery type table (docs/bigquery.md; SV and UV as INTEGER too).
VR_TYPES: Final[Mapping[str, ColumnType]] = {
    **dict.fromkeys(
        ("AE", "AS", "CS", "DS", "IS", "LO", "LT", "SH", "ST", "UC", "UI", "UR", "UT"), STRING
    ),
    "DA": DATE,
    "TM": TIME,
    "DT": TIMESTAMP,
    "FL": FLOAT,
    "FD": FLOAT,
    **dict.fromkeys(("AT", "SL", "SS", "SV", "UL", "US", "UV"), INTEGER),
}
#: VRs whose values are not exported (Google's "excluded VRs").
BINARY_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})

_NAME_PARTS: Final = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
_NAME_GROUPS: Final = ("Alphabetic", "Ideographic", "Phonetic")
_NAME_GROUP = Column("", RECORD, fields=tuple(Column(part, STRING) for part in _NAME_PARTS))
PERSON_NAME_FIELDS: Final = tuple(
    Column(group, RECORD, fields=_NAME_GROUP.fields) for group in _NAME_GROUPS
)
OTHER_ELEMENTS: Final = Column(
    "OtherElements", RECORD, True, (Column("Tag", STRING), Column("Data", STRING, True))
)
DROPPED_TAGS: Final = Column(
    "DroppedTags", RECORD, True, (Column("TagName", STRING), Column("TagReference", STRING))
)
#: The column `includeSourceStore` adds, named as in the JSON schema
#: (docs/google-behaviour.md#bigquery-include-source-store).
SOURCE_STORE: Final = Column("SourceDicomStore", STRING)
BOOKKEEPING: Final = (
    Column("Type", STRING),
    Column("LastUpdated", TIMESTAMP),
    Column("StorageClass", STRING),
    Column("BlobStorageSize", INTEGER),
)
_INT64: Final = range(-(1 << 63), 1 << 63)
_TIMEZONE_OFFSET_TAG: Final = "00080201"


def bigquery_row(
    metadata: Mapping[str, Any],
    *,
    blob_size: int,
    updated: datetime,
    storage_class: str = "STANDARD",
    source_store: str | None = None,
    change_type: str = "INSERT",
    file_meta: Mapping[str, Any] | None = None,
) -> BigQueryRow:
    """The row of one instance: `metadata` is its DICOM JSON (PS3.18 F.2) without bulk data,
    `file_meta` the DICOM JSON of its File Meta Information (group 0002, see `file_meta_json`).

    `updated` becomes LastUpdated (a naive datetime is taken as UTC), `blob_size`
    BlobStorageSize, `change_type` Type; `source_store`, the store's resource name, adds the
    SourceDicomStore column.
    """
    data = {**(file_meta or {}), **metadata}
    builder = _Builder(_default_offset(data))
    columns, values = builder.dataset(data, "")
    dropped = [{"TagName": name, "TagReference": path} for name, path in builder.dropped]
    columns.append(DROPPED_TAGS)
    values[DROPPED_TAGS.name] = dropped
    if source_store is not None:
        columns.append(SOURCE_STORE)
        values[SOURCE_STORE.name] = source_store
    columns.extend(BOOKKEEPING)
    values.update(
        Type=change_type,
        LastUpdated=updated if updated.tzinfo else updated.replace(tzinfo=UTC),
        StorageClass=storage_class,
        BlobStorageSize=blob_size,
    )
    return BigQueryRow(tuple(columns), values)


def file_meta_json(
    *, transfer_syntax_uid: str, sop_class_uid: str, sop_instance_uid: str
) -> dict[str, Any]:
    """The File Meta Information the catalog can tell (PS3.10 7.1), as DICOM JSON: Media
    Storage SOP Class UID, Media Storage SOP Instance UID and Transfer Syntax UID."""
    return {
        "00020002": {"vr": "UI", "Value": [sop_class_uid]},
        "00020003": {"vr": "UI", "Value": [sop_instance_uid]},
        "00020010": {"vr": "UI", "Value": [transfer_syntax_uid]},
    }


class _Unconvertible(ValueError):
    """A value that is not of its column's type."""


@dataclass(frozen=True)
class _Element:
    """How the elements of one tag and VR become a column, worked out once (`_element_of`)."""

    #: The column's name; empty for an element of OtherElements (private or unknown).
    name: str
    #: The VR that types the column (see `_dictionary_choice`).
    vr: str
    #: None for a sequence, and for a VR that has no column type (binary: dropped).
    column: Column | None
    #: Turns one value into the column's type; None for a DT (the data set's time zone).
    convert: Callable[[Any], Any] | None


@lru_cache(maxsize=4096)
def _element_of(key: str, vr: str) -> _Element:
    """What the element `key` (GGGGEEEE) with VR `vr` becomes, from pydicom's dictionary."""
    tag = int(key, 16)
    keyword = keyword_for_tag(tag) if tag >> 16 & 1 == 0 else ""
    if not keyword:
        name = "" if vr != "SQ" else f"Tag_{key}"
        return _Element(name, vr, None, None)
    vr = _dictionary_choice(tag, vr)
    column_type = RECORD if vr == "PN" else VR_TYPES.get(vr)
    if vr == "SQ" or column_type is None:
        return _Element(keyword, vr, None, None)
    fields = PERSON_NAME_FIELDS if vr == "PN" else ()
    column = Column(keyword, column_type, dictionary_VM(tag) != "1", fields)
    return _Element(keyword, vr, column, _converter(vr, column_type))


def _converter(vr: str, column_type: ColumnType) -> Callable[[Any], Any] | None:
    if vr == "PN":
        return _person_name
    if vr == "AT":
        return _attribute_tag
    return _CONVERTERS.get(column_type)


@dataclass
class _Builder:
    default_offset: tzinfo
    dropped: list[tuple[str, str]] = field(default_factory=list)

    def dataset(self, data: Mapping[str, Any], prefix: str) -> tuple[list[Column], dict[str, Any]]:
        columns: dict[str, Column] = {}
        values: dict[str, Any] = {}
        others: list[dict[str, Any]] = []
        for key in sorted(data):
            attribute = data[key]
            element = _element_of(key, str(attribute.get("vr", "UN")))
            name = element.name
            if not name:
                other = self._other_element(key, element.vr, attribute, prefix + key)
                if other is not None:
                    others.append(other)
            elif name in columns:
                self.dropped.append((name, prefix + key))
            else:
                built = self._element(element, attribute, prefix + key)
                if built is not None:
                    columns[name], values[name] = built
        if others:
            columns[OTHER_ELEMENTS.name] = OTHER_ELEMENTS
            values[OTHER_ELEMENTS.name] = others
        return list(columns.values()), values

    def _element(
        self, element: _Element, attribute: Mapping[str, Any], path: str
    ) -> tuple[Column, Any] | None:
        """The column and value of a standard element or private sequence; None (after
        noting the drop when something was lost) when it gets no column."""
        if element.vr == "SQ":
            return self._sequence(element.name, attribute, path)
        column = element.column
        if column is None or "BulkDataURI" in attribute or "InlineBinary" in attribute:
            self.dropped.append((element.name, path))
            return None
        raw = attribute.get("Value", ())
        convert = element.convert or self._timestamp
        try:
            if len(raw) == 1 and not column.repeated:
                return column, convert(raw[0]) if raw[0] is not None else None
            return column, _values(column, convert, raw)
        except _Unconvertible:
            self.dropped.append((element.name, path))
            return column, [] if column.repeated else None

    def _timestamp(self, value: Any) -> datetime:
        return _datetime(value, self.default_offset)

    def _sequence(
        self, name: str, attribute: Mapping[str, Any], path: str
    ) -> tuple[Column, Any] | None:
        if "Value" not in attribute and ("BulkDataURI" in attribute or "InlineBinary" in attribute):
            self.dropped.append((name, path))
            return None
        items = [
            self.dataset(item or {}, f"{path}/{i}/")
            for i, item in enumerate(attribute.get("Value", []))
        ]
        fields = union(columns for columns, _ in items)
        if not fields:
            # A record needs a field; an empty sequence (or one of empty items) has nothing
            # to query, so it gets no column, as in the source data it holds no value.
            return None
        return Column(name, RECORD, True, fields), [values for _, values in items]

    def _other_element(
        self, key: str, vr: str, attribute: Mapping[str, Any], path: str
    ) -> dict[str, Any] | None:
        if vr in BINARY_VRS or "BulkDataURI" in attribute or "InlineBinary" in attribute:
            self.dropped.append((key, path))
            return None
        values = attribute.get("Value", ())
        if vr == "PN":
            return {"Tag": key, "Data": [_person_name_text(value) for value in values]}
        return {"Tag": key, "Data": ["" if value is None else str(value) for value in values]}


def _values(column: Column, convert: Callable[[Any], Any], raw: Sequence[Any]) -> Any:
    """The value of a column from an element's values other than a single one."""
    if column.repeated:
        if column.type is not STRING and any(value is None for value in raw):
            raise _Unconvertible("an empty value inside a list")
        return [convert(value) if value is not None else "" for value in raw]
    if len(raw) > 1:
        if column.type is not STRING:
            raise _Unconvertible("several values where the dictionary says VM 1")
        return "\\".join(str(value) if value is not None else "" for value in raw)
    return None


def _dictionary_choice(tag: int, vr: str) -> str:
    """The VR that types a standard element's column: the dictionary's, or, where the
    dictionary allows several (`US or SS`), the one the data carries if it is among them."""
    try:
        known = str(dictionary_VR(tag))
    except KeyError:
        return vr
    choices = known.split(" or ")
    return vr if vr in choices else choices[0]


def _default_offset(data: Mapping[str, Any]) -> tzinfo:
    values = data.get(_TIMEZONE_OFFSET_TAG, {}).get("Value")
    if not values:
        return UTC
    try:
        return _offset(str(values[0]).strip())
    except (_Unconvertible, ValueError):
        return UTC


_OFFSET = re.compile(r"([+-])(\d{2})(\d{2})")


def _offset(text: str) -> tzinfo:
    match = _OFFSET.fullmatch(text)
    if match is None:
        raise _Unconvertible(text)
    sign = -1 if match[1] == "-" else 1
    return timezone(sign * timedelta(hours=int(match[2]), minutes=int(match[3])))


_DA = re.compile(r"(\d{4})(\d{2})(\d{2})|(\d{4})\.(\d{2})\.(\d{2})")
_TM = re.compile(r"(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?")
_TM_COLONS = re.compile(r"(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?")
_DT = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?)?)?)?"
    r"([+-]\d{4})?"
)


def _date(value: Any) -> date:
    match = _DA.fullmatch(str(value).strip())
    if match is None:
        raise _Unconvertible(value)
    year, month, day = (int(part) for part in match.groups() if part is not None)
    try:
        return date(year, month, day)
    except ValueError as exc:
        raise _Unconvertible(value) from exc


def _time(value: Any) -> time:
    text = str(value).strip()
    match = _TM.fullmatch(text) or _TM_COLONS.fullmatch(text)
    if match is None:
        raise _Unconvertible(value)
    hour, minute, second, fraction = match.groups()
    try:
        return time(
            int(hour), int(minute or 0), int(second or 0), int((fraction or "").ljust(6, "0"))
        )
    except ValueError as exc:
        raise _Unconvertible(value) from exc


def _datetime(value: Any, default_offset: tzinfo) -> datetime:
    match = _DT.fullmatch(str(value).strip())
    if match is None:
        raise _Unconvertible(value)
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        moment = datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "").ljust(6, "0")),
            tzinfo=_offset(offset) if offset else default_offset,
        )
    except (ValueError, OverflowError) as exc:
        raise _Unconvertible(value) from exc
    return moment.astimezone(UTC)


def _float(value: Any) -> float:
    try:
        return float(value)  # also the strings "NaN", "Infinity", "-Infinity" of F.2.3
    except (TypeError, ValueError) as exc:
        raise _Unconvertible(value) from exc


def _integer(value: Any) -> int:
    if isinstance(value, float) and not value.is_integer():
        raise _Unconvertible(value)
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise _Unconvertible(value) from exc
    if number not in _INT64:
        raise _Unconvertible(value)
    return number


def _attribute_tag(value: Any) -> int:
    text = str(value)
    if not re.fullmatch(r"[0-9A-Fa-f]{8}", text):
        raise _Unconvertible(value)
    return int(text, 16)


def _person_name(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        value = dict(zip(_NAME_GROUPS, str(value).split("="), strict=False))
    return {group: _name_parts(value.get(group)) for group in _NAME_GROUPS}


def _name_parts(text: Any) -> dict[str, str | None] | None:
    if not text:
        return None
    parts = str(text).split("^")
    return {
        part: (parts[i] or None) if i < len(parts) else None for i, part in enumerate(_NAME_PARTS)
    }


def _person_name_text(value: Any) -> str:
    """A Person Name in its DICOM form (`Yamada^Tarou=山田^太郎`), as OtherElements holds it."""
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return "=".join(str(value.get(group, "")) for group in _NAME_GROUPS).rstrip("=")
    return str(value)


_CONVERTERS: Final[Mapping[ColumnType, Callable[[Any], Any]]] = {
    STRING: str,
    INTEGER: _integer,
    FLOAT: _float,
    DATE: _date,
    TIME: _time,
}
