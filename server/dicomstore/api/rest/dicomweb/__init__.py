"""DICOMweb (PS3.18) under `.../dicomStores/S/dicomWeb/`: dedicated handlers over the core.

Each module contributes its routes: `stow` (STOW-RS), `qido` (QIDO-RS search), `wado`
(WADO-RS retrieve, metadata, bulk data), `wado_pixels` (frames, rendered) and `delete`. Mode
differences come from `context.policy` only.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from dicomstore.api.rest.dicomweb import delete, qido, stow, wado, wado_pixels
from dicomstore.api.rest.dicomweb.context import DicomWebContext


def dicomweb_routes(context: DicomWebContext) -> list[BaseRoute]:
    return [
        *stow.routes(context),
        *qido.routes(context),
        *wado.routes(context),
        *wado_pixels.routes(context),
        *delete.routes(context),
    ]
