"""Load and measurement: `drive` runs a workload's requests from concurrent loops and tallies
latency, throughput, errors and CPU time; `RssSampler` follows the servers' resident memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import math
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from dicomstore_bench.corpus import MULTIPART_DICOM, PER_STUDY, Corpus, Ids, Template, multipart
from dicomstore_bench.servers import Target

WARMUP_S = 1.0
RSS_PERIOD_S = 0.1
MB = 1e6


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc/PID/task/TID/children."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` and its descendants (/proc/PID/stat fields 14, 15)."""
    ticks = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class RequestFailed(Exception):
    """A request that did not do what it should; the message is the reason counted."""


def status_kb(pid: int, key: str) -> int:
    """A `kB` field of /proc/PID/status (`VmRSS:`, `VmHWM:`), 0 once the process is gone."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def tree_rss_kb(pid: int) -> int:
    """Resident memory of `pid` and its descendants."""
    return sum(status_kb(p, "VmRSS:") for p in process_tree(pid))


class RssSampler:
    """Peak resident memory of each server's process tree, per phase, polled from /proc."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.phase = "start"
        self.peaks: dict[str, dict[str, int]] = {name: {} for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            kb = tree_rss_kb(pid)
            peaks = self.peaks[name]
            peaks[self.phase] = max(peaks.get(self.phase, 0), kb)

    def _run(self) -> None:
        while not self._stop.wait(RSS_PERIOD_S):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sample()
        for name, pid in self.pids.items():
            hwm = status_kb(pid, "VmHWM:")
            self.peaks[name]["hwm"] = hwm
        self._stop.set()
        self._thread.join()

    def peak_mb(self, name: str, phase: str | None = None) -> float:
        peaks = self.peaks[name]
        kb = peaks.get(phase, 0) if phase else max(peaks.values(), default=0)
        return kb * 1024 / MB


@dataclass
class Tally:
    ops: int = 0
    items: int = 0  # instances or queries
    bytes: int = 0
    elapsed_s: float = 0.0
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0  # over the whole run, warm-up included
    all_items: int = 0  # items done over the whole run, warm-up included
    latencies_ns: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_ns)
        if not ordered:
            return math.nan
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] / 1e6

    @property
    def per_s(self) -> float:
        return self.items / self.elapsed_s if self.elapsed_s else math.nan

    @property
    def mb_per_s(self) -> float:
        return self.bytes / MB / self.elapsed_s if self.elapsed_s else math.nan

    @property
    def server_ms_per_item(self) -> float:
        return 1000 * self.server_cpu_s / self.all_items if self.all_items else math.nan


Op = Callable[[httpx.AsyncClient, int], Awaitable[tuple[int, int]]]  # k -> (items, bytes)


async def drive(
    op: Op,
    concurrency: int,
    *,
    duration: float | None = None,
    count: int | None = None,
    server: int | None = None,
) -> Tally:
    """Run `op` on indexes 0, 1, ... from `concurrency` loops, for a time window or a count.

    Each loop has its own one-connection client: one shared pool of N connections costs the
    client ~3x the CPU per request at N=16 (httpcore scans its pool on every request), CPU the
    servers on this machine would not get. With `duration`, operations that end within
    [WARMUP_S, WARMUP_S + duration) are counted; with `count`, all of them are, over the whole
    wall time. Failures are counted either way. `server` is a pid whose CPU time is measured.
    """
    tally, indexes = Tally(), itertools.count()
    start = time.perf_counter_ns()
    begin = start + (int(WARMUP_S * 1e9) if duration is not None else 0)
    stop = begin + int(duration * 1e9) if duration is not None else None
    cpu = time.process_time()
    server_cpu = cpu_seconds(server) if server else 0.0

    async def loop() -> None:
        async with one_connection_client() as client:
            await loop_on(client)

    async def loop_on(client: httpx.AsyncClient) -> None:
        while True:
            if stop is not None and time.perf_counter_ns() >= stop:
                return
            k = next(indexes)
            if count is not None and k >= count:
                return
            sent = time.perf_counter_ns()
            try:
                items, size = await op(client, k)
            except RequestFailed as exc:
                tally.fail(str(exc))
                continue
            except httpx.HTTPError as exc:
                tally.fail(type(exc).__name__)
                continue
            done = time.perf_counter_ns()
            tally.all_items += items
            if begin <= done and (stop is None or done < stop):
                tally.ops += 1
                tally.items += items
                tally.bytes += size
                tally.latencies_ns.append(done - sent)

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    tally.client_cpu_s = time.process_time() - cpu
    tally.server_cpu_s = cpu_seconds(server) - server_cpu if server else 0.0
    tally.elapsed_s = duration if duration is not None else (time.perf_counter_ns() - start) / 1e9
    return tally


def cheap_failed_sniffio() -> None:
    """Without sniffio installed, httpcore tries `import sniffio` on every request, and a failed
    import is not cached: ~0.2 ms of client CPU per request. An entry of None fails it at once."""
    if importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


def one_connection_client() -> httpx.AsyncClient:
    """The client of one of `drive`'s loops."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return httpx.AsyncClient(
        limits=limits, timeout=httpx.Timeout(300), headers={"Accept-Encoding": "identity"}
    )


def _check_stow(reply: httpx.Response, expected: int) -> None:
    if reply.status_code != 200:
        raise RequestFailed(f"STOW HTTP {reply.status_code}")
    try:
        body: dict[str, Any] = reply.json()
    except ValueError as exc:
        raise RequestFailed("STOW response not JSON") from exc
    failed = len(body.get("00081198", {}).get("Value", []))
    stored = len(body.get("00081199", {}).get("Value", []))
    if failed or stored != expected:
        raise RequestFailed(f"STOW stored {stored} of {expected}")


async def post_instances(client: httpx.AsyncClient, target: Target, data: list[bytes]) -> int:
    """STOW-RS `data`; single-part when the target takes it and there is one instance."""
    if len(data) == 1 and target.stow_single_part:
        body, content_type = data[0], "application/dicom"
    else:
        body, content_type = multipart(data), MULTIPART_DICOM
    headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
    reply = await client.post(f"{target.root}/studies", content=body, headers=headers)
    _check_stow(reply, len(data))
    return len(body)


async def get_bytes(client: httpx.AsyncClient, url: str, accept: str, least: int) -> int:
    """GET `url`, count the body's bytes without keeping them."""
    async with client.stream("GET", url, headers={"Accept": accept}) as reply:
        if reply.status_code != 200:
            await reply.aread()
            raise RequestFailed(f"GET HTTP {reply.status_code}")
        size = 0
        async for chunk in reply.aiter_raw():
            size += len(chunk)
    if size < least:
        raise RequestFailed("short body")
    return size


def stow_op(target: Target, template: Template, corpus: Corpus) -> Op:
    """Instance k of `corpus`, one per request."""

    async def op(client: httpx.AsyncClient, k: int) -> tuple[int, int]:
        data = template.render(corpus.ids(k))
        await post_instances(client, target, [data])
        return 1, len(data)

    return op


def batch_stow_op(
    target: Target, instance: Callable[[int], bytes], total: int, per_request: int
) -> Op:
    """Batch k of `per_request` of the instances `instance(0)` .. `instance(total - 1)`, one
    multipart request each."""

    async def op(client: httpx.AsyncClient, k: int) -> tuple[int, int]:
        data = [instance(i) for i in range(k * per_request, min(total, (k + 1) * per_request))]
        return len(data), await post_instances(client, target, data)

    return op


def study_load_op(target: Target, template: Template, ids: Sequence[Ids]) -> Op:
    """Batch k of PER_STUDY instances of `ids`, one multipart request each."""
    return batch_stow_op(target, lambda i: template.render(ids[i]), len(ids), PER_STUDY)


def query_op(target: Target, paths: Sequence[str]) -> Op:
    """QIDO path k (cycling); it must answer 200 with a non-empty array."""

    async def op(client: httpx.AsyncClient, k: int) -> tuple[int, int]:
        reply = await client.get(
            target.root + paths[k % len(paths)], headers={"Accept": "application/dicom+json"}
        )
        if reply.status_code != 200:
            raise RequestFailed(f"QIDO HTTP {reply.status_code}")
        if not reply.content.lstrip(b"[ \r\n\t").startswith(b"{"):
            raise RequestFailed("QIDO empty result")
        return 1, len(reply.content)

    return op


def retrieve_op(urls: Sequence[str], accept: str, least: int) -> Op:
    """GET url k (cycling), counting its bytes."""

    async def op(client: httpx.AsyncClient, k: int) -> tuple[int, int]:
        return 1, await get_bytes(client, urls[k % len(urls)], accept, least)

    return op
