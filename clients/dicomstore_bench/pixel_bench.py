"""`dicomstore-pixel-bench`: pixel work (rendering, transcoding, decoded frames) of dicomstore
beside Orthanc, in one run.

Both servers run as subprocesses on loopback on fresh storage (`pixel_servers.py`) and get the
same generated instances (`pixel_images.py`) over STOW-RS. Each request (`pixel_workloads.py`) is
sent once and its answer checked outside the clock (`pixel_checks.py`), then timed for --duration
seconds after WARMUP_S of warm-up (`pixel_run.py`). A server answering an error status is "not
available" for that measurement (reported, not timed); a 200 with a wrong body is a problem.
Rows: p50, p99 (ms), requests or frames per second, the server's CPU time per request (process
tree, /proc, warm-up included); ratio = dicomstore / Orthanc. With --repeat N the servers and
instances stay and the measurements run N times; figures are min-max over the rounds and a target
is met when every round meets it.

A server that dies (Orthanc 1.10 with GDCM 1.5 segfaults now and then decoding JPEG 2000) is
started again on fresh storage and loaded, and the run it died in is run again, up to ATTEMPTS
runs; its row says so. Exit status: 0; 1 when an answer checked was wrong or a timed request to
dicomstore failed (Orthanc's failures are shown, not counted: it is the reference); 2 when the
benchmark could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import httpx

from dicomstore_bench.arguments import positive, workload_list
from dicomstore_bench.load import WARMUP_S, cheap_failed_sniffio
from dicomstore_bench.pixel_report import OURS, print_table
from dicomstore_bench.pixel_run import Bench, Settings, phase
from dicomstore_bench.pixel_servers import ORTHANC_GDCM, Servers, start_servers
from dicomstore_bench.pixel_workloads import WORKLOADS
from dicomstore_bench.report import finite, machine, machine_line
from dicomstore_bench.servers import run_async


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dicomstore-pixel-bench", description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per timed run")
    p.add_argument("--repeat", type=positive, default=1, help="rounds; figures are min-max")
    p.add_argument(
        "--workloads",
        type=workload_list(WORKLOADS),
        default=WORKLOADS,
        help="comma-separated subset of rendered,transcode,frames (default: all)",
    )
    p.add_argument("--no-orthanc", action="store_true", help="measure dicomstore alone")
    p.add_argument("--no-dicomstore", action="store_true", help="measure Orthanc alone")
    p.add_argument(
        "--orthanc-bin", help="Orthanc executable (default: Orthanc on PATH or /usr/sbin)"
    )
    p.add_argument("--orthanc-plugin", help="libOrthancDicomWeb.so (default: the Debian path)")
    p.add_argument(
        "--orthanc-gdcm",
        default=ORTHANC_GDCM,
        help=f"libOrthancGdcm.so, Orthanc's JPEG 2000 decoder (default {ORTHANC_GDCM})",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cheap_failed_sniffio()
    settings = Settings(args.duration, args.repeat, args.workloads)
    began, load = time.monotonic(), os.getloadavg()[0]
    versions: dict[str, str] = {}
    try:
        with contextlib.ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pixel-bench-")))
            servers = Servers(stack, tmp)
            targets = start_servers(
                servers,
                versions,
                dicomstore=not args.no_dicomstore,
                orthanc=not args.no_orthanc,
                orthanc_bin=args.orthanc_bin,
                orthanc_plugin=args.orthanc_plugin,
                orthanc_gdcm=args.orthanc_gdcm,
            )
            phase("generating the instances")
            bench = Bench(targets, settings, servers.restart)
            run_async(bench.run())
    except (RuntimeError, OSError, httpx.HTTPError) as exc:
        print(f"dicomstore-pixel-bench: {exc}", file=sys.stderr)
        return 2
    rows, notes = bench.rows(), bench.notes()
    # Orthanc's failures are shown but are the reference's: only ours fail the run.
    problems = bench.problems + [
        f"{row.measurement}: {errors}" for row in rows if (errors := row.errors.get(OURS))
    ]
    host = machine()
    elapsed = time.monotonic() - began
    if args.json:
        report = {
            "machine": host,
            "versions": versions,
            "settings": asdict(settings),
            "sizes_bytes": {name: len(image.data) for name, image in bench.images.items()},
            "elapsed_s": round(elapsed, 1),
            "load_average_before": load,
            "rows": [asdict(row) | {"ratios": row.ratios} for row in rows],
            "missing": bench.missing,
            "problems": problems,
            "notes": notes,
        }
        print(json.dumps(finite(report), indent=2))
    else:
        sizes = ", ".join(f"{i.label} {len(i.data):,} B" for i in bench.images.values())
        header = [
            machine_line(host),
            "servers: " + " | ".join(f"{k} {v}" for k, v in versions.items()),
            f"instances: {sizes}; {settings.duration:g} s per timed run (+{WARMUP_S:g} s"
            f" warm-up), {settings.repeat} round(s), ranges min-max; ratio = dicomstore / orthanc",
            f"elapsed: {elapsed:.0f} s; load average before: {load:.2f}",
        ]
        print_table(
            header, rows, bench.missing, [*notes, *(f"PROBLEM {p}" for p in bench.problems)]
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
