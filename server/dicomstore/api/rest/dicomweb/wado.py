"""DICOMweb wado routes (placeholder until built)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from dicomstore.api.rest.dicomweb.context import DicomWebContext


def routes(context: DicomWebContext) -> list[BaseRoute]:
    return []
