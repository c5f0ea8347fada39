"""Datasets and DICOM stores in the PostgreSQL catalog (a part of `postgres.PostgresCatalog`)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from dicomstore.catalog import records
from dicomstore.catalog.postgres_statements import (
    NOW_MICROS,
    Db,
    PostgresParts,
    execute,
    fetch,
    find_dataset_key,
    find_store_key,
)
from dicomstore.catalog.shared import STORE_KEY, STORE_METRICS, STORE_SELECT
from dicomstore.core.errors import AlreadyExists, NotFound
from dicomstore.core.model import Dataset, DicomStore, DicomStoreMetrics
from dicomstore.core.names import DatasetName, DicomStoreName, LocationName


class PostgresStores(PostgresParts):
    async def create_dataset(self, dataset: Dataset) -> None:
        async def tx(db: Db) -> None:
            try:
                await execute(
                    db,
                    "INSERT INTO datasets (location, dataset_id, time_zone, create_time)"
                    f" VALUES (?, ?, ?, {NOW_MICROS})",
                    (str(dataset.name.location), dataset.name.dataset_id, dataset.time_zone),
                )
            except asyncpg.UniqueViolationError:
                raise AlreadyExists(
                    f"dataset {dataset.name} already exists", resource=str(dataset.name)
                ) from None

        await self._write(tx)

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

    async def update_dataset(self, dataset: Dataset) -> None:
        async def tx(db: Db) -> None:
            key = await find_dataset_key(db, dataset.name)
            await execute(
                db, "UPDATE datasets SET time_zone = ? WHERE id = ?", (dataset.time_zone, key)
            )

        await self._write(tx)

    async def delete_dataset(self, name: DatasetName) -> Sequence[int]:
        async def tx(db: Db) -> list[int]:
            key = await find_dataset_key(db, name)
            rows = await fetch(db, "SELECT id FROM dicom_stores WHERE dataset_key = ?", (key,))
            await execute(db, "DELETE FROM datasets WHERE id = ?", (key,))
            return [int(r[0]) for r in rows]

        return await self._write(tx)

    async def create_dicom_store(self, store: DicomStore) -> None:
        config = records.store_config_json(store.config)

        async def tx(db: Db) -> None:
            key = await find_dataset_key(db, store.name.dataset)
            try:
                await execute(
                    db,
                    "INSERT INTO dicom_stores (dataset_key, store_id, config, create_time)"
                    f" VALUES (?, ?, ?, {NOW_MICROS})",
                    (key, store.name.store_id, config),
                )
            except asyncpg.UniqueViolationError:
                raise AlreadyExists(
                    f"DICOM store {store.name} already exists", resource=str(store.name)
                ) from None

        await self._write(tx)

    async def _store_row(self, name: DicomStoreName) -> asyncpg.Record:
        row = await self._one(
            STORE_SELECT + " AND s.store_id = ?",
            (str(name.dataset.location), name.dataset.dataset_id, name.store_id),
        )
        if row is None:
            raise NotFound(f"DICOM store {name} not found", resource=str(name))
        return row

    async def get_dicom_store(self, name: DicomStoreName) -> DicomStore:
        row = await self._store_row(name)
        return records.dicom_store(name, row["config"])

    async def dicom_store_key(self, name: DicomStoreName) -> int:
        # Not cached: another process on the database may delete or recreate the store.
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

    async def update_dicom_store(self, store: DicomStore) -> None:
        config = records.store_config_json(store.config)

        async def tx(db: Db) -> None:
            key = await find_store_key(db, store.name)
            await execute(db, "UPDATE dicom_stores SET config = ? WHERE id = ?", (config, key))

        await self._write(tx)

    async def delete_dicom_store(self, name: DicomStoreName) -> int:
        async def tx(db: Db) -> int:
            key = await find_store_key(db, name)
            await execute(db, "DELETE FROM dicom_stores WHERE id = ?", (key,))
            return key

        return await self._write(tx)

    async def dicom_store_keys(self) -> set[int]:
        return {int(r[0]) for r in await self._all("SELECT id FROM dicom_stores", ())}

    async def dicom_store_metrics(self, name: DicomStoreName) -> DicomStoreMetrics:
        key = int((await self._store_row(name))["id"])
        row = await self._one(STORE_METRICS, (key,))
        assert row is not None
        return DicomStoreMetrics(
            name=name,
            study_count=row["studies"],
            series_count=row["series"],
            instance_count=row["instances"],
            structured_storage_size_bytes=row["structured"],
            blob_storage_size_bytes=row["blob"],
        )
