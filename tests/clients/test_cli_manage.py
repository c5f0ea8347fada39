"""`dicomstore-client` management commands against a real `dicomstore serve`: in this process
(`cli.main`) for the commands' results, as a child process with piped output for progress, exit
codes and error lines as a script would see them."""

from __future__ import annotations

import itertools
import json
import re

import pytest

from dicomstore_client.cli import main
from dicomstore_client.errors import ExitCode
from tests.clients.conftest import LOCATION, PROJECT, LiveServer, run_cli, unique_id

PROGRESS_LINE = re.compile(r"(import|export): \d+/\d+ done, \d+ failed, \d+ pending")
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")  # anything but a newline


class Cli:
    """`dicomstore-client` run in this process against the live server, in one dataset."""

    def __init__(self, server: LiveServer, dataset: str, capsys: pytest.CaptureFixture[str]):
        self._globals = [
            *("--grpc", server.grpc_address, "--project", PROJECT, "--location", LOCATION),
            *("--dataset", dataset),
        ]
        self._capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self._capsys.readouterr()
        code = main([*self._globals, *args])
        out, err = self._capsys.readouterr()
        return code, out, err

    def json(self, *args: str) -> object:
        code, out, err = self("-o", "json", *args)
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def cli(
    live_server: LiveServer,
    dataset: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Cli:
    for name in ("GRPC_ENDPOINT", "HTTP_ENDPOINT", "TOKEN", "PROJECT", "LOCATION", "DATASET"):
        monkeypatch.delenv(f"DICOMSTORE_{name}", raising=False)
    return Cli(live_server, dataset, capsys)


def test_datasets_create_list_describe_update_delete(cli: Cli) -> None:
    dataset_id = unique_id("ds")
    code, out, _ = cli("datasets", "create", dataset_id, "--time-zone", "Europe/Paris")
    assert code == 0 and f"datasets/{dataset_id}" in out and "Europe/Paris" in out
    code, out, _ = cli("datasets", "list")
    assert code == 0 and dataset_id in out
    listed = cli.json("datasets", "list")
    assert isinstance(listed, list)
    assert {"name": f"projects/{PROJECT}/locations/{LOCATION}/datasets/{dataset_id}",
            "timeZone": "Europe/Paris"} in listed  # fmt: skip
    assert cli.json("datasets", "update", dataset_id, "--time-zone", "UTC") == {
        "name": f"projects/{PROJECT}/locations/{LOCATION}/datasets/{dataset_id}",
        "timeZone": "UTC",
    }
    described = cli.json("datasets", "describe", dataset_id)
    assert isinstance(described, dict) and described["timeZone"] == "UTC"
    code, out, _ = cli("datasets", "delete", dataset_id)
    assert code == 0 and out.startswith("deleted projects/")
    code, _, err = cli("datasets", "describe", dataset_id)
    assert code == ExitCode.NOT_FOUND and err.startswith("error: NOT_FOUND: ")


def test_stores_create_list_update_describe_metrics_delete(cli: Cli) -> None:
    code, out, _ = cli("stores", "create", "ct", "--label", "modality=ct", "--label", "site=a")
    assert code == 0 and "dicomStores/ct" in out
    cli("stores", "create", "mr", "--label", "modality=mr")
    code, out, _ = cli("stores", "list")
    assert code == 0 and re.search(r"\bct\b.*modality=ct, site=a", out)
    filtered = cli.json("stores", "list", "--filter", "labels.modality=mr")
    assert isinstance(filtered, list) and [s["labels"] for s in filtered] == [{"modality": "mr"}]
    updated = cli.json("stores", "update", "ct", "--label", "site=b", "--remove-label", "modality")
    assert isinstance(updated, dict) and updated["labels"] == {"site": "b"}
    described = cli.json("stores", "describe", "ct")
    assert isinstance(described, dict) and described["labels"] == {"site": "b"}
    code, out, _ = cli("stores", "metrics", "ct")
    assert code == 0 and re.search(r"instanceCount\s*│\s*0", out)
    code, out, _ = cli("stores", "delete", "ct")
    assert code == 0 and out.strip().endswith("/dicomStores/ct")
    assert [s["name"].rsplit("/", 1)[-1] for s in cli.json("stores", "list")] == ["mr"]  # type: ignore[attr-defined]


def test_stores_topic_and_streams_are_set_and_cleared(cli: Cli) -> None:
    created = cli.json(
        "stores", "create", "ct", "--pubsub-topic", "projects/demo/topics/new",
        "--stream-bigquery", "bq://demo.streams.ct",
    )  # fmt: skip
    assert isinstance(created, dict)
    assert created["notificationConfig"] == {"pubsubTopic": "projects/demo/topics/new"}
    assert created["streamConfigs"] == [
        {"bigqueryDestination": {"tableUri": "bq://demo.streams.ct"}}
    ]
    cleared = cli.json("stores", "update", "ct", "--clear-streams")
    assert isinstance(cleared, dict) and "streamConfigs" not in cleared
    assert cleared["notificationConfig"] == created["notificationConfig"]
    code, _, err = cli("stores", "update", "ct")
    assert (code, err) == (ExitCode.USAGE, "error: INVALID_ARGUMENT: nothing to update\n")


def test_import_and_operations_list_describe_cancel(cli: Cli, scans: str) -> None:
    cli("stores", "create", "ct")
    code, out, err = cli("import", "ct", f"{scans}/study/*.dcm", "--wait")
    assert code == 0, err
    name = re.search(r"projects/\S+/operations/\d+", out)
    assert name is not None and "import done: 2 succeeded, 0 failed" in out
    metrics = cli.json("stores", "metrics", "ct")
    assert isinstance(metrics, dict) and metrics["instanceCount"] == "2"
    code, out, _ = cli("operations", "list")
    assert code == 0 and re.search(r"ImportDicomData\s*│\s*done\s*│\s*2\s*│\s*0\s*│\s*0", out)
    described = cli.json("operations", "describe", name[0].rsplit("/", 1)[-1])
    assert isinstance(described, dict)
    assert (described["done"], described["metadata"]["counter"]) == (True, {"success": "2"})
    code, out, _ = cli("operations", "cancel", name[0])
    assert code == 0 and out.startswith("cancellation requested")


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (["stores", "describe", "missing"], ExitCode.NOT_FOUND, "error: NOT_FOUND: "),
        (["stores", "create", "taken"], ExitCode.CONFLICT, "error: ALREADY_EXISTS: "),
        (["stores", "create", "a/b"], ExitCode.INVALID, "error: INVALID_ARGUMENT: "),
        (["import", "taken", "s3://x/y"], ExitCode.INVALID, "error: INVALID_ARGUMENT: "),
        (
            ["--project", "", "stores", "list"],
            ExitCode.USAGE,
            "error: INVALID_ARGUMENT: no project",
        ),
        (["stores", "create", "x", "--label", "novalue"], ExitCode.USAGE, "Usage:"),
        (["export", "taken"], ExitCode.USAGE, "Usage:"),
        (["export", "taken", "--gcs", "gs://b/p", "--bigquery", "bq://p.d.t"], 2, "Usage:"),
        (["export", "taken", "--bigquery", "bq://p.d.t", "--write-disposition", "NO"], 2, "NO"),
    ],
)
def test_failures_are_one_line_with_the_exit_code_of_their_kind(
    cli: Cli, args: list[str], exit_code: int, message: str
) -> None:
    cli("stores", "create", "taken")
    code, _, err = cli(*args)
    assert code == exit_code
    assert message in err
    if message.startswith("error:"):
        assert err.count("\n") == 1 and "Traceback" not in err


def test_debug_adds_the_traceback(cli: Cli) -> None:
    code, _, err = cli("--debug", "stores", "describe", "missing")
    assert code == ExitCode.NOT_FOUND
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("error: NOT_FOUND")


# As a child process, output piped: what a script or CI log sees.


def _progress_lines(out: str) -> list[str]:
    assert not CONTROL.search(out), f"control characters in {out!r}"
    return [line for line in out.splitlines() if PROGRESS_LINE.fullmatch(line)]


def test_import_wait_prints_a_plain_line_per_update_then_the_outcome(
    live_server: LiveServer, dataset: str, scans: str
) -> None:
    env = live_server.env(dataset)
    assert run_cli("stores", "create", "ct", env=env).returncode == 0
    done = run_cli("import", "ct", f"{scans}/study/*.dcm", "--wait", env=env)
    assert done.returncode == 0, done.stderr
    lines = _progress_lines(done.stdout)
    assert lines[-1] == "import: 2/2 done, 0 failed, 0 pending"
    assert all(a != b for a, b in itertools.pairwise(lines)), "a line per change"
    assert done.stdout.splitlines()[-1].startswith("import done: 2 succeeded, 0 failed")


def test_import_wait_with_a_failed_item_exits_failed(
    live_server: LiveServer, dataset: str, scans: str
) -> None:
    env = live_server.env(dataset)
    run_cli("stores", "create", "ct", env=env)
    failed = run_cli("import", "ct", f"{scans}/study/**", "--wait", env=env)
    assert failed.returncode == ExitCode.FAILED
    assert _progress_lines(failed.stdout)[-1] == "import: 2/3 done, 1 failed, 0 pending"
    (line,) = failed.stderr.splitlines()
    assert re.fullmatch(
        r"error: 1 of 3 objects failed; http://\S+/logs/\S+ lists each one with its error"
        r" \(first failure: INVALID_ARGUMENT\)",
        line,
    )


def test_import_without_wait_prints_the_operation_name(
    live_server: LiveServer, dataset: str, scans: str
) -> None:
    env = live_server.env(dataset)
    run_cli("stores", "create", "ct", env=env)
    started = run_cli("import", "ct", f"{scans}/study/*.dcm", env=env)
    assert started.returncode == 0, started.stderr
    name = started.stdout.strip()
    assert re.fullmatch(
        rf"projects/{PROJECT}/locations/{LOCATION}/datasets/{dataset}/operations/\d+", name
    )
    with live_server.client(dataset) as client:
        assert client.wait(name).done


def test_import_wait_with_json_output_keeps_progress_on_stderr(
    live_server: LiveServer, dataset: str, scans: str
) -> None:
    env = live_server.env(dataset)
    run_cli("stores", "create", "ct", env=env)
    done = run_cli("-o", "json", "import", "ct", f"{scans}/study/*.dcm", "--wait", env=env)
    assert done.returncode == 0, done.stderr
    operation = json.loads(done.stdout)
    assert operation["done"] is True
    assert operation["metadata"]["counter"] == {"success": "2"}
    assert _progress_lines(done.stderr)[-1] == "import: 2/2 done, 0 failed, 0 pending"


def test_exports_wait_to_cloud_storage_and_bigquery(
    live_server: LiveServer, dataset: str, scans: str
) -> None:
    env = live_server.env(dataset)
    out = unique_id("out")
    live_server.bucket(out)
    table = f"bq://{PROJECT}.{dataset.replace('-', '_')}.instances"
    run_cli("stores", "create", "ct", env=env)
    assert run_cli("import", "ct", f"{scans}/study/*.dcm", "--wait", env=env).returncode == 0
    to_gcs = run_cli("export", "ct", "--gcs", f"gs://{out}/x", "--wait", env=env)
    assert to_gcs.returncode == 0, to_gcs.stderr
    assert _progress_lines(to_gcs.stdout)[-1] == "export: 2/2 done, 0 failed, 0 pending"
    assert len(list((live_server.data_dir / "gcs" / out / "x").rglob("*.dcm"))) == 2
    to_bq = run_cli("export", "ct", "--bigquery", table, "--wait", env=env)
    assert to_bq.returncode == 0, to_bq.stderr
    refused = run_cli("export", "ct", "--bigquery", table, "--wait", env=env)
    assert refused.returncode == ExitCode.INVALID
    assert refused.stderr.startswith("error: FAILED_PRECONDITION: ")
    appended = run_cli(
        "export", "ct", "--bigquery", table, "--write-disposition", "WRITE_APPEND", "--wait",
        env=env,
    )  # fmt: skip
    assert appended.returncode == 0, appended.stderr


def test_an_unreachable_endpoint_exits_unavailable(live_server: LiveServer) -> None:
    env = live_server.env() | {"DICOMSTORE_GRPC_ENDPOINT": "127.0.0.1:1"}
    failed = run_cli("datasets", "list", env=env)
    assert failed.returncode == ExitCode.UNAVAILABLE
    (line,) = failed.stderr.splitlines()
    assert line.startswith("error: UNAVAILABLE: failed to connect")
