"""How GcsApiStorage turns the client library's errors into domain errors (gcs_api.domain_error).

Statuses fake-gcs-server cannot produce on demand (403, 429, 503, ...) are checked on the
library's own exception classes; NOT_FOUND and UNAVAILABLE also run against real endpoints in
tests/contract/test_cloud_storage.py.
"""

from __future__ import annotations

import pytest
import requests
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions

from dicomstore.core.errors import (
    Aborted,
    DicomStoreError,
    FailedPrecondition,
    Internal,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from dicomstore.destinations.gcs_api import domain_error, domain_errors

RULES: list[tuple[BaseException, type[DicomStoreError]]] = [
    (api_exceptions.NotFound("no such object"), NotFound),
    (api_exceptions.Forbidden("no storage.objects.get"), FailedPrecondition),
    (api_exceptions.Unauthorized("bad token"), FailedPrecondition),
    (api_exceptions.PreconditionFailed("generation"), Aborted),
    (api_exceptions.TooManyRequests("slow down"), ResourceExhausted),
    (api_exceptions.InternalServerError("oops"), Unavailable),
    (api_exceptions.ServiceUnavailable("down"), Unavailable),
    (api_exceptions.BadGateway("proxy"), Unavailable),
    (api_exceptions.BadRequest("invalid"), Internal),
    (api_exceptions.Conflict("conflict"), Internal),
    (auth_exceptions.DefaultCredentialsError("none"), FailedPrecondition),
    (auth_exceptions.TransportError("metadata server"), Unavailable),
    (requests.ConnectionError("refused"), Unavailable),
    (requests.ConnectTimeout("connect timeout"), Unavailable),
    (requests.ReadTimeout("read timeout"), Unavailable),
    (api_exceptions.RetryError("deadline", requests.ConnectionError("refused")), Unavailable),
    (api_exceptions.RetryError("deadline", api_exceptions.ServiceUnavailable("x")), Unavailable),
    (api_exceptions.RetryError("deadline", None), Internal),
    (ValueError("the library's own bug"), Internal),
]


@pytest.mark.parametrize(("error", "expected"), RULES, ids=lambda v: type(v).__name__)
def test_domain_error_by_library_error(
    error: BaseException, expected: type[DicomStoreError]
) -> None:
    found = domain_error(error, "reading gs://b/o")
    assert type(found) is expected
    assert found.message.startswith("reading gs://b/o: ")


def test_domain_error_names_the_bucket_of_a_404_when_given() -> None:
    found = domain_error(api_exceptions.NotFound("x"), "listing gs://b", "b")
    assert isinstance(found, NotFound)
    assert found.message == "bucket gs://b not found"


def test_domain_errors_leave_domain_errors_as_they_are() -> None:
    with pytest.raises(Aborted, match=r"^as raised$"), domain_errors("reading gs://b/o"):
        raise Aborted("as raised")


def test_domain_errors_chain_the_library_error() -> None:
    cause = api_exceptions.Forbidden("no storage.objects.create")
    with pytest.raises(FailedPrecondition) as caught, domain_errors("writing gs://b/o"):
        raise cause
    assert caught.value.__cause__ is cause
    assert "no storage.objects.create" in caught.value.message
