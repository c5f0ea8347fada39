"""The reads of datasets and DICOM stores, the same SQL on SQLite and PostgreSQL (a part of
both catalogs; their writes differ, one running in SQLite's writer thread, the other on
asyncpg)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from dicomstore.catalog import records
from dicomstore.catalog.shared import STORE_KEY, STORE_METRICS, STORE_SELECT
from dicomstore.core.errors import NotFound
from dicomstore.core.model import Dataset, DicomStore, DicomStoreMetrics
from dicomstore.core.names import DatasetName, DicomStoreName, LocationName

Row = Mapping[str, Any]


class StoreReads:
    """Nothing is remembered between calls: another process may delete or re-create a store
    (a re-created store has a new key), and every process must see that at once."""

    _one: Callable[[str, Sequence[Any]], Awaitable[Any]]
    _all: Callable[[str, Sequence[Any]], Awaitable[list[Any]]]

    async def get_dataset(self, name: DatasetName) -> Dataset:
        row = await self._one(
            "SELECT time_zone FROM datasets WHERE location = ? AND dataset_id = ?",
            (str(name.location), name.dataset_id),
        )
        if row is None:
            raise NotFound(f"dataset {name} not found", resource=str(name))
        return Dataset(name, row["time_zone"])

    async def list_datasets(
        self, location: LocationName, *, after: str, limit: int
    ) -> Sequence[Dataset]:
        rows = await self._all(
            "SELECT dataset_id, time_zone FROM datasets WHERE location = ? AND dataset_id > ?"
            " ORDER BY dataset_id LIMIT ?",
            (str(location), after, limit),
        )
        return [Dataset(DatasetName(location, r["dataset_id"]), r["time_zone"]) for r in rows]

    async def _store_row(self, name: DicomStoreName) -> Row:
        row = await self._one(
            STORE_SELECT + " AND s.store_id = ?",
            (str(name.dataset.location), name.dataset.dataset_id, name.store_id),
        )
        if row is None:
            raise NotFound(f"DICOM store {name} not found", resource=str(name))
        return row  # type: ignore[no-any-return]

    async def get_dicom_store(self, name: DicomStoreName) -> DicomStore:
        row = await self._store_row(name)
        return records.dicom_store(name, row["config"])

    async def dicom_store_key(self, name: DicomStoreName) -> int:
        row = await self._one(
            STORE_KEY, (str(name.dataset.location), name.dataset.dataset_id, name.store_id)
        )
        if row is None:
            raise NotFound(f"DICOM store {name} not found", resource=str(name))
        return int(row[0])

    async def list_dicom_stores(
        self, dataset: DatasetName, *, after: str, limit: int
    ) -> Sequence[DicomStore]:
        rows = await self._all(
            STORE_SELECT + " AND s.store_id > ? ORDER BY s.store_id LIMIT ?",
            (str(dataset.location), dataset.dataset_id, after, limit),
        )
        return [
            records.dicom_store(DicomStoreName(dataset, r["store_id"]), r["config"]) for r in rows
        ]

    async def dicom_store_keys(self) -> set[int]:
        return {int(r[0]) for r in await self._all("SELECT id FROM dicom_stores", ())}

    async def dicom_store_metrics(self, name: DicomStoreName) -> DicomStoreMetrics:
        key = int((await self._store_row(name))["id"])
        row = await self._one(STORE_METRICS, (key,))
        assert row is not None
        # int(): PostgreSQL's SUM of BIGINT is a NUMERIC (a Decimal).
        return DicomStoreMetrics(
            name=name,
            study_count=int(row["studies"]),
            series_count=int(row["series"]),
            instance_count=int(row["instances"]),
            structured_storage_size_bytes=int(row["structured"]),
            blob_storage_size_bytes=int(row["blob"]),
        )
