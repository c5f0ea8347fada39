"""Custom methods (`:verb`) this server does not have: 501 UNIMPLEMENTED naming the method.

In Google's REST surface a bare `:` in a path's last segment starts a custom method's verb
(`.../dicomStores/s:getIamPolicy`, `.../dicomWeb/studies/1.2.3:getStudyMetrics`); no route takes
the verb for part of an id (an id holding a `:` is reached encoded, `%3A`, which is no verb). The
transcoder's templates match such a path only when they carry that verb (`:import`, `:export`,
`:getDICOMStoreMetrics`, `:cancel`); `UnknownVerbRoute`, placed before every other route, answers
any other verb, whatever the HTTP method:

- when the path without its verb is a resource or collection that some route serves (with any
  HTTP method): 501 UNIMPLEMENTED, "method healthcare.projects.locations.datasets.dicomStores.
  getIamPolicy is not implemented by this server". The method is named as Google's discovery
  document names it: `healthcare`, the collections of the serving route's path, the verb. The
  resource need not exist: nothing is looked up.
- otherwise (a verb on a resource of another area of the API, such as fhirStores or
  hl7V2Stores, or on no resource at all; an empty verb): 404 NOT_FOUND, as for any path no
  route serves.

Google's methods of datasets, DICOM stores, DICOMweb and operations that this rule answers today:
`datasets.deidentify`, `datasets.getIamPolicy`, `datasets.setIamPolicy`,
`datasets.testIamPermissions`, the same four of `dicomStores`, `dicomStores.setBlobStorageSettings`,
`dicomStores.dicomWeb.studies.getStudyMetrics`, `...studies.setBlobStorageSettings`,
`...studies.series.getSeriesMetrics` and `...studies.series.instances.getStorageInfo`. Every other
method of those resources in the discovery document has a route (the two `retrieveRendered`
routes answer 501 as well, once they have found the instance: `dicomweb.wado`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

from dicomstore.api.rest.transcoder import RpcRoute, raw_path, split_verb
from dicomstore.core.errors import Unimplemented

API_NAME = "healthcare"

_METHOD = "dicomstore.verbs.method"


def collections(route: BaseRoute) -> list[str]:
    """The literal segments of a route's path after its version (`projects`, `locations`, ...)."""
    if isinstance(route, RpcRoute):
        segments = route.template.segments
    else:
        segments = str(getattr(route, "path", "")).strip("/").split("/")
    literals = [s for s in segments if s and s not in ("*", "**") and not s.startswith("{")]
    return literals[1:] if literals and literals[0].startswith("v") else literals


class UnknownVerbRoute(BaseRoute):
    """Answers every path with a verb that no route in `verb_routes` serves (see the module)."""

    def __init__(self, verb_routes: Sequence[RpcRoute], resources: Sequence[BaseRoute]) -> None:
        self._verb_routes = list(verb_routes)
        self._resources = list(resources)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        path = raw_path(scope)
        resource, verb = split_verb(path)
        if verb is None or any(
            r.template.verb == verb and r.template.match(path) is not None
            for r in self._verb_routes
        ):
            return Match.NONE, {}
        return Match.FULL, {_METHOD: self.method_name(scope, resource, verb)}

    def method_name(self, scope: Scope, resource: str, verb: str) -> str | None:
        """The discovery name of `verb` on the raw path `resource`, if a route serves that."""
        if not verb:
            return None
        plain = {**scope, "path": unquote(resource), "raw_path": resource.encode()}
        for route in self._resources:
            match, _ = route.matches(plain)
            if match is not Match.NONE:
                return ".".join([API_NAME, *collections(route), verb])
        return None

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope[_METHOD]
        if method is None:
            raise HTTPException(404)
        raise Unimplemented(f"method {method} is not implemented by this server")

    def __repr__(self) -> str:
        return "UnknownVerbRoute()"
