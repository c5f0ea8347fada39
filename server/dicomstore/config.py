"""Settings: one frozen value, every field a `--flag` with a `DICOMSTORE_*` environment twin."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DICOMWEB_MODES = ("google", "standard")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "text")
EVENT_LOOPS = ("uvloop", "asyncio")


def _setting(default: Any, help: str, **kwargs: Any) -> Any:
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass(frozen=True)
class Settings:
    host: str = _setting("127.0.0.1", "address both transports listen on")
    grpc_port: int = _setting(50051, "gRPC port (0 picks a free port)", low=0, high=65535)
    http_port: int = _setting(
        8080, "HTTP port for REST and /healthz (0 picks a free port)", low=0, high=65535
    )
    data_dir: Path = _setting(Path("data"), "directory of the catalog and the blobs")
    dicomweb_mode: str = _setting("google", "DICOMweb behaviour", choices=DICOMWEB_MODES)
    log_level: str = _setting("info", "log level", choices=LOG_LEVELS)
    log_format: str = _setting(
        "json", "log format: one JSON object per line, or text", choices=LOG_FORMATS
    )
    tls_cert: Path | None = _setting(None, "PEM certificate chain: serve gRPC over TLS")
    tls_key: Path | None = _setting(None, "PEM private key of --tls-cert")
    shutdown_grace: float = _setting(
        10.0, "seconds in-flight calls get to finish on SIGTERM", low=0, high=3600
    )
    max_instance_bytes: int = _setting(
        4 << 30,
        "largest DICOM instance STOW-RS accepts, in bytes (413 beyond)",
        low=1,
        high=1 << 40,
    )
    operation_workers: int = _setting(
        4, "long-running operations run at the same time", low=1, high=256
    )
    event_loop: str = _setting(
        "uvloop",
        "event loop both transports run on (uvloop falls back to asyncio where it is missing)",
        choices=EVENT_LOOPS,
    )

    @property
    def catalog_path(self) -> Path:
        return self.data_dir / "catalog.sqlite"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return "DICOMSTORE_" + name.upper()


def _convert(f: dataclasses.Field[Any], text: str) -> Any:
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind.startswith("Path"):
        return Path(text) if text else None
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(Settings):
        parser.add_argument(
            _flag(f.name),
            dest=f.name,
            default=None,
            choices=f.metadata.get("choices"),
            help=f"{f.metadata['help']} (env {env_name(f.name)}; default {f.default})",
        )


def load(args: argparse.Namespace | None = None, env: Mapping[str, str] = os.environ) -> Settings:
    """Flags win over environment variables, which win over defaults."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        text = getattr(args, f.name, None) if args is not None else None
        source = _flag(f.name)
        if text is None and env_name(f.name) in env:
            text, source = env[env_name(f.name)], env_name(f.name)
        if text is None:
            continue
        choices: Sequence[str] | None = f.metadata.get("choices")
        if choices and text not in choices:
            raise SystemExit(f"{source}: must be one of {', '.join(choices)}, got {text!r}")
        try:
            value = _convert(f, text)
        except ValueError:
            raise SystemExit(f"{source}: invalid value {text!r}") from None
        low, high = f.metadata.get("low"), f.metadata.get("high")
        if low is not None and not low <= value <= high:  # NaN fails this too
            raise SystemExit(f"{source}: must be between {low} and {high}, got {text!r}")
        values[f.name] = value
    settings = Settings(**values)
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise SystemExit("--tls-cert and --tls-key go together")
    return settings
