"""The browser page's routes (`api/rest/ui.py`): the page and its assets, their types and caching,
and that `/ui` stays outside Google's URL surface. What the page does is tested in
`tests/browser/test_ui.py`."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.rest.support import client_for, rest_app

ASSETS = [
    ("/ui/", "text/html; charset=utf-8"),
    ("/ui/app.js", "text/javascript; charset=utf-8"),
    ("/ui/style.css", "text/css; charset=utf-8"),
    ("/ui/dictionary.json", "application/json"),
]


async def test_ui_redirects_to_the_page_with_a_relative_location(client: httpx.AsyncClient):
    response = await client.get("/ui")
    assert response.status_code == 308
    # Relative, so that behind a proxy's path prefix it leads to <prefix>/ui/.
    assert response.headers["location"] == "ui/"


@pytest.mark.parametrize(("path", "media_type"), ASSETS)
async def test_asset_is_served_with_its_type_when_asked(
    client: httpx.AsyncClient, path: str, media_type: str
):
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["etag"].startswith('"')
    assert response.content


@pytest.mark.parametrize(("path", "media_type"), ASSETS)
async def test_asset_is_not_sent_again_when_unchanged(
    client: httpx.AsyncClient, path: str, media_type: str
):
    etag = (await client.get(path)).headers["etag"]
    response = await client.get(path, headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag


async def test_page_allows_only_its_own_origin(client: httpx.AsyncClient):
    policy = (await client.get("/ui/")).headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assert "img-src 'self' blob:" in policy


async def test_page_names_its_assets_and_the_api_relatively(client: httpx.AsyncClient):
    page = (await client.get("/ui/")).text
    script = (await client.get("/ui/app.js")).text
    assert 'href="style.css"' in page
    assert 'src="app.js"' in page
    # An absolute path would miss a reverse proxy's path prefix.
    assert '"/v1' not in script
    assert "`/v1" not in script
    assert 'new URL("../", document.baseURI)' in script


async def test_dictionary_names_tags_repeating_groups_and_uids(client: httpx.AsyncClient):
    dictionary = json.loads((await client.get("/ui/dictionary.json")).content)
    assert dictionary["tags"]["00100010"] == "PatientName"
    assert dictionary["tags"]["7FE00010"] == "PixelData"
    assert dictionary["tags"]["60XX3000"] == "OverlayData"
    assert dictionary["uids"]["1.2.840.10008.5.1.4.1.1.2"] == "CT Image Storage"


@pytest.mark.parametrize("path", ["/ui/index.html", "/ui/missing.js", "/ui:list"])
async def test_path_that_is_no_asset_is_not_found(client: httpx.AsyncClient, path: str):
    response = await client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"


async def test_page_takes_only_get(client: httpx.AsyncClient):
    response = await client.post("/ui/app.js")
    assert response.status_code == 404
    assert response.headers["allow"] == "GET, HEAD"


async def test_access_log_names_the_route():
    app, stream = rest_app()
    async with client_for(app) as client:
        await client.get("/ui/style.css")
    [line] = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert (entry["method"], entry["code"]) == ("GET /ui/style.css", "OK")
