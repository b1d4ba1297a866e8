"""StoreFaults: one warning per outage, the end of an outage logged."""

from __future__ import annotations

import logging

from adaptive_cache.faults import StoreFaults


def _levels(caplog, level):
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def test_one_warning_per_outage_whatever_the_number_of_failures(caplog):
    caplog.set_level(logging.INFO, logger="adaptive_cache")
    faults = StoreFaults("val", "redis")
    for _ in range(100):
        faults.failed("read", "redis store redis://h:1/0: Connection refused")
        faults.failed("write", "redis store redis://h:1/0: Connection refused")
    (warning,) = _levels(caplog, logging.WARNING)
    assert "val" in warning and "redis" in warning and "Connection refused" in warning
    faults.succeeded("read")  # writes still fail: the outage goes on
    assert faults.failing and not _levels(caplog, logging.INFO)
    faults.succeeded("write")
    assert not faults.failing
    (back,) = _levels(caplog, logging.INFO)
    assert "works again" in back and "200 calls failed" in back
    faults.failed("list", "redis store redis://h:1/0: Timeout")  # a second outage
    assert len(_levels(caplog, logging.WARNING)) == 2 and faults.outages == 2


def test_success_of_a_call_that_never_failed_ends_nothing(caplog):
    caplog.set_level(logging.INFO, logger="adaptive_cache")
    faults = StoreFaults("train", "disk")
    faults.failed("write", "disk store: cannot write /d/k: No space left on device (ENOSPC)")
    faults.succeeded("read")  # hits keep working on a full disk
    assert faults.failing
    faults.failed("write", "again")
    assert len(_levels(caplog, logging.WARNING)) == 1
