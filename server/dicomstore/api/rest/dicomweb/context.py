"""What every DICOMweb handler needs: the core, the mode's policy, limits, and URL helpers."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from starlette.requests import Request

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

    @staticmethod
    def store_name(request: Request) -> DicomStoreName:
        p = request.path_params
        location = LocationName(p["project"], p["location"])
        return DicomStoreName(DatasetName(location, p["dataset"]), p["store"])

    @staticmethod
    def study_url(request: Request, store: DicomStoreName, study_uid: str) -> str:
        """The absolute RetrieveURL of a study, as the client reached this server."""
        base = str(request.base_url).rstrip("/")
        return f"{base}/v1/{quote(str(store))}/dicomWeb/studies/{study_uid}"
