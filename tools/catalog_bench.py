"""Time the QIDO-RS mix of `dicomstore-dicomweb-bench` on a generated catalog: SQLite, and
PostgreSQL when named.

    python tools/catalog_bench.py [--instances 100000] [--queries 200]
        [--sqlite PATH] [--postgres postgresql://...] [--skip-sqlite]

The catalog holds the benchmark's corpus (`dicomstore_bench.corpus`: studies of 10 instances in
2 series of 5, two studies per patient, about 3 studies a day in scattered order, 8 modalities),
generated here as the values the ingest path would index, and written through the Catalog port
(`add_instances`, 50 studies a transaction at concurrency 4: no HTTP, no Part 10 parsing, no
blobs). A catalog already holding the store (`--sqlite PATH` of an earlier run, or a loaded
PostgreSQL database) is reused as it is, so that one generated catalog can be searched by two
versions of the code. PostgreSQL is ANALYZEd after the load (as autovacuum would do soon after);
for 1,000,000 instances, copy a SQLite catalog this loaded with `tools/catalog_to_postgres.py`
(the port needs about two round trips an instance there).

Then each kind of query runs --queries times at concurrency 1 through `Search` (the request
parsed as QIDO-RS parses it, results built as DICOM JSON) and p50 / p99 are printed per kind and
for the whole mix, in milliseconds. The kinds are the HTTP benchmark's five (studies by
PatientID, by a 7-day StudyDate range, by AccessionNumber; series of a study by Modality;
instances of a series), plus one in standard mode: studies by a PatientName prefix (`SMIT*`: an
eighth of the patients, spread over the store; the corpus's names differ only there).
Every query must match; the run fails otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from dicomstore.catalog.postgres import PostgresCatalog
from dicomstore.catalog.sqlite import SqliteCatalog
from dicomstore.core.errors import AlreadyExists
from dicomstore.core.model import Dataset, DicomStore, NewInstance, NewInstanceRow
from dicomstore.core.names import DatasetName, DicomStoreName
from dicomstore.core.policy import GOOGLE, STANDARD, DicomWebPolicy
from dicomstore.core.ports import Catalog
from dicomstore.core.queries import Level
from dicomstore.core.search import Search, parse_request
from dicomstore_bench.corpus import PER_SERIES, PER_STUDY, Corpus, Ids

STORE = DicomStoreName(DatasetName.parse("projects/p/locations/l/datasets/d"), "s")
SOP_CLASS = "1.2.840.10008.5.1.4.1.1.7"
STUDIES_PER_WRITE = 50
#: Patient names are SURNAME^P{number}, the surname the number's remainder by 8 (the corpus's
#: BENCH^P{number} gives every patient one surname).
SURNAMES = ("SMITH", "JONES", "MULLER", "GARCIA", "NGUYEN", "KOWALSKI", "ROSSI", "DUBOIS")
#: The template's constant attributes (`dicomstore_bench.corpus.Template`) by keyword and tag.
CONSTANT_STUDY = {
    "SpecificCharacterSet": ("00080005", "CS", "ISO_IR 100"),
    "StudyTime": ("00080030", "TM", "120000"),
    "ReferringPhysicianName": ("00080090", "PN", "BENCH^REFERRER"),
    "StudyDescription": ("00081030", "LO", "dicomstore-dicomweb-bench"),
    "PatientBirthDate": ("00100030", "DA", "19700101"),
    "PatientSex": ("00100040", "CS", "O"),
    "StudyID": ("00200010", "SH", "1"),
}

#: One query: its kind, level, parameters, scope (study_uid / series_uid) and policy.
Request = tuple[str, Level, list[tuple[str, str]], dict[str, str], DicomWebPolicy]


def element(vr: str, value: object) -> dict[str, Any]:
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": value}]}
    return {"vr": vr, "Value": [value]}


def new_instance(ids: Ids) -> NewInstance:
    """What the ingest path records of the corpus instance `ids`."""
    name = f"{SURNAMES[ids.patient % len(SURNAMES)]}^P{ids.patient:09d}"
    patient, accession = f"P{ids.patient:09d}", ids.study
    study = {tag: element(vr, value) for tag, vr, value in CONSTANT_STUDY.values()}
    study |= {
        "00080020": element("DA", ids.date),
        "00080050": element("SH", f"A{accession:09d}"),
        "00100010": element("PN", name),
        "00100020": element("LO", patient),
        "0020000D": element("UI", ids.study_uid),
    }
    series = {
        "00080060": element("CS", ids.modality),
        "0008103E": element("LO", "10 KB instances"),
        "0020000E": element("UI", ids.series_uid),
        "00200011": element("IS", ids.series + 1),
    }
    instance = {
        "00080016": element("UI", SOP_CLASS),
        "00080018": element("UI", ids.sop_uid),
        "00200013": element("IS", ids.instance + 1),
        "00280010": element("US", 100),
        "00280011": element("US", 100),
        "00280100": element("US", 8),
    }
    attributes = {keyword: str(value) for keyword, (_, _, value) in CONSTANT_STUDY.items()}
    attributes |= {
        "StudyInstanceUID": ids.study_uid,
        "StudyDate": ids.date,
        "AccessionNumber": f"A{accession:09d}",
        "PatientName": name,
        "PatientID": patient,
        "SeriesInstanceUID": ids.series_uid,
        "Modality": ids.modality,
        "SeriesNumber": str(ids.series + 1),
        "SeriesDescription": "10 KB instances",
        "SOPClassUID": SOP_CLASS,
        "SOPInstanceUID": ids.sop_uid,
        "InstanceNumber": str(ids.instance + 1),
        "Rows": "100",
        "Columns": "100",
        "BitsAllocated": "8",
    }
    return NewInstance(
        study_uid=ids.study_uid,
        series_uid=ids.series_uid,
        sop_uid=ids.sop_uid,
        sop_class_uid=SOP_CLASS,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        study_attributes=study,
        series_attributes=series,
        metadata={**study, **series, **instance},
        attributes=attributes,
    )


def corpus(studies: int) -> Corpus:
    """The HTTP benchmark's numbering for a store of `studies` studies."""
    return Corpus(1, max(7, studies // 3))


async def fill(catalog: Catalog, studies: int) -> float | None:
    """Load the studies into an empty catalog: the seconds it took; None if already loaded."""
    try:
        await catalog.create_dataset(Dataset(STORE.dataset))
    except AlreadyExists:
        return None
    await catalog.create_dicom_store(DicomStore(STORE))
    numbering, gate = corpus(studies), asyncio.Semaphore(4)

    async def load(first: int) -> None:
        async with gate:
            last = min(studies, first + STUDIES_PER_WRITE) * PER_STUDY
            news = [new_instance(numbering.ids(k)) for k in range(first * PER_STUDY, last)]
            rows = [
                NewInstanceRow(await catalog.reserve_instance_key(STORE), new, 10_898)
                for new in news
            ]
            refusals = await catalog.add_instances(rows, visible=True)
            assert not any(refusals), refusals

    started = time.perf_counter()
    await asyncio.gather(*(load(n) for n in range(0, studies, STUDIES_PER_WRITE)))
    return time.perf_counter() - started


def requests(studies: int, queries: int, rng: random.Random) -> list[Request]:
    """The mix: `dicomstore-dicomweb-bench`'s five kinds (as it draws them) and two more."""
    numbering = corpus(studies)

    def any_study() -> Ids:
        return numbering.ids(rng.randrange(studies) * PER_STUDY)

    out: list[Request] = []
    for _ in range(queries):
        patient = any_study().patient
        out.append(
            ("studies by PatientID", Level.STUDIES, [("PatientID", f"P{patient:09d}")], {}, GOOGLE)
        )
        start = dt.datetime.strptime(any_study().date, "%Y%m%d")
        window = f"{start:%Y%m%d}-{start + dt.timedelta(days=6):%Y%m%d}"
        out.append(
            ("studies by StudyDate range", Level.STUDIES, [("StudyDate", window)], {}, GOOGLE)
        )
        number = any_study().study
        accession = [("AccessionNumber", f"A{number:09d}")]
        out.append(("studies by AccessionNumber", Level.STUDIES, accession, {}, GOOGLE))
        study = any_study()
        scope = {"study_uid": study.study_uid}
        modality = [("Modality", study.modality)]
        out.append(("series of a study by Modality", Level.SERIES, modality, scope, GOOGLE))
        series = numbering.ids(rng.randrange(studies) * PER_STUDY + rng.choice((0, PER_SERIES)))
        scope = {"study_uid": series.study_uid, "series_uid": series.series_uid}
        out.append(("instances of a series", Level.INSTANCES, [], scope, GOOGLE))
        # A surname: an eighth of the patients, spread over the whole store.
        prefix = f"{SURNAMES[rng.randrange(len(SURNAMES))][:4]}*"
        out.append(
            (
                "studies by PatientName prefix",
                Level.STUDIES,
                [("PatientName", prefix)],
                {},
                STANDARD,
            )
        )
    return out


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def measure(name: str, catalog: Catalog, studies: int, queries: int) -> None:
    await catalog.open()
    try:
        seconds = await fill(catalog, studies)
        if seconds is not None:
            if isinstance(catalog, PostgresCatalog):
                await catalog._write(lambda db: db.execute("ANALYZE"))
            print(f"{name}: loaded {studies * PER_STUDY} instances in {seconds:.0f} s", flush=True)
        search = Search(catalog)
        mix = requests(studies, queries, random.Random(20241122))
        for _, level, params, scope, policy in mix[:50]:  # warm-up
            await search.search(STORE, parse_request(level, params, policy, **scope))
        times: dict[str, list[float]] = {kind: [] for kind, *_ in mix}
        for kind, level, params, scope, policy in mix:
            started = time.perf_counter()
            found = await search.search(STORE, parse_request(level, params, policy, **scope))
            times[kind].append((time.perf_counter() - started) * 1000)
            if not found:
                sys.exit(f"{name}: {kind}: no match for {params} {scope}")
        everything = [t for kind in times.values() for t in kind]
        for kind, values in [*times.items(), ("mix", everything)]:
            print(
                f"{name:10} {kind:32} p50 {statistics.median(values):7.2f} ms"
                f"  p99 {percentile(values, 0.99):7.2f} ms",
                flush=True,
            )
    finally:
        await catalog.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200, help="of each kind")
    parser.add_argument("--sqlite", type=Path, help="the SQLite catalog file, kept (reused)")
    parser.add_argument("--postgres", help="a PostgreSQL database's URL (empty, or loaded)")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    studies = max(1, args.instances // PER_STUDY)
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as folder:
            path = args.sqlite or Path(folder) / "catalog.sqlite"
            await measure("sqlite", SqliteCatalog(path), studies, args.queries)
    if args.postgres:
        await measure("postgresql", PostgresCatalog(args.postgres), studies, args.queries)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except asyncpg.PostgresError as exc:
        sys.exit(f"catalog_bench: {exc}")
