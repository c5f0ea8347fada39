"""Blob storage on local disk: `ROOT/{store_key}/...`, named by internal ids, never by UIDs."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path


class LocalBlobStore:
    """`dicomstore.core.ports.BlobStore` in a directory."""

    def __init__(self, root: Path) -> None:
        self._root = root

    async def open(self) -> None:
        self._root.mkdir(parents=True, exist_ok=True)

    async def remove_dicom_store(self, store_key: int) -> None:
        folder = self._root / str(store_key)
        # Rename first so a crash mid-removal leaves a folder that recovery recognises as garbage.
        doomed = self._root / f"{store_key}.deleting"
        await asyncio.to_thread(self._remove, folder, doomed)

    @staticmethod
    def _remove(folder: Path, doomed: Path) -> None:
        shutil.rmtree(doomed, ignore_errors=True)  # left by an interrupted removal
        if folder.exists():
            folder.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    async def dicom_store_keys(self) -> set[int]:
        return await asyncio.to_thread(self._keys)

    def _keys(self) -> set[int]:
        keys = set()
        for entry in self._root.iterdir():
            stem = entry.name.removesuffix(".deleting")
            if stem.isdigit():
                keys.add(int(stem))
        return keys
