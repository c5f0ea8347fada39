"""BigQuery table schemas as values: typed columns, nested records, and rows that carry them.

A row carries its own columns so that a NULL or an empty list still has a type, and so that a
table (DuckDB or BigQuery) can be created or widened from the rows written to it. Modes follow
BigQuery's: a column is NULLABLE or REPEATED (https://cloud.google.com/bigquery/docs/schemas).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


class ColumnType(enum.Enum):
    """BigQuery's legacy type names, as Google's DICOM schema lists them."""

    STRING = "STRING"
    INTEGER = "INTEGER"
    FLOAT = "FLOAT"
    DATE = "DATE"
    TIME = "TIME"
    TIMESTAMP = "TIMESTAMP"
    RECORD = "RECORD"


@dataclass(frozen=True)
class Column:
    """A column (or a field of a RECORD): its name, type, mode and, for a RECORD, its fields."""

    name: str
    type: ColumnType
    repeated: bool = False
    fields: tuple[Column, ...] = ()


@dataclass(frozen=True)
class BigQueryRow:
    """One row: its columns, and its values by column name.

    Values are Python values of the column's type (str, int, float, `datetime.date`,
    `datetime.time`, timezone-aware `datetime.datetime`, a dict for a RECORD, a list for a
    REPEATED column); None is NULL. A record's dict may lack fields (NULL or empty).
    """

    columns: tuple[Column, ...]
    values: Mapping[str, Any] = field(default_factory=dict)


class SchemaConflict(ValueError):
    """Two schemas give one column different types or modes."""

    def __init__(self, path: str, existing: Column, wanted: Column) -> None:
        super().__init__(
            f"column {path} is {describe(existing)} in the table but the rows need"
            f" {describe(wanted)}"
        )
        self.path = path


def describe(column: Column) -> str:
    """`REPEATED RECORD` or `STRING`: a column's mode and type, as a message shows them."""
    return ("REPEATED " if column.repeated else "") + column.type.value


def merge_columns(existing: Iterable[Column], added: Iterable[Column]) -> tuple[Column, ...]:
    """The union of two schemas: `existing` in its order, then the columns only `added` has.

    RECORD columns merge field by field, recursively. Raise SchemaConflict when a column has
    another type or mode in each.
    """
    return union((existing, added))


def union(schemas: Iterable[Iterable[Column]]) -> tuple[Column, ...]:
    """The union of many schemas, in the order their columns first appear."""
    return _union(schemas, "")


def _union(schemas: Iterable[Iterable[Column]], prefix: str) -> tuple[Column, ...]:
    result: dict[str, Column] = {}
    for columns in schemas:
        for column in columns:
            old = result.setdefault(column.name, column)
            if old is not column and old != column:  # rows share their Column values
                result[column.name] = _merged(old, column, prefix)
    return tuple(result.values())


def _merged(old: Column, new: Column, prefix: str) -> Column:
    if old.type is not new.type or old.repeated != new.repeated:
        raise SchemaConflict(prefix + new.name, old, new)
    if old.type is not ColumnType.RECORD:
        return old
    fields = _union((old.fields, new.fields), f"{prefix}{new.name}.")
    return Column(old.name, old.type, old.repeated, fields)
