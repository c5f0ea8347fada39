"""Datasets and DICOM stores in the SQLite catalog (a part of `sqlite.SqliteCatalog`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from dicomstore.catalog import records
from dicomstore.catalog.sqlite_statements import (
    NOW_MICROS,
    SqliteParts,
    find_dataset_key,
    find_store_key,
)
from dicomstore.catalog.store_reads import StoreReads
from dicomstore.core.errors import AlreadyExists
from dicomstore.core.model import Dataset, DicomStore
from dicomstore.core.names import DatasetName, DicomStoreName


class SqliteStores(StoreReads, SqliteParts):
    async def create_dataset(self, dataset: Dataset) -> None:
        def tx(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    "INSERT INTO datasets (location, dataset_id, time_zone, create_time)"
                    f" VALUES (?, ?, ?, {NOW_MICROS})",
                    (str(dataset.name.location), dataset.name.dataset_id, dataset.time_zone),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(
                    f"dataset {dataset.name} already exists", resource=str(dataset.name)
                ) from None

        await self._write(tx)

    async def update_dataset(self, dataset: Dataset) -> None:
        def tx(db: sqlite3.Connection) -> None:
            key = find_dataset_key(db, dataset.name)
            db.execute("UPDATE datasets SET time_zone = ? WHERE id = ?", (dataset.time_zone, key))

        await self._write(tx)

    async def delete_dataset(self, name: DatasetName) -> Sequence[int]:
        def tx(db: sqlite3.Connection) -> list[int]:
            key = find_dataset_key(db, name)
            rows = db.execute("SELECT id FROM dicom_stores WHERE dataset_key = ?", (key,))
            store_keys = [int(r[0]) for r in rows]
            db.execute("DELETE FROM datasets WHERE id = ?", (key,))
            return store_keys

        return await self._write(tx)

    async def create_dicom_store(self, store: DicomStore) -> None:
        config = records.store_config_json(store.config)

        def tx(db: sqlite3.Connection) -> None:
            key = find_dataset_key(db, store.name.dataset)
            try:
                db.execute(
                    "INSERT INTO dicom_stores (dataset_key, store_id, config, create_time)"
                    f" VALUES (?, ?, ?, {NOW_MICROS})",
                    (key, store.name.store_id, config),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(
                    f"DICOM store {store.name} already exists", resource=str(store.name)
                ) from None

        await self._write(tx)

    async def update_dicom_store(self, store: DicomStore) -> None:
        config = records.store_config_json(store.config)

        def tx(db: sqlite3.Connection) -> None:
            key = find_store_key(db, store.name)
            db.execute("UPDATE dicom_stores SET config = ? WHERE id = ?", (config, key))

        await self._write(tx)

    async def delete_dicom_store(self, name: DicomStoreName) -> int:
        def tx(db: sqlite3.Connection) -> int:
            key = find_store_key(db, name)
            db.execute("DELETE FROM dicom_stores WHERE id = ?", (key,))
            return key

        return await self._write(tx)
