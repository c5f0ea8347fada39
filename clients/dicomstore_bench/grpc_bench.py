"""`dicomstore-bench`: throughput and latency of the gRPC DICOM store control plane.

Setup goes through the public gRPC API only: dataset `bench-<hex>` holding --stores labelled
stores, and a second dataset that receives the CreateDicomStore load (so List keeps seeing
--stores stores). Scenarios, each at every --concurrency level: GetDicomStore (a random store),
ListDicomStores (page_size 100; each in-flight loop walks the pages and wraps around) and
CreateDicomStore (fresh ids). Without --target the command runs its own server as a subprocess.

Load comes from spawned client processes, each running a grpc.aio loop with its share of the
in-flight call loops, which issue calls back to back. After WARMUP_S of warm-up, calls that
complete within the next --duration seconds are counted (calls/s, p50, p99); every non-OK status,
warm-up included, is counted as an error.

Split: one client process (c=16 -> 1 process x 16 in flight; --client-processes to re-measure).
On 2 cores the server (one asyncio process plus gRPC threads) wants ~1.2 cores; one client process
holds it there at ~0.5 core and ~260-300 us of client CPU per call, while 2 and 4 processes
cost 330-450 us per call (more spawns, channels and context switches), CPU the server then lacks
(docs/benchmarks.md, "Design measurements").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import grpc
from google.cloud.healthcare.v1.dataset import dataset_pb2, dataset_pb2_grpc
from google.cloud.healthcare.v1.dicom import dicom_pb2, dicom_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dicomstore_bench.servers import free_port, server_process

SCENARIOS = ("GetDicomStore", "ListDicomStores", "CreateDicomStore")
LOCATION = "projects/bench/locations/local"
WARMUP_S = 1.0
CLIENT_PROCESSES = 1
PAGE_SIZE = 100


@dataclass(frozen=True)
class Job:
    """The work of one client process for one (scenario, concurrency) run."""

    target: str
    scenario: str
    inflight: int
    start_wall: float  # time.time() at which the warm-up starts
    duration: float
    dataset: str  # holds the stores that Get and List read
    create_dataset: str  # receives CreateDicomStore
    stores: int
    tag: str  # unique prefix of the store ids this job creates


@dataclass
class Outcome:
    latencies_ns: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)


@dataclass
class Row:
    scenario: str
    concurrency: int
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    error_codes: dict[str, int]


def store_id(index: int) -> str:
    return f"store-{index:05d}"


async def _call_loop(
    job: Job, stub: dicom_pb2_grpc.DicomServiceAsyncStub, loop_id: int, window: range, out: Outcome
) -> None:
    rng = random.Random()
    token, created = "", 0
    while (start := time.perf_counter_ns()) < window.stop:
        try:
            if job.scenario == "GetDicomStore":
                name = f"{job.dataset}/dicomStores/{store_id(rng.randrange(job.stores))}"
                await stub.GetDicomStore(dicom_pb2.GetDicomStoreRequest(name=name))
            elif job.scenario == "ListDicomStores":
                request = dicom_pb2.ListDicomStoresRequest(
                    parent=job.dataset, page_size=PAGE_SIZE, page_token=token
                )
                token = (await stub.ListDicomStores(request)).next_page_token
            else:
                created += 1
                request_c = dicom_pb2.CreateDicomStoreRequest(
                    parent=job.create_dataset, dicom_store_id=f"{job.tag}-{loop_id}-{created}"
                )
                await stub.CreateDicomStore(request_c)
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            out.errors[code] = out.errors.get(code, 0) + 1
            continue
        end = time.perf_counter_ns()
        if window.start <= end < window.stop:
            out.latencies_ns.append(end - start)


async def _run_job(job: Job) -> Outcome:
    async with grpc.aio.insecure_channel(job.target) as channel:
        await asyncio.wait_for(channel.channel_ready(), 10)
        stub = dicom_pb2_grpc.DicomServiceStub(channel)
        await asyncio.sleep(max(0.0, job.start_wall - time.time()))
        begin = time.perf_counter_ns() + int(WARMUP_S * 1e9)
        window = range(begin, begin + int(job.duration * 1e9))
        out = Outcome()
        await asyncio.gather(*(_call_loop(job, stub, i, window, out) for i in range(job.inflight)))
        return out


def _worker(conn: Connection) -> None:
    """A client process: run the jobs it receives until it receives None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn.send("ready")
    while (job := conn.recv()) is not None:
        try:
            conn.send(asyncio.run(_run_job(job)))
        except Exception as exc:
            conn.send(f"client worker failed: {exc!r}")


@contextlib.contextmanager
def _workers(count: int) -> Iterator[list[Connection]]:
    ctx = multiprocessing.get_context("spawn")
    conns, procs = [], []
    try:
        for _ in range(count):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child,), daemon=True)
            proc.start()
            child.close()
            conns.append(parent)
            procs.append(proc)
        for conn in conns:
            conn.recv()
        yield conns
    finally:
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()


def _wait_serving(target: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
            with contextlib.suppress(grpc.RpcError):
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.05)
    raise RuntimeError(f"server not SERVING on {target} after 30 s:\n{log.read_text()}")


@contextlib.contextmanager
def _own_server() -> Iterator[str]:
    """Run `dicomstore serve` on a temporary data dir; SIGTERM it on exit."""
    with tempfile.TemporaryDirectory(prefix="dicomstore-bench-") as tmp:
        port, log = free_port(), Path(tmp, "server.log")
        command = [sys.executable, "-m", "dicomstore.cli", "serve", "--grpc-port", str(port)]
        command += ["--http-port", "0", "--data-dir", str(Path(tmp, "data"))]
        command += ["--log-level", "warning"]
        with server_process(command, log, "server") as proc:
            target = f"127.0.0.1:{port}"
            _wait_serving(target, proc, log)
            yield target


async def _setup(target: str, stores: int) -> tuple[str, str]:
    """Create the read dataset with its labelled stores and the create dataset."""
    dataset_id = f"bench-{uuid.uuid4().hex[:12]}"
    async with grpc.aio.insecure_channel(target) as channel:
        datasets = dataset_pb2_grpc.DatasetServiceStub(channel)
        dicom = dicom_pb2_grpc.DicomServiceStub(channel)
        for new_id in (dataset_id, f"{dataset_id}-create"):
            request = dataset_pb2.CreateDatasetRequest(parent=LOCATION, dataset_id=new_id)
            operation = await datasets.CreateDataset(request)
            if operation.HasField("error"):
                raise RuntimeError(f"CreateDataset {new_id}: {operation.error.message}")
        parent, gate = f"{LOCATION}/datasets/{dataset_id}", asyncio.Semaphore(16)

        async def create(index: int) -> None:
            labels = {"bench": f"store-{index}"}
            store = dicom_pb2.DicomStore(labels=labels)
            request = dicom_pb2.CreateDicomStoreRequest(
                parent=parent, dicom_store_id=store_id(index), dicom_store=store
            )
            async with gate:
                await dicom.CreateDicomStore(request)

        await asyncio.gather(*(create(i) for i in range(stores)))
    return parent, f"{parent}-create"


async def _cleanup(target: str, names: Sequence[str]) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        datasets = dataset_pb2_grpc.DatasetServiceStub(channel)
        for name in names:
            await datasets.DeleteDataset(dataset_pb2.DeleteDatasetRequest(name=name))


def _percentile_ms(ordered: Sequence[int], q: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] / 1e6


def _measure(conns: Sequence[Connection], template: Job, concurrency: int) -> Row:
    procs = min(len(conns), concurrency)
    start_wall = time.time() + 0.2
    for i, conn in enumerate(conns[:procs]):
        inflight = concurrency // procs + (i < concurrency % procs)
        tag = f"c{concurrency}-p{i}-{uuid.uuid4().hex[:8]}"
        conn.send(
            Job(**{**asdict(template), "inflight": inflight, "start_wall": start_wall, "tag": tag})
        )
    total = Outcome()
    for conn in conns[:procs]:
        outcome = conn.recv()
        if isinstance(outcome, str):
            raise RuntimeError(outcome)
        total.latencies_ns += outcome.latencies_ns
        for code, count in outcome.errors.items():
            total.errors[code] = total.errors.get(code, 0) + count
    ordered = sorted(total.latencies_ns)
    return Row(
        template.scenario,
        concurrency,
        len(ordered) / template.duration,
        _percentile_ms(ordered, 0.50),
        _percentile_ms(ordered, 0.99),
        sum(total.errors.values()),
        total.errors,
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dicomstore-bench", description=__doc__.splitlines()[0])
    p.add_argument("--target", help="HOST:PORT of a running server (default: start one)")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    p.add_argument("--concurrency", default="1,16", help="comma-separated in-flight call counts")
    p.add_argument("--stores", type=int, default=1000, help="stores that Get and List read")
    p.add_argument("--client-processes", type=int, default=CLIENT_PROCESSES, help="at most")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        target: str = args.target or stack.enter_context(_own_server())
        listed, created = asyncio.run(_setup(target, args.stores))
        conns = stack.enter_context(_workers(min(args.client_processes, max(levels))))
        for scenario in SCENARIOS:
            template = Job(target, scenario, 0, 0, args.duration, listed, created, args.stores, "")
            rows += [_measure(conns, template, c) for c in levels]
        if args.target:
            asyncio.run(_cleanup(target, [listed, created]))
    machine = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
    }
    if args.json:
        report = {"target": target, "own_server": not args.target, "machine": machine}
        report |= {"duration_s": args.duration, "warmup_s": WARMUP_S, "stores": args.stores}
        report |= {"client_processes": args.client_processes, "rows": [asdict(r) for r in rows]}
        print(json.dumps(report, indent=2))
    else:
        owner = "own server" if not args.target else "external"
        print(
            f"target {target} ({owner}) | nproc {machine['nproc']} | python {machine['python']}"
            f" | grpcio {machine['grpcio']} | duration {args.duration:g} s"
            f" (+{WARMUP_S:g} s warm-up) | client processes <= {args.client_processes}"
        )
        print(f"{'scenario':<18}{'conc':>5}{'calls/s':>10}{'p50_ms':>9}{'p99_ms':>9}{'errors':>8}")
        for r in rows:
            print(
                f"{r.scenario:<18}{r.concurrency:>5}{r.calls_per_s:>10.0f}"
                f"{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}{r.errors:>8}"
                + (f"  {r.error_codes}" if r.errors else "")
            )
    return 1 if any(r.errors for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
