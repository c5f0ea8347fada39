"""Commands over DICOMweb: store, search, retrieve, delete (to be written)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root `app`."""
