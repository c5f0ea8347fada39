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
from dicomstore.catalog.store_reads import StoreReads
from dicomstore.core.errors import AlreadyExists
from dicomstore.core.model import Dataset, DicomStore
from dicomstore.core.names import DatasetName, DicomStoreName


class PostgresStores(StoreReads, PostgresParts):
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
