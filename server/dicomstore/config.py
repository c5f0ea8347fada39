"""Settings: one frozen value, every field a `--flag` with a `DICOMSTORE_*` environment twin."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DICOMWEB_MODES = ("google", "standard")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "text")
EVENT_LOOPS = ("asyncio", "uvloop")


def _setting(default: Any, help: str, **kwargs: Any) -> Any:
    return field(default=default, metadata={"help": help, **kwargs})


def check_public_url(text: str) -> str:
    """An absolute http(s) URL without query or fragment, without its trailing slash.

    "" means none: the absolute URLs are then built from each request. Raises ValueError.
    """
    text = text.strip()
    if not text:
        return ""
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    if any(char.isspace() or ord(char) < 0x20 for char in text):
        raise ValueError("must not contain spaces or control characters")
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise ValueError("must not have a query or a fragment")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry a user name or password")
    return text.rstrip("/")


def parse_workers(text: str) -> int:
    """A number of processes, or `auto`: one per core. Raises ValueError."""
    if text.strip().lower() == "auto":
        return os.cpu_count() or 1
    try:
        return int(text)
    except ValueError:
        raise ValueError("must be a number of processes or auto") from None


def check_allowed_ips(text: str) -> str:
    """`*`, or comma-separated IP addresses and networks (CIDR), normalised; "" trusts none.

    Raises ValueError naming the entry that is neither.
    """
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    if entries == ["*"]:
        return "*"
    normalised = []
    for entry in entries:
        try:
            # A network keeps only its network bits (10.1.2.3/8 is 10.0.0.0/8), as uvicorn,
            # which checks the peers, reads only exact networks.
            if "/" in entry:
                normalised.append(str(ipaddress.ip_network(entry, strict=False)))
            else:
                normalised.append(str(ipaddress.ip_address(entry)))
        except ValueError:
            raise ValueError(
                f"{entry!r} is not an IP address or network (or * alone, for every peer)"
            ) from None
    return ",".join(normalised)


def check_cors_origins(text: str) -> str:
    """`*`, or comma-separated origins (`scheme://host[:port]`) normalised as browsers send them in
    `Origin` (lower case, no default port); "" allows none. Raises ValueError naming the entry
    that is neither.
    """
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    if entries == ["*"]:
        return "*"
    normalised: list[str] = []
    for entry in entries:
        origin = _origin(entry)
        if origin is None:
            raise ValueError(
                f"{entry!r} is not an origin, http(s)://host[:port] (or * alone, for every origin)"
            )
        if origin not in normalised:
            normalised.append(origin)
    return ",".join(normalised)


def _origin(text: str) -> str | None:
    """`text` as a browser's Origin header names it; None when it is not an origin."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in ("http", "https") or not host or parts.netloc.endswith(":"):
        return None
    if parts.path not in ("", "/") or "?" in text or "#" in text or "@" in parts.netloc:
        return None
    if any(char.isspace() or ord(char) < 0x20 for char in text):
        return None
    host = f"[{host}]" if ":" in host else host
    default = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"


def check_catalog_url(text: str) -> str:
    """A postgresql:// (or postgres://) URL, or "" for the SQLite file in the data directory.

    Raises ValueError for any other scheme.
    """
    text = text.strip()
    if text and urlsplit(text).scheme not in ("postgresql", "postgres"):
        raise ValueError("must be a postgresql:// URL (or empty for the SQLite catalog)")
    return text


@dataclass(frozen=True)
class Settings:
    host: str = _setting("127.0.0.1", "address both transports listen on")
    grpc_port: int = _setting(50051, "gRPC port (0 picks a free port)", low=0, high=65535)
    http_port: int = _setting(
        8080, "HTTP port for REST and /healthz (0 picks a free port)", low=0, high=65535
    )
    data_dir: Path = _setting(Path("data"), "directory of the catalog and the blobs")
    catalog: str = _setting(
        "",
        "the catalog's database: postgresql://USER:PASSWORD@HOST:PORT/DATABASE (libpq's URL"
        " form, ?host=/socket/dir for a Unix socket); without it, the SQLite file"
        " DATA_DIR/catalog.sqlite",
        check=check_catalog_url,
    )
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
        "asyncio",
        "event loop both transports run on: asyncio's own, on which grpcio tests its asyncio"
        " server, or uvloop (falls back to asyncio where it is not installed)",
        choices=EVENT_LOOPS,
    )
    public_url: str = _setting(
        "",
        "base of every absolute URL the server writes (RetrieveURL, BulkDataURI,"
        " Content-Location), e.g. https://pacs.example.org/dicomstore; without it, the origin"
        " each request reached",
        check=check_public_url,
    )
    gcs_endpoint: str = _setting(
        "",
        "base URL of the Cloud Storage JSON API that gs:// URIs of import and export go to"
        " (https://storage.googleapis.com, or an emulator); without it, the"
        " STORAGE_EMULATOR_HOST environment variable, else files under DATA_DIR/gcs",
    )
    blobs: str = _setting(
        "",
        "where instance bytes are kept: gs://BUCKET[/PREFIX], a Cloud Storage bucket reached"
        " like --gcs-endpoint (else Google's); without it, files under DATA_DIR/blobs",
    )
    bigquery_endpoint: str = _setting(
        "",
        "base URL of the BigQuery API that bq:// tables of export and streaming go to"
        " (needs the bigquery extra); without it, DuckDB files under DATA_DIR/bigquery",
    )
    import_concurrency: int = _setting(
        8, "Cloud Storage objects an import downloads at the same time", low=1, high=256
    )
    pixel_processes: int = _setting(
        os.cpu_count() or 1,
        "worker processes that decode, transcode and render pixel data",
        low=1,
        high=256,
    )
    pixel_memory_limit: int = _setting(
        256 << 20,
        "most memory, in bytes, one request's pixel work may hold (a decoded frame and its"
        " working copies); a request over it is refused with 400",
        low=1 << 20,
        high=1 << 40,
    )
    workers: int = _setting(
        1,
        "server processes sharing both ports (SO_REUSEPORT) and the data directory, under a"
        " supervisor that restarts them; auto: one per core",
        low=1,
        high=256,
        parse=parse_workers,
    )
    forwarded_allow_ips: str = _setting(
        "",
        "trusted reverse proxies, whose X-Forwarded-Proto, -Host and -For headers are"
        " honoured: comma-separated IP addresses or networks, or * for every peer",
        check=check_allowed_ips,
    )
    cors_origins: str = _setting(
        "",
        "origins of browser pages (DICOMweb viewers) that may call the HTTP API, CORS:"
        " comma-separated scheme://host[:port], or * for every origin; without it, no CORS"
        " headers",
        check=check_cors_origins,
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
    parse = f.metadata.get("parse")
    if parse is not None:
        return parse(text)
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
            help=f"{f.metadata['help']} (env {env_name(f.name)}; default {f.default or 'none'})",
        )


def _converted(f: dataclasses.Field[Any], text: str, source: str) -> Any:
    try:
        return _convert(f, text)
    except ValueError as exc:
        if f.metadata.get("parse") is not None:  # its own reason
            raise SystemExit(f"{source}: {exc}, got {text!r}") from None
        raise SystemExit(f"{source}: invalid value {text!r}") from None


def arguments(settings: Settings) -> list[str]:
    """The command-line flags that `load` turns back into `settings` (every field given)."""
    flags = []
    for f in dataclasses.fields(Settings):
        value = getattr(settings, f.name)
        if value is not None:
            flags += [_flag(f.name), str(value)]
    return flags


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
        value = _converted(f, text, source)
        check = f.metadata.get("check")
        if check is not None:
            try:
                value = check(value)
            except ValueError as exc:
                raise SystemExit(f"{source}: {exc}, got {text!r}") from None
        low, high = f.metadata.get("low"), f.metadata.get("high")
        if low is not None and not low <= value <= high:  # NaN fails this too
            raise SystemExit(f"{source}: must be between {low} and {high}, got {text!r}")
        values[f.name] = value
    settings = Settings(**values)
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise SystemExit("--tls-cert and --tls-key go together")
    return settings
