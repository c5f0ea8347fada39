"""The absolute URLs the server writes: `--public-url`, else the origin the client reached.

Over a real socket (uvicorn, as `dicomstore serve` runs it), since the origin of a request is
the connection's port, its Host header and, from trusted proxies only, X-Forwarded-* headers.
dicomweb-client following these URLs is in `tests/e2e/test_dicomweb_client.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from dicomstore.dicom.multipart import MultipartReader, parse_content_type
from tests.conftest import running
from tests.rest.support import STUDY, WEB, core_instances, create_wado_store, image, ingest
from tests.unit.dicom.dicomfiles import part10

SOP = "1.2.826.0.1.3.1.1"
PUBLIC = "https://pacs.example.org/dicomstore"
RETRIEVE_URL, REFERENCED_SOPS = "00081190", "00081199"


@asynccontextmanager
async def stored(tmp_path: Path, **overrides: object) -> AsyncIterator[httpx.AsyncClient]:
    """A server with one image stored; an HTTP client on its real socket."""
    async with (
        running(tmp_path, **overrides) as app,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as http,
    ):
        await create_wado_store(http)
        await ingest(core_instances(app), part10(image(SOP)))
        yield http


def port_of(http: httpx.AsyncClient) -> int:
    port = http.base_url.port
    assert port is not None
    return port


async def bulkdata_uri(http: httpx.AsyncClient, headers: Mapping[str, str] | None = None) -> str:
    response = await http.get(f"{WEB}/studies/{STUDY}/metadata", headers=headers)
    assert response.status_code == 200, response.text
    (item,) = response.json()
    uri: str = item["7FE00010"]["BulkDataURI"]
    return uri


async def origin(http: httpx.AsyncClient, headers: Mapping[str, str]) -> str:
    """The base of the URLs the server writes for a request with `headers`."""
    base, found, _ = (await bulkdata_uri(http, headers)).partition(f"{WEB}/")
    assert found, base
    return base


def part_locations(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    boundary = parse_content_type(response.headers["content-type"]).boundary
    assert boundary is not None
    reader = MultipartReader(boundary, 1 << 30, 1 << 30)
    parts = reader.feed(response.content)
    reader.close()
    locations = []
    for part in parts:
        with part:
            locations.append(part.headers["content-location"])
    return locations


async def test_public_url_is_the_base_of_every_absolute_url(tmp_path: Path) -> None:
    proxy = {"x-forwarded-proto": "http", "x-forwarded-host": "proxy.example"}
    async with stored(tmp_path, public_url=PUBLIC, forwarded_allow_ips="127.0.0.1") as http:
        instance = f"{PUBLIC}{instance_path_of(SOP)}"
        # The setting wins over the Host header and over a trusted proxy's headers.
        headers = {"host": "elsewhere.example:81", **proxy}
        assert await bulkdata_uri(http, headers) == f"{instance}/bulkdata/7FE00010"
        study = await http.get(f"{WEB}/studies/{STUDY}", headers=headers)
        assert part_locations(study) == [instance]
        bulk = await http.get(f"{instance_path_of(SOP)}/bulkdata/7FE00010", headers=headers)
        assert part_locations(bulk) == [f"{instance}/bulkdata/7FE00010"]
        frames = await http.get(f"{instance_path_of(SOP)}/frames/1,2", headers=headers)
        assert part_locations(frames) == [f"{instance}/frames/1", f"{instance}/frames/2"]
        other = image("1.2.826.0.1.3.1.2")
        response = await http.post(
            f"{WEB}/studies",
            content=part10(other),
            headers={
                "content-type": "application/dicom",
                "accept": "application/dicom+json",
                **headers,
            },
        )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer[RETRIEVE_URL]["Value"] == [f"{PUBLIC}{WEB}/studies/{STUDY}"]
    (item,) = answer[REFERENCED_SOPS]["Value"]
    assert item[RETRIEVE_URL]["Value"] == [f"{PUBLIC}{instance_path_of(other.SOPInstanceUID)}"]


def instance_path_of(sop: str) -> str:
    return f"{WEB}/studies/{STUDY}/series/{image(sop).SeriesInstanceUID}/instances/{sop}"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "http://127.0.0.1:{port}"),
        ("pacs.example", "http://pacs.example:{port}"),
        ("[::1]", "http://[::1]:{port}"),
        ("pacs.example:8042", "http://pacs.example:8042"),
        ("[::1]:8042", "http://[::1]:8042"),
    ],
)
async def test_host_without_port_gets_the_connection_port(
    tmp_path: Path, host: str, expected: str
) -> None:
    async with stored(tmp_path) as http:
        assert await origin(http, {"host": host}) == expected.format(port=port_of(http))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            {"x-forwarded-proto": "https", "x-forwarded-host": "pacs.example.org"},
            "https://pacs.example.org",
        ),
        ({"x-forwarded-proto": "https", "host": "pacs.example.org"}, "https://pacs.example.org"),
        (
            {"x-forwarded-host": "pacs.example.org:8443, inner.example"},
            "http://pacs.example.org:8443",
        ),
        ({"x-forwarded-for": "203.0.113.7", "host": "pacs.example.org"}, "http://pacs.example.org"),
        (
            {"x-forwarded-host": "not a host/x", "host": "pacs.example.org"},
            "http://pacs.example.org",
        ),
        ({"host": "127.0.0.1"}, "http://127.0.0.1:{port}"),
    ],
    ids=["proto-and-host", "proto", "first-host", "for", "garbled-host", "direct"],
)
@pytest.mark.parametrize("trusted", ["127.0.0.1", "127.0.0.0/8, ::1", "*"])
async def test_forwarded_headers_of_a_trusted_proxy_name_the_origin(
    tmp_path: Path, trusted: str, headers: dict[str, str], expected: str
) -> None:
    async with stored(tmp_path, forwarded_allow_ips=trusted) as http:
        assert await origin(http, headers) == expected.format(port=port_of(http))


@pytest.mark.parametrize("trusted", ["", "10.0.0.0/8", "192.0.2.1"])
async def test_forwarded_headers_of_an_untrusted_peer_are_ignored(
    tmp_path: Path, trusted: str
) -> None:
    headers = {
        "x-forwarded-proto": "https",
        "x-forwarded-host": "attacker.example",
        "x-forwarded-for": "203.0.113.7",
        "host": "127.0.0.1",
    }
    async with stored(tmp_path, forwarded_allow_ips=trusted) as http:
        assert await origin(http, headers) == f"http://127.0.0.1:{port_of(http)}"
