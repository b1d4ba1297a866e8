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
import pickle
import zipfile
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


# What reading a damaged or foreign checkpoint raises (torch, zip reader, Lightning).
_LOAD_ERRORS = (RuntimeError, pickle.UnpicklingError, EOFError, OSError, KeyError, TypeError,
                AttributeError, ValueError, zipfile.BadZipFile)  # fmt: skip


def load_module(ckpt: Path) -> DBNetModule:
    """The model saved in ``ckpt``, loaded with torch's safe (weights-only) unpickler.

    Raises:
        ValueError: ``ckpt`` is not a readable checkpoint of ``adaptive-cache train``
            (truncated, corrupt, or another program's file); one line naming it.
    """
    try:
        return DBNetModule.load_from_checkpoint(str(ckpt), map_location="cpu")
    except _LOAD_ERRORS as exc:
        raise ValueError(f"ckpt={ckpt}: {_unreadable_reason(exc)}") from None


def _unreadable_reason(exc: BaseException) -> str:
    """A short reason; torch's own text is not passed on, as it suggests loading with
    ``weights_only`` off, which would run code from the file."""
    text = str(exc)
    if isinstance(exc, PermissionError | IsADirectoryError):
        return f"unreadable checkpoint: cannot read the file ({exc.strerror})"
    if "zip archive" in text or isinstance(exc, zipfile.BadZipFile | EOFError | OSError):
        # OSError: torch's reader seeking through a damaged archive (EINVAL).
        what = "truncated or not a checkpoint (its archive cannot be read)"
    elif isinstance(exc, pickle.UnpicklingError) or "weights" in text.lower():
        what = "corrupt, or holds objects other than tensors and plain values"
    else:
        what = f"not a checkpoint of `adaptive-cache train` ({type(exc).__name__})"
    return f"unreadable checkpoint: {what}; use a .ckpt written by `adaptive-cache train`"


def predict(config: Config, ckpt: Path, *, split: str = "val", out_dir: str | None = None) -> Path:
    """Run the model of ``ckpt`` over ``split``; returns the output directory."""
    if not ckpt.is_file():
        raise ValueError(f"ckpt={ckpt}: no such checkpoint file")
    module = load_module(ckpt)
    out = Path(out_dir) if out_dir else ckpt.parent.parent / f"predictions-{split}"
    out.mkdir(parents=True, exist_ok=True)
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
