"""The server's log: grpc.aio's error about a reply it could not send to a client that had gone
is a debug line, not an error with a traceback; every other error of grpc's stays an error."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from dicomstore import logs

GRPC_LOGGER = "grpc._cython.cygrpc"
LATE_REPLY = "ExecuteBatchError raised in core by servicer method [%s]"


class ExecuteBatchError(Exception):
    """Stands for grpc's own exception class, which grpc raises only inside a call."""


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger(GRPC_LOGGER).filters.clear()


def _log_late_reply() -> None:
    try:
        raise ExecuteBatchError('Failed "execute_batch"')
    except ExecuteBatchError:
        logging.getLogger(GRPC_LOGGER).exception(LATE_REPLY, "/pkg.Service/Method")


def test_a_reply_to_a_client_that_had_gone_is_not_logged_as_an_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure("info", "text")
    _log_late_reply()
    assert capsys.readouterr().err == ""


def test_a_reply_to_a_client_that_had_gone_is_a_debug_line_at_debug_level(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure("debug", "text")
    _log_late_reply()
    err = capsys.readouterr().err
    assert err.startswith("debug   grpc._cython.cygrpc: ExecuteBatchError raised in core")
    assert "Traceback" not in err


def test_other_grpc_errors_stay_errors(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("info", "text")
    logging.getLogger(GRPC_LOGGER).error("Unexpected [%s] raised by servicer method", "X")
    assert capsys.readouterr().err.startswith("error   grpc._cython.cygrpc: Unexpected [X]")
