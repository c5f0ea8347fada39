"""DICOMweb delete through the ASGI app of a real started server
(docs/google-behaviour.md#delete-study-series, #delete-instance).

A study or series delete answers a long-running operation, pollable through the dataset's
operations; an instance delete answers `{}`. Store metrics follow each change.
"""

from __future__ import annotations

import httpx
import pytest

from dicomstore.core.instances import Instances
from tests.conftest import DATASET
from tests.rest.support import (
    OPERATION_METADATA,
    SERIES_A,
    SERIES_B,
    STORE,
    STUDY,
    WEB,
    error_message,
    image,
    ingest,
    ok,
    study_of_three,
    wait_done,
)
from tests.unit.dicom.dicomfiles import part10

INSTANCE_A1 = f"/studies/{STUDY}/series/{SERIES_A}/instances/1.2.826.0.1.3.1.1"


async def metrics(client: httpx.AsyncClient) -> dict[str, str]:
    body = ok(await client.get(f"/v1/{STORE}:getDICOMStoreMetrics"))
    return {key: body.get(key, "0") for key in ("studyCount", "seriesCount", "instanceCount")}


@pytest.mark.google_behaviour("delete-instance")
async def test_delete_instance_answers_empty_object_and_it_is_gone(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    await study_of_three(instances)
    assert ok(await client.delete(WEB + INSTANCE_A1)) == {}
    error_message(await client.get(WEB + INSTANCE_A1), 404, "NOT_FOUND")
    assert len((await client.get(f"{WEB}/studies/{STUDY}/metadata")).json()) == 2
    assert await metrics(client) == {"studyCount": "1", "seriesCount": "2", "instanceCount": "2"}


@pytest.mark.google_behaviour("delete-study-series", "operation-method-names")
@pytest.mark.parametrize(
    ("path", "method", "left"),
    [
        (f"/studies/{STUDY}/series/{SERIES_A}", "DeleteSeries", ("1", "1", "1")),
        (f"/studies/{STUDY}", "DeleteStudy", ("0", "0", "0")),
    ],
)
async def test_delete_study_or_series_answers_an_operation_that_deletes_it(
    client: httpx.AsyncClient,
    instances: Instances,
    path: str,
    method: str,
    left: tuple[str, str, str],
) -> None:
    await study_of_three(instances)
    operation = ok(await client.delete(WEB + path))
    assert operation["name"].startswith(f"{DATASET}/operations/")
    assert operation["metadata"]["@type"] == OPERATION_METADATA
    assert operation["metadata"]["apiMethodName"] == (
        f"google.cloud.healthcare.v1.dicomweb.DicomWebService.{method}"
    )
    done = await wait_done(client, operation["name"])
    assert "error" not in done
    assert done["metadata"]["counter"]["success"] == str(3 - int(left[2]))
    error_message(await client.get(WEB + path), 404, "NOT_FOUND")
    assert await metrics(client) == dict(
        zip(("studyCount", "seriesCount", "instanceCount"), left, strict=True)
    )


@pytest.mark.google_behaviour("delete-study-series")
async def test_delete_series_leaves_the_other_series(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    files = await study_of_three(instances)
    operation = ok(await client.delete(f"{WEB}/studies/{STUDY}/series/{SERIES_A}"))
    await wait_done(client, operation["name"])
    response = await client.get(
        f"{WEB}/studies/{STUDY}/series/{SERIES_B}",
        headers={"accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    assert response.status_code == 200
    assert files[2] in response.content


@pytest.mark.google_behaviour("delete-blocks-inserts")
async def test_deleted_study_can_be_stored_again_once_the_operation_is_done(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    await study_of_three(instances)
    operation = ok(await client.delete(f"{WEB}/studies/{STUDY}"))
    await wait_done(client, operation["name"])
    await ingest(instances, part10(image("1.2.826.0.1.3.1.1")))
    assert await metrics(client) == {"studyCount": "1", "seriesCount": "1", "instanceCount": "1"}


@pytest.mark.google_behaviour("retrieve-missing-resource")
@pytest.mark.parametrize(
    "path",
    [
        "/studies/9.9",
        f"/studies/{STUDY}/series/9.9",
        f"/studies/{STUDY}/series/{SERIES_A}/instances/9.9",
        f"/studies/9.9/series/{SERIES_A}/instances/1.2.826.0.1.3.1.1",
    ],
)
async def test_delete_of_something_missing_is_404(
    client: httpx.AsyncClient, instances: Instances, path: str
) -> None:
    await study_of_three(instances)
    error_message(await client.delete(WEB + path), 404, "NOT_FOUND")
    assert await metrics(client) == {"studyCount": "1", "seriesCount": "2", "instanceCount": "3"}


async def test_delete_in_an_unknown_store_is_404(client: httpx.AsyncClient, store: str) -> None:
    response = await client.delete(f"/v1/{DATASET}/dicomStores/nope/dicomWeb/studies/{STUDY}")
    error_message(response, 404, "NOT_FOUND")


@pytest.mark.google_behaviour("wrong-http-method")
async def test_other_methods_on_delete_paths_are_404_saying_which_are_served(
    client: httpx.AsyncClient, instances: Instances
) -> None:
    await study_of_three(instances)
    response = await client.put(WEB + INSTANCE_A1)
    error_message(response, 404, "NOT_FOUND")
    assert response.headers["allow"] == "DELETE, GET, HEAD"
