"""Resource names of the Cloud Healthcare API v1.

`projects/{project}/locations/{location}/datasets/{dataset}[/dicomStores/{store}|/operations/{id}]`,
as the REST path patterns of Google's discovery document (`healthcare.v1.json`) define them: every
segment is `[^/]+`. Ids are checked against their own rules when a resource is created
(`dicomstore.core.validation`); parsing only checks the shape, so a well-formed name of a resource
that was never created is NOT_FOUND, not INVALID_ARGUMENT.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicomstore.core.errors import invalid


def _segments(text: str, field: str, shape: str, count: int) -> list[str]:
    parts = text.split("/")
    keywords = shape.split("/")[::2]
    if len(parts) != count * 2 or parts[::2] != keywords:
        raise invalid(field, f"must have the form {shape}, got {text!r}")
    values = parts[1::2]
    for value in values:
        if not value or any(ord(c) < 0x20 or c == "\x7f" for c in value):
            raise invalid(field, f"must have the form {shape}, got {text!r}")
    return values


@dataclass(frozen=True, order=True)
class LocationName:
    project: str
    location: str

    @classmethod
    def parse(cls, text: str, field: str = "parent") -> LocationName:
        project, location = _segments(text, field, "projects/{project}/locations/{location}", 2)
        return cls(project, location)

    def __str__(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"


@dataclass(frozen=True, order=True)
class DatasetName:
    location: LocationName
    dataset_id: str

    @classmethod
    def parse(cls, text: str, field: str = "name") -> DatasetName:
        project, location, dataset = _segments(
            text, field, "projects/{project}/locations/{location}/datasets/{dataset}", 3
        )
        return cls(LocationName(project, location), dataset)

    def __str__(self) -> str:
        return f"{self.location}/datasets/{self.dataset_id}"


@dataclass(frozen=True, order=True)
class DicomStoreName:
    dataset: DatasetName
    store_id: str

    @classmethod
    def parse(cls, text: str, field: str = "name") -> DicomStoreName:
        project, location, dataset, store = _segments(
            text,
            field,
            "projects/{project}/locations/{location}/datasets/{dataset}/dicomStores/{dicom_store}",
            4,
        )
        return cls(DatasetName(LocationName(project, location), dataset), store)

    def __str__(self) -> str:
        return f"{self.dataset}/dicomStores/{self.store_id}"


@dataclass(frozen=True, order=True)
class OperationName:
    dataset: DatasetName
    operation_id: str

    @classmethod
    def parse(cls, text: str, field: str = "name") -> OperationName:
        project, location, dataset, op = _segments(
            text,
            field,
            "projects/{project}/locations/{location}/datasets/{dataset}/operations/{operation}",
            4,
        )
        return cls(DatasetName(LocationName(project, location), dataset), op)

    def __str__(self) -> str:
        return f"{self.dataset}/operations/{self.operation_id}"
