"""The garbage collector's pause around an export group (`core.export_bigquery`)."""

from __future__ import annotations

import gc

from dicomstore.core.export_bigquery import collector_paused


def test_the_collector_is_paused_then_running_again() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_collector_turned_off_stays_off() -> None:
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
