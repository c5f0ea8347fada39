"""`dicomstore-dicomweb-bench`: DICOMweb throughput of dicomstore beside Orthanc, in one run.

Both servers run as subprocesses on loopback, each on fresh storage in one temporary directory:
`dicomstore serve` (a dataset and a store created over REST) and, when the Debian packages
`orthanc` and `orthanc-dicomweb` are installed, `Orthanc` with its DICOMweb plugin, no DICOM
listener, no compression and otherwise its packaged defaults. This process is the client: one
asyncio loop with an httpx.AsyncClient per run (`Accept-Encoding: identity`). Each workload runs
against dicomstore, then against Orthanc, with the same generated instances.

Instances: Secondary Capture, Explicit VR Little Endian, built once per size with pydicom as a
template whose UIDs, patient, date, accession, modality and numbers are then patched in place
(fixed-width values), so generating one costs a buffer copy and never competes with the servers.
Studies of 10 instances in 2 series of 5; two studies per patient; study dates spread ~3 per day.
"10 KB" is 100x100 8-bit pixels, "0.5 MB" 512x512 16-bit.

Workloads (MB = 10^6 bytes):
1. STOW: one instance per POST at concurrency 1, 4 and 16, counted over --duration seconds after
   WARMUP_S of warm-up (instances/s, MB/s, and the server's CPU time per instance from
   /proc/PID/stat). dicomstore gets single-part `application/dicom`; Orthanc's STOW-RS (DICOMweb
   plugin 1.7) answers 415 to that, so it gets the same instance as a one-part
   `multipart/related; type="application/dicom"` body.
2. QIDO: --qido-instances loaded as one multipart POST per study at --load-concurrency (reported
   as a multipart ingest rate), then --qido-queries queries of each kind at concurrency 1 (p50,
   p99 per kind and for the mix) and the mix at concurrency 4 for --duration (queries/s): studies
   by PatientID, by a 7-day StudyDate range, by AccessionNumber; series of a study by Modality;
   instances of a series. Every query matches; a non-200 or an empty result is an error. The
   stores also hold the STOW workload's instances.
3. WADO: a study of --wado-study-mb of 0.5 MB instances, retrieved whole at concurrency 1
   (`multipart/related; type="application/dicom"; transfer-syntax=*`) and its instances one by
   one at concurrency 4, each for --duration: multipart for both (Orthanc 1.7 answers 400 to a
   single-part `application/dicom` Accept) and single-part for dicomstore alone. The baseline is
   a trivial asyncio-streams HTTP server (own process) serving a static body of the same size
   through the same client code: "loopback HTTP throughput".
4. Peak RSS of each server's process tree, sampled every RSS_PERIOD_S from /proc (and VmHWM).

`--workloads` runs a subset of 1-3 (RSS is then reported for the phases that ran).

Every failed request (HTTP status, transport error, a STOW failure item, a short or empty body)
is counted and shown next to its row; the exit status is 1 when there was any, 2 when the
benchmark could not run, 0 otherwise (a missing Orthanc is reported, not an error).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import random
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from dicomstore_bench.arguments import workload_list
from dicomstore_bench.corpus import MODALITIES, PER_STUDY, Corpus, Ids, Template, qido_queries
from dicomstore_bench.load import (
    MB,
    WARMUP_S,
    RssSampler,
    Tally,
    cheap_failed_sniffio,
    drive,
    query_op,
    retrieve_op,
    stow_op,
    study_load_op,
)
from dicomstore_bench.report import finite, machine, machine_line, number
from dicomstore_bench.servers import (
    Target,
    dicomstore_server,
    find_orthanc,
    loopback_server,
    orthanc_server,
    run_async,
)

CONCURRENCY = (1, 4, 16)
WORKLOADS = ("stow", "qido", "wado")
ACCEPT_MULTIPART = 'multipart/related; type="application/dicom"; transfer-syntax=*'
ACCEPT_SINGLE = "application/dicom; transfer-syntax=*"


@dataclass
class Row:
    workload: str
    unit: str
    better: str  # "higher" or "lower"
    values: dict[str, float]
    errors: dict[str, dict[str, int]] = field(default_factory=dict)
    target: str = ""  # the target for dicomstore, when it sets one
    met: bool | None = None

    @property
    def ratio(self) -> float:
        ours, theirs = self.values.get("dicomstore"), self.values.get("orthanc")
        if ours is None or theirs is None or not theirs or math.isnan(theirs):
            return math.nan
        return ours / theirs


@dataclass(frozen=True)
class Settings:
    duration: float
    qido_instances: int
    qido_queries: int
    load_concurrency: int
    wado_study_mb: float
    workloads: tuple[str, ...] = WORKLOADS


class Bench:
    """The workloads, run against each target in turn; results accumulate in `rows`."""

    def __init__(self, targets: list[Target], settings: Settings) -> None:
        self.targets = targets
        self.settings = settings
        self.small = Template("10 KB", 100, 100, 8)
        self.large = Template("0.5 MB", 512, 512, 16)
        self.study_count = max(1, math.ceil(settings.wado_study_mb * MB / self.large.size))
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.rss: RssSampler | None = None

    def _phase(self, name: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {name}", file=sys.stderr, flush=True)
        if self.rss:
            self.rss.phase = name.split()[0]

    def _add(
        self,
        workload: str,
        unit: str,
        tallies: dict[str, Tally],
        value: Callable[[Tally], float],
        *,
        better: str = "higher",
        errors: bool = True,
        compare: bool = True,
    ) -> Row:
        """A row from one Tally per target, its errors unless an earlier row of them shows them.

        The target is the issue's: at least as good as Orthanc, when Orthanc ran.
        """
        failed = {name: t.errors for name, t in tallies.items() if t.errors and errors}
        row = Row(workload, unit, better, {n: value(t) for n, t in tallies.items()}, failed)
        if compare and "orthanc" in row.values and "dicomstore" in row.values:
            row.target = ">= orthanc" if better == "higher" else "<= orthanc"
            row.met = row.ratio >= 1 if better == "higher" else row.ratio <= 1
        self.rows.append(row)
        return row

    def _client_cpu(self, workload: str, tallies: dict[str, Tally]) -> None:
        for target, tally in tallies.items():
            share = tally.client_cpu_s / (tally.elapsed_s + WARMUP_S)
            if share > 0.8:
                self.notes.append(f"{workload} {target}: the client used {share:.0%} of a core")

    async def stow(self) -> None:
        runs = itertools.product((self.small, self.large), CONCURRENCY)
        for run, (template, concurrency) in enumerate(runs):
            corpus = Corpus(100_000_000 * (run + 1), 3650)
            workload = f"STOW {template.label} c={concurrency}"
            tallies: dict[str, Tally] = {}
            for target in self.targets:
                self._phase(f"stow {template.label} c={concurrency} {target.name}")
                op = stow_op(target, template, corpus)
                tallies[target.name] = await drive(
                    op, concurrency, duration=self.settings.duration, server=target.pid
                )
            self._add(workload, "inst/s", tallies, lambda t: t.per_s)
            self._add(workload, "MB/s", tallies, lambda t: t.mb_per_s, errors=False)
            self._add(
                workload,
                "CPU ms/inst",
                tallies,
                lambda t: t.server_ms_per_item,
                better="lower",
                errors=False,
                compare=False,
            )
            self._client_cpu(workload, tallies)

    async def qido(self) -> None:
        s = self.settings
        studies = max(1, s.qido_instances // PER_STUDY)
        corpus = Corpus(1, max(7, studies // 3))
        ids = [corpus.ids(k) for k in range(studies * PER_STUDY)]
        loads: dict[str, Tally] = {}
        for target in self.targets:
            self._phase(f"qido-load {len(ids)} instances {target.name}")
            op = study_load_op(target, self.small, ids)
            loads[target.name] = await drive(
                op, s.load_concurrency, count=studies, server=target.pid
            )
        workload = f"STOW multipart 10/request c={s.load_concurrency} (QIDO load)"
        self._add(workload, "inst/s", loads, lambda t: t.per_s)
        self._add(
            workload,
            "CPU ms/inst",
            loads,
            lambda t: t.server_ms_per_item,
            better="lower",
            errors=False,
            compare=False,
        )

        queries = qido_queries(corpus, studies, s.qido_queries, random.Random(20241122))
        kinds = list(dict.fromkeys(kind for kind, _ in queries))
        every = [path for _, path in queries]
        latencies: dict[str, dict[str, Tally]] = {kind: {} for kind in [*kinds, "mix"]}
        mixed: dict[str, Tally] = {}
        for target in self.targets:
            self._phase(f"qido {len(queries)} queries {target.name}")
            await drive(query_op(target, every), 1, count=min(len(every), 50))  # warm-up
            mix = Tally()
            for kind in kinds:
                paths = [path for k, path in queries if k == kind]
                tally = await drive(query_op(target, paths), 1, count=len(paths))
                latencies[kind][target.name] = tally
                mix.latencies_ns += tally.latencies_ns
                for reason, n in tally.errors.items():
                    mix.errors[reason] = mix.errors.get(reason, 0) + n
            latencies["mix"][target.name] = mix
            mixed[target.name] = await drive(query_op(target, every), 4, duration=s.duration)
        for kind in [*kinds, "mix"]:
            self._add(
                f"QIDO {kind} c=1",
                "p50 ms",
                latencies[kind],
                lambda t: t.percentile_ms(0.50),
                better="lower",
            )
            self._add(
                f"QIDO {kind} c=1",
                "p99 ms",
                latencies[kind],
                lambda t: t.percentile_ms(0.99),
                better="lower",
                errors=False,
            )
        self._add("QIDO mix c=4", "queries/s", mixed, lambda t: t.per_s)

    async def wado(self, loopback: str) -> None:
        count = self.study_count
        study = Ids(990_000_000, 0, 0, 495_000_000, "20200101", "CT")
        ids = [
            Ids(study.study, k % 2, k, study.patient, study.date, MODALITIES[k % 2])
            for k in range(count)
        ]
        study_bytes = count * self.large.size
        for target in self.targets:
            self._phase(f"wado-load {count} x 0.5 MB {target.name}")
            op = study_load_op(target, self.large, ids)
            tally = await drive(
                op, self.settings.load_concurrency, count=math.ceil(count / PER_STUDY)
            )
            if tally.errors:
                self._add(
                    f"WADO study load ({target.name})",
                    "inst/s",
                    {target.name: tally},
                    lambda t: t.per_s,
                )

        # name, Accept, concurrency, whole study or its instances one by one
        cases = (
            ("WADO study (multipart) c=1", ACCEPT_MULTIPART, 1, True),
            ("WADO instance (multipart) c=4", ACCEPT_MULTIPART, 4, False),
            ("WADO instance (application/dicom) c=4", ACCEPT_SINGLE, 4, False),
        )
        results: dict[str, dict[str, Tally]] = {}
        for name, accept, concurrency, whole in cases:
            results[name] = {}
            for target in self.targets:
                if accept == ACCEPT_SINGLE and not target.wado_single_part:
                    continue
                self._phase(f"wado {name} {target.name}")
                base = f"{target.root}/studies/{study.study_uid}"
                urls = (
                    [base]
                    if whole
                    else [f"{base}/series/{one.series_uid}/instances/{one.sop_uid}" for one in ids]
                )
                least = study_bytes if whole else self.large.size
                results[name][target.name] = await self._retrieve(concurrency, urls, accept, least)
        self._phase("wado loopback HTTP baseline")
        baseline = {
            True: await self._retrieve(1, [f"{loopback}/study"], "*/*", study_bytes),
            False: await self._retrieve(4, [f"{loopback}/instance"], "*/*", self.large.size),
        }
        self.notes.append(
            f"loopback HTTP baseline: {study_bytes / MB:.0f} MB body c=1"
            f" {baseline[True].mb_per_s:,.0f} MB/s, {self.large.size / MB:.2f} MB body c=4"
            f" {baseline[False].mb_per_s:,.0f} MB/s"
        )
        for tally in baseline.values():
            if tally.errors:
                self._add(
                    "loopback HTTP baseline", "MB/s", {"loopback": tally}, lambda t: t.mb_per_s
                )
        for name, _, _, whole in cases:
            self._add(name, "MB/s", results[name], lambda t: t.mb_per_s)

            def share_of(tally: Tally, loopback_mb_s: float = baseline[whole].mb_per_s) -> float:
                return 100 * tally.mb_per_s / loopback_mb_s

            share = self._add(f"{name} / loopback HTTP", "%", results[name], share_of, errors=False)
            share.target = ">= 50 %"
            share.met = share.values.get("dicomstore", 0.0) >= 50

    async def run(self, loopback: str) -> None:
        if "stow" in self.settings.workloads:
            await self.stow()
        if "qido" in self.settings.workloads:
            await self.qido()
        if "wado" in self.settings.workloads:
            await self.wado(loopback)

    async def _retrieve(
        self, concurrency: int, urls: Sequence[str], accept: str, least: int
    ) -> Tally:
        op = retrieve_op(urls, accept, least)
        return await drive(op, concurrency, duration=self.settings.duration)

    def rss_rows(self, rss: RssSampler) -> None:
        sampled = rss.peaks["dicomstore"]
        for phase in ("stow", "qido-load", "qido", "wado-load", "wado", None):
            if phase is not None and phase not in sampled:
                continue
            label = f"peak RSS during {phase}" if phase else "peak RSS, whole run (and VmHWM)"
            row = Row(
                label, "MB", "lower", {t.name: rss.peak_mb(t.name, phase) for t in self.targets}
            )
            row.target, row.met = "< 300 MB", row.values["dicomstore"] < 300
            self.rows.append(row)


# ---------------------------------------------------------------------------------------------
# Report


def print_table(header: list[str], rows: Sequence[Row], notes: Sequence[str]) -> None:
    for line in header:
        print(line)
    print(f"{'workload':<56}{'unit':>10}{'dicomstore':>12}{'orthanc':>10}{'ratio':>8}  target")
    for row in rows:
        ratio = row.ratio
        target = f"{row.target} {'ok' if row.met else 'MISS'}" if row.target else ""
        print(
            f"{row.workload:<56}{row.unit:>10}{number(row.values.get('dicomstore'), row.unit):>12}"
            f"{number(row.values.get('orthanc'), row.unit):>10}"
            f"{'-' if math.isnan(ratio) else f'{ratio:.2f}':>8}  {target}"
        )
        for server, errors in row.errors.items():
            print(f"{'':<6}errors {server}: {errors}")
    for note in notes:
        print(f"note: {note}")


# ---------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dicomstore-dicomweb-bench", description=__doc__.splitlines()[0]
    )
    p.add_argument("--quick", action="store_true", help="small counts: a smoke run of ~1 minute")
    p.add_argument("--duration", type=float, help="measured seconds per timed run (default 10)")
    p.add_argument("--qido-instances", type=int, help="instances loaded for QIDO (default 100000)")
    p.add_argument("--qido-queries", type=int, help="queries of each kind (default 200)")
    p.add_argument("--load-concurrency", type=int, default=16, help="for the QIDO/WADO load")
    p.add_argument("--wado-study-mb", type=float, help="size of the WADO study (default 100)")
    p.add_argument(
        "--workloads",
        type=workload_list(WORKLOADS),
        default=WORKLOADS,
        help="comma-separated subset of stow,qido,wado (default: all, in that order)",
    )
    p.add_argument("--no-orthanc", action="store_true", help="measure dicomstore alone")
    p.add_argument(
        "--server-flags",
        type=shlex.split,
        default=[],
        help="flags added to `dicomstore serve`, e.g. '--workers 2'",
    )
    p.add_argument(
        "--orthanc-bin", help="Orthanc executable (default: Orthanc on PATH or /usr/sbin)"
    )
    p.add_argument("--orthanc-plugin", help="libOrthancDicomWeb.so (default: the Debian path)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def _settings(args: argparse.Namespace) -> Settings:
    quick = args.quick
    defaults = (2.0, 2000, 20, 10.0) if quick else (10.0, 100_000, 200, 100.0)
    return Settings(
        duration=args.duration or defaults[0],
        qido_instances=args.qido_instances or defaults[1],
        qido_queries=args.qido_queries or defaults[2],
        load_concurrency=args.load_concurrency,
        wado_study_mb=args.wado_study_mb or defaults[3],
        workloads=args.workloads,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cheap_failed_sniffio()
    settings = _settings(args)
    began = time.monotonic()
    orthanc = (
        "Orthanc skipped (--no-orthanc)"
        if args.no_orthanc
        else find_orthanc(args.orthanc_bin, args.orthanc_plugin)
    )
    try:
        with contextlib.ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dicomweb-bench-")))
            targets = [stack.enter_context(dicomstore_server(tmp, args.server_flags))]
            if isinstance(orthanc, tuple):
                targets.append(stack.enter_context(orthanc_server(tmp, *orthanc)))
            else:
                print(f"{orthanc}; running dicomstore alone", file=sys.stderr)
            bench = Bench(targets, settings)
            bodies = {"instance": bench.large.size, "study": bench.study_count * bench.large.size}
            loopback = stack.enter_context(loopback_server(bodies))
            with RssSampler({t.name: t.pid for t in targets}) as rss:
                bench.rss = rss
                run_async(bench.run(loopback))
            bench.rss_rows(rss)
    except (RuntimeError, OSError, httpx.HTTPError) as exc:
        print(f"dicomstore-dicomweb-bench: {exc}", file=sys.stderr)
        return 2
    elapsed = time.monotonic() - began
    host = machine()
    versions = {t.name: t.version for t in targets}
    if not isinstance(orthanc, tuple):
        versions["orthanc"] = orthanc
    counts = {
        "qido_instances": settings.qido_instances,
        "sizes_bytes": {"10 KB": bench.small.size, "0.5 MB": bench.large.size},
        "wado_study_instances": bench.study_count,
    }
    if args.json:
        report = {
            "machine": host,
            "versions": versions,
            "settings": asdict(settings),
            "counts": counts,
            "elapsed_s": round(elapsed, 1),
            "rows": [asdict(r) | {"ratio": r.ratio} for r in bench.rows],
            "rss_kb": bench.rss.peaks if bench.rss else {},
            "notes": bench.notes,
        }
        print(json.dumps(finite(report), indent=2))
    else:
        header = [
            machine_line(host),
            f"servers: dicomstore {versions['dicomstore']} | "
            + (f"Orthanc {versions['orthanc']}" if isinstance(orthanc, tuple) else orthanc),
            f"instances: 10 KB = {bench.small.size:,} B, 0.5 MB = {bench.large.size:,} B;"
            f" QIDO over {settings.qido_instances:,} instances"
            + (
                " (--qido-instances 100000 for the issue's figure)"
                if settings.qido_instances < 100_000
                else ""
            )
            + f"; WADO study {counts['wado_study_instances']} x 0.5 MB;"
            f" {settings.duration:g} s per timed run (+{WARMUP_S:g} s warm-up); MB = 10^6 B",
            f"elapsed: {elapsed:.0f} s",
        ]
        print_table(header, bench.rows, bench.notes)
    return 1 if any(r.errors for r in bench.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
