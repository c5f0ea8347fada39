"""CORS for web viewers (`--cors-origins`): off by default; for the listed origins, every answer
(errors and the 500 included) carries the CORS headers and preflights are answered and logged.

Over the started server's ASGI app; the flag and the env twin of `dicomstore serve` over a real
socket; a real browser running dicomweb-client is in `tests/browser/test_cors_viewer.py`.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from dicomstore import config
from dicomstore.api.rest.app import create_app
from dicomstore.api.rest.cors import PREFLIGHT_MAX_AGE_S
from dicomstore.logs import AccessLog
from tests.conftest import DATASET, running
from tests.e2e.server import start_server
from tests.rest.support import (
    DICOM_SERVICE,
    MULTIPART,
    MULTIPART_DICOM,
    STUDY,
    WEB,
    Failing,
    client_for,
    create_wado_store,
    error,
    image,
    multipart_body,
    parts_of,
)
from tests.unit.dicom.dicomfiles import part10

VIEWER = "http://viewer.test:3000"
OTHER = "https://elsewhere.test"
SOP = "1.2.826.0.1.3.1.1"
INSTANCE = f"{WEB}/studies/{STUDY}/series/1.2.826.0.1.3.1/instances/{SOP}"
EXPOSED = {
    "content-type",
    "content-length",
    "content-location",
    "location",
    "x-request-id",
    "warning",
}


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def allows(response: httpx.Response, origin: str) -> None:
    """An answer a page of `origin` may read, with the headers a viewer reads exposed."""
    assert response.headers["access-control-allow-origin"] == origin
    exposed = {
        h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")
    }
    assert exposed == EXPOSED
    assert "access-control-allow-credentials" not in response.headers
    assert "x-request-id" in response.headers
    if origin != "*":  # the answer depends on Origin: caches must keep one per origin
        assert "Origin" in response.headers["vary"]


def preflight(method: str, origin: str, headers: str | None = None) -> dict[str, str]:
    request = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        request["Access-Control-Request-Headers"] = headers
    return request


@asynccontextmanager
async def served(tmp_path: Path, cors_origins: str = "") -> AsyncIterator[httpx.AsyncClient]:
    """A client of a started server with `--cors-origins` and the store `support.STORE`."""
    async with running(tmp_path, cors_origins=cors_origins) as app:
        assert app.http_app is not None
        async with client_for(app.http_app) as http:
            await create_wado_store(http)
            yield http


@pytest.fixture
async def viewer_server(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A server allowing VIEWER, with an empty store."""
    async with served(tmp_path, VIEWER) as http:
        yield http


async def stow(http: httpx.AsyncClient, origin: str) -> httpx.Response:
    body = multipart_body([({"Content-Type": "application/dicom"}, part10(image(SOP)))])
    headers = {"Content-Type": MULTIPART, "Accept": "application/dicom+json", "Origin": origin}
    return await http.post(f"{WEB}/studies", content=body, headers=headers)


# --- off by default -------------------------------------------------------------------------------


async def test_without_the_setting_no_cors_header_is_sent(tmp_path: Path) -> None:
    async with served(tmp_path) as http:
        stored = await stow(http, VIEWER)
        assert stored.status_code == 200, stored.text
        searched = await http.get(f"{WEB}/studies", headers={"Origin": VIEWER})
        assert searched.status_code == 200
        missing = await http.get(f"{WEB}/studies/1.2.3", headers={"Origin": VIEWER})
        error(missing, 404, "NOT_FOUND")
        # A preflight is what it was before CORS: a method this path does not have.
        asked = await http.options(f"{WEB}/studies", headers=preflight("POST", VIEWER))
        assert "Method not found" in error(asked, 404, "NOT_FOUND")
        assert asked.headers["allow"] == "GET, HEAD, POST"
        for response in (stored, searched, missing, asked):
            assert cors_headers(response) == {}
            assert "origin" not in response.headers.get("vary", "").lower()


# --- an allowed origin ----------------------------------------------------------------------------


async def test_an_allowed_origin_reads_stow_qido_and_wado(viewer_server: httpx.AsyncClient) -> None:
    http = viewer_server
    stored = await stow(http, VIEWER)
    assert stored.status_code == 200, stored.text
    allows(stored, VIEWER)
    searched = await http.get(
        f"{WEB}/studies", headers={"Origin": VIEWER, "Accept": "application/dicom+json"}
    )
    assert [study["0020000D"]["Value"] for study in searched.json()] == [[STUDY]]
    allows(searched, VIEWER)
    metadata = await http.get(f"{INSTANCE}/metadata", headers={"Origin": VIEWER})
    assert metadata.json()[0]["00080018"]["Value"] == [SOP]
    allows(metadata, VIEWER)
    retrieved = await http.get(INSTANCE, headers={"Origin": VIEWER, "Accept": MULTIPART_DICOM})
    [(_, data)] = parts_of(retrieved, "application/dicom")
    assert data == part10(image(SOP))
    allows(retrieved, VIEWER)


async def test_errors_carry_the_cors_headers_too(viewer_server: httpx.AsyncClient) -> None:
    http = viewer_server
    missing = await http.get(f"{WEB}/studies/1.2.3/metadata", headers={"Origin": VIEWER})
    error(missing, 404, "NOT_FOUND")
    allows(missing, VIEWER)
    no_route = await http.get("/v2/nothing", headers={"Origin": VIEWER})
    error(no_route, 404, "NOT_FOUND")
    allows(no_route, VIEWER)
    bad_filter = await http.get(f"{WEB}/studies?limit=many", headers={"Origin": VIEWER})
    error(bad_filter, 400, "INVALID_ARGUMENT")
    allows(bad_filter, VIEWER)
    wrong_method = await http.put(f"{WEB}/studies", headers={"Origin": VIEWER})
    error(wrong_method, 404, "NOT_FOUND")
    allows(wrong_method, VIEWER)


def failing_app(cors_origins: str) -> tuple[httpx.AsyncClient, io.StringIO]:
    """An app whose GetDicomStore fails as its store id says (`support.Failing`); its log."""
    stream = io.StringIO()
    app = create_app(
        lambda: True,
        [(DICOM_SERVICE, Failing())],
        AccessLog(stream, "json"),
        cors_origins=cors_origins,
    )
    return client_for(app), stream


def access_lines(stream: io.StringIO) -> list[tuple[str, str]]:
    return [(e["method"], e["code"]) for e in map(json.loads, stream.getvalue().splitlines())]


async def test_the_500_for_anything_unexpected_carries_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, stream = failing_app(VIEWER)
    async with client as http:
        response = await http.get(f"/v1/{DATASET}/dicomStores/broken", headers={"Origin": VIEWER})
    message = error(response, 500, "INTERNAL")
    assert message == f"internal error (request id {response.headers['x-request-id']})"
    allows(response, VIEWER)
    # Logged once, with its traceback, and once in the access log.
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert record.exc_info is not None and "secret internal detail" in str(record.exc_info[1])
    [(method, code)] = access_lines(stream)
    assert code == "INTERNAL" and method.startswith("GET /v1/{name=")


async def test_a_stow_preflight_is_answered(viewer_server: httpx.AsyncClient) -> None:
    # What Chromium sends before dicomweb-client's storeInstances (multipart/related is no
    # CORS-safelisted Content-Type).
    response = await viewer_server.options(
        f"{WEB}/studies", headers=preflight("POST", VIEWER, "content-type,authorization")
    )
    assert (response.status_code, response.text) == (200, "OK")
    assert response.headers["access-control-allow-origin"] == VIEWER
    methods = response.headers["access-control-allow-methods"].split(", ")
    assert set(methods) == {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
    allowed = {h.lower() for h in response.headers["access-control-allow-headers"].split(", ")}
    assert {"accept", "content-type", "authorization", "x-request-id", "range"} <= allowed
    assert response.headers["access-control-max-age"] == str(PREFLIGHT_MAX_AGE_S)
    assert "access-control-allow-credentials" not in response.headers


async def test_a_preflight_is_logged_like_any_request() -> None:
    client, stream = failing_app(VIEWER)
    path = f"/v1/{DATASET}/dicomStores/fine/dicomWeb/studies"
    async with client as http:
        response = await http.options(path, headers=preflight("POST", VIEWER, "content-type"))
    assert response.status_code == 200
    assert access_lines(stream) == [(f"OPTIONS {path}", "OK")]


async def test_a_preflight_without_a_request_method_is_an_ordinary_options() -> None:
    client, _ = failing_app(VIEWER)
    async with client as http:
        response = await http.options(f"/v1/{DATASET}/dicomStores/fine", headers={"Origin": VIEWER})
    assert "Method not found" in error(response, 404, "NOT_FOUND")
    allows(response, VIEWER)


# --- other origins, and every origin --------------------------------------------------------------


async def test_another_origin_is_not_allowed(viewer_server: httpx.AsyncClient) -> None:
    http = viewer_server
    assert (await stow(http, VIEWER)).status_code == 200
    for origin in (OTHER, "http://viewer.test", "http://viewer.test:3001", "null"):
        # Answered as to any client; without Access-Control-Allow-Origin, a browser keeps the
        # answer from the page.
        searched = await http.get(f"{WEB}/studies", headers={"Origin": origin})
        assert searched.status_code == 200
        assert "access-control-allow-origin" not in searched.headers
        asked = await http.options(f"{WEB}/studies", headers=preflight("POST", origin))
        assert (asked.status_code, asked.text) == (400, "Disallowed CORS origin")
        assert "access-control-allow-origin" not in asked.headers


async def test_an_unlisted_request_header_fails_its_preflight(
    viewer_server: httpx.AsyncClient,
) -> None:
    asked = await viewer_server.options(
        f"{WEB}/studies", headers=preflight("GET", VIEWER, "x-custom-thing")
    )
    assert asked.status_code == 400
    assert asked.text == "Disallowed CORS headers"


async def test_a_head_with_authorization_is_preflighted_like_a_get(
    viewer_server: httpx.AsyncClient,
) -> None:
    asked = await viewer_server.options(
        f"{WEB}/studies", headers=preflight("HEAD", VIEWER, "authorization")
    )
    assert asked.status_code == 200, asked.text


async def test_a_listed_origin_may_reach_a_private_network_and_a_star_may_not(
    tmp_path: Path,
) -> None:
    private = {"Access-Control-Request-Private-Network": "true"}
    async with served(tmp_path / "listed", VIEWER) as http:
        asked = await http.options(f"{WEB}/studies", headers=preflight("GET", VIEWER) | private)
        assert asked.status_code == 200, asked.text
        assert asked.headers["access-control-allow-private-network"] == "true"
    async with served(tmp_path / "star", "*") as http:
        asked = await http.options(f"{WEB}/studies", headers=preflight("GET", OTHER) | private)
        assert (asked.status_code, asked.text) == (400, "Disallowed CORS private-network")
        assert "access-control-allow-private-network" not in asked.headers


async def test_every_origin_with_a_star(tmp_path: Path) -> None:
    async with served(tmp_path, "*") as http:
        stored = await stow(http, OTHER)
        assert stored.status_code == 200, stored.text
        allows(stored, "*")
        asked = await http.options(
            f"{WEB}/studies", headers=preflight("POST", OTHER, "content-type, x-custom-thing")
        )
        assert asked.status_code == 200, asked.text
        assert asked.headers["access-control-allow-origin"] == "*"
        assert asked.headers["access-control-allow-headers"] == "content-type, x-custom-thing"


async def test_several_origins_each_get_their_own(tmp_path: Path) -> None:
    setting = config.check_cors_origins(f"{VIEWER}, HTTPS://Elsewhere.test:443/")
    async with served(tmp_path, setting) as http:
        for origin in (VIEWER, OTHER):
            response = await http.get("/healthz", headers={"Origin": origin})
            allows(response, origin)


# --- the flag and its environment twin ------------------------------------------------------------


def load(*argv: str, env: dict[str, str] | None = None) -> config.Settings:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return config.load(parser.parse_args(list(argv)), env or {})


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("", ""),
        ("*", "*"),
        (" * ", "*"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("HTTP://LocalHost:80/", "http://localhost"),
        (
            "https://ohif.example.org:443, http://127.0.0.1:3000",
            "https://ohif.example.org,http://127.0.0.1:3000",
        ),
        ("http://[::1]:3000,http://[::1]:3000", "http://[::1]:3000"),
    ],
)
def test_origins_are_normalised_as_browsers_send_them(value: str, stored: str) -> None:
    assert load("--cors-origins", value).cors_origins == stored
    assert load(env={"DICOMSTORE_CORS_ORIGINS": value}).cors_origins == stored


def test_the_flag_wins_over_the_environment() -> None:
    settings = load("--cors-origins", VIEWER, env={"DICOMSTORE_CORS_ORIGINS": "*"})
    assert settings.cors_origins == VIEWER
    assert load().cors_origins == ""


@pytest.mark.parametrize(
    "entry",
    [
        "nonsense",
        "*",
        "ftp://viewer.test",
        "http://viewer.test/ohif",
        "http://viewer.test?x=1",
        "http://user@viewer.test",
        "http://viewer.test:99999",
        "http://viewer.test:",
        "http://",
    ],
)
def test_a_bad_entry_is_refused_by_name(entry: str) -> None:
    with pytest.raises(SystemExit) as caught:
        load("--cors-origins", f"{VIEWER},{entry}")
    message = str(caught.value)
    assert message.startswith(f"--cors-origins: {entry!r} is not an origin, http(s)://host[:port]")
    with pytest.raises(SystemExit) as caught:
        load(env={"DICOMSTORE_CORS_ORIGINS": f"{entry},{VIEWER}"})
    assert str(caught.value).startswith(f"DICOMSTORE_CORS_ORIGINS: {entry!r} is not an origin")


def test_serve_refuses_a_bad_value(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "dicomstore.cli", "serve", "--data-dir", str(tmp_path)]
    done = subprocess.run(
        [*command, "--cors-origins", "nonsense"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "--cors-origins: 'nonsense' is not an origin" in done.stderr
    assert not (tmp_path / "catalog.sqlite").exists()


def test_serve_takes_the_environment_twin(tmp_path: Path) -> None:
    env = {"DICOMSTORE_CORS_ORIGINS": VIEWER}
    with start_server(tmp_path / "data", env=env) as server:
        response = httpx.get(f"{server.http_url}/healthz", headers={"Origin": VIEWER})
        assert response.headers["access-control-allow-origin"] == VIEWER
        response = httpx.get(f"{server.http_url}/healthz", headers={"Origin": OTHER})
        assert "access-control-allow-origin" not in response.headers
