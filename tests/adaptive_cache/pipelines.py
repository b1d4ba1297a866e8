"""A small generic image pipeline on real files, shared by the engine and loader tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from adaptive_cache.pipeline import FunctionStage, Pipeline
from adaptive_cache.sources import FileSource


def write_images(
    root: Path, n: int, *, size: int = 48, seed: int = 0, vary: bool = False
) -> list[Path]:
    """``n`` PNG files of random pixels; with ``vary`` their sizes differ."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        side = int(size * (1 + (i % 4) / 2)) if vary else size
        img = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
        path = root / f"img{i:04d}.png"
        cv2.imwrite(str(path), img)
        paths.append(path)
    return paths


def _decode(s):
    img = cv2.imdecode(np.asarray(s["data"]), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot decode {s['path']}")
    return {"path": s["path"], "image": img}


def _resize(s):
    return {
        "path": s["path"],
        "image": cv2.resize(s["image"], (32, 32), interpolation=cv2.INTER_AREA),
    }


def _crop(s, rng):
    y, x = (int(v) for v in rng.integers(0, 9, size=2))
    return {"path": s["path"], "image": np.ascontiguousarray(s["image"][y : y + 24, x : x + 24])}


def image_pipeline(
    root: Path, *, random: bool = True, seed: int = 0, resize_version: str = "1"
) -> Pipeline:
    """decode -> resize (tiers ``image`` and ``small``) -> optional random crop."""
    stages = [
        FunctionStage("decode", _decode),
        FunctionStage("resize", _resize, params=("32x32", resize_version)),
    ]
    if random:
        stages.append(FunctionStage("crop", _crop, deterministic=False, uses_rng=True))
    return Pipeline(
        FileSource.glob(root, "*.png"), stages, {"image": "decode", "small": "resize"}, seed=seed
    )


def collate(samples):
    return np.stack([s["image"] for s in samples])
