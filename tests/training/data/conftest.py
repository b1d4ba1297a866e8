"""Shared fixtures: one small synthetic receipt set per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import DataConfig
from training.data.synthetic import generate

# Small pages (about 340x450, photos up to 900 px) keep the whole suite fast.
SCALE = 0.35
IMAGE_SIZE = 192


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic dataset (8 train, 4 val images); treat it as read-only."""
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, n_train=8, n_val=4, seed=7, progress=False, scale=SCALE)
    return root


@pytest.fixture
def data_config(synthetic_root: Path) -> DataConfig:
    """Data config over the session's synthetic set, at a small canonical size."""
    return DataConfig(root=str(synthetic_root), image_size=IMAGE_SIZE, num_workers=0)
