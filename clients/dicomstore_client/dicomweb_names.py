"""Names on the DICOMweb side: a DICOM store's resource name, and `studies/UID/series/UID/...`
paths below its DICOMweb root (Google's `projects/P/locations/L/datasets/D/dicomStores/S/
dicomWeb`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dicomstore_client.errors import ClientError, ExitCode

_STORE_NAME = re.compile(
    r"projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/"
    r"datasets/(?P<dataset>[^/]+)/dicomStores/(?P<store>[^/]+)"
)
_UID = r"[0-9.]+"
_DICOM_PATH = re.compile(
    rf"studies/(?P<study>{_UID})(?:/series/(?P<series>{_UID})(?:/instances/(?P<instance>{_UID}))?)?"
)


def _usage(message: str) -> ClientError:
    return ClientError(message, "INVALID_ARGUMENT", ExitCode.USAGE)


@dataclass(frozen=True)
class StoreName:
    """`projects/P/locations/L/datasets/D/dicomStores/S`."""

    project: str
    location: str
    dataset: str
    store: str

    @classmethod
    def parse(cls, name: str) -> StoreName:
        match = _STORE_NAME.fullmatch(name.strip("/"))
        if match is None:
            raise _usage(
                f"not a DICOM store name: {name!r} (projects/P/locations/L/datasets/D/"
                "dicomStores/S)"
            )
        return cls(**match.groupdict())

    @classmethod
    def resolve(
        cls,
        store: str,
        *,
        project: str | None = None,
        location: str | None = None,
        dataset: str | None = None,
    ) -> StoreName:
        """A full name as it is, or a store id inside the given project, location and dataset."""
        if "/" in store:
            return cls.parse(store)
        missing = [
            flag
            for flag, value in (
                ("--project", project),
                ("--location", location),
                ("--dataset", dataset),
            )
            if not value
        ]
        if missing:
            raise _usage(
                f"store {store!r} is an id: give {', '.join(missing)} or a full name "
                "projects/P/locations/L/datasets/D/dicomStores/S"
            )
        assert project and location and dataset
        return cls(project, location, dataset, store)

    def __str__(self) -> str:
        return (
            f"projects/{self.project}/locations/{self.location}/datasets/{self.dataset}"
            f"/dicomStores/{self.store}"
        )

    @property
    def dataset_name(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/datasets/{self.dataset}"

    def dicomweb_url(self, http_url: str) -> str:
        return f"{http_url.rstrip('/')}/v1/{self}/dicomWeb"


@dataclass(frozen=True)
class DicomPath:
    """A study, a series or an instance: `studies/S[/series/SE[/instances/I]]`."""

    study: str
    series: str | None = None
    instance: str | None = None

    def __post_init__(self) -> None:
        if self.instance is not None and self.series is None:
            raise ValueError("an instance needs its series")

    @classmethod
    def parse(cls, path: str) -> DicomPath:
        match = _DICOM_PATH.fullmatch(path.strip("/"))
        if match is None:
            raise _usage(
                f"not a DICOMweb path: {path!r} (studies/UID[/series/UID[/instances/UID]])"
            )
        return cls(match["study"], match["series"], match["instance"])

    @classmethod
    def from_url(cls, url: str) -> DicomPath | None:
        """The path at the end of a Retrieve URL or a part's Content-Location, if it has one."""
        match = _DICOM_PATH.search(url)
        return None if match is None else cls(match["study"], match["series"], match["instance"])

    @property
    def level(self) -> str:
        if self.instance is not None:
            return "instance"
        return "series" if self.series is not None else "study"

    def __str__(self) -> str:
        path = f"studies/{self.study}"
        if self.series is not None:
            path += f"/series/{self.series}"
        if self.instance is not None:
            path += f"/instances/{self.instance}"
        return path
