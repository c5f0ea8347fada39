"""The benchmark commands and `dicomstore-crash-trials`, run as a user runs them, on tiny
settings: they start their own server, measure every workload (or run every trial) without a
failed request or a violation and report it as JSON."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from typing import Any

from tests.faults import unavailable

from dicomstore_bench import postgres

#: A run measured in seconds: short timed runs over a few dozen instances.
TINY = [
    # A window long enough that a loaded machine still completes a request at concurrency 16.
    *("--duration", "1"),
    *("--qido-instances", "40", "--qido-queries", "2"),
    *("--load-concurrency", "4"),
]


def _command(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", f"dicomstore_bench.{module}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def _run(module: str, *args: str) -> tuple[int, dict[str, Any], str]:
    done = _command(module, *args, "--json")
    return done.returncode, json.loads(done.stdout), done.stderr


def test_dicomweb_bench_measures_every_workload_and_says_orthanc_is_missing() -> None:
    code, report, stderr = _run(
        "dicomweb_bench", "--orthanc-bin", "/nonexistent/Orthanc", *TINY, "--wado-study-mb", "1"
    )

    assert code == 0, stderr
    assert "Orthanc is missing: /nonexistent/Orthanc is not an executable" in stderr
    assert report["versions"]["orthanc"].startswith("Orthanc is missing")
    rows = {(row["workload"], row["unit"]): row for row in report["rows"]}
    expected = [
        *(f"STOW {size} c={c}" for size in ("10 KB", "0.5 MB") for c in (1, 4, 16)),
        "STOW multipart 10/request c=4 (QIDO load)",
        "QIDO mix c=1",
        "QIDO mix c=4",
        "WADO study (multipart) c=1",
        "WADO instance (multipart) c=4",
        "WADO instance (application/dicom) c=4",
        "peak RSS, whole run (and VmHWM)",
    ]
    assert set(expected) <= {workload for workload, _ in rows}
    for row in report["rows"]:
        assert not row["errors"], row
        assert set(row["values"]) == {"dicomstore"}, row
        value = row["values"]["dicomstore"]
        assert value is not None and math.isfinite(value) and value > 0, row
        assert row["ratio"] is None  # nothing to compare with
    assert rows[("QIDO mix c=1", "p50 ms")]["values"]["dicomstore"] > 0
    assert rows[("peak RSS, whole run (and VmHWM)", "MB")]["met"] is True


def test_dicomweb_bench_runs_only_the_workloads_named() -> None:
    code, report, stderr = _run("dicomweb_bench", "--no-orthanc", "--workloads", "qido", *TINY)

    assert code == 0, stderr
    assert report["settings"]["workloads"] == ["qido"]
    workloads = {row["workload"] for row in report["rows"]}
    assert "QIDO mix c=4" in workloads
    assert not any(w.startswith(("STOW 10 KB", "STOW 0.5 MB", "WADO")) for w in workloads)
    assert "peak RSS during stow" not in workloads
    assert {"peak RSS during qido", "peak RSS, whole run (and VmHWM)"} <= workloads


def test_dicomweb_bench_refuses_an_unknown_workload() -> None:
    done = _command("dicomweb_bench", "--workloads", "stow,ping")
    assert done.returncode == 2
    assert "unknown workload ping: choose from stow,qido,wado" in done.stderr


def test_grpc_bench_measures_every_scenario_on_its_own_server() -> None:
    code, report, stderr = _run(
        "grpc_bench", "--duration", "0.2", "--concurrency", "1,4", "--stores", "30"
    )

    assert code == 0, stderr
    assert report["own_server"] is True
    measured = {(row["scenario"], row["concurrency"]): row for row in report["rows"]}
    scenarios = ("GetDicomStore", "ListDicomStores", "CreateDicomStore")
    assert set(measured) == {(s, c) for s in scenarios for c in (1, 4)}
    for row in measured.values():
        assert row["errors"] == 0, row
        assert row["calls_per_s"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"], row


def test_crash_trials_kill_the_server_and_find_nothing_lost_or_left() -> None:
    code, report, stderr = _run(
        "crash_trials",
        # Seed 4 makes the first trial a delete trial: its study is acknowledged before the kill.
        *("--trials", "3", "--seed", "4", "--delete-fraction", "0.5"),
        *("--max-delay", "0.6", "--delete-study-instances", "20"),
    )

    assert code == 0, stderr
    assert report["trials"] == 3
    assert sum(report["violations"].values()) == 0, report["violation_details"]
    assert set(report["violations"]) >= {"lost", "corrupt", "phantom", "orphan-blob", "catalog"}
    assert sum(report["kills_by_phase"].values()) >= 3
    assert report["acknowledged_instances_checked"] >= 20
    assert sum(report["deletes"].values()) >= 1
    assert report["restart_s"]["max"] > 0


TRANSFERS = (
    "import gs:// (embedded)",
    "import gs:// (fake-gcs-server)",
    "export to gs:// (embedded)",
)
BIGQUERY = "export to bq:// (DuckDB)"


def test_transfer_bench_imports_and_exports_every_instance() -> None:
    code, report, stderr = _run("transfer_bench", "--instances", "30", "--no-orthanc")

    assert code == 0, stderr
    assert report["problems"] == []
    rows = {(row["measurement"], row["unit"]): row for row in report["rows"]}
    for name in TRANSFERS:
        for key in ((name, "inst/s"), (name, "MB/s")):
            value = rows[key]["min"]
            assert value is not None and math.isfinite(value) and value > 0, rows[key]
        # CPU time is counted in clock ticks (10 ms), more than a tiny run may take.
        assert rows[(f"{name}: server CPU", "ms/inst")]["min"] >= 0
        assert rows[(f"{name}: peak RSS", "MB")]["met"] is True
        done = report["rounds"][0]["transfers"][name]
        assert (done["success"], done["failure"], done["found"]) == (30, 0, 30), done
    assert not any(workload.startswith("Orthanc") for workload, _ in rows)
    bigquery = report["rounds"][0]["transfers"][BIGQUERY]
    if bigquery["unavailable"]:  # until ExportDicomData to BigQuery lands
        assert rows[(BIGQUERY, "")]["note"].startswith("not available: UNIMPLEMENTED")
    else:
        assert (bigquery["success"], bigquery["found"]) == (30, 30), bigquery
        assert rows[(BIGQUERY, "rows/s")]["min"] > 0


def test_transfer_bench_prints_each_figure_in_its_table() -> None:
    done = _command("transfer_bench", "--instances", "10", "--no-orthanc", "--no-fake-gcs")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("machine: ")
    # measurement, unit, value and target are set apart by two spaces or more
    cells = {tuple(re.split(r"\s{2,}", line)[:2]): re.split(r"\s{2,}", line)[2:] for line in lines}
    for name in ("import gs:// (embedded)", "export to gs:// (embedded)"):
        for key in ((name, "inst/s"), (name, "MB/s")):
            assert float(cells[key][0].replace(",", "")) > 0, cells[key]
        assert float(cells[(f"{name}: server CPU", "ms/inst")][0]) >= 0
        assert cells[(f"{name}: peak RSS", "MB")][1] == "< 300 MB ok"
    assert not any("fake-gcs-server" in line for line in lines)


REPLICA_WORKLOADS = (
    "STOW 10 KB c=4",
    "STOW multipart 10/request c=4 (QIDO load)",
    "QIDO mix c=4",
)


def test_replica_bench_measures_sqlite_and_each_replica_count(fake_gcs_url: str) -> None:
    """`fake_gcs_url` skips without the emulator; the command starts one of its own."""
    found = postgres.runnable()
    if isinstance(found, str):
        unavailable(found)
    code, report, stderr = _run(
        "replica_bench",
        *("--replicas", "1,2", "--duration", "1", "--concurrency", "4"),
        *("--qido-instances", "40", "--qido-queries", "2"),
    )

    assert code == 0, stderr
    columns = ["sqlite", "1 replica", "2 replicas"]
    assert report["columns"] == columns
    rows = {(row["workload"], row["unit"], row["part"]): row for row in report["rows"]}
    for row in report["rows"]:
        assert not row["errors"], row
        assert set(row["values"]) == set(columns), row
    rates = [(w, "queries/s" if w.startswith("QIDO") else "inst/s", "") for w in REPLICA_WORKLOADS]
    kinds = {row["workload"] for row in report["rows"] if row["unit"] == "p99 ms"}
    assert len(kinds) == 6 and "QIDO mix c=1" in kinds  # five query kinds and their mix
    latencies = [(kind, unit, "") for kind in kinds for unit in ("p50 ms", "p99 ms")]
    for key in rates + latencies:
        for value in rows[key]["values"].values():
            assert value is not None and math.isfinite(value) and value > 0, rows[key]
    for workload in REPLICA_WORKLOADS:
        unit = "CPU ms/query" if workload.startswith("QIDO") else "CPU ms/inst"
        # CPU time is counted in clock ticks (10 ms), more than a tiny run may take.
        for part in ("dicomstore", "all servers"):
            assert all(v >= 0 for v in rows[(workload, unit, part)]["values"].values())
        for part in ("PostgreSQL", "fake-gcs-server"):
            values = rows[(workload, unit, part)]["values"]
            assert values["sqlite"] is None
            assert values["1 replica"] >= 0 and values["2 replicas"] >= 0
    for part in ("PostgreSQL", "fake-gcs-server"):  # what the replicas stored went there
        assert rows[("STOW 10 KB c=4", "CPU ms/inst", part)]["values"]["2 replicas"] > 0
