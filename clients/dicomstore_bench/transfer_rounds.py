"""One round of `dicomstore-transfer-bench`: Orthanc's multipart STOW at each concurrency, then
import and exports on a dicomstore with an embedded bucket, then import from fake-gcs-server.
Every server starts on fresh storage in the round's folder and stops before the next starts.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from dicomstore_bench.corpus import Corpus, Template
from dicomstore_bench.fake_gcs import create_bucket
from dicomstore_bench.load import Op, RequestFailed, Tally, batch_stow_op, drive
from dicomstore_bench.servers import ServeProcess, orthanc_server
from dicomstore_bench.transfer import Outcome, StoreClient, duckdb_rows, objects_under

IMPORT_EMBEDDED = "import gs:// (embedded)"
IMPORT_FAKE_GCS = "import gs:// (fake-gcs-server)"
EXPORT_GCS = "export to gs:// (embedded)"
EXPORT_BIGQUERY = "export to bq:// (DuckDB)"
TRANSFERS = (IMPORT_EMBEDDED, IMPORT_FAKE_GCS, EXPORT_GCS, EXPORT_BIGQUERY)
IMPORTS = (IMPORT_EMBEDDED, IMPORT_FAKE_GCS)

BUCKET, OUT_BUCKET = "bench", "bench-out"
IMPORT_URI = f"gs://{BUCKET}/in/*.dcm"
EXPORT_PREFIX = f"gs://{OUT_BUCKET}/x"
BIGQUERY_TABLE = ("bench", "dicom", "instances")  # project, dataset, table
PER_REQUEST = 50
CONCURRENCY = (1, 4, 16)
UPLOAD_CONCURRENCY = 8
#: The small instance of dicomstore-dicomweb-bench, so that the two benchmarks' figures compare.
TEMPLATE = Template("10 KB", 100, 100, 8)


def phase(name: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {name}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Instances:
    files: tuple[Path, ...]
    size: int  # bytes, all of them

    def read(self, k: int) -> bytes:
        return self.files[k].read_bytes()


@dataclass
class Round:
    """What one round measured: Orthanc's STOW by concurrency, and each transfer."""

    orthanc: dict[int, Tally] = field(default_factory=dict)
    transfers: dict[str, Outcome] = field(default_factory=dict)

    @property
    def orthanc_concurrency(self) -> int:
        """The concurrency of Orthanc's best STOW rate."""
        return max(self.orthanc, key=lambda c: self.orthanc[c].per_s)

    @property
    def orthanc_best(self) -> float:
        return max((t.per_s for t in self.orthanc.values()), default=math.nan)

    def as_json(self) -> dict[str, Any]:
        return {
            "orthanc_stow": {
                str(c): {
                    "inst_per_s": t.per_s,
                    "seconds": t.elapsed_s,
                    "server_cpu_ms_per_inst": t.server_ms_per_item,
                    "errors": t.errors,
                }
                for c, t in self.orthanc.items()
            },
            "transfers": {
                name: asdict(o)
                | {"per_s": o.per_s, "mb_per_s": o.mb_per_s, "cpu_ms_per_inst": o.cpu_ms_per_item}
                for name, o in self.transfers.items()
            },
        }


class Bench:
    """The rounds over one set of instances in `work`; `orthanc` is (binary, plugin) or None,
    `fake_gcs` the emulator's URL (instances uploaded) or None, `missing` a reason per transfer
    that cannot be measured."""

    def __init__(self, work: Path, count: int, *, keep: bool) -> None:
        self.work = work
        self.count = count
        self.keep = keep
        self.orthanc: tuple[str, str] | None = None
        self.fake_gcs: str | None = None
        self.missing: dict[str, str] = {}
        self.versions: dict[str, str] = {}

    def generate(self) -> Instances:
        folder = self.work / "instances"
        folder.mkdir()
        corpus = Corpus(1, 3650)
        files, size = [], 0
        for k in range(self.count):
            data = TEMPLATE.render(corpus.ids(k))
            path = folder / f"{k:07d}.dcm"
            path.write_bytes(data)
            files.append(path)
            size += len(data)
        return Instances(tuple(files), size)

    async def upload(self, url: str, instances: Instances) -> None:
        """Each instance as object `in/NAME` of a new bucket in the emulator at `url`."""
        create_bucket(url, BUCKET)
        tally = await drive(_upload_op(url, instances), UPLOAD_CONCURRENCY, count=self.count)
        if tally.errors:
            raise RuntimeError(f"uploading to fake-gcs-server: {tally.errors}")
        self.fake_gcs = url

    async def round(self, number: int, instances: Instances) -> Round:
        folder = self.work / f"round-{number + 1}"
        folder.mkdir()
        result = Round()
        if self.orthanc is not None:
            for concurrency in CONCURRENCY:
                phase(f"round {number + 1}: Orthanc STOW c={concurrency}")
                result.orthanc[concurrency] = await self._orthanc(folder, instances, concurrency)
        result.transfers |= await self._embedded(folder, instances, number)
        if self.fake_gcs is not None:
            phase(f"round {number + 1}: {IMPORT_FAKE_GCS}")
            result.transfers[IMPORT_FAKE_GCS] = await self._from_fake_gcs(folder, instances)
        for name, reason in self.missing.items():
            result.transfers[name] = Outcome(unavailable=reason)
        if not self.keep:
            shutil.rmtree(folder)
        return result

    async def _orthanc(self, folder: Path, instances: Instances, concurrency: int) -> Tally:
        assert self.orthanc is not None
        name = f"orthanc-c{concurrency}"
        with orthanc_server(folder, *self.orthanc, name=name) as target:
            self.versions["orthanc"] = target.version
            op = batch_stow_op(target, instances.read, self.count, PER_REQUEST)
            requests = math.ceil(self.count / PER_REQUEST)
            tally = await drive(op, concurrency, count=requests, server=target.pid)
        if not self.keep:
            shutil.rmtree(folder / name)
        return tally

    async def _embedded(
        self, folder: Path, instances: Instances, number: int
    ) -> dict[str, Outcome]:
        data = folder / "dicomstore-embedded"
        inbox = data / "gcs" / BUCKET / "in"
        inbox.mkdir(parents=True)
        (data / "gcs" / OUT_BUCKET).mkdir()
        for path in instances.files:
            shutil.copyfile(path, inbox / path.name)
        serve = ServeProcess(data, folder / "dicomstore-embedded.log")
        out: dict[str, Outcome] = {}
        await serve.start()
        try:
            async with StoreClient(serve) as store:
                phase(f"round {number + 1}: {IMPORT_EMBEDDED}")
                done = await store.import_from(IMPORT_URI)
                found = await store.instance_count()
                out[IMPORT_EMBEDDED] = replace(done, bytes=instances.size, found=found)
                phase(f"round {number + 1}: {EXPORT_GCS}")
                done = await store.export_to_gcs(EXPORT_PREFIX)
                objects, size = objects_under(data / "gcs" / OUT_BUCKET / "x")
                out[EXPORT_GCS] = replace(done, bytes=size, found=objects)
                phase(f"round {number + 1}: {EXPORT_BIGQUERY}")
                project, dataset, table = BIGQUERY_TABLE
                done = await store.export_to_bigquery(f"bq://{project}.{dataset}.{table}")
                if not done.unavailable:
                    database = data / "bigquery" / f"{project}.duckdb"
                    done = replace(done, found=duckdb_rows(database, dataset, table))
                out[EXPORT_BIGQUERY] = done
        finally:
            await serve.stop()
        return out

    async def _from_fake_gcs(self, folder: Path, instances: Instances) -> Outcome:
        assert self.fake_gcs is not None
        serve = ServeProcess(
            folder / "dicomstore-fake-gcs",
            folder / "dicomstore-fake-gcs.log",
            ["--gcs-endpoint", self.fake_gcs],
        )
        await serve.start()
        try:
            async with StoreClient(serve) as store:
                done = await store.import_from(IMPORT_URI)
                found = await store.instance_count()
        finally:
            await serve.stop()
        return replace(done, bytes=instances.size, found=found)


def _upload_op(url: str, instances: Instances) -> Op:
    """Upload instance k (the JSON API's simple media upload)."""

    async def op(client: httpx.AsyncClient, k: int) -> tuple[int, int]:
        data = instances.read(k)
        reply = await client.post(
            f"{url}/upload/storage/v1/b/{BUCKET}/o",
            params={"uploadType": "media", "name": f"in/{instances.files[k].name}"},
            content=data,
            headers={"Content-Type": "application/dicom"},
        )
        if reply.status_code != 200:
            raise RequestFailed(f"upload HTTP {reply.status_code}")
        return 1, len(data)

    return op
