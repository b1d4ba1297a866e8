from __future__ import annotations

import time

from training.config import DataConfig
from training.data.pipeline import build_pipeline
from training.data.profile import profile_stages


def test_profile_stages_reports_every_step(data_config: DataConfig) -> None:
    pipe = build_pipeline(data_config, "train")
    result = profile_stages(pipe, 5, batch_size=2)
    names = ["read", "decode", "canonical", "db_maps", "pack", "augment", "collate"]
    assert list(result)[: len(names)] == names
    assert result["n"] == 5
    assert all(result[k] > 0 for k in names)
    assert abs(result["total"] - sum(result[k] for k in names)) < 1e-9


def test_profile_stages_small_dataset(data_config: DataConfig) -> None:
    pipe = build_pipeline(data_config, "val")
    result = profile_stages(pipe, 100, batch_size=8)  # capped at 4 samples, one short batch
    assert result["n"] == 4 and result["collate"] > 0 and "augment" not in result


def test_profile_stages_with_cpu_clock(data_config: DataConfig) -> None:
    result = profile_stages(build_pipeline(data_config, "val"), 2, clock=time.process_time)
    assert result["decode"] > 0 and result["n"] == 2
