"""CORS for DICOMweb viewers in a browser (`--cors-origins`), by Starlette's `CORSMiddleware`.

A viewer served from another origin (OHIF and the like) reads QIDO, WADO and metadata answers
and sends STOW bodies; most of its requests are preflighted, as `Accept` values with quotes
(`multipart/related; type="application/dicom"`), a multipart `Content-Type` or an
`Authorization` header are not CORS-safelisted. Credentials (cookies) are not allowed: a viewer
sends its bearer token in `Authorization`, which needs no credentialed request.
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

# HEAD too: a browser preflights a HEAD that carries Authorization, and every GET route takes it.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# What DICOMweb viewers and dicomweb-client send besides the safelisted headers (which Starlette
# always allows); with `*` origins, any header a preflight names is allowed.
REQUEST_HEADERS = (
    "Accept",
    "Authorization",
    "Cache-Control",
    "Content-Type",
    "Range",
    "X-Request-Id",
    "X-Requested-With",
)
# Content-Type is readable without being listed; the others are not.
EXPOSED_HEADERS = (
    "Content-Type",
    "Content-Length",
    "Content-Location",
    "Location",
    "X-Request-Id",
    "Warning",
)
# Chromium caches a preflight for two hours at most. A narrower --cors-origins still applies
# at once: every answer carries its own Access-Control-Allow-Origin.
PREFLIGHT_MAX_AGE_S = 7200


def cors_middleware(origins: str) -> Middleware:
    """`origins` is `--cors-origins`, checked: `*`, or comma-separated normalised origins."""
    every = origins == "*"
    return Middleware(
        CORSMiddleware,
        allow_origins=origins.split(","),
        allow_methods=METHODS,
        allow_headers=("*",) if every else REQUEST_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        # A listed origin may reach a server on a private network from a public one (Chromium's
        # Private Network Access preflight); `*` does not open it to every site.
        allow_private_network=not every,
        max_age=PREFLIGHT_MAX_AGE_S,
    )
