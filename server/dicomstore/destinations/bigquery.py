"""The BigQuery tables export and streaming write to: DuckDB under the data dir by default, the
BigQuery API when an endpoint is configured (google-cloud-bigquery, the `bigquery` extra)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dicomstore.core.ports import BigQueryTable
from dicomstore.core.validation import BigQueryTableName
from dicomstore.destinations.bigquery_duckdb import DuckDbBigQuery

BigQueryTables = Callable[[BigQueryTableName], BigQueryTable]


def bigquery_tables(data_dir: Path, endpoint: str | None) -> BigQueryTables:
    """The table of a `bq://` name, in the embedded DuckDB or at `endpoint`."""
    if not endpoint:
        return DuckDbBigQuery(data_dir).table
    # Imported here: google-cloud-bigquery is an optional dependency.
    from dicomstore.destinations.bigquery_api import BigQueryApiTable, client_for

    return lambda name: BigQueryApiTable(client_for(name.project, endpoint), name)
