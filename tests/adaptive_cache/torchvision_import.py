"""Import torchvision for the tests, or skip the test with the reason.

A torchvision that matches the installed torch (a GPU machine, or a CPU build beside a
CPU torch) imports as usual. PyPI's Linux torchvision wheels are CUDA builds: beside the
CPU torch of the reference machine their C++ ops cannot load, and torchvision 0.28's
import then fails registering fake kernels for two of them (``nms``, ``qnms``), which
breaks every package that imports it when present (Lightning does, through
torchmetrics). So the Makefile installs such a wheel apart, in
``.venv/torchvision-tests`` (override with ``ADAPTIVE_CACHE_TORCHVISION_DIR``), never on
the product's path. Here that directory is added to this test process's path and the
two op schemas are declared before the import, which lets the pure-Python parts the
tests use (``transforms.v2``, ``tv_tensors``, ``datasets.ImageFolder``) load; no op is
ever run. Once imported it is in ``sys.modules``, so a later import by torchmetrics in
the same process (or in a forked DataLoader worker) gets the working module; the
directory leaves the path again, so a spawned child never sees it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_LIBS: list[object] = []  # keeps the declared schemas alive
_DEFAULT_DIR = Path(__file__).resolve().parents[2] / ".venv" / "torchvision-tests"


def _forget_partial_import() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def _declare_ops() -> None:
    import torch.library

    lib = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        with contextlib.suppress(RuntimeError):  # declared already (a real build)
            lib.define(schema)
    _LIBS.append(lib)


def _import() -> ModuleType:
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as exc:  # the CUDA wheel beside a CPU torch
        if "does not exist" not in str(exc):
            raise
    _forget_partial_import()
    _declare_ops()
    return importlib.import_module("torchvision")


def torchvision_or_skip() -> ModuleType:
    """The imported ``torchvision`` (its ``transforms.v2`` and ``tv_tensors`` loaded)."""
    try:
        tv = _import()
    except ImportError:
        _forget_partial_import()
        where = Path(os.environ.get("ADAPTIVE_CACHE_TORCHVISION_DIR", _DEFAULT_DIR))
        if not (where / "torchvision").is_dir():
            pytest.skip(f"torchvision is not installed (nor in {where}; make installs it)")
        sys.path.append(str(where))
        try:
            tv = _import()
        except (ImportError, RuntimeError) as exc:
            pytest.skip(f"torchvision in {where} cannot be imported with this torch: {exc}")
        finally:
            # Loaded now (its submodules are found through the package): off the path
            # again, so that spawned children (forkserver, benchmarks) never import it
            # without the declared ops.
            sys.path.remove(str(where))
    importlib.import_module("torchvision.transforms.v2")
    importlib.import_module("torchvision.tv_tensors")
    return tv
