"""Fixtures for the engine's tests."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    """A private directory on the real tmpfs (/dev/shm), removed afterwards.

    Shm stores sweep dead owners' directories in their shm_dir; a private one keeps
    tests from touching (and being touched by) other runs on the machine.
    """
    base = Path("/dev/shm")
    if not base.is_dir():
        pytest.skip("no /dev/shm on this machine")
    path = base / f"pytest-ac-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
