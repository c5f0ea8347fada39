"""Delete studies, series and instances: Google's DICOMweb extension.

docs/google-behaviour.md#delete-study-series, docs/google-behaviour.md#delete-instance and
docs/google-behaviour.md#delete-blocks-inserts:

- `DELETE .../dicomWeb/studies/{study}` and `.../studies/{study}/series/{series}` start a
  long-running operation (`DicomWebService.DeleteStudy` / `DeleteSeries`) and answer it as the
  REST transcoder renders operations: `{"name": ".../operations/ID", "metadata": {...}}`,
  pollable with `GET /v1/{name}`. From then on the study or series takes no new instances.
- `DELETE .../studies/{study}/series/{series}/instances/{instance}` deletes at once and answers
  `{}` (Google's DICOMweb how-to, "Delete a study, series, or instance").

A study, series or instance that does not exist is 404 NOT_FOUND (see `wado` for 403 vs 404).
Store metrics follow, since they are computed from the catalog.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from dicomstore.api.convert import operation_to_proto
from dicomstore.api.rest.dicomweb.context import STORE_PATH, DicomWebContext
from dicomstore.api.rest.transcoder import JSON_MEDIA_TYPE, json_response


def routes(context: DicomWebContext) -> list[BaseRoute]:
    instances = context.instances

    async def delete_study_or_series(request: Request) -> Response:
        params = request.path_params
        operation = await instances.start_delete(
            context.store_name(request), params["study"], params.get("series")
        )
        return json_response(operation_to_proto(operation))

    async def delete_instance(request: Request) -> Response:
        params = request.path_params
        await instances.delete_instance(
            context.store_name(request), params["study"], params["series"], params["instance"]
        )
        return Response(b"{}", media_type=JSON_MEDIA_TYPE)

    study = STORE_PATH + "/studies/{study}"
    series = study + "/series/{series}"
    delete = ["DELETE"]
    return [
        Route(study, delete_study_or_series, methods=delete),
        Route(series, delete_study_or_series, methods=delete),
        Route(series + "/instances/{instance}", delete_instance, methods=delete),
    ]
