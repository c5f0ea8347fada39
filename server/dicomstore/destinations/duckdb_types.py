"""BigQuery columns as DuckDB types, and back (docs/bigquery.md, "The embedded database").

STRING is VARCHAR, INTEGER BIGINT, FLOAT DOUBLE, DATE DATE, TIME TIME, TIMESTAMP TIMESTAMPTZ
(an instant, like BigQuery's), RECORD a STRUCT, and a REPEATED column a LIST of its type, so
that BigQuery's `PatientName.Alphabetic.FamilyName` and `UNNEST(Sequence)` read the same here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol, cast

from dicomstore.dicom.bigquery_schema import Column, ColumnType

_SQL_TYPES: Final[Mapping[ColumnType, str]] = {
    ColumnType.STRING: "VARCHAR",
    ColumnType.INTEGER: "BIGINT",
    ColumnType.FLOAT: "DOUBLE",
    ColumnType.DATE: "DATE",
    ColumnType.TIME: "TIME",
    ColumnType.TIMESTAMP: "TIMESTAMPTZ",
}
_COLUMN_TYPES: Final = {
    "varchar": ColumnType.STRING,
    "bigint": ColumnType.INTEGER,
    "double": ColumnType.FLOAT,
    "date": ColumnType.DATE,
    "time": ColumnType.TIME,
    "timestamp with time zone": ColumnType.TIMESTAMP,
}


class DuckType(Protocol):
    """What is read of a DuckDB column type (`DuckDBPyType`, whose module moved in 2.0)."""

    @property
    def id(self) -> str: ...

    @property
    def children(self) -> Sequence[tuple[str, object]]: ...


def quoted(identifier: str) -> str:
    """`identifier` as a DuckDB quoted identifier: any text, a `"` doubled."""
    return '"' + identifier.replace('"', '""') + '"'


def sql_type(column: Column) -> str:
    """The DuckDB type of `column`, mode included."""
    if column.type is ColumnType.RECORD:
        fields = ", ".join(f"{quoted(field.name)} {sql_type(field)}" for field in column.fields)
        base = f"STRUCT({fields})"
    else:
        base = _SQL_TYPES[column.type]
    return base + "[]" if column.repeated else base


def column_of(name: str, duck_type: DuckType) -> Column | None:
    """The BigQuery column a DuckDB column stands for; None for a type this schema never makes
    (a column someone else added)."""
    repeated = duck_type.id == "list"
    if repeated:
        duck_type = cast(DuckType, duck_type.children[0][1])
    if duck_type.id == "struct":
        fields = tuple(
            column_of(field, cast(DuckType, child)) for field, child in duck_type.children
        )
        if not fields or any(field is None for field in fields):
            return None
        return Column(name, ColumnType.RECORD, repeated, tuple(f for f in fields if f))
    column_type = _COLUMN_TYPES.get(duck_type.id)
    return None if column_type is None else Column(name, column_type, repeated)


def nests_a_list(column: Column) -> bool:
    """True for a RECORD with a REPEATED field at some depth: a field missing from a record
    reads as NULL, so such values need `conformed` to read an empty list there."""
    return any(field.repeated or nests_a_list(field) for field in column.fields)


def conformed(value: Any, column: Column) -> Any:
    """`value` shaped to `column`: every record holds every field (NULL, or an empty list for a
    repeated one), so that DuckDB binds records of one sequence to one STRUCT type."""
    if column.repeated:
        if value is None:
            return []
        return [_conformed_one(item, column) for item in value]
    return _conformed_one(value, column)


def _conformed_one(value: Any, column: Column) -> Any:
    if column.type is not ColumnType.RECORD or value is None:
        return value
    return {field.name: conformed(value.get(field.name), field) for field in column.fields}
