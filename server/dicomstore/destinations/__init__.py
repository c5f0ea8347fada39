"""Adapters of the external destinations: Cloud Storage (files, or the GCS JSON API) and BigQuery
tables (embedded DuckDB, or BigQuery's API)."""
