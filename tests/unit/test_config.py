"""`--public-url` and `--forwarded-allow-ips`: read from flags or env twins, checked, normalised."""

from __future__ import annotations

import argparse

import pytest

from dicomstore import config


def load(*argv: str, env: dict[str, str] | None = None) -> config.Settings:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return config.load(parser.parse_args(list(argv)), env or {})


def test_defaults_build_urls_from_requests_and_trust_no_proxy() -> None:
    settings = load()
    assert settings.public_url == ""
    assert settings.forwarded_allow_ips == ""


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https://pacs.example.org/", "https://pacs.example.org"),
        ("https://pacs.example.org/dicomstore/", "https://pacs.example.org/dicomstore"),
        ("http://[::1]:8042/a/b", "http://[::1]:8042/a/b"),
        ("HTTPS://Pacs.Example.org", "HTTPS://Pacs.Example.org"),
    ],
)
def test_public_url_is_kept_without_its_trailing_slash(value: str, stored: str) -> None:
    assert load("--public-url", value).public_url == stored
    assert load(env={"DICOMSTORE_PUBLIC_URL": value}).public_url == stored


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("pacs.example.org", "absolute http:// or https:// URL"),
        ("/dicomstore", "absolute http:// or https:// URL"),
        ("ftp://pacs.example.org", "absolute http:// or https:// URL"),
        ("http://", "absolute http:// or https:// URL"),
        ("http://pacs.example.org/?a=1", "query or a fragment"),
        ("http://pacs.example.org/#top", "query or a fragment"),
        ("http://pacs.example.org/?", "query or a fragment"),
        ("http://user:secret@pacs.example.org", "user name or password"),
        ("http://pacs.example.org:port", "not a URL"),
        ("http://pacs.example.org:99999", "not a URL"),
        ("http://pacs.example.org/dicom store", "spaces or control characters"),
    ],
)
def test_invalid_public_url_exits_naming_the_flag_and_the_reason(value: str, reason: str) -> None:
    with pytest.raises(SystemExit) as flag:
        load("--public-url", value)
    assert str(flag.value).startswith("--public-url: ")
    assert reason in str(flag.value)
    with pytest.raises(SystemExit) as env:
        load(env={"DICOMSTORE_PUBLIC_URL": value})
    assert str(env.value).startswith("DICOMSTORE_PUBLIC_URL: ")


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("127.0.0.1", "127.0.0.1"),
        (" 10.0.0.0/8 , 192.0.2.7,::1 ", "10.0.0.0/8,192.0.2.7,::1"),
        ("fd00::/8", "fd00::/8"),
        ("10.1.2.3/8, 0:0:0:0:0:0:0:1", "10.0.0.0/8,::1"),
        ("*", "*"),
        ("", ""),
    ],
)
def test_forwarded_allow_ips_are_addresses_and_networks(value: str, stored: str) -> None:
    assert load("--forwarded-allow-ips", value).forwarded_allow_ips == stored
    settings = load(env={"DICOMSTORE_FORWARDED_ALLOW_IPS": value})
    assert settings.forwarded_allow_ips == stored


@pytest.mark.parametrize("value", ["proxy.internal", "10.0.0.0/33", "127.0.0.1,*", "1.2.3.4:80"])
def test_invalid_forwarded_allow_ips_exit_naming_the_entry(value: str) -> None:
    with pytest.raises(SystemExit) as caught:
        load("--forwarded-allow-ips", value)
    message = str(caught.value)
    assert message.startswith("--forwarded-allow-ips: ")
    assert "is not an IP address or network" in message
