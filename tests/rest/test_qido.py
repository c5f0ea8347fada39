"""QIDO-RS through the ASGI app of a real started server, in both DICOMweb modes.

Instances are stored through the core's one ingest path (`Instances.ingest`) on the server's own
catalog and blobs, from pydicom's test files and generated ones, then searched over HTTP with
httpx's in-process transport. The query language and matching rules are pinned in
`tests/unit/test_search.py`; these tests pin what HTTP adds: routes, status codes, bodies,
media types and headers, and each difference between the two modes.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dicomstore.core.instances import Ingested, Instances
from dicomstore.core.names import DicomStoreName
from tests.conftest import DATASET, running
from tests.rest.support import client_for, create_dataset_and_store
from tests.unit.dicom.dicomfiles import data_file, new_instance, part10

STORE = f"{DATASET}/dicomStores/qido"
WEB = f"/v1/{STORE}/dicomWeb"
DICOM_JSON = "application/dicom+json; charset=utf-8"
FILES = ("CT_small.dcm", "MR_small.dcm", "chrH31.dcm", "chrGerm.dcm")
CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
CT_SERIES = "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"
CT_INSTANCE = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
MR_STUDY = "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457"
JAPANESE_STUDY = "1.3.6.1.4.1.5962.1.2.0.1175775771.5702.0"  # Yamada^Tarou=山田^太郎=...
GERMAN_STUDY = "1.3.6.1.4.1.5962.1.2.0.1175775772.5723.0"  # Äneas^Rüdiger
GENERATED_STUDY = "1.2.826.0.1.3"


async def serve(tmp_path: Path, mode: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running(tmp_path, dicomweb_mode=mode) as server:
        assert server.http_app is not None and server.operations is not None
        async with client_for(server.http_app) as client:
            await create_dataset_and_store(client, "qido")
            instances = Instances(server.catalog, server.blobs, server.operations)
            for name in FILES:
                with data_file(name).open("rb") as source:
                    await stored(instances, source)
            for number in (1, 2, 3):
                ds = new_instance(
                    SOPInstanceUID=f"1.2.826.0.1.3.4.{number}",
                    StudyDate="20200105",
                    AccessionNumber="ACC1",
                    InstanceNumber=number,
                )
                await stored(instances, io.BytesIO(part10(ds)))
            yield client


async def stored(instances: Instances, source: Any) -> Ingested:
    result = await instances.ingest(DicomStoreName.parse(STORE), source)
    assert result.stored, result.detail
    return result


@pytest.fixture
async def google(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for client in serve(tmp_path, "google"):
        yield client


@pytest.fixture
async def standard(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for client in serve(tmp_path, "standard"):
        yield client


@pytest.fixture(params=["google", "standard"])
async def either(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    async for client in serve(tmp_path, str(request.param)):
        yield client


def found(response: httpx.Response, tag: str = "0020000D") -> list[str]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == DICOM_JSON
    assert "warning" not in response.headers
    return [item[tag]["Value"][0] for item in response.json()]


def error_message(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == status
    return str(body["message"])


# --- routes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "tag", "expected"),
    [
        ("/studies?PatientID=1CT1", "0020000D", [CT_STUDY]),
        ("/series?PatientID=1CT1", "0020000E", [CT_SERIES]),
        ("/instances?PatientID=1CT1", "00080018", [CT_INSTANCE]),
        (f"/studies/{CT_STUDY}/series", "0020000E", [CT_SERIES]),
        (f"/studies/{CT_STUDY}/instances", "00080018", [CT_INSTANCE]),
        (f"/studies/{CT_STUDY}/series/{CT_SERIES}/instances", "00080018", [CT_INSTANCE]),
        (
            f"/studies/{GENERATED_STUDY}/instances?limit=2&offset=1",
            "00080018",
            ["1.2.826.0.1.3.4.2", "1.2.826.0.1.3.4.3"],
        ),
    ],
)
async def test_each_search_route_answers_dicom_json(
    either: httpx.AsyncClient, path: str, tag: str, expected: list[str]
) -> None:
    assert found(await either.get(WEB + path), tag) == expected


async def test_all_studies_are_listed_with_their_counts(google: httpx.AsyncClient) -> None:
    response = await google.get(WEB + "/studies")
    studies = {item["0020000D"]["Value"][0]: item for item in response.json()}
    assert len(found(response)) == len(FILES) + 1
    generated = studies[GENERATED_STUDY]
    assert generated["00201208"] == {"vr": "IS", "Value": [3]}
    assert generated["00201206"] == {"vr": "IS", "Value": [1]}
    assert generated["00080061"] == {"vr": "CS", "Value": ["OT"]}
    assert studies[CT_STUDY]["00080061"] == {"vr": "CS", "Value": ["CT"]}


@pytest.mark.google_behaviour("qido-missing-attributes")
async def test_results_carry_missing_default_attributes_as_their_vr_only(
    google: httpx.AsyncClient,
) -> None:
    (study,) = (await google.get(WEB + "/studies", params={"AccessionNumber": "ACC1"})).json()
    assert study["00080050"] == {"vr": "SH", "Value": ["ACC1"]}
    assert study["00080030"] == {"vr": "TM"}  # StudyTime: not in the instances
    assert study["00080090"] == {"vr": "PN"}
    assert list(study) == sorted(study)


# --- matching ----------------------------------------------------------------------------


@pytest.mark.google_behaviour("qido-searchable-keys", "qido-date-range", "qido-fuzzy-matching")
@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"PatientName": "CompressedSamples^CT1"}, [CT_STUDY]),
        ({"00100010": "CompressedSamples^CT1"}, [CT_STUDY]),
        ({"StudyDate": "20040101-20041231"}, [CT_STUDY, MR_STUDY]),
        ({"StudyDate": "20200101-"}, [GENERATED_STUDY]),
        # Any query word that starts any word of the name
        # (docs/google-behaviour.md#qido-fuzzy-matching).
        ({"PatientName": "compressedsamples ct", "fuzzymatching": "true"}, [CT_STUDY, MR_STUDY]),
        ({"PatientName": "ct1", "fuzzymatching": "true"}, [CT_STUDY]),
        ({"PatientName": "山田", "fuzzymatching": "true"}, [JAPANESE_STUDY]),
        ({"PatientName": "rudi", "fuzzymatching": "true"}, [GERMAN_STUDY]),
        ({"PatientName": "Aneas", "fuzzymatching": "true"}, [GERMAN_STUDY]),
        ({"PatientName": "Yamada^Tarou"}, [JAPANESE_STUDY]),
        ({"StudyInstanceUID": CT_STUDY, "alt": "json", "prettyPrint": "true"}, [CT_STUDY]),
    ],
)
async def test_google_mode_matches_exactly_with_date_ranges_and_fuzzy_names(
    google: httpx.AsyncClient, params: dict[str, str], expected: list[str]
) -> None:
    assert found(await google.get(WEB + "/studies", params=params)) == expected


@pytest.mark.google_behaviour("qido-no-match", "qido-wildcards")
async def test_google_mode_answers_no_match_with_204_and_no_body(
    google: httpx.AsyncClient,
) -> None:
    for params in (
        {"PatientID": "nobody"},
        {"PatientName": "Compressed*"},  # no wildcards: a literal name
        {"PatientName": "AENEAS", "fuzzymatching": "true"},  # "aeneas" does not start "aneas"
        {"offset": "100"},
    ):
        response = await google.get(WEB + "/studies", params=params)
        assert response.status_code == 204, response.text
        assert response.content == b""
    response = await google.get(WEB + "/studies/1.2.3/instances")
    assert response.status_code == 204


@pytest.mark.google_behaviour("qido-no-match")
async def test_standard_mode_answers_no_match_with_200_and_an_empty_array(
    standard: httpx.AsyncClient,
) -> None:
    response = await standard.get(WEB + "/studies", params={"PatientID": "nobody"})
    assert response.status_code == 200
    assert response.headers["content-type"] == DICOM_JSON
    assert response.json() == []


@pytest.mark.google_behaviour("qido-wildcards", "qido-searchable-keys")
@pytest.mark.parametrize(
    ("path", "params", "expected"),
    [
        ("/studies", {"PatientName": "Compressed*^CT?"}, [CT_STUDY]),
        ("/studies", {"ModalitiesInStudy": "CT"}, [CT_STUDY]),
        (
            "/studies",
            {"StudyInstanceUID": f"{CT_STUDY},{GENERATED_STUDY}"},
            [CT_STUDY, GENERATED_STUDY],
        ),
        ("/instances", {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"}, [CT_STUDY]),
        ("/series", {"Modality": "CT", "InstanceNumber": "1"}, [CT_STUDY]),
    ],
)
async def test_standard_mode_has_wildcards_and_every_indexed_attribute(
    standard: httpx.AsyncClient, path: str, params: dict[str, str], expected: list[str]
) -> None:
    assert found(await standard.get(WEB + path, params=params)) == expected


@pytest.mark.google_behaviour("qido-searchable-keys", "qido-unsupported-key")
@pytest.mark.parametrize(
    ("path", "params", "key"),
    [
        ("/instances", {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"}, "SOPClassUID"),
        ("/studies", {"ModalitiesInStudy": "CT"}, "ModalitiesInStudy"),
        ("/studies", {"Modality": "CT"}, "Modality"),
    ],
)
async def test_google_mode_refuses_keys_google_does_not_search_on(
    google: httpx.AsyncClient, path: str, params: dict[str, str], key: str
) -> None:
    response = await google.get(WEB + path, params=params)
    assert key in error_message(response, 400)
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


@pytest.mark.google_behaviour("qido-unsupported-key")
@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"includefield": "AvailableTransferSyntaxUID"}, "includefield"),
        ({"includefield": "NotAKeyword"}, "NotAKeyword"),
        ({"limit": "0"}, "limit"),
        ({"offset": "1000001"}, "offset"),
        ({"fuzzymatching": "maybe"}, "fuzzymatching"),
        ({"StudyDate": "20201301"}, "StudyDate"),
        ({"Manufacturer": "ACME"}, "Manufacturer"),
        ({"bogus": "1"}, "bogus"),
    ],
)
async def test_bad_query_parameters_are_400_naming_them(
    either: httpx.AsyncClient, params: dict[str, str], key: str
) -> None:
    assert key in error_message(await either.get(WEB + "/studies", params=params), 400)


# --- results, limits and media types -------------------------------------------------------------


@pytest.mark.google_behaviour("qido-includefield")
async def test_includefield_adds_attributes_by_keyword_tag_or_all(
    google: httpx.AsyncClient,
) -> None:
    url = WEB + f"/studies/{CT_STUDY}/series/{CT_SERIES}/instances"
    (plain,) = (await google.get(url)).json()
    assert "00180050" not in plain  # SliceThickness: not a default attribute
    response = await google.get(url + "?includefield=SliceThickness,00280030")
    (some,) = response.json()
    assert some["00180050"]["vr"] == "DS"
    assert some["00280030"]["vr"] == "DS"
    (everything,) = (await google.get(url, params={"includefield": "all"})).json()
    assert {"00180050", "00280030", "00200032"} <= set(everything)
    assert "7FE00010" not in everything  # bulk data is WADO-RS's


@pytest.mark.google_behaviour("qido-limit-offset")
async def test_limit_above_the_maximum_is_lowered_without_a_warning(
    google: httpx.AsyncClient,
) -> None:
    response = await google.get(WEB + "/studies", params={"limit": "999999"})
    assert len(found(response)) == len(FILES) + 1
    response = await google.get(WEB + "/studies", params={"limit": "1"})
    assert len(found(response)) == 1  # more exist: still no Warning header


@pytest.mark.google_behaviour("qido-media-types")
@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (None, DICOM_JSON),
        ("application/dicom+json", DICOM_JSON),
        ("*/*", DICOM_JSON),
        ("application/*", DICOM_JSON),
        ("application/json", "application/json; charset=utf-8"),
        ("application/json, application/dicom+json;q=0.5", "application/json; charset=utf-8"),
        (
            'multipart/related; type="application/dicom+xml", application/json;q=0.1',
            ("application/json; charset=utf-8"),
        ),
    ],
)
async def test_results_are_json_when_the_client_accepts_it(
    google: httpx.AsyncClient, accept: str | None, media_type: str
) -> None:
    headers = {"accept": accept} if accept is not None else {}
    response = await google.get(WEB + "/studies", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type


@pytest.mark.google_behaviour("qido-media-types")
@pytest.mark.parametrize(
    "accept",
    ['multipart/related; type="application/dicom+xml"', "image/jpeg", "application/json;q=0"],
)
async def test_other_media_types_are_406(google: httpx.AsyncClient, accept: str) -> None:
    response = await google.get(WEB + "/studies", headers={"accept": accept})
    assert "application/dicom+json" in error_message(response, 406)
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


@pytest.mark.google_behaviour("retrieve-missing-resource")
async def test_search_in_a_missing_store_is_404(google: httpx.AsyncClient) -> None:
    response = await google.get(f"/v1/{DATASET}/dicomStores/missing/dicomWeb/studies")
    error_message(response, 404)


@pytest.mark.google_behaviour("wrong-http-method")
async def test_search_routes_take_only_get(google: httpx.AsyncClient) -> None:
    response = await google.delete(WEB + "/instances")
    assert response.status_code == 404
    assert response.headers["allow"] == "GET, HEAD"
