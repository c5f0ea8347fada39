"""Adapters of the export destinations: BigQuery tables (embedded DuckDB, or BigQuery's API)."""
