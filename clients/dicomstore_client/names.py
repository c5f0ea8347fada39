"""Resource names from short ids: `ct` in project P, location L, dataset D is
`projects/P/locations/L/datasets/D/dicomStores/ct`; a full `projects/...` name is taken as it is.

The names are Google's (https://cloud.google.com/healthcare-api/docs/reference/rest/v1/
projects.locations.datasets.dicomStores), so the same scope works against dicomstore and Google.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from dicomstore_client.errors import ClientError, ExitCode

PROJECT_ENV = "DICOMSTORE_PROJECT"
LOCATION_ENV = "DICOMSTORE_LOCATION"
DATASET_ENV = "DICOMSTORE_DATASET"


def _is_full(name: str) -> bool:
    return name.startswith("projects/")


@dataclass(frozen=True)
class Scope:
    """The project, location and dataset that short ids are read in."""

    project: str | None = None
    location: str | None = None
    dataset: str | None = None

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] = os.environ,
        *,
        project: str | None = None,
        location: str | None = None,
        dataset: str | None = None,
    ) -> Scope:
        """Arguments win over DICOMSTORE_PROJECT, DICOMSTORE_LOCATION, DICOMSTORE_DATASET."""
        return cls(
            project=project or env.get(PROJECT_ENV) or None,
            location=location or env.get(LOCATION_ENV) or None,
            dataset=dataset or env.get(DATASET_ENV) or None,
        )

    def location_name(self) -> str:
        project = _required(self.project, "project", PROJECT_ENV)
        location = _required(self.location, "location", LOCATION_ENV)
        return f"projects/{project}/locations/{location}"

    def dataset_name(self, dataset: str | None = None) -> str:
        """`dataset` (an id or a full name), or the scope's own dataset."""
        dataset = dataset or self.dataset
        if dataset and _is_full(dataset):
            return dataset
        location = self.location_name()
        return f"{location}/datasets/{_required(dataset, 'dataset', DATASET_ENV)}"

    def store_name(self, store: str) -> str:
        return store if _is_full(store) else f"{self.dataset_name()}/dicomStores/{store}"

    def operation_name(self, operation: str) -> str:
        return operation if _is_full(operation) else f"{self.dataset_name()}/operations/{operation}"


def dataset_of(name: str) -> str:
    """The dataset a store or operation name belongs to."""
    parts = name.split("/")
    return "/".join(parts[:6])


def short_id(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _required(value: str | None, what: str, env: str) -> str:
    if not value:
        raise ClientError(
            f"no {what} given: pass --{what} (or set {env}), or a full projects/... name",
            "INVALID_ARGUMENT",
            ExitCode.USAGE,
        )
    return value
