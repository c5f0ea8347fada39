"""`--workers`: a number of processes or `auto`; and the settings a supervisor hands its
workers (`config.arguments`, `supervisor.worker_settings`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from dicomstore import config
from dicomstore.supervisor import worker_settings


def load(*argv: str, env: dict[str, str] | None = None) -> config.Settings:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return config.load(parser.parse_args(list(argv)), env or {})


def test_workers_default_to_one() -> None:
    assert load().workers == 1


@pytest.mark.parametrize(
    ("value", "workers"), [("1", 1), ("3", 3), ("auto", os.cpu_count()), ("AUTO", os.cpu_count())]
)
def test_workers_are_a_number_or_auto(value: str, workers: int) -> None:
    assert load("--workers", value).workers == workers
    assert load(env={"DICOMSTORE_WORKERS": value}).workers == workers


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("many", "must be a number of processes or auto"),
        ("1.5", "must be a number of processes or auto"),
        ("0", "must be between 1 and 256"),
        ("257", "must be between 1 and 256"),
    ],
)
def test_bad_workers_exit_naming_the_flag_and_the_reason(value: str, reason: str) -> None:
    with pytest.raises(SystemExit, match=f"--workers: {reason}, got '{value}'"):
        load("--workers", value)
    with pytest.raises(SystemExit, match=f"DICOMSTORE_WORKERS: {reason}"):
        load(env={"DICOMSTORE_WORKERS": value})


def test_arguments_load_back_into_the_same_settings() -> None:
    settings = load(
        "--workers",
        "2",
        "--data-dir",
        "some dir",
        "--shutdown-grace",
        "2.5",
        "--public-url",
        "https://pacs.example.org/x",
        "--tls-cert",
        "c.pem",
        "--tls-key",
        "k.pem",
    )
    assert load(*config.arguments(settings)) == settings
    assert load(*config.arguments(config.Settings())) == config.Settings()


def test_workers_share_the_pixel_processes_and_get_the_reserved_ports() -> None:
    settings = config.Settings(workers=2, pixel_processes=5, data_dir=Path("d"))
    worker = worker_settings(settings, grpc_port=5000, http_port=6000)
    assert (worker.grpc_port, worker.http_port, worker.pixel_processes) == (5000, 6000, 2)
    assert worker.workers == 2 and worker.data_dir == Path("d")
    many = config.Settings(workers=8, pixel_processes=2)
    assert worker_settings(many, grpc_port=1, http_port=2).pixel_processes == 1
