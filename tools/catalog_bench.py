"""Time the QIDO-RS mix on a catalog of 100,000 instances: SQLite, and PostgreSQL when named.

    python tools/catalog_bench.py [--postgres postgresql://...] [--studies 5000] [--queries 100]

Fills each catalog through the Catalog port (no HTTP, no blobs): --studies studies of 20
instances in 2 series, two studies per patient, about 3 studies a day, loaded 20 instances a
transaction at concurrency 8; then runs each kind of query of the mix --queries times at
concurrency 1 (`Catalog.search`, as QIDO-RS calls it) and prints p50 and p99 per kind and for
the whole mix, in milliseconds. The PostgreSQL database must be empty; it is ANALYZEd after the
load (as autovacuum would do soon after). Every query must match; the run fails otherwise.
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
from collections.abc import Callable
from pathlib import Path

import asyncpg

from dicomstore.catalog.postgres import PostgresCatalog
from dicomstore.catalog.sqlite import SqliteCatalog
from dicomstore.core.model import Dataset, DicomStore, NewInstance, NewInstanceRow
from dicomstore.core.names import DatasetName, DicomStoreName
from dicomstore.core.ports import Catalog
from dicomstore.core.queries import Condition, Level, MatchKind, Query

STORE = DicomStoreName(DatasetName.parse("projects/p/locations/l/datasets/d"), "s")
PER_SERIES, SERIES = 10, 2
MODALITIES = ("CT", "MR", "US", "CR", "DX")
SURNAMES = ("SMITH", "JONES", "MÜLLER", "GARCIA", "NGUYEN", "KOWALSKI", "ROSSI", "DUBOIS")
DAY0 = dt.date(2020, 1, 1)
#: The attributes an instance-level search shows (its default selection, roughly).
INSTANCE_TAGS = ("00080016", "00080018", "00080056", "00200013", "00280010", "00280011")


def one(vr: str, value: object) -> dict[str, object]:
    return {"vr": vr, "Value": [value]}


def study_instances(n: int) -> list[NewInstance]:
    """The 20 instances of study `n`."""
    study = f"1.2.826.0.1.3680043.10.{n}"
    patient, accession = f"P{n // 2:09d}", f"A{n:09d}"
    name = f"{SURNAMES[n // 2 % len(SURNAMES)]}^PATIENT{n // 2}"
    date = (DAY0 + dt.timedelta(days=n // 3)).strftime("%Y%m%d")
    study_json = {
        "00080020": one("DA", date),
        "00080050": one("SH", accession),
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": name}]},
        "00100020": one("LO", patient),
        "0020000D": one("UI", study),
        "00081030": one("LO", "BENCH STUDY"),
    }
    out = []
    for s in range(SERIES):
        series, modality = f"{study}.{s + 1}", MODALITIES[(n + s) % len(MODALITIES)]
        series_json = {"00080060": one("CS", modality), "0020000E": one("UI", series)}
        for i in range(PER_SERIES):
            sop = f"{series}.{i + 1}"
            instance_json = {
                "00080016": one("UI", "1.2.840.10008.5.1.4.1.1.7"),
                "00080018": one("UI", sop),
                "00200013": one("IS", i + 1),
                "00280010": one("US", 512),
                "00280011": one("US", 512),
            }
            out.append(
                NewInstance(
                    study_uid=study,
                    series_uid=series,
                    sop_uid=sop,
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
                    transfer_syntax_uid="1.2.840.10008.1.2.1",
                    study_attributes=study_json,
                    series_attributes=series_json,
                    metadata={**study_json, **series_json, **instance_json},
                    attributes={
                        "StudyInstanceUID": study,
                        "SeriesInstanceUID": series,
                        "SOPInstanceUID": sop,
                        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7",
                        "PatientName": name,
                        "PatientID": patient,
                        "AccessionNumber": accession,
                        "StudyDate": date,
                        "Modality": modality,
                        "StudyDescription": "BENCH STUDY",
                        "InstanceNumber": str(i + 1),
                    },
                )
            )
    return out


async def fill(catalog: Catalog, studies: int) -> float:
    """Load the studies; the seconds it took."""
    await catalog.create_dataset(Dataset(STORE.dataset))
    await catalog.create_dicom_store(DicomStore(STORE))
    gate = asyncio.Semaphore(8)

    async def load(n: int) -> None:
        async with gate:
            rows = [
                NewInstanceRow(await catalog.reserve_instance_key(STORE), new, 1000)
                for new in study_instances(n)
            ]
            refusals = await catalog.add_instances(rows, visible=True)
            assert not any(refusals), refusals

    started = time.perf_counter()
    await asyncio.gather(*(load(n) for n in range(studies)))
    return time.perf_counter() - started


def exact(keyword: str, value: str) -> Condition:
    return Condition(keyword, MatchKind.EXACT, (value,))


def mix(studies: int, rng: random.Random) -> dict[str, Callable[[], Query]]:
    """Each kind of query, as a maker of a query that matches."""

    def any_study() -> int:
        return rng.randrange(studies)

    def date_range() -> Query:
        start = DAY0 + dt.timedelta(days=any_study() // 3)
        window = (start.strftime("%Y%m%d"), (start + dt.timedelta(days=6)).strftime("%Y%m%d"))
        return Query(Level.STUDIES, conditions=(Condition("StudyDate", MatchKind.RANGE, window),))

    def series_by_modality() -> Query:
        n = any_study()
        return Query(
            Level.SERIES,
            study_uid=f"1.2.826.0.1.3680043.10.{n}",
            conditions=(exact("Modality", MODALITIES[n % len(MODALITIES)]),),
        )

    def instances_of_series() -> Query:
        study = f"1.2.826.0.1.3680043.10.{any_study()}"
        return Query(
            Level.INSTANCES,
            study_uid=study,
            series_uid=f"{study}.{rng.randrange(SERIES) + 1}",
            attributes=INSTANCE_TAGS,
        )

    def name_prefix() -> Query:
        n = any_study()
        pattern = f"{SURNAMES[n // 2 % len(SURNAMES)]}^PATIENT{n // 2}*"
        return Query(
            Level.STUDIES, conditions=(Condition("PatientName", MatchKind.WILDCARD, (pattern,)),)
        )

    return {
        "studies by PatientID": lambda: Query(
            Level.STUDIES, conditions=(exact("PatientID", f"P{any_study() // 2:09d}"),)
        ),
        "studies by StudyDate range": date_range,
        "studies by AccessionNumber": lambda: Query(
            Level.STUDIES, conditions=(exact("AccessionNumber", f"A{any_study():09d}"),)
        ),
        "studies by PatientName prefix": name_prefix,
        "series of a study by Modality": series_by_modality,
        "instances of a series": instances_of_series,
        "instances, first page": lambda: Query(Level.INSTANCES, attributes=INSTANCE_TAGS),
    }


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def measure(name: str, catalog: Catalog, studies: int, queries: int) -> None:
    await catalog.open()
    try:
        seconds = await fill(catalog, studies)
        if isinstance(catalog, PostgresCatalog):
            await catalog._write(lambda db: db.execute("ANALYZE"))
        print(f"{name}: loaded {studies * 20} instances in {seconds:.0f} s", flush=True)
        everything: list[float] = []
        for kind, make in mix(studies, random.Random(20241122)).items():
            times = []
            for _ in range(queries):
                query = make()
                started = time.perf_counter()
                found = await catalog.search(STORE, query)
                times.append((time.perf_counter() - started) * 1000)
                if not found:
                    sys.exit(f"{name}: {kind}: no match for {query}")
            everything += times
            print(
                f"{name:10} {kind:32} p50 {statistics.median(times):7.2f} ms"
                f"  p99 {percentile(times, 0.99):7.2f} ms",
                flush=True,
            )
        print(
            f"{name:10} {'mix':32} p50 {statistics.median(everything):7.2f} ms"
            f"  p99 {percentile(everything, 0.99):7.2f} ms",
            flush=True,
        )
    finally:
        await catalog.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", help="an empty PostgreSQL database's URL")
    parser.add_argument("--studies", type=int, default=5000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as folder:
            catalog = SqliteCatalog(Path(folder) / "catalog.sqlite")
            await measure("sqlite", catalog, args.studies, args.queries)
    if args.postgres:
        await measure("postgresql", PostgresCatalog(args.postgres), args.studies, args.queries)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except asyncpg.PostgresError as exc:
        sys.exit(f"catalog_bench: {exc}")
