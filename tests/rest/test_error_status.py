"""Every error body's `status` agrees with its HTTP code, by one documented table.

`STATUS_OF_HTTP` (in `support.py`) is the table (the README's): the HTTP status of each
canonical code as google/rpc/code.proto maps them, plus the statuses DICOMweb answers that no
canonical code maps to (406, 413, 415), whose body says INVALID_ARGUMENT. Each kind of error the
server emits over HTTP is provoked here against a real started server, and its body is checked
against the table; `support.agrees` also checks every response of the discovery walk
(`test_discovery_surface`) and of the unknown verbs (`test_unknown_verbs`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp

from dicomstore.api.status import code_of_http, status_of
from dicomstore.core.errors import Code
from tests.conftest import DATASET, running
from tests.rest.support import (
    DICOM_SERVICE,
    STATUS_OF_HTTP,
    Failing,
    agrees,
    client_for,
    create_dataset_and_store,
    rest_app,
)

STORE = f"{DATASET}/dicomStores/s"
WEB = f"/v1/{STORE}/dicomWeb"
STUDY = "1.2.826.0.1.3"


@pytest.mark.google_behaviour("error-model")
@pytest.mark.parametrize("code", [c for c in Code if c is not Code.OK], ids=lambda c: c.name)
def test_every_code_answers_an_http_status_of_the_table(code: Code) -> None:
    status = status_of(code)
    assert status.name == code.name
    assert code.name in STATUS_OF_HTTP[status.http]


@pytest.mark.parametrize("http", sorted(STATUS_OF_HTTP))
def test_every_http_status_of_the_table_stands_for_one_of_its_codes(http: int) -> None:
    # What an HTTP-level error (and the access log of a response) is named.
    assert code_of_http(http).name in STATUS_OF_HTTP[http]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A server with a store, whose STOW-RS takes instances of up to 1,000 bytes."""
    async with running(tmp_path, max_instance_bytes=1000) as app:
        assert app.http_app is not None
        async with client_for(app.http_app) as http:
            await create_dataset_and_store(http, "s")
            yield http


# (what, HTTP method, path, request keyword arguments, HTTP status, status name)
ERRORS = [
    (
        "malformed JSON",
        "POST",
        f"/v1/{DATASET}/dicomStores",
        {"content": b"{"},
        400,
        "INVALID_ARGUMENT",
    ),
    (
        "unknown query parameter",
        "GET",
        f"/v1/{STORE}",
        {"params": {"x": "1"}},
        400,
        "INVALID_ARGUMENT",
    ),
    ("path not UTF-8", "GET", f"/v1/{DATASET}/dicomStores/%FF", {}, 400, "INVALID_ARGUMENT"),
    (
        "bad multipart boundary",
        "POST",
        f"{WEB}/studies",
        {
            "headers": {
                "content-type": 'multipart/related; type="application/dicom"; boundary="a b "'
            }
        },
        400,
        "INVALID_ARGUMENT",
    ),
    (
        "unsupported QIDO key",
        "GET",
        f"{WEB}/studies",
        {"params": {"SOPClassUID": "1.2"}},
        400,
        "INVALID_ARGUMENT",
    ),
    ("no such path", "GET", "/v1/nothing", {}, 404, "NOT_FOUND"),
    (
        "verb of another API area",
        "POST",
        f"/v1/{DATASET}/fhirStores/f:import",
        {},
        404,
        "NOT_FOUND",
    ),
    ("no such store", "GET", f"/v1/{DATASET}/dicomStores/missing", {}, 404, "NOT_FOUND"),
    ("no such study", "GET", f"{WEB}/studies/1.2.3/metadata", {}, 404, "NOT_FOUND"),
    ("another HTTP method", "PUT", f"/v1/{STORE}", {}, 404, "NOT_FOUND"),
    ("another HTTP method on DICOMweb", "PUT", f"{WEB}/studies", {}, 404, "NOT_FOUND"),
    (
        "unsatisfiable Accept",
        "GET",
        f"{WEB}/studies",
        {"headers": {"accept": "image/png"}},
        406,
        "INVALID_ARGUMENT",
    ),
    (
        "store exists",
        "POST",
        f"/v1/{DATASET}/dicomStores",
        {"params": {"dicomStoreId": "s"}},
        409,
        "ALREADY_EXISTS",
    ),
    (
        "instance over the size limit",
        "POST",
        f"{WEB}/studies",
        {"content": bytes(2000), "headers": {"content-type": "application/dicom"}},
        413,
        "INVALID_ARGUMENT",
    ),
    (
        "STOW of text",
        "POST",
        f"{WEB}/studies",
        {"content": b"x", "headers": {"content-type": "text/plain"}},
        415,
        "INVALID_ARGUMENT",
    ),
    ("unknown verb", "GET", f"/v1/{STORE}:getIamPolicy", {}, 501, "UNIMPLEMENTED"),
    (
        "unknown verb on DICOMweb",
        "POST",
        f"{WEB}/studies/{STUDY}:setBlobStorageSettings",
        {},
        501,
        "UNIMPLEMENTED",
    ),
]


@pytest.mark.google_behaviour("error-model")
@pytest.mark.parametrize(
    ("method", "path", "kwargs", "http", "status"),
    [error[1:] for error in ERRORS],
    ids=[error[0] for error in ERRORS],
)
async def test_error_body_status_agrees_with_its_http_code(
    served: httpx.AsyncClient,
    method: str,
    path: str,
    kwargs: dict[str, object],
    http: int,
    status: str,
) -> None:
    response = await served.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == http, response.text
    assert response.json()["error"]["status"] == status
    agrees(response)


@pytest.fixture
def failing() -> ASGIApp:
    app, _ = rest_app((DICOM_SERVICE, Failing()))
    return app


@pytest.mark.google_behaviour("error-model")
@pytest.mark.parametrize(
    ("store_id", "http"), [("boom", 500), ("Unavailable", 503), ("Cancelled", 499)]
)
async def test_unexpected_and_server_side_errors_agree(
    failing: ASGIApp, store_id: str, http: int
) -> None:
    async with client_for(failing) as client:
        response = await client.get(f"/v1/{DATASET}/dicomStores/{store_id}")
    assert response.status_code == http
    agrees(response)
