"""The OCR data pipeline: annotations, decoding, DB targets, transforms, batches.

Names are re-exported lazily (PEP 562) so that ``from training.data.synthetic import
generate`` does not pay for importing torch and albumentations. ``collate`` is not
among them: importing the submodule ``training.data.collate`` rebinds that package
attribute to the module, so import it from there.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AlbumentationsStage": "transforms",
    "BadSampleError": "images",
    "DBMaps": "db_targets",
    "OcrSource": "source",
    "PipelineDataset": "dataset",
    "build_pipeline": "pipeline",
    "compare_dct_decoding": "profile",
    "decode_image": "images",
    "generate": "synthetic",
    "make_db_maps": "db_targets",
    "pack": "db_targets",
    "parse_icdar2015_dir": "annotations",
    "parse_seed_json": "annotations",
    "polygons_to_output_frame": "pipeline",
    "profile_stages": "profile",
    "sample_polygons": "pipeline",
    "split_compose": "transforms",
    "unpack": "db_targets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'training.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"training.data.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
