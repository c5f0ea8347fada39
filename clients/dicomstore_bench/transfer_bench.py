"""`dicomstore-transfer-bench`: ImportDicomData and ExportDicomData throughput, with Orthanc's best
multipart STOW rate as the reference, in one run.

--instances small instances (the ~10 KB Secondary Capture of `dicomstore-dicomweb-bench`,
distinct UIDs, studies of 10) are generated once into a work directory. Then, per round
(--repeat), each server a subprocess on loopback on fresh storage, one after the other:

1. Orthanc (Debian packages `orthanc`, `orthanc-dicomweb`; skipped with --no-orthanc or when
   missing): a fresh server per concurrency 1, 4 and 16 takes every instance as multipart
   STOW-RS, PER_REQUEST instances a request; the best of the three rates is the reference.
2. `dicomstore serve` on a fresh data dir with the instances copied into its embedded Cloud
   Storage (`DATA_DIR/gcs/bench/in/`): ImportDicomData `gs://bench/in/*.dcm`, then from that store
   ExportDicomData to `gs://bench-out/x` (embedded) and to `bq://bench.dicom.instances` (DuckDB).
3. fake-gcs-server (skipped with --no-fake-gcs or when missing), into which the instances were
   uploaded once, and a fresh `dicomstore serve --gcs-endpoint URL`: ImportDicomData again.

Each operation is timed from the call to the GetOperation that says it is done, with the server's
peak RSS (process tree, sampled every 0.1 s) over that span. Every operation must count every
instance a success and none a failure, and the benchmark counts what arrived (instances in the
store, objects written, rows in the table); anything else is printed and makes the exit status 1.
2 means the benchmark could not run. A destination the server does not implement is reported as
"not available".
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import grpc
import httpx

from dicomstore_bench.arguments import positive
from dicomstore_bench.fake_gcs import EmulatorUnavailable, fake_gcs_server
from dicomstore_bench.report import finite, machine, machine_line
from dicomstore_bench.servers import find_orthanc, run_async
from dicomstore_bench.transfer_report import Report, print_table
from dicomstore_bench.transfer_rounds import IMPORT_FAKE_GCS, Bench, phase

DEFAULT_INSTANCES = 10_000


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dicomstore-transfer-bench", description=__doc__.splitlines()[0]
    )
    p.add_argument("--instances", type=positive, default=DEFAULT_INSTANCES, help="default 10000")
    p.add_argument("--repeat", type=positive, default=1, help="rounds; ranges are min-max")
    p.add_argument("--no-orthanc", action="store_true", help="no Orthanc STOW reference")
    p.add_argument("--no-fake-gcs", action="store_true", help="no import from fake-gcs-server")
    p.add_argument(
        "--orthanc-bin", help="Orthanc executable (default: Orthanc on PATH or /usr/sbin)"
    )
    p.add_argument("--orthanc-plugin", help="libOrthancDicomWeb.so (default: the Debian path)")
    p.add_argument(
        "--keep", type=Path, metavar="DIR", help="work in DIR (made, must be empty) and keep it"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def _work_dir(keep: Path | None, stack: contextlib.ExitStack) -> Path:
    if keep is None:
        return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="transfer-bench-")))
    keep.mkdir(parents=True, exist_ok=True)
    if any(keep.iterdir()):
        raise RuntimeError(f"--keep {keep}: the folder is not empty")
    return keep


async def _run(args: argparse.Namespace, work: Path, report: Report) -> None:
    bench = Bench(work, args.instances, keep=args.keep is not None)
    phase(f"generating {args.instances:,} instances in {work}")
    instances = bench.generate()
    report.instance_bytes = instances.size
    if not args.no_orthanc:
        found = find_orthanc(args.orthanc_bin, args.orthanc_plugin)
        if isinstance(found, str):
            report.notes.append(f"{found}: no STOW reference")
            report.versions["orthanc"] = found
        else:
            bench.orthanc = found
    with contextlib.ExitStack() as stack:
        if not args.no_fake_gcs:
            try:
                url = stack.enter_context(fake_gcs_server(work / "fake-gcs-server"))
            except EmulatorUnavailable as exc:
                bench.missing[IMPORT_FAKE_GCS] = str(exc)
            else:
                phase(f"uploading {args.instances:,} instances to fake-gcs-server")
                await bench.upload(url, instances)
        for number in range(args.repeat):
            report.rounds.append(await bench.round(number, instances))
    report.versions.update(bench.versions)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    began = time.monotonic()
    report = Report(args.instances)
    report.versions["dicomstore"] = importlib.metadata.version("dicomstore")
    try:
        with contextlib.ExitStack() as stack:
            work = _work_dir(args.keep, stack)
            run_async(_run(args, work, report))
    except (RuntimeError, OSError, httpx.HTTPError, grpc.RpcError) as exc:
        print(f"dicomstore-transfer-bench: {exc}", file=sys.stderr)
        return 2
    rows = report.rows()
    problems = report.problems()
    host = machine()
    if args.json:
        out = {
            "machine": host,
            "versions": report.versions,
            "settings": {"instances": args.instances, "repeat": args.repeat},
            "instance_bytes": report.instance_bytes,
            "elapsed_s": round(time.monotonic() - began, 1),
            "rows": [asdict(row) | {"min": row.low, "max": row.high} for row in rows],
            "rounds": [one.as_json() for one in report.rounds],
            "problems": problems,
            "notes": report.notes,
        }
        print(json.dumps(finite(out), indent=2))
    else:
        header = [
            machine_line(host),
            "servers: " + " | ".join(f"{k} {v}" for k, v in report.versions.items()),
            f"instances: {args.instances:,} x {report.instance_bytes / args.instances:,.0f} B"
            f" (Secondary Capture); {args.repeat} round(s), ranges min to max; MB = 10^6 B",
            f"elapsed: {time.monotonic() - began:.0f} s",
        ]
        print_table(header, rows, [*problems, *report.notes])
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
