"""Where instance blobs live: `--blobs gs://BUCKET[/PREFIX]` (a Cloud Storage bucket through its
JSON API) or, by default, the folder `DATA_DIR/blobs`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dicomstore.blobs.local import LocalBlobStore
from dicomstore.core.errors import InvalidArgument
from dicomstore.core.ports import BlobStore
from dicomstore.core.uris import valid_bucket
from dicomstore.destinations.gcs import EMULATOR_VARIABLE, endpoint_url

GOOGLE_ENDPOINT = "https://storage.googleapis.com"
#: Local copies of Cloud Storage blobs for the pixel workers, under the data dir.
SPOOL_FOLDER = "blob-cache"


def parse_blobs_uri(uri: str) -> tuple[str, str]:
    """(bucket, prefix) of `gs://BUCKET[/PREFIX]`; InvalidArgument in one line otherwise."""
    bucket, _, prefix = uri.removeprefix("gs://").partition("/")
    segments = [s for s in prefix.split("/") if s]
    if not uri.startswith("gs://") or not valid_bucket(bucket):
        raise InvalidArgument(f"--blobs: must be gs://BUCKET or gs://BUCKET/PREFIX, got {uri!r}")
    if any(s in (".", "..") for s in segments) or "\\" in prefix or "\x00" in prefix:
        raise InvalidArgument(f"--blobs: the prefix must not hold '.' or '..', got {uri!r}")
    return bucket, "/".join(segments)


def blob_store(uri: str, data_dir: Path, gcs_endpoint: str, env: Mapping[str, str]) -> BlobStore:
    """The store `--blobs` names ("" is the folder `DATA_DIR/blobs`). Cloud Storage is reached
    at `--gcs-endpoint`, else STORAGE_EMULATOR_HOST, else Google's own endpoint; over plain
    http anonymously (an emulator), else with Application Default Credentials."""
    if not uri:
        return LocalBlobStore(data_dir / "blobs")
    bucket, prefix = parse_blobs_uri(uri)
    # Imported only when used: google-cloud-storage adds ~40 MB to the server's memory.
    from dicomstore.blobs.gcs import GcsBlobStore

    endpoint = endpoint_url(gcs_endpoint or env.get(EMULATOR_VARIABLE, "") or GOOGLE_ENDPOINT)
    return GcsBlobStore(
        endpoint,
        bucket,
        prefix,
        data_dir / SPOOL_FOLDER,
        anonymous=endpoint.startswith("http://"),
    )
