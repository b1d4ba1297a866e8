"""Import torchvision for the tests, or skip the test with the reason.

PyPI's Linux torchvision wheels are CUDA builds. Beside the CPU torch of the reference
machine their C++ ops cannot load (libtorch_cuda is absent), which torchvision itself
tolerates, but 0.28's import then fails registering fake kernels for two of those ops
(``nms``, ``qnms``). Declaring the two op schemas first lets the pure-Python parts the
tests use (``transforms.v2``, ``tv_tensors``, ``datasets.ImageFolder``) import; no op
is ever run. With a matching torchvision build the import simply succeeds.
"""

from __future__ import annotations

import contextlib
import importlib
from types import ModuleType

import pytest

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIBS: list[object] = []  # keeps the declared schemas alive


def torchvision_or_skip() -> ModuleType:
    """The imported ``torchvision`` (its ``transforms.v2`` and ``tv_tensors`` loaded)."""
    try:
        tv = importlib.import_module("torchvision")
    except ImportError as exc:
        pytest.skip(f"torchvision is not installed ({exc}); pip install -e .[dev]")
    except RuntimeError as exc:
        if "does not exist" not in str(exc):
            raise
        import sys

        import torch.library

        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        lib = torch.library.Library("torchvision", "FRAGMENT")
        for schema in _SCHEMAS.values():
            # Declared already if a partial import got that far.
            with contextlib.suppress(RuntimeError):
                lib.define(schema)
        _LIBS.append(lib)
        try:
            tv = importlib.import_module("torchvision")
        except (ImportError, RuntimeError) as again:
            pytest.skip(f"torchvision cannot be imported with this torch: {again}")
    importlib.import_module("torchvision.transforms.v2")
    importlib.import_module("torchvision.tv_tensors")
    return tv
