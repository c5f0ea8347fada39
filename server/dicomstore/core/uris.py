"""Cloud Storage URIs (`gs://BUCKET/OBJECT`) as the DICOM import and export requests take them.

Reference: GcsSource.uri, GcsDestination.uri_prefix and DicomFilterConfig.resource_paths_gcs_uri
in google.cloud.healthcare.v1.dicom (Google's RPC reference; docs/google-behaviour.md
#import-wildcards, #export-gcs-object-names, #export-filter-file). Object names that could
leave their bucket once mapped to a path (`.` or `..` segments, backslashes, NUL) are refused.

An import source may hold wildcards (docs/cloud-storage.md): `*` matches any run of characters
but `/`, `?` exactly one character but `/`, and `**` any run of characters including `/`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

from dicomstore.core.errors import invalid
from dicomstore.core.model import StorageObject
from dicomstore.core.ports import CloudStorage

# Bucket naming rules of Cloud Storage: lowercase letters, digits, dashes, underscores and dots,
# starting and ending with a letter or digit; 3-63 characters, or up to 222 with dots as long as
# each dot-separated part has at most 63.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


def valid_bucket(name: str) -> bool:
    """Whether `name` follows the bucket naming rules of Cloud Storage."""
    return (
        bool(_BUCKET.match(name))
        and ".." not in name
        and all(0 < len(part) <= 63 for part in name.split("."))
    )


@dataclass(frozen=True)
class GcsUri:
    bucket: str
    object: str

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.object}"


def parse_gcs_uri(text: str, field: str, *, object_required: bool = True) -> GcsUri:
    if not text:
        raise invalid(field, "is required (gs://BUCKET/OBJECT)")
    if not text.startswith("gs://"):
        raise invalid(field, f"must be a Cloud Storage URI gs://BUCKET/OBJECT, got {text!r}")
    bucket, _, name = text.removeprefix("gs://").partition("/")
    if not valid_bucket(bucket):
        raise invalid(field, f"invalid bucket name {bucket!r}")
    if object_required and not name:
        raise invalid(field, f"must name an object: gs://{bucket}/OBJECT")
    if "\\" in name or "\x00" in name or any(s in (".", "..") for s in name.split("/")):
        raise invalid(field, f"object name {name!r} must not contain '.' or '..' segments")
    return GcsUri(bucket, name)


def parse_import_source(text: str, field: str) -> GcsUri:
    """GcsSource.uri: `*` and `?` anywhere in the object name; `**` only in the last segment
    and then as the only wildcard of the path (optionally followed by an extension)."""
    uri = parse_gcs_uri(text, field)
    if uri.object.endswith("/"):
        # A folder is not an object; gcloud's examples import one with a wildcard.
        raise invalid(
            field,
            f"names a folder, not an object: use gs://{uri.bucket}/{uri.object}** for every "
            f"object under it or gs://{uri.bucket}/{uri.object}* for those directly in it",
        )
    if "**" in uri.object:
        last = uri.object.rsplit("/", 1)[-1]
        head = uri.object[: len(uri.object) - len(last)]
        rest = last.replace("**", "", 1)
        if not last.startswith("**") or any(c in head + rest for c in "*?"):
            raise invalid(
                field,
                "'**' must begin the last path segment and be the only wildcard "
                f"(e.g. gs://bucket/dir/**.dcm), got {text!r}",
            )
    return uri


_WILDCARD = re.compile(r"\*\*|\*|\?")
_WILDCARD_REGEX = {"**": ".*", "*": "[^/]*", "?": "[^/]"}


@dataclass(frozen=True)
class ObjectPattern:
    """The objects an import source names: those whose name starts with `prefix` (the object
    name up to its first wildcard) and that `matches` accepts."""

    prefix: str
    matches: Callable[[str], bool]
    #: No wildcard: the one object named `prefix`.
    exact: bool = False


def object_pattern(source: GcsUri) -> ObjectPattern:
    """The listing prefix and name matcher of an import source checked by
    `parse_import_source`; without a wildcard, only the object of that exact name matches."""
    name = source.object
    first = _WILDCARD.search(name)
    if first is None:
        return ObjectPattern(name, name.__eq__, exact=True)
    parts: list[str] = []
    position = 0
    for wildcard in _WILDCARD.finditer(name):
        parts.append(re.escape(name[position : wildcard.start()]))
        parts.append(_WILDCARD_REGEX[wildcard.group()])
        position = wildcard.end()
    parts.append(re.escape(name[position:]))
    regex = re.compile("".join(parts), re.DOTALL)

    def matches(candidate: str) -> bool:
        # A name ending in `/` is a folder placeholder (the Cloud console makes them), not a file.
        return not candidate.endswith("/") and regex.fullmatch(candidate) is not None

    return ObjectPattern(name[: first.start()], matches)


async def matching_objects(storage: CloudStorage, source: GcsUri) -> AsyncIterator[StorageObject]:
    """The objects of `source`'s bucket that its pattern matches, in lexicographic order of
    name, streamed as `storage` lists them (GcsSource.uri of ImportDicomDataRequest)."""
    pattern = object_pattern(source)
    listing = storage.list_objects(source.bucket, pattern.prefix)
    try:
        async for item in listing:
            if pattern.matches(item.name):
                yield item
            if pattern.exact:
                # The shortest name with a prefix sorts first: the rest only extend it.
                break
    finally:
        if isinstance(listing, AsyncGenerator):  # release the adapter's open listing now
            await listing.aclose()
