"""Orthanc's DICOMweb client against a real `dicomstore serve`: push, query, retrieve, read.

Orthanc 1.10 with its DICOMweb plugin 1.7 (Debian packages `orthanc`, `orthanc-dicomweb`) runs on
a private loopback port with its own storage (tests/e2e/orthanc.py), with dicomstore declared as
its DicomWeb server `dicomstore`. Everything goes through the plugin's client routes
(`/dicom-web/servers/dicomstore/{stow,qido,retrieve,get,delete}`), as an Orthanc user would, in
both DICOMweb modes (the QIDO wildcard test only in standard mode: google mode takes `*`
literally, as Google does).

The corpus: pydicom test files in several transfer syntaxes (explicit and implicit little
endian, big endian, deflated, JPEG baseline, JPEG 2000, RLE; images, an RT plan, a structured
report, a waveform), and generated studies of two patients (`ORTHANC-1`: two series, one of them
with a multi-megabyte instance; `ORTHANC-2`: one series).

What "identical" means: Orthanc 1.10 stores a received Part 10 file as it is (it rewrites no
File Meta Information), and dicomstore keeps and serves the stored bytes, so each round trip is
checked as whole files, byte for byte (SHA-256), file meta included. Metadata read through
`get` is checked against pydicom's DICOM JSON of the original file, attribute by attribute,
allowing only what PS3.18 F.2 allows: no group lengths or data set trailing padding, bulk data
as a BulkDataURI or InlineBinary, an empty sequence with or without `"Value": []`, and numbers
compared as numbers (`0` and `0.0`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from tests.e2e.orthanc import OrthancApi, OrthancError, orthanc_or_skip, tag_value
from tests.e2e.server import ServerProcess, external_target, start_server
from tests.unit.dicom.dicomfiles import data_file, part10

from dicomstore.dicom.multipart import MultipartReader, parse_content_type
from dicomstore_bench.servers import Target, orthanc_server

pytestmark = pytest.mark.skipif(
    external_target() is not None, reason="starts its own dicomstore and Orthanc processes"
)

STORE = "projects/p/locations/l/datasets/d/dicomStores/s"
REMOTE = "dicomstore"  # the name Orthanc knows dicomstore by
#: pydicom test files with distinct SOP Instance UIDs, one per transfer syntax or kind.
PYDICOM_FILES = (
    "CT_small.dcm",  # explicit VR little endian
    "MR_small.dcm",
    "ExplVR_BigEnd.dcm",  # explicit VR big endian
    "image_dfl.dcm",  # deflated explicit VR little endian
    "rtplan.dcm",  # implicit VR little endian, no pixel data
    "SC_rgb_dcmtk_+eb+cr.dcm",  # JPEG baseline
    "693_J2KI.dcm",  # JPEG 2000
    "SC_rgb_rle.dcm",  # RLE lossless
    "test-SR.dcm",  # structured report (nested sequences)
    "waveform_ecg.dcm",  # waveform
)


@dataclass(frozen=True)
class Instance:
    """One file of the corpus: its bytes and its data set."""

    name: str
    data: bytes
    ds: Dataset

    @property
    def uids(self) -> dict[str, str]:
        return {
            "Study": self.ds.StudyInstanceUID,
            "Series": self.ds.SeriesInstanceUID,
            "Instance": self.ds.SOPInstanceUID,
        }

    @property
    def path(self) -> str:
        """Its DICOMweb path (PS3.18 10.4.1)."""
        ds = self.ds
        return (
            f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )


def _generated(patient: str, series: list[tuple[str, str, list[int]]]) -> list[Instance]:
    """A study of `patient`: per series (modality, SOP class, rows of each instance)."""
    study = generate_uid(entropy_srcs=[patient])
    found = []
    for s_index, (modality, sop_class, sizes) in enumerate(series, 1):
        series_uid = generate_uid(entropy_srcs=[patient, str(s_index)])
        for number, rows in enumerate(sizes, 1):
            ds = Dataset()
            ds.SOPClassUID = sop_class
            ds.SOPInstanceUID = generate_uid(entropy_srcs=[patient, str(s_index), str(number)])
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uid
            ds.PatientName, ds.PatientID = f"Interop^{patient}", patient
            ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20260102", "101500", f"A-{patient}"
            ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", s_index, number
            ds.Modality = modality
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.Rows = ds.Columns = rows
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.PixelData = random.Random(number).randbytes(rows * rows * 2)
            data = part10(ds, ExplicitVRLittleEndian)
            found.append(
                Instance(f"{patient}-{s_index}-{number}", data, pydicom.dcmread(io.BytesIO(data)))
            )
    return found


@functools.cache
def corpus() -> tuple[Instance, ...]:
    files = [
        Instance(name, data_file(name).read_bytes(), pydicom.dcmread(data_file(name)))
        for name in PYDICOM_FILES
    ]
    ct, mr = CTImageStorage, MRImageStorage
    # 1,448 rows: a 4 MB instance, read by Orthanc and dicomstore in many chunks.
    first = _generated("ORTHANC-1", [("CT", ct, [64, 64, 1448]), ("MR", mr, [32, 32, 32])])
    second = _generated("ORTHANC-2", [("MR", mr, [16, 16])])
    return (*files, *first, *second)


def by_sop() -> dict[str, Instance]:
    return {instance.ds.SOPInstanceUID: instance for instance in corpus()}


def of_patient(patient_id: str) -> list[Instance]:
    return [i for i in corpus() if i.ds.get("PatientID") == patient_id]


def named(name: str) -> Instance:
    return next(i for i in corpus() if i.name == name)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- servers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dicomstore:
    process: ServerProcess
    mode: str

    @property
    def root(self) -> str:
        """The store's DICOMweb root, without a trailing slash."""
        return f"{self.process.http_url}/v1/{STORE}/dicomWeb"

    def sop_uids(self) -> set[str]:
        """The SOP Instance UIDs the store holds, asked directly (not through Orthanc)."""
        reply = httpx.get(f"{self.root}/instances", params={"limit": "1000"}, timeout=30)
        if reply.status_code == 204:
            return set()
        assert reply.status_code == 200, reply.text
        return {item["00080018"]["Value"][0] for item in reply.json()}

    def stored_bytes(self, instance: Instance) -> bytes:
        """The instance as dicomstore serves it, in its stored transfer syntax."""
        reply = httpx.get(
            f"{self.root}{instance.path}",
            headers={"Accept": "application/dicom; transfer-syntax=*"},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        return reply.content


@dataclass(frozen=True)
class World:
    """dicomstore in one DICOMweb mode, and an Orthanc that pushed the corpus to it."""

    dicomstore: Dicomstore
    orthanc: OrthancApi
    binaries: tuple[str, str]
    push_job: dict[str, Any]  # the STOW job's final state
    stored_after_push: frozenset[str]  # SOP Instance UIDs in dicomstore once it ended

    def other_orthanc(self, tmp: Path) -> contextlib.AbstractContextManager[Target]:
        """Another, empty Orthanc with dicomstore as its DICOMweb server."""
        return _orthanc(tmp, self.binaries, self.dicomstore, "orthanc")


def _orthanc(
    tmp: Path, binaries: tuple[str, str], store: Dicomstore, name: str
) -> contextlib.AbstractContextManager[Target]:
    servers = {REMOTE: {"Url": f"{store.root}/", "HasDelete": True}}
    return orthanc_server(tmp, *binaries, name=name, dicomweb_servers=servers)


# The servers are shared by the tests of one mode (starting them costs seconds); the tests only
# read, except those that push and delete data of their own.
@pytest.fixture(scope="module", params=["google", "standard"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    mode: str = request.param
    binaries = orthanc_or_skip()
    tmp = tmp_path_factory.mktemp(f"orthanc-{mode}")
    with start_server(tmp / "dicomstore", "--dicomweb-mode", mode) as process:
        base = f"{process.http_url}/v1/projects/p/locations/l"
        for url in (
            f"{base}/datasets?datasetId=d",
            f"{base}/datasets/d/dicomStores?dicomStoreId=s",
        ):
            httpx.post(url, json={}, timeout=30).raise_for_status()
        store = Dicomstore(process, mode)
        with _orthanc(tmp, binaries, store, "orthanc") as target:
            orthanc = OrthancApi.of(target, REMOTE)
            for instance in corpus():
                orthanc.upload(instance.data)
            job = orthanc.stow(orthanc.studies())
            stored = frozenset(store.sop_uids())
            yield World(store, orthanc, binaries, job, stored)


@pytest.fixture
def pushed(world: World) -> OrthancApi:
    """The Orthanc whose studies are all in dicomstore, pushed by its STOW-RS client."""
    assert world.push_job["State"] == "Success", world.push_job
    return world.orthanc


@pytest.fixture
def empty_orthanc(world: World, tmp_path: Path) -> Iterator[OrthancApi]:
    """A second Orthanc, empty, with the same DICOMweb server."""
    with world.other_orthanc(tmp_path) as target:
        yield OrthancApi.of(target, REMOTE)


# --- STOW -------------------------------------------------------------------------------------


def test_orthanc_pushes_studies_with_its_stow_client(world: World) -> None:
    # Orthanc's boundary is 73 characters: this job used to fail with 400 "invalid boundary".
    assert world.push_job["State"] == "Success", world.push_job
    assert world.push_job["Content"]["InstancesCount"] == str(len(corpus()))
    assert world.stored_after_push == set(by_sop())
    for instance in corpus():
        stored = world.dicomstore.stored_bytes(instance)
        assert sha(stored) == sha(instance.data), instance.name


# --- QIDO -------------------------------------------------------------------------------------


def _uids(answer: list[dict[str, Any]], tag: str) -> set[str]:
    return {str(tag_value(item, tag)) for item in answer}


def test_orthanc_queries_studies_series_and_instances_by_patient_id(pushed: OrthancApi) -> None:
    patient = {"PatientID": "ORTHANC-1"}
    first = of_patient("ORTHANC-1")
    studies = pushed.qido("/studies", patient)
    assert _uids(studies, "0020000D") == {first[0].ds.StudyInstanceUID}
    assert tag_value(studies[0], "00100010") == "Interop^ORTHANC-1"
    assert tag_value(studies[0], "00080050") == "A-ORTHANC-1"
    series = pushed.qido("/series", patient)
    assert _uids(series, "0020000E") == {i.ds.SeriesInstanceUID for i in first}
    assert {tag_value(item, "00080060") for item in series} == {"CT", "MR"}
    instances = pushed.qido("/instances", patient)
    assert _uids(instances, "00080018") == {i.ds.SOPInstanceUID for i in first}

    ct = named("CT_small.dcm").ds
    study, series_uid = ct.StudyInstanceUID, ct.SeriesInstanceUID
    assert _uids(pushed.qido("/studies", {"PatientID": ct.PatientID}), "0020000D") == {study}
    assert _uids(pushed.qido(f"/studies/{study}/series"), "0020000E") == {series_uid}
    in_series = pushed.qido(f"/studies/{study}/series/{series_uid}/instances")
    assert _uids(in_series, "00080018") == {ct.SOPInstanceUID}


def test_orthanc_explorer_lookup_finds_studies(pushed: OrthancApi) -> None:
    # The arguments the plugin's own web page sends for a study lookup: tags, fuzzy matching of
    # person names, and a limit one above the rows it shows.
    lookup = {"fuzzymatching": "true", "limit": "101"}
    first, second = of_patient("ORTHANC-1"), of_patient("ORTHANC-2")
    found = pushed.qido("/studies", {**lookup, "00100010": "interop", "00080020": "20260102"})
    assert _uids(found, "0020000D") == {first[0].ds.StudyInstanceUID, second[0].ds.StudyInstanceUID}
    found = pushed.qido("/studies", {**lookup, "00100020": "ORTHANC-2", "00080050": "A-ORTHANC-2"})
    assert _uids(found, "0020000D") == {second[0].ds.StudyInstanceUID}


# Google's DICOMweb takes `*` and `?` literally: in google mode these match nothing, and the
# 204 answer to a search that matches nothing is not JSON to Orthanc 1.10's QIDO client.
@pytest.mark.google_behaviour("qido-wildcards")
@pytest.mark.parametrize("world", ["standard"], indirect=True)
def test_orthanc_queries_with_wildcards_in_standard_mode(pushed: OrthancApi) -> None:
    first, second = of_patient("ORTHANC-1"), of_patient("ORTHANC-2")
    study_1, study_2 = first[0].ds.StudyInstanceUID, second[0].ds.StudyInstanceUID
    both = pushed.qido("/studies", {"PatientID": "ORTHANC-*"})
    assert _uids(both, "0020000D") == {study_1, study_2}
    assert _uids(pushed.qido("/studies", {"PatientID": "ORTH?NC-2"}), "0020000D") == {study_2}
    found = pushed.qido("/instances", {"PatientName": "Interop^*", "Modality": "MR"})
    expected = {i.ds.SOPInstanceUID for i in first + second if i.ds.Modality == "MR"}
    assert _uids(found, "00080018") == expected
    assert pushed.qido("/studies", {"PatientID": "NOBODY*"}) == []


# --- WADO -------------------------------------------------------------------------------------


def test_orthanc_retrieves_every_study_byte_identical(
    pushed: OrthancApi, empty_orthanc: OrthancApi
) -> None:
    studies = sorted({i.ds.StudyInstanceUID for i in corpus()})
    job = empty_orthanc.retrieve([{"Study": study} for study in studies])
    assert job["State"] == "Success", job
    assert job["Content"]["ReceivedInstancesCount"] == str(len(corpus()))
    retrieved = {
        empty_orthanc.sop_instance_uid(orthanc_id): sha(empty_orthanc.file(orthanc_id))
        for orthanc_id in empty_orthanc.instances()
    }
    assert retrieved == {uid: sha(instance.data) for uid, instance in by_sop().items()}


def test_orthanc_retrieves_a_series_and_an_instance_byte_identical(
    pushed: OrthancApi, empty_orthanc: OrthancApi
) -> None:
    first = of_patient("ORTHANC-1")
    ct_series = [i for i in first if i.ds.Modality == "CT"]
    one_mr = next(i for i in first if i.ds.Modality == "MR")
    series = {"Study": one_mr.uids["Study"], "Series": ct_series[0].uids["Series"]}
    answer = empty_orthanc.retrieve_now([series, one_mr.uids])
    assert answer["ReceivedInstancesCount"] == str(len(ct_series) + 1)
    retrieved = {
        empty_orthanc.sop_instance_uid(orthanc_id): sha(empty_orthanc.file(orthanc_id))
        for orthanc_id in empty_orthanc.instances()
    }
    assert retrieved == {i.ds.SOPInstanceUID: sha(i.data) for i in [*ct_series, one_mr]}


# --- metadata ---------------------------------------------------------------------------------

_BULK = "bulk data"
_NUMERIC_VRS = frozenset({"DS", "IS", "FL", "FD", "SL", "SS", "UL", "US", "SV", "UV"})


def _normal(element: Mapping[str, Any]) -> Any:
    """A DICOM JSON attribute in the form PS3.18 F.2 makes equal (see the module docstring)."""
    vr = element["vr"]
    if "BulkDataURI" in element or "InlineBinary" in element:
        return (vr, _BULK)
    values = element.get("Value", [])
    if vr == "SQ":
        return (vr, [_normal_dataset(item) for item in values])
    if vr in _NUMERIC_VRS:
        return (vr, [None if v is None else float(v) for v in values])
    return (vr, values)


def _normal_dataset(dataset: Mapping[str, Any]) -> dict[str, Any]:
    return {
        tag: _normal(element)
        for tag, element in dataset.items()
        if not tag.endswith("0000") and tag != "FFFCFFFC"  # group lengths, trailing padding
    }


def _as_json(ds: Dataset) -> dict[str, Any]:
    """pydicom's DICOM JSON of `ds`, values over 1 KB as bulk data."""
    return ds.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=lambda _: _BULK)


@pytest.mark.parametrize("level", ["study", "series", "instance"])
def test_orthanc_reads_metadata_through_its_get_route(pushed: OrthancApi, level: str) -> None:
    for instance in [*corpus()[: len(PYDICOM_FILES)], of_patient("ORTHANC-1")[-1]]:
        uids = instance.uids
        uri = {
            "study": f"/studies/{uids['Study']}/metadata",
            "series": f"/studies/{uids['Study']}/series/{uids['Series']}/metadata",
            "instance": f"{instance.path}/metadata",
        }[level]
        reply = pushed.get(uri)
        media_type = parse_content_type(reply.headers["content-type"]).media_type
        assert media_type == "application/dicom+json", instance.name
        items = {item["00080018"]["Value"][0]: item for item in reply.json()}
        assert instance.ds.SOPInstanceUID in items, instance.name
        got = _normal_dataset(items[instance.ds.SOPInstanceUID])
        assert got == _normal_dataset(_as_json(instance.ds)), instance.name


def test_orthanc_reads_the_bulk_data_the_metadata_names(world: World) -> None:
    pushed, root = world.orthanc, world.dicomstore.root
    ct = named("CT_small.dcm")
    (metadata,) = pushed.get(f"{ct.path}/metadata").json()
    uri = metadata["7FE00010"]["BulkDataURI"]
    assert uri.startswith(f"{root}/"), uri
    reply = pushed.get(uri.removeprefix(root))
    form = parse_content_type(reply.headers["content-type"])
    assert form.media_type == "multipart/related" and form.boundary
    reader = MultipartReader(form.boundary, 1 << 24, 1 << 24)
    (part,) = reader.feed(reply.content)
    reader.close()
    with part:
        assert part.body.read() == ct.ds.PixelData


# --- delete -----------------------------------------------------------------------------------


def test_orthanc_deletes_what_it_pushed(world: World) -> None:
    # Data of its own, so that the other tests see the corpus whole whatever the order.
    orthanc, store = world.orthanc, world.dicomstore
    before = store.sop_uids()
    mine = _generated("ORTHANC-DELETE", [("OT", MRImageStorage, [8, 8])])
    ids = [orthanc.upload(instance.data) for instance in mine]
    assert orthanc.stow(ids)["State"] == "Success"
    assert store.sop_uids() == before | {i.ds.SOPInstanceUID for i in mine}
    gone = mine[0].ds
    instance = {
        "StudyInstanceUID": gone.StudyInstanceUID,
        "SeriesInstanceUID": gone.SeriesInstanceUID,
        "SOPInstanceUID": gone.SOPInstanceUID,
    }
    orthanc.delete_remote(Level="Instance", **instance)
    assert store.sop_uids() == before | {mine[1].ds.SOPInstanceUID}
    with pytest.raises(OrthancError, match="404"):
        orthanc.delete_remote(Level="Instance", **instance)
    orthanc.delete_remote(Level="Study", StudyInstanceUID=gone.StudyInstanceUID)
    # A study is deleted by a long-running operation in google mode: wait for it to end.
    deadline = time.monotonic() + 30
    while store.sop_uids() != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert store.sop_uids() == before
