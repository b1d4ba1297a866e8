"""The LightningModule training DBNet on uint8 batches, normalised on the device."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from training.config import ModelConfig, OptimConfig
from training.data.pipeline import polygons_to_output_frame
from training.metrics import HmeanAccumulator, hmean_from_counts
from training.model.build import build_model
from training.model.loss import DBLoss
from training.model.postprocess import boxes_from_prob

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def lr_factor(step: int, *, warmup_steps: int, total_steps: float, min_ratio: float) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    Linear warmup over ``warmup_steps`` (the first step already gets ``1/warmup_steps``),
    then a cosine from 1 down to ``min_ratio`` at ``total_steps``, flat after it. An
    infinite ``total_steps`` (no known end) keeps the rate constant after warmup.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if not math.isfinite(total_steps):
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1.0, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class DBNetModule(pl.LightningModule):
    """DBNet training, validation (loss and ICDAR 2015 hmean) and prediction.

    Batches come from the data pipeline's collate: ``image`` uint8 ``(B, 3, H, W)``,
    ``gt`` and ``thresh`` uint8 ``(B, 1, H, W)``, ``polygons``, ``ignore`` and
    ``meta`` (``file``, ``scale``, ``orig_shape``) per image. The image is cast and
    normalised in :meth:`on_after_batch_transfer`, i.e. on the device; the targets
    stay uint8 until the loss decodes them.

    Args:
        model_cfg: the network and post-processing settings (a ``ModelConfig`` or its
            dict, as stored in a checkpoint's hyperparameters).
        optim_cfg: AdamW and schedule settings (an ``OptimConfig`` or its dict).
        channels_last: use the channels-last memory format on CUDA (ignored on CPU).
        augment: a batched random stage for training batches, run on the device before
            normalisation (``data.augment.on_device``:
            :class:`~training.data.device_augment.DeviceAugment`); called as
            ``augment(batch, epoch=, batch_idx=, rank=)``. Not saved in checkpoints.

    Example:
        >>> module = DBNetModule(ModelConfig(), OptimConfig())
        >>> # pl.Trainer(precision="bf16-mixed").fit(module, datamodule=...)
        >>> # DBNetModule.load_from_checkpoint(path) rebuilds it from the saved dicts.
    """

    def __init__(
        self,
        model_cfg: ModelConfig | Mapping[str, Any],
        optim_cfg: OptimConfig | Mapping[str, Any],
        *,
        channels_last: bool = False,
        augment: Callable[..., dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.augment = augment
        self._augment_batches = 0  # training batches augmented this epoch (seeds the next)
        self.model_cfg = ModelConfig.model_validate(
            model_cfg.model_dump() if isinstance(model_cfg, ModelConfig) else dict(model_cfg)
        )
        self.optim_cfg = OptimConfig.model_validate(
            optim_cfg.model_dump() if isinstance(optim_cfg, OptimConfig) else dict(optim_cfg)
        )
        self.channels_last = channels_last
        # Plain dicts, named like the arguments, so load_from_checkpoint can call __init__.
        self.save_hyperparameters(
            {
                "model_cfg": self.model_cfg.model_dump(mode="json"),
                "optim_cfg": self.optim_cfg.model_dump(mode="json"),
                "channels_last": channels_last,
            }
        )
        self.model = build_model(self.model_cfg)
        self.loss = DBLoss()
        # uint8 -> normalised float in one multiply-add: (x / 255 - mean) / std.
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.register_buffer("_input_scale", 1.0 / (255.0 * std), persistent=False)
        self.register_buffer("_input_shift", -mean / std, persistent=False)
        self.hmean = HmeanAccumulator()

    def forward(self, image: Tensor, *, with_thresh: bool | None = None) -> dict[str, Tensor]:
        """The model on a normalised image ``(B, 3, H, W)``; see ``DBNet.forward``."""
        return self.model(image, with_thresh=with_thresh)

    def setup(self, stage: str) -> None:
        if self.channels_last and self.trainer.strategy.root_device.type == "cuda":
            # Module.to keeps the memory format when it later moves the weights to the GPU.
            self.model.to(memory_format=torch.channels_last)

    def on_train_epoch_start(self) -> None:
        self._augment_batches = 0

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Augment training batches (with ``augment``), then cast and normalise the uint8
        image where it now lives (the device)."""
        if self.augment is not None and self._trainer is not None and self.trainer.training:
            batch = self.augment(
                batch,
                epoch=self.current_epoch,
                batch_idx=self._augment_batches,
                rank=self.global_rank,
            )
            self._augment_batches += 1
        image = batch["image"]  # (B, 3, H, W) uint8
        if image.dtype != torch.uint8:
            raise TypeError(f"batch['image'] has dtype {image.dtype}; expected torch.uint8")
        scale = self._input_scale.to(torch.float32)  # (1, 3, 1, 1)
        shift = self._input_shift.to(torch.float32)
        image = image.float().mul_(scale).add_(shift)  # (B, 3, H, W) float32, one allocation
        if self.channels_last and image.is_cuda:
            image = image.contiguous(memory_format=torch.channels_last)
        # Under mixed precision autocast casts per op; under "true" half precision the
        # weights are half, so the input must match them.
        batch["image"] = image.to(self._input_scale.dtype)
        return batch

    def _log_losses(self, prefix: str, losses: dict[str, Tensor], batch_size: int) -> None:
        train = prefix == "train"
        for name, value in losses.items():
            self.log(
                f"{prefix}/{name}",
                value.detach(),
                on_step=train,
                on_epoch=True,
                batch_size=batch_size,
                # Epoch means across ranks; a few scalar all-reduces per step are noise.
                sync_dist=True,
                prog_bar=name == "loss",
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        out = self.model(batch["image"], with_thresh=True)
        losses = self.loss(out, batch["gt"], batch["thresh"])
        self._log_losses("train", losses, batch["image"].shape[0])
        return losses["loss"]

    def postprocess(
        self, prob: Tensor, meta: list[dict[str, Any]]
    ) -> list[tuple[list[np.ndarray], list[float]]]:
        """Polygons and scores per image, in the original frame.

        Args:
            prob: probability maps ``(B, 1, H, W)`` in the canonical frame.
            meta: per image, ``scale`` (canonical = original * scale) and
                ``orig_shape`` ``[h, w]``; a missing ``scale`` means 1.

        Returns:
            ``(polygons, scores)`` per image, as :func:`boxes_from_prob` gives them.
        """
        maps = prob.detach().float().cpu().numpy()[:, 0]  # (B, H, W)
        cfg = self.model_cfg
        results = []
        for prob_map, info in zip(maps, meta, strict=True):
            exact = "scale_xy" in info  # the OCR pipeline's per-axis factors and frame
            polys, scores = boxes_from_prob(
                prob_map,
                bin_thresh=cfg.bin_thresh,
                box_thresh=cfg.box_thresh,
                unclip_ratio=cfg.unclip_ratio,
                max_candidates=cfg.max_candidates,
                scale=1.0 if exact else float(info.get("scale", 1.0)),
                orig_shape=None if exact else info.get("orig_shape"),
            )
            if exact:
                # Clip to the image inside the padded canonical frame, then undo the
                # resize and (annotations on stored pixels) the EXIF orientation.
                h, w = info["orig_shape"]
                sx, sy = info["scale_xy"]
                limit = np.array([w * sx, h * sy], dtype=np.float32)
                polys = [np.clip(p, 0.0, limit) for p in polys]
                polys = polygons_to_output_frame(polys, info)
            results.append((polys, scores))
        return results

    def on_validation_epoch_start(self) -> None:
        self.hmean.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        out = self.model(batch["image"], with_thresh=True)
        losses = self.loss(out, batch["gt"], batch["thresh"])
        self._log_losses("val", losses, batch["image"].shape[0])
        detections = self.postprocess(out["prob"], batch["meta"])
        for (polygons, _), gts, ignore in zip(
            detections, batch["polygons"], batch["ignore"], strict=True
        ):
            self.hmean.update(polygons, gts, ignore)

    def on_validation_epoch_end(self) -> None:
        counts = torch.tensor(
            [self.hmean.matched, self.hmean.n_gt, self.hmean.n_det],
            dtype=torch.int64,
            device=self.device,
        )
        # Every rank saw its own images: sum the counts, then take the ratios.
        counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        matched, n_gt, n_det = (int(c) for c in counts.tolist())
        result = hmean_from_counts(matched, n_gt, n_det)
        for name in ("hmean", "precision", "recall"):
            # Equal on every rank already; sync_dist only averages equal values (and tells
            # Lightning that this epoch-level value is global).
            self.log(f"val/{name}", result[name], prog_bar=name == "hmean", sync_dist=True)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """Per image: ``{"file", "polygons" (list of (N, 2) float32), "scores"}``."""
        out = self.model(batch["image"], with_thresh=False)
        return [
            {"file": info["file"], "polygons": polygons, "scores": scores}
            for (polygons, scores), info in zip(
                self.postprocess(out["prob"], batch["meta"]), batch["meta"], strict=True
            )
        ]

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW (no weight decay on norms and biases) with warmup and a cosine decay,
        stepped every optimizer step."""
        cfg = self.optim_cfg
        decay = [p for p in self.model.parameters() if p.requires_grad and p.ndim > 1]
        no_decay = [p for p in self.model.parameters() if p.requires_grad and p.ndim <= 1]
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": cfg.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=cfg.lr,
        )
        total = float(self.trainer.estimated_stepping_batches)
        if not math.isfinite(total):
            log.warning("no known number of steps: learning rate constant after warmup")
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: lr_factor(
                step,
                warmup_steps=cfg.warmup_steps,
                total_steps=total,
                min_ratio=cfg.min_lr_ratio,
            ),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }
