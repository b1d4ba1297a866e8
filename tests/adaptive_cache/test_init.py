"""The package's top level: what a user needs, and nothing heavy on import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import adaptive_cache


def test_import_pulls_in_neither_plotting_nor_redis_nor_transform_libraries():
    code = (
        "import json, sys, adaptive_cache; "
        "print(json.dumps(sorted(m for m in ('matplotlib', 'redis', 'torchvision', "
        "'albumentations', 'cv2', 'monitoring', 'training') if m in sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert json.loads(out.stdout) == []


def test_all_lists_the_public_names_sorted_and_importable():
    names = adaptive_cache.__all__
    assert names == sorted(names) and 8 <= len(names) <= 15
    assert {"AdaptiveCache", "CachedDataset", "CacheConfig", "CacheLoader", "Pipeline"} <= set(
        names
    )
    for name in names:
        assert getattr(adaptive_cache, name) is not None
    assert "make_policy" not in names and "WorkOrder" not in names
