"""DICOM stores: create, get, list, update, delete and metrics (DicomService).

Reference: google.cloud.healthcare.v1.dicom.DicomService (Google's RPC reference) and the
discovery document `healthcare.v1.json`: labels, list filters and page sizes, update masks,
store deletion removing "all images that are contained within it" (docs/google-behaviour.md,
section "Datasets and DICOM stores").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from dicomstore.core import paging, validation
from dicomstore.core.datasets import check_update_mask
from dicomstore.core.errors import invalid
from dicomstore.core.filters import parse_filter
from dicomstore.core.model import DicomStore, DicomStoreConfig, DicomStoreMetrics, Page
from dicomstore.core.names import DatasetName, DicomStoreName
from dicomstore.core.ports import BlobStore, Catalog

UPDATABLE = ("labels", "notification_config", "notification_configs", "stream_configs")
MAX_STREAM_CONFIGS = 5
_SCAN_BATCH = 500


def validate_config(config: DicomStoreConfig, prefix: str = "dicom_store") -> None:
    validation.validate_labels(config.labels, f"{prefix}.labels")
    if config.notification_config is not None:
        validation.validate_pubsub_topic(
            config.notification_config.pubsub_topic, f"{prefix}.notification_config.pubsub_topic"
        )
    for i, topic in enumerate(config.notification_configs):
        field = f"{prefix}.notification_configs[{i}].pubsub_topic"
        if not topic:
            raise invalid(field, "is required")
        validation.validate_pubsub_topic(topic, field)
    if len(config.stream_configs) > MAX_STREAM_CONFIGS:
        raise invalid(f"{prefix}.stream_configs", f"at most {MAX_STREAM_CONFIGS} are allowed")
    seen: set[str] = set()
    for i, stream in enumerate(config.stream_configs):
        field = f"{prefix}.stream_configs[{i}].bigquery_destination"
        if stream.bigquery_destination is None:
            raise invalid(field, "is required")
        uri = stream.bigquery_destination.table_uri
        validation.validate_bigquery_table_uri(uri, f"{field}.table_uri")
        if uri in seen:
            raise invalid(
                f"{field}.table_uri", f"each config must have a unique destination: {uri}"
            )
        seen.add(uri)


class DicomStores:
    def __init__(self, catalog: Catalog, blobs: BlobStore, tokens: paging.PageTokens) -> None:
        self._catalog = catalog
        self._blobs = blobs
        self._tokens = tokens

    async def create(
        self, parent: str, dicom_store_id: str, config: DicomStoreConfig
    ) -> DicomStore:
        dataset = DatasetName.parse(parent, "parent")
        validation.validate_dicom_store_id(dicom_store_id)
        validate_config(config)
        store = DicomStore(DicomStoreName(dataset, dicom_store_id), config)
        await self._catalog.create_dicom_store(store)
        return store

    async def get(self, name: str) -> DicomStore:
        return await self._catalog.get_dicom_store(DicomStoreName.parse(name))

    async def list(
        self, parent: str, filter: str, page_size: int, page_token: str
    ) -> Page[DicomStore]:
        """Stores ordered by id; the filter is evaluated here so every catalog shares it."""
        dataset = DatasetName.parse(parent, "parent")
        size = paging.page_size(page_size)
        matcher = parse_filter(filter)
        scope = f"{dataset}\n{matcher.text}"
        after = self._tokens.decode(page_token, scope=scope) if page_token else ""
        await self._catalog.get_dataset(dataset)
        # Unfiltered, one more row than a page tells whether another page exists.
        batch_size = size + 1 if matcher.root is None else _SCAN_BATCH
        found: list[DicomStore] = []
        while True:
            batch = await self._catalog.list_dicom_stores(dataset, after=after, limit=batch_size)
            for store in batch:
                if not matcher.matches(store.config.labels):
                    continue
                if len(found) == size:
                    last = found[-1].name.store_id
                    return Page(found, self._tokens.encode(scope=scope, position=last))
                found.append(store)
            if len(batch) < batch_size:
                return Page(found)
            after = batch[-1].name.store_id

    async def update(
        self, name: str, config: DicomStoreConfig, update_mask: Sequence[str]
    ) -> DicomStore:
        store_name = DicomStoreName.parse(name, "dicom_store.name")
        check_update_mask(update_mask, UPDATABLE)
        current = await self._catalog.get_dicom_store(store_name)
        changes = {path: getattr(config, path) for path in update_mask}
        updated = DicomStore(store_name, dataclasses.replace(current.config, **changes))
        validate_config(updated.config)
        await self._catalog.update_dicom_store(updated)
        return updated

    async def delete(self, name: str) -> None:
        """Delete the store and every instance in it, index rows first, then blobs."""
        store_key = await self._catalog.delete_dicom_store(DicomStoreName.parse(name))
        await self._blobs.remove_dicom_store(store_key)

    async def metrics(self, name: str) -> DicomStoreMetrics:
        return await self._catalog.dicom_store_metrics(DicomStoreName.parse(name))
