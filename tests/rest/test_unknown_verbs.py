"""The general rule for custom methods (`:verb`) the server does not have, over the real app.

A bare `:` in the last segment starts a verb and is never part of an id. A verb no route serves,
on a path whose verb-less form some route serves, is 501 UNIMPLEMENTED naming
`healthcare.<collections>.<verb>`, whatever the HTTP method; on any other path (the other areas
of Google's API) it is 404 NOT_FOUND, like any path no route serves. An encoded `%3A` is part of
an id, not a verb.
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import DATASET, LOCATION
from tests.rest.support import check_agreement, error

STORE = f"{DATASET}/dicomStores/s"
INSTANCE = f"{STORE}/dicomWeb/studies/1.2/series/1.2.3/instances/1.2.3.4"
DATASETS = "healthcare.projects.locations.datasets"
STUDIES = f"{DATASETS}.dicomStores.dicomWeb.studies"


@pytest.fixture
def client(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The client, checking that every error body agrees with its HTTP status."""
    client.event_hooks["response"].append(check_agreement)
    return client


@pytest.mark.google_behaviour("unimplemented-methods")
@pytest.mark.parametrize(
    ("path", "collections"),
    [
        (f"{LOCATION}/datasets", DATASETS),
        (DATASET, DATASETS),
        (f"{DATASET}/dicomStores", f"{DATASETS}.dicomStores"),
        (STORE, f"{DATASETS}.dicomStores"),
        (f"{DATASET}/operations", f"{DATASETS}.operations"),
        (f"{DATASET}/operations/42", f"{DATASETS}.operations"),
        (f"{STORE}/dicomWeb/studies", STUDIES),
        (f"{STORE}/dicomWeb/series", f"{DATASETS}.dicomStores.dicomWeb.series"),
        (f"{STORE}/dicomWeb/studies/1.2", STUDIES),
        (f"{STORE}/dicomWeb/studies/1.2/metadata", f"{STUDIES}.metadata"),
        (f"{STORE}/dicomWeb/studies/1.2/series/1.2.3", f"{STUDIES}.series"),
        (INSTANCE, f"{STUDIES}.series.instances"),
        (f"{INSTANCE}/frames/1", f"{STUDIES}.series.instances.frames"),
        (f"{INSTANCE}/bulkdata/7FE00010", f"{STUDIES}.series.instances.bulkdata"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
async def test_unknown_verb_on_a_served_path_is_501_naming_it(
    client: httpx.AsyncClient, path: str, collections: str, method: str
) -> None:
    response = await client.request(method, f"/v1/{path}:frobnicate", content=b"{}")
    message = error(response, 501, "UNIMPLEMENTED")
    assert message == f"method {collections}.frobnicate is not implemented by this server"


@pytest.mark.parametrize(
    "path",
    [
        f"{DATASET}/fhirStores/f:export",
        f"{DATASET}/fhirStores/f/fhir/Patient/1:foo",
        f"{DATASET}/hl7V2Stores/h:import",
        f"{DATASET}/consentStores/c:checkDataAccess",
        f"{DATASET}/dataMapperWorkspaces/w:getIamPolicy",
        f"{LOCATION}:get",
        "projects/p:getIamPolicy",
        f"{STORE}/dicomWeb/nothing:x",
        f"{STORE}:",
        f"{DATASET}/dicomStores/:getIamPolicy",
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_verb_on_a_path_no_route_serves_is_404(
    client: httpx.AsyncClient, path: str, method: str
) -> None:
    response = await client.request(method, f"/v1/{path}")
    assert error(response, 404, "NOT_FOUND").startswith("no method is served at")


@pytest.mark.google_behaviour("rest-bindings")
async def test_encoded_colon_in_a_study_uid_is_part_of_the_uid(
    client: httpx.AsyncClient,
) -> None:
    await client.post(f"/v1/{LOCATION}/datasets", params={"datasetId": "test-dataset"})
    await client.post(f"/v1/{DATASET}/dicomStores", params={"dicomStoreId": "s"})
    response = await client.get(f"/v1/{STORE}/dicomWeb/studies/1.2%3AgetStudyMetrics/metadata")
    assert "1.2:getStudyMetrics" in error(response, 404, "NOT_FOUND")


@pytest.mark.google_behaviour("wrong-http-method")
async def test_known_verb_with_another_http_method_is_404_not_501(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(f"/v1/{STORE}:import")
    assert error(response, 404, "NOT_FOUND").startswith("Method not found")
    assert response.headers["allow"] == "POST"
