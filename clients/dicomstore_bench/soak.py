"""`dicomstore-soak`: one server process under mixed traffic for a while; crashes, errors, memory.

Without `--target` the command runs its own `dicomstore serve` (fresh data dir, default flags
but the mode and the log level) and watches it: when it dies, the crash is counted with its exit
status and the end of its log (where faulthandler writes every thread's stack), and a new process
is started on the same data dir so the soak goes on. `--core-dumps` lifts the core-size limit of
that process. With `--target HOST:GRPC_PORT,HTTP_PORT` it drives a running server (RSS only when
`--pid` names it).

`--concurrency` workers (default 16) run at once, each on its own dataset and store, picking
calls at random with fixed weights (see `soak_traffic`): gRPC management and operations (with a
client that builds its request from server reflection, and deadlines that expire mid-call), REST
management, DICOMweb STOW (single and multipart), QIDO, WADO (instance, study, metadata, frames,
a download dropped half-way) and deletes (instance, series, study). The run stops after
`--duration` seconds or `--calls` calls, whichever comes first. Exit status 1 on any crash,
unexpected error, or error line in the server's log (own server).

RSS is sampled every `--rss-period` seconds; the report gives the series and its growth after
warm-up (the first `--warmup` fraction of the run): the least-squares slope in MB per hour and
the difference between the means of the first and the last fifth of the samples after warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx

from dicomstore_bench.load import tree_rss_kb
from dicomstore_bench.servers import ServeProcess, run_async
from dicomstore_bench.soak_traffic import SOAK_BUCKET, EndedEarly, Stats, Unexpected, Worker


@dataclass
class Crash:
    at_s: float
    exit_status: int | None
    log_tail: str


@dataclass
class Report:
    elapsed_s: float = 0.0
    calls: int = 0
    ended_early: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    error_examples: dict[str, str] = field(default_factory=dict)
    crashes: list[Crash] = field(default_factory=list)
    server_log_errors: list[str] = field(default_factory=list)  # error and critical lines
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MB)
    calls_by_action: dict[str, int] = field(default_factory=dict)
    p50_ms: dict[str, float] = field(default_factory=dict)
    p99_ms: dict[str, float] = field(default_factory=dict)
    rss_slope_mb_per_h: float = math.nan
    rss_growth_mb: float = math.nan
    rss_warm_mb: float = math.nan


class Soak:
    """The workers, the watch over the server, the RSS samples; `run` fills the report."""

    def __init__(self, args: argparse.Namespace, server: ServeProcess | None, report: Report):
        self.args = args
        self.server = server
        self.report = report
        self.stats = Stats()
        self.stop = asyncio.Event()
        self.started = time.monotonic()
        if server is not None:
            self.grpc_target = f"127.0.0.1:{server.grpc_port}"
            self.http_url = f"http://127.0.0.1:{server.http_port}"
        else:
            host, ports = args.target.rsplit(":", 1)
            grpc_port, http_port = ports.split(",")
            self.grpc_target, self.http_url = f"{host}:{grpc_port}", f"http://{host}:{http_port}"

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    async def run(self) -> None:
        if self.server is not None:
            await self._start_server()
        try:
            await self._drive()
        finally:
            if self.server is not None:
                status = await self.server.stop()
                if status not in (0, None):
                    self._crashed(f"exit status {status} at SIGTERM")
                self.report.server_log_errors = _logged_errors(self.server.log)
        self._summarise()

    async def _start_server(self) -> None:
        assert self.server is not None
        await self.server.start()
        print(f"dicomstore serve: pid {self.server.pid}", file=sys.stderr, flush=True)

    def _crashed(self, what: str) -> None:
        assert self.server is not None
        status = self.server.returncode
        self.report.crashes.append(Crash(round(self.elapsed, 1), status, self.server.log_tail()))
        print(f"[{self.elapsed:7.1f} s] server died ({what})", file=sys.stderr, flush=True)

    async def _drive(self) -> None:
        args = self.args
        async with grpc.aio.insecure_channel(self.grpc_target) as channel:
            clients = [
                httpx.AsyncClient(base_url=self.http_url, timeout=60)
                for _ in range(args.concurrency)
            ]
            bucket = None
            if self.server is not None:  # its embedded Cloud Storage: export and import there
                bucket = self.server.data_dir / "gcs" / SOAK_BUCKET
                bucket.mkdir(parents=True, exist_ok=True)
            workers = [
                Worker(n, self.grpc_target, channel, clients[n], args.seed, bucket)
                for n in range(args.concurrency)
            ]
            ready = asyncio.Barrier(len(workers))
            try:
                await asyncio.gather(
                    *(self._loop(w, ready) for w in workers), self._watch(), self._sample_rss()
                )
            finally:
                for client in clients:
                    await client.aclose()

    async def _call(self, name: str, action: Callable[[], Awaitable[None]]) -> None:
        stats = self.stats
        began = time.perf_counter()
        try:
            await action()
        except EndedEarly:
            stats.ended_early += 1
        except Unexpected as exc:
            stats.error(f"{name}: {str(exc).split(':')[0]}", str(exc))
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            stats.error(f"{name}: gRPC {code}", f"{code}: {exc.details()}")
        except httpx.HTTPError as exc:
            stats.error(f"{name}: {type(exc).__name__}", repr(exc))
        stats.record(name, began)
        if self.args.calls and stats.total >= self.args.calls:
            self.stop.set()

    async def _loop(self, worker: Worker, ready: asyncio.Barrier) -> None:
        await self._call("setup", worker.setup)
        if await ready.wait() == 0:
            print("soak: workers ready", file=sys.stderr, flush=True)
        while not self.stop.is_set():
            action = worker.pick()
            await self._call(action.__name__, action)

    async def _watch(self) -> None:
        args, stats = self.args, self.stats
        next_report = args.report_every
        while not self.stop.is_set():
            await asyncio.sleep(0.5)
            elapsed = self.elapsed
            if self.server is not None and self.server.returncode is not None:
                self._crashed(f"exit status {self.server.returncode}; restarted")
                await self._start_server()
            if elapsed >= args.duration:
                self.stop.set()
            if args.report_every and elapsed >= next_report:
                next_report += args.report_every
                samples = self.report.rss_mb
                rss = f"{samples[-1][1]:.0f} MB" if samples else "-"
                print(
                    f"[{elapsed:7.1f} s] calls {stats.total:,} errors {stats.error_total} "
                    f"ended early {stats.ended_early} RSS {rss}",
                    file=sys.stderr,
                )

    async def _sample_rss(self) -> None:
        while not self.stop.is_set():
            pid = self.server.pid if self.server is not None else self.args.pid
            if pid:
                self.report.rss_mb.append((round(self.elapsed, 1), tree_rss_kb(pid) / 1024))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.args.rss_period)

    def _summarise(self) -> None:
        report, stats = self.report, self.stats
        report.elapsed_s = round(self.elapsed, 1)
        report.calls = stats.total
        report.ended_early = stats.ended_early
        report.errors = stats.errors
        report.error_examples = stats.error_examples
        report.calls_by_action = dict(sorted(stats.calls.items()))
        for action, values in stats.latencies_ms.items():
            ordered = sorted(values)
            last = len(ordered) - 1
            report.p50_ms[action] = round(ordered[last // 2], 2)
            report.p99_ms[action] = round(ordered[min(last, len(ordered) * 99 // 100)], 2)


def _logged_errors(log: Path) -> list[str]:
    """The error and critical lines of the server's log (text format)."""
    lines = log.read_text(errors="replace").splitlines()
    return [line for line in lines if line.startswith(("error ", "critical "))]


def rss_growth(samples: Sequence[tuple[float, float]], warmup: float) -> tuple[float, float, float]:
    """(slope MB/h, last-fifth minus first-fifth mean MB, first-fifth mean MB) after warm-up."""
    if not samples:
        return math.nan, math.nan, math.nan
    end = samples[-1][0]
    kept = [(t, mb) for t, mb in samples if t >= warmup * end]
    if len(kept) < 5:
        return math.nan, math.nan, math.nan
    n = len(kept)
    mean_t = sum(t for t, _ in kept) / n
    mean_mb = sum(mb for _, mb in kept) / n
    var = sum((t - mean_t) ** 2 for t, _ in kept)
    slope = sum((t - mean_t) * (mb - mean_mb) for t, mb in kept) / var if var else 0.0
    fifth = max(1, n // 5)
    first = sum(mb for _, mb in kept[:fifth]) / fifth
    last = sum(mb for _, mb in kept[-fifth:]) / fifth
    return slope * 3600, last - first, first


def _print(report: Report, args: argparse.Namespace) -> None:
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}")
    print(
        f"soak: {report.elapsed_s:.0f} s, concurrency {args.concurrency}, mode {args.mode}; "
        f"{report.calls:,} calls ({report.calls / max(report.elapsed_s, 1e-9):.0f}/s), "
        f"{report.ended_early:,} ended early on purpose"
    )
    print(f"{'action':<24} {'calls':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for action, count in report.calls_by_action.items():
        print(
            f"{action:<24} {count:>8,} {report.p50_ms[action]:>8.2f} {report.p99_ms[action]:>8.2f}"
        )
    print(f"unexpected errors: {sum(report.errors.values())}")
    for kind, count in sorted(report.errors.items()):
        print(f"  {count:>6} {kind}: {report.error_examples[kind]}")
    print(f"errors in the server's log: {len(report.server_log_errors)}")
    for line in report.server_log_errors[:20]:
        print(f"  {line[:300]}")
    print(f"crashes: {len(report.crashes)}")
    for crash in report.crashes:
        print(f"  at {crash.at_s} s, exit status {crash.exit_status}; log tail:\n{crash.log_tail}")
    if report.rss_mb:
        step = max(1, len(report.rss_mb) // 10)
        series = ", ".join(f"{t:.0f}s {mb:.0f}" for t, mb in report.rss_mb[::step])
        print(f"RSS MB over time: {series}, end {report.rss_mb[-1][1]:.0f}")
        print(
            f"RSS after warm-up: {report.rss_warm_mb:.0f} MB, then {report.rss_growth_mb:+.1f} MB "
            f"(slope {report.rss_slope_mb_per_h:+.1f} MB/h)"
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicomstore-soak", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--calls", type=int, default=0, help="stop after this many calls")
    parser.add_argument("--concurrency", type=int, default=16, help="workers at once (16)")
    parser.add_argument("--mode", choices=("google", "standard"), default="google")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rss-period", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=0.2, help="fraction of the run (0.2)")
    parser.add_argument("--report-every", type=float, default=60.0, help="progress line period")
    parser.add_argument("--target", help="HOST:GRPC_PORT,HTTP_PORT of a running server")
    parser.add_argument("--pid", type=int, help="with --target: the server's pid, for RSS")
    parser.add_argument("--core-dumps", action="store_true", help="own server: no core limit")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="own server: one more `dicomstore serve` argument (repeat: --server-arg=--flag=value)",
    )
    parser.add_argument("--keep", type=Path, help="own server: keep its data dir and log here")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


@contextlib.contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="dicomstore-soak-") as tmp:
        yield Path(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    report = Report()
    with _workdir(args.keep) as work:
        server = None
        if not args.target:
            extra = ["--dicomweb-mode", args.mode, "--log-format", "text", *args.server_arg]
            log = work / "server.log"
            server = ServeProcess(work / "data", log, extra, core_dumps=args.core_dumps)
        run_async(Soak(args, server, report).run())
    slope, growth, warm = rss_growth(report.rss_mb, args.warmup)
    report.rss_slope_mb_per_h, report.rss_growth_mb, report.rss_warm_mb = slope, growth, warm
    if args.json:
        body: dict[str, Any] = asdict(report)
        print(json.dumps(body, indent=2, default=str))
    else:
        _print(report, args)
    return 1 if report.crashes or report.errors or report.server_log_errors else 0


if __name__ == "__main__":
    sys.exit(main())
