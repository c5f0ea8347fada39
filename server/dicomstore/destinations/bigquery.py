"""The BigQuery tables export and streaming write to: DuckDB under the data dir by default, the
BigQuery API when an endpoint is configured (google-cloud-bigquery, the `bigquery` extra)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from dicomstore.core.ports import BigQueryTable
from dicomstore.core.validation import BigQueryTableName

BigQueryTables = Callable[[BigQueryTableName], BigQueryTable]


def bigquery_tables(data_dir: Path, endpoint: str | None) -> BigQueryTables:
    """The table of a `bq://` name, in the embedded DuckDB or at `endpoint`. The driver is
    imported on first use: duckdb adds ~25 MB to the server's memory, and google-cloud-bigquery
    is an optional dependency."""
    if not endpoint:

        @functools.cache
        def embedded() -> Callable[[BigQueryTableName], BigQueryTable]:
            from dicomstore.destinations.bigquery_duckdb import DuckDbBigQuery

            return DuckDbBigQuery(data_dir).table

        return lambda name: embedded()(name)

    def remote(name: BigQueryTableName) -> BigQueryTable:
        from dicomstore.destinations.bigquery_api import BigQueryApiTable, client_for

        return BigQueryApiTable(client_for(name.project, endpoint), name)

    return remote
