"""What an export to BigQuery does with the rows already in its table (docs/bigquery.md).

`BigQueryDestination.writeDisposition` (RPC reference, `WriteDisposition`): WRITE_EMPTY, the
default, writes only to a missing or empty table; WRITE_TRUNCATE erases the table's rows
first; WRITE_APPEND adds to them. The legacy `force` counts only when no disposition is set:
`force=false` is WRITE_EMPTY and `force=true` WRITE_TRUNCATE (RPC reference). The export how-to
adds that `force=false` refuses even an existing empty table, but an unset `force` and
`force=false` are the same on the wire, and an unset disposition is WRITE_EMPTY: so an empty
table is accepted. A missing table is created either way.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicomstore.core.errors import FailedPrecondition
from dicomstore.core.model import WriteDisposition


@dataclass(frozen=True)
class WritePlan:
    """How an export writes: refuse a table that has rows (`empty_only`), and whether to erase
    the table's rows first (`truncate`, for `BigQueryTable.write`)."""

    truncate: bool = False
    empty_only: bool = False


def write_plan(write_disposition: WriteDisposition, force: bool) -> WritePlan:
    """The plan of a BigQueryDestination's `writeDisposition` and legacy `force`."""
    match write_disposition:
        case WriteDisposition.WRITE_TRUNCATE:
            return WritePlan(truncate=True)
        case WriteDisposition.WRITE_APPEND:
            return WritePlan()
        case WriteDisposition.WRITE_EMPTY:
            return WritePlan(empty_only=True)
    return WritePlan(truncate=True) if force else WritePlan(empty_only=True)


def check_destination(plan: WritePlan, *, empty: bool, table_uri: str) -> None:
    """Raise FailedPrecondition when `plan` refuses a table that is (not) `empty` (a missing
    table is empty). Google's exact code and message for this case are not documented."""
    if plan.empty_only and not empty:
        raise FailedPrecondition(
            f"BigQuery table {table_uri} is not empty; set writeDisposition to WRITE_TRUNCATE"
            " to overwrite it or to WRITE_APPEND to add to it",
            field="bigquery_destination.write_disposition",
        )
