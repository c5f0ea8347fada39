"""What every DICOMweb handler needs: the core, the mode's policy, limits, and URL helpers."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from starlette.requests import Request

from dicomstore.core.instance_pixels import InstancePixels
from dicomstore.core.instances import Instances
from dicomstore.core.names import DatasetName, DicomStoreName, LocationName
from dicomstore.core.policy import DicomWebPolicy
from dicomstore.core.search import Search
from dicomstore.core.stores import DicomStores

# The store part of every DICOMweb path; Starlette path parameters are one segment each.
STORE_PATH = (
    "/v1/projects/{project}/locations/{location}/datasets/{dataset}/dicomStores/{store}/dicomWeb"
)


@dataclass(frozen=True)
class DicomWebContext:
    instances: Instances
    search: Search
    stores: DicomStores
    policy: DicomWebPolicy
    max_instance_bytes: int
    pixels: InstancePixels
    """Frames, rendered images and transcoding (in worker processes)."""
    public_url: str = ""
    """`--public-url`: the base of every absolute URL written; "" builds them from the request."""

    @staticmethod
    def store_name(request: Request) -> DicomStoreName:
        p = request.path_params
        location = LocationName(p["project"], p["location"])
        return DicomStoreName(DatasetName(location, p["dataset"]), p["store"])

    def base_url(self, request: Request) -> str:
        """The base of absolute URLs, without a trailing slash: `--public-url`, else the origin
        the client reached (its Host header, which `api.rest.forwarded` completes)."""
        return (self.public_url or str(request.base_url)).rstrip("/")

    def study_url(self, request: Request, store: DicomStoreName, study_uid: str) -> str:
        """The absolute RetrieveURL of a study."""
        return f"{self.base_url(request)}/v1/{quote(str(store))}/dicomWeb/studies/{study_uid}"
