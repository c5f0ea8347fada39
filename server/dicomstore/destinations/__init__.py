"""Adapters for external destinations: Cloud Storage, BigQuery."""
