"""Commands over gRPC: datasets, stores, metrics, import, export, operations (to be written)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root `app`."""
