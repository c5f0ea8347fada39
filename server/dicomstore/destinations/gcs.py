"""Which Cloud Storage backend serves `gs://` URIs: the embedded one, or the JSON API."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dicomstore.core.ports import CloudStorage
from dicomstore.destinations.gcs_local import LocalCloudStorage

#: Set by Google's tools to point their Cloud Storage clients at an emulator.
EMULATOR_VARIABLE = "STORAGE_EMULATOR_HOST"


def endpoint_url(endpoint: str) -> str:
    # Emulator hosts are often given as `host:port`, which Google's Go and Java clients accept.
    return endpoint if "://" in endpoint else f"http://{endpoint}"


def cloud_storage(data_dir: Path, endpoint: str | None, env: Mapping[str, str]) -> CloudStorage:
    """The explicit `endpoint` (`--gcs-endpoint`) if any, else the emulator named by
    STORAGE_EMULATOR_HOST in `env`, else the files of `data_dir/gcs`.

    An emulator, and any plain `http://` endpoint, is called anonymously, so that no token goes
    out unencrypted; an `https://` endpoint with Application Default Credentials."""
    if endpoint:
        url = endpoint_url(endpoint)
        return _api(url, anonymous=url.startswith("http://"))
    if emulator := env.get(EMULATOR_VARIABLE):
        return _api(endpoint_url(emulator), anonymous=True)
    return LocalCloudStorage(data_dir / "gcs")


def _api(url: str, *, anonymous: bool) -> CloudStorage:
    # Imported only when used: google-cloud-storage adds ~40 MB to the server's memory.
    from dicomstore.destinations.gcs_api import GcsApiStorage

    return GcsApiStorage(url, anonymous=anonymous)
