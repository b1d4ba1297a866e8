"""The run configuration: pydantic models holding every default, and the loader.

``load_config`` merges ``configs/default.yaml`` (overrides only), an optional extra
YAML file and command-line dot-lists with OmegaConf, then validates the result. A
bad key or value fails here, before any work, naming the key path and what was
expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adaptive_cache.config import CacheConfig
from adaptive_cache.redact import is_secret_key, mask_text, redact
from monitoring.config import MonitoringConfig
from training.data.images import MAX_PIXELS

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SplitConfig(_Strict):
    """One split's files. ``format``: ``seed`` (one JSON for the split) or ``icdar2015``
    (a directory of ``gt_<image>.txt``). ``cache`` overrides cache keys for this split only."""

    images: str
    annotations: str
    format: Literal["seed", "icdar2015"] = "seed"
    cache: dict[str, Any] = Field(default_factory=dict)


class AugmentConfig(_Strict):
    """The random training suffix (applied after the cached prefix; never cached).

    ``on_device``: run it as one batched stage on the training device
    (:mod:`training.data.device_augment`) instead of per sample in the loader's
    workers; the train pipeline then ends at the cached prefix, so its hits are served
    in the main process like validation's.
    """

    enabled: bool = True
    on_device: bool = False
    hflip_p: float = Field(0.5, ge=0.0, le=1.0)
    rotate_limit: float = Field(5.0, ge=0.0, le=90.0)
    scale_limit: float = Field(0.1, ge=0.0, le=1.0)
    translate_limit: float = Field(0.0, ge=0.0, le=0.5)  # a fraction of width and height
    affine_p: float = Field(0.5, ge=0.0, le=1.0)
    color_jitter_p: float = Field(0.5, ge=0.0, le=1.0)


class SyntheticConfig(_Strict):
    """The built-in synthetic receipts, generated when ``data.root`` has none."""

    n_train: int = Field(96, ge=1)
    n_val: int = Field(24, ge=1)
    seed: int = 0


class DataConfig(_Strict):
    root: str = "data/synthetic"
    train: SplitConfig = Field(
        default_factory=lambda: SplitConfig(images="images/train", annotations="jsons/train.json")
    )
    val: SplitConfig = Field(
        default_factory=lambda: SplitConfig(images="images/val", annotations="jsons/val.json")
    )
    image_extensions: list[str] = Field(default_factory=lambda: [".jpg", ".jpeg", ".png"])
    image_size: int = Field(640, ge=32)
    annotation_frame: Literal["displayed", "stored"] = "displayed"
    on_bad_sample: Literal["raise", "skip"] = "raise"
    # A decompression-bomb guard: an image header declaring more pixels is a bad sample.
    max_pixels: int | None = Field(MAX_PIXELS, ge=1)
    decoder: Literal["auto", "opencv", "simplejpeg"] = "auto"
    dct_scaling: bool = True
    shrink_ratio: float = Field(0.4, gt=0.0, lt=1.0)
    thresh_min: float = Field(0.3, ge=0.0, le=1.0)
    thresh_max: float = Field(0.7, ge=0.0, le=1.0)
    min_text_size: int = Field(3, ge=0)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    batch_size: int = Field(4, ge=1)
    num_workers: int = Field(2, ge=0)
    persistent_workers: bool = True
    pin_memory: bool = True
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)

    def split(self, name: str) -> SplitConfig:
        if name not in ("train", "val"):
            raise ValueError(f"unknown split {name!r}; expected 'train' or 'val'")
        return getattr(self, name)


class ModelConfig(_Strict):
    backbone: Literal["resnet18", "mobilenet_small"] = "mobilenet_small"
    neck_channels: int = Field(64, ge=8)
    k: float = Field(50.0, gt=0.0)
    box_thresh: float = Field(0.5, ge=0.0, le=1.0)
    bin_thresh: float = Field(0.3, ge=0.0, le=1.0)
    unclip_ratio: float = Field(1.5, gt=0.0)
    max_candidates: int = Field(1000, ge=1)


class OptimConfig(_Strict):
    lr: float = Field(2e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_steps: int = Field(20, ge=0)
    min_lr_ratio: float = Field(0.05, ge=0.0, le=1.0)


class TrainerConfig(_Strict):
    """Maps onto ``lightning.Trainer`` arguments; ``extra`` passes anything else through.

    ``limit_*_batches`` follow Lightning: an int is a number of batches, a float a
    fraction, and ``0`` means *no* batches at all (the seed read it as "no limit").
    """

    max_epochs: int = Field(3, ge=1)
    precision: str = "auto"
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    log_every_n_steps: int = Field(5, ge=1)
    check_val_every_n_epoch: int = Field(1, ge=1)
    gradient_clip_val: float | None = 5.0
    deterministic: bool = False
    enable_progress_bar: bool = True
    extra: dict[str, Any] = Field(default_factory=dict)


class Config(_Strict):
    run_name: str = "synthetic"
    output_dir: str = "runs"
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)

    def cache_for(self, split: str) -> CacheConfig:
        """The cache config of one split: ``cache`` with ``data.<split>.cache`` merged in."""
        override = self.data.split(split).cache
        if not override:
            return self.cache
        merged = OmegaConf.merge(
            OmegaConf.create(self.cache.model_dump(mode="json")), OmegaConf.create(override)
        )
        try:
            return CacheConfig.model_validate(OmegaConf.to_container(merged))
        except ValidationError as exc:
            raise ValueError(_format_errors(exc, prefix=f"data.{split}.cache")) from None

    def resolved(self) -> dict[str, Any]:
        """The configuration as plain data, secrets masked: what is printed and saved."""
        return redact(self.model_dump(mode="json"))


def _format_errors(exc: ValidationError, prefix: str = "") -> str:
    """One line per error, ``key.path: what is wrong (got value)``; one error, one line.

    The offending value is echoed only when it is a plain value: a whole section (a
    dict or list) is never printed, and a validator's own message says what it needs.
    """
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif (
            "got " not in msg
            and not isinstance(value, dict | list | BaseModel)
            and not (value is None and err["type"] == "value_error")
        ):
            shown = "***" if is_secret_key(path) and value is not None else redact(value)
            msg = f"{msg} (got {shown!r})"
        lines.append(f"{path}: {mask_text(msg)}")
    if len(lines) == 1:
        return f"invalid configuration: {lines[0]}"
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_config(
    overrides: Sequence[str] = (),
    *,
    config_files: Sequence[str | Path] = (),
    defaults_file: str | Path | None = CONFIG_DIR / "default.yaml",
) -> Config:
    """Build the run configuration.

    Args:
        overrides: OmegaConf dot-list items such as ``trainer.max_epochs=3``.
        config_files: extra YAML files (presets) merged after the defaults, in order.
        defaults_file: the base YAML (``configs/default.yaml``); ``None`` for none.

    Returns:
        The validated :class:`Config`.

    Raises:
        ValueError: a malformed override, an unreadable YAML file, an unknown key or a
            bad value; the message names the key path and what was expected.
    """
    layers = [OmegaConf.create(Config().model_dump(mode="json"))]
    for path in [defaults_file, *config_files]:
        if path is None:
            continue
        path = Path(path)
        try:
            layers.append(OmegaConf.load(path))
        except (OSError, OmegaConfBaseException, ValueError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read config file {path}: {mask_text(str(exc))}") from None
    for item in overrides:
        if "=" not in item:
            raise ValueError(
                f"override {mask_text(item)!r}: expected key=value, such as trainer.max_epochs=3"
            )
    try:
        layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(*layers)
        raw = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as exc:
        raise ValueError(f"invalid override: {mask_text(str(exc))}") from None
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(_format_errors(exc)) from None
    for split in ("train", "val"):
        config.cache_for(split)  # per-split overrides fail here, before any work
    return config
