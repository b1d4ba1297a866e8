"""``adaptive-cache predict ckpt=PATH``: predicted polygons of a split, in two formats.

* ``predictions.json``: the seed annotation format, with a ``score`` per word;
* ``predictions.csv``: the seed competition's ``filename,polygons`` (each polygon
  ``x y x y ...``, polygons separated by ``|``).

Polygons are in the original image frame (pad, resize and, for annotations on the
stored pixels, orientation undone), the frame the ground truth is in.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl

from training.config import Config
from training.datamodule import OcrDataModule
from training.module import DBNetModule
from training.run import resolve_precision

log = logging.getLogger(__name__)


def to_seed_json(predictions: list[dict[str, Any]]) -> dict[str, Any]:
    """``[{file, polygons, scores}]`` -> the seed annotation format with scores."""
    images: dict[str, Any] = {}
    for p in predictions:
        words = {}
        for i, (poly, score) in enumerate(zip(p["polygons"], p["scores"], strict=True)):
            words[f"{i + 1:04d}"] = {
                # Full precision: hmean from this file equals what validation reported.
                "points": [[float(x), float(y)] for x, y in np.asarray(poly)],
                "score": float(score),
            }
        images[p["file"]] = {"words": words}
    return {"images": images}


def write_csv(predictions: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "polygons"])
        for p in predictions:
            polys = [
                " ".join(f"{round(float(v))}" for v in np.asarray(poly).reshape(-1))
                for poly in p["polygons"]
            ]
            w.writerow([p["file"], "|".join(polys)])


def predict(config: Config, ckpt: Path, *, split: str = "val", out_dir: str | None = None) -> Path:
    """Run the model of ``ckpt`` over ``split``; returns the output directory."""
    if not ckpt.is_file():
        raise ValueError(f"ckpt={ckpt}: no such checkpoint file")
    out = Path(out_dir) if out_dir else ckpt.parent.parent / f"predictions-{split}"
    out.mkdir(parents=True, exist_ok=True)
    module = DBNetModule.load_from_checkpoint(str(ckpt), map_location="cpu")
    dm = OcrDataModule(config)
    try:
        loader = dm.loader(split, shuffle=False)
        trainer = pl.Trainer(
            accelerator=config.trainer.accelerator,
            devices=1,
            precision=resolve_precision(config),
            logger=False,
            enable_progress_bar=config.trainer.enable_progress_bar,
        )
        batches = trainer.predict(module, dataloaders=loader)
    finally:
        dm.close()
    predictions = [p for batch in batches or [] for p in batch]
    (out / "predictions.json").write_text(json.dumps(to_seed_json(predictions), indent=1))
    write_csv(predictions, out / "predictions.csv")
    log.info("wrote %d images' predictions to %s", len(predictions), out)
    return out
