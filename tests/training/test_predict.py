"""``predict``'s checkpoint loading: a damaged file is one clear error, never a hint to
unpickle it unsafely. (Predictions themselves: tests/training/test_run.py.)"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from training.config import ModelConfig, OptimConfig
from training.module import DBNetModule
from training.predict import load_module


class _Foreign:
    """An object torch's weights-only unpickler refuses."""


def _checkpoint(path: Path) -> Path:
    """A real, loadable checkpoint of a tiny model (as Lightning writes it)."""
    module = DBNetModule(ModelConfig(neck_channels=8), OptimConfig())
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": "2.6.0",
        },
        path,
    )
    return path


def _damaged(tmp_path: Path) -> dict[str, Path]:
    good = _checkpoint(tmp_path / "good.ckpt").read_bytes()
    files = {
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "garbage": b"\x80\x04not a pickle at all" * 10,
        "zip_garbage": b"PK\x03\x04" + bytes(range(256)) * 16,
        "foreign_pickle": pickle.dumps({"state_dict": _Foreign()}),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.ckpt"
        paths[name].write_bytes(data)
    buf = tmp_path / "foreign_objects.ckpt"
    torch.save({"state_dict": {"w": _Foreign()}}, buf)
    paths["foreign_objects"] = buf
    return paths


def test_a_good_checkpoint_loads(tmp_path: Path) -> None:
    assert isinstance(load_module(_checkpoint(tmp_path / "ok.ckpt")), DBNetModule)


def test_damaged_checkpoints_fail_in_one_line_without_weights_only(tmp_path: Path) -> None:
    for name, path in _damaged(tmp_path).items():
        with pytest.raises(ValueError) as err:
            load_module(path)
        message = str(err.value)
        assert message.startswith(f"ckpt={path}: unreadable checkpoint: "), message
        assert "\n" not in message and "weights_only" not in message, (name, message)
        assert err.value.__cause__ is None and err.value.__suppress_context__
