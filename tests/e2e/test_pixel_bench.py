"""`dicomstore-pixel-bench` run as a user runs it, on a tiny duration: it starts dicomstore and
Orthanc, checks every answer once and prints a table with figures for both servers."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
from tests.e2e.orthanc import orthanc_or_skip

#: Measured a quarter second per run (after the benchmark's one-second warm-up).
TINY = ("--duration", "0.25")

#: Requests Orthanc serves without its GDCM plugin (no JPEG 2000), which the machine may lack.
ORTHANC_NATIVE = ("rendered CT -> JPEG", "frame 1 of native CT")


def _figure(cell: str) -> float:
    """A cell of the table: a number, or the low end of a min-max range; NaN for none."""
    if cell in ("-", "n/a"):
        return math.nan
    return float(re.split(r"(?<=\d)-", cell)[0].replace(",", ""))


def _table(stdout: str) -> dict[tuple[str, str], tuple[float, float]]:
    """(measurement, unit) -> (dicomstore, orthanc) of every figure row, whose cells are set apart
    by two spaces or more."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("measurement"))
    rows: dict[tuple[str, str], tuple[float, float]] = {}
    for line in lines[start + 1 :]:
        if line.startswith(("not available: ", "note: ", " ")):
            continue
        name, unit, ours, theirs = re.split(r"\s{2,}", line)[:4]
        rows[(name, unit)] = (_figure(ours), _figure(theirs))
    return rows


@pytest.mark.timeout(300)
def test_pixel_bench_prints_figures_for_both_servers() -> None:
    orthanc_or_skip()
    command = [sys.executable, "-m", "dicomstore_bench.pixel_bench", *TINY]
    done = subprocess.run(command, capture_output=True, text=True, timeout=280)

    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    assert done.stdout.startswith("machine: ")
    # Orthanc needs its GDCM plugin (Debian `orthanc-gdcm`) for JPEG 2000, and may crash on it
    assert not re.search(r"^not available: .*\(dicomstore\)", done.stdout, re.M), done.stdout
    rows = _table(done.stdout)
    for c in (1, 4):
        for unit in ("p50 ms", "p99 ms", "req/s"):
            assert (f"rendered CT -> JPEG c={c}", unit) in rows
            assert (f"transcode J2K CT -> explicit LE c={c}", unit) in rows
    for name in ("frame 1 of J2K CT, decoded", "frames 1-8 of 8-frame J2K, decoded"):
        assert (f"{name} c=4", "frames/s") in rows
    for (name, unit), (ours, theirs) in rows.items():
        assert math.isfinite(ours), (name, unit)
        assert ours > 0 or unit == "CPU ms/req", (name, unit, ours)
        if name.startswith(ORTHANC_NATIVE) and " / " not in name:
            assert math.isfinite(theirs) and theirs >= 0, (name, unit, theirs)
    assert re.search(r"^rendered CT -> JPEG c=1 +p50 ms .*  < 30 ms (ok|MISS)$", done.stdout, re.M)
    assert re.search(
        r"^rendered CT -> JPEG c=4 +req/s .*  >= orthanc (ok|MISS)$", done.stdout, re.M
    )
