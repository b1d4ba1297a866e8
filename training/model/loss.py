"""DB loss: balanced BCE on the probability map, L1 on the threshold map, dice on the
approximate binary map, decoded from the uint8 targets the data pipeline produces."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TEXT_BIT = 1  # bit 0 of ``gt``: shrunk text region, the probability target
PROB_MASK_BIT = 2  # bit 1: pixel counts in the probability/binary losses
THRESH_MASK_BIT = 4  # bit 2: pixel lies in the dilated border band (threshold loss)


def unpack_targets(gt: Tensor, thresh: Tensor) -> dict[str, Tensor]:
    """Decode the packed uint8 targets into float32 maps.

    Args:
        gt: ``(B, 1, H, W)`` uint8 bitfield (bit 0 text, bit 1 probability mask,
            bit 2 threshold mask).
        thresh: ``(B, 1, H, W)`` uint8, ``round(threshold_map * 255)``.

    Returns:
        ``text``, ``prob_mask``, ``thresh_mask`` (0/1) and ``thresh_map`` (in [0, 1]),
        each float32 ``(B, 1, H, W)``.

    Raises:
        TypeError: a target is not uint8.
    """
    for name, t in (("gt", gt), ("thresh", thresh)):
        if t.dtype != torch.uint8:
            raise TypeError(f"target {name!r} has dtype {t.dtype}; expected torch.uint8")
    return {
        "text": (gt & TEXT_BIT).gt(0).float(),
        "prob_mask": (gt & PROB_MASK_BIT).gt(0).float(),
        "thresh_mask": (gt & THRESH_MASK_BIT).gt(0).float(),
        "thresh_map": thresh.float() / 255.0,
    }


def balanced_bce_with_logits(
    logits: Tensor, target: Tensor, mask: Tensor, negative_ratio: float = 3.0, eps: float = 1e-6
) -> Tensor:
    """BCE over all positives and the hardest ``negative_ratio`` x as many negatives.

    As in DBNet, mining is over the whole batch; a batch without positives keeps no
    negatives either, and its loss is 0.

    Args:
        logits, target, mask: float ``(B, 1, H, W)``; ``mask`` 0 on don't-care pixels.
    """
    positive = target * mask
    negative = (1.0 - target) * mask
    n_pos = int(positive.sum().item())
    n_neg = min(int(negative.sum().item()), int(n_pos * negative_ratio))
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")  # (B, 1, H, W)
    pos_loss = (loss * positive).sum()
    if n_neg > 0:
        neg_loss = torch.topk((loss * negative).flatten(), n_neg, sorted=False).values.sum()
    else:
        neg_loss = loss.new_zeros(())
    return (pos_loss + neg_loss) / (n_pos + n_neg + eps)


def masked_l1(pred: Tensor, target: Tensor, mask: Tensor, eps: float = 1e-6) -> Tensor:
    """Mean absolute error over the pixels where ``mask`` is 1 (0 when there are none)."""
    return ((pred - target).abs() * mask).sum() / (mask.sum() + eps)


def dice_loss(pred: Tensor, target: Tensor, mask: Tensor, eps: float = 1e-6) -> Tensor:
    """``1 - 2 |P.G| / (|P| + |G|)`` over the masked pixels."""
    intersection = (pred * target * mask).sum()
    union = (pred * mask).sum() + (target * mask).sum() + eps
    return 1.0 - 2.0 * intersection / union


class DBLoss(nn.Module):
    """DBNet's loss, with the weights of its reference code:

    ``loss = 5 * L_prob + 10 * L_thresh + 1 * L_binary`` where ``L_prob`` is the
    balanced BCE (3:1 hard negatives) on the probability map, ``L_thresh`` the L1
    on the threshold map inside the border band and ``L_binary`` the dice loss on
    the approximate binary map, both map losses masked by the probability mask.

    Everything is computed in float32 with autocast off, whatever precision the
    forward pass ran in.

    Args:
        prob_weight, thresh_weight, binary_weight: the three weights.
        negative_ratio: hard negatives kept per positive pixel.
    """

    def __init__(
        self,
        prob_weight: float = 5.0,
        thresh_weight: float = 10.0,
        binary_weight: float = 1.0,
        negative_ratio: float = 3.0,
    ) -> None:
        super().__init__()
        self.prob_weight = prob_weight
        self.thresh_weight = thresh_weight
        self.binary_weight = binary_weight
        self.negative_ratio = negative_ratio

    def forward(self, preds: dict[str, Tensor], gt: Tensor, thresh: Tensor) -> dict[str, Tensor]:
        """Loss of one batch.

        Args:
            preds: model output with ``prob_logits``, ``thresh`` and ``binary``
                ``(B, 1, H, W)``.
            gt, thresh: the packed uint8 targets (see :func:`unpack_targets`).

        Returns:
            ``loss`` (the weighted total) and its parts ``loss_prob``,
            ``loss_thresh``, ``loss_binary``: float32 scalars.

        Raises:
            KeyError: ``preds`` lacks a map (a model run without ``with_thresh``).
        """
        targets = unpack_targets(gt, thresh)
        with torch.autocast(device_type=gt.device.type, enabled=False):
            loss_prob = balanced_bce_with_logits(
                preds["prob_logits"].float(),
                targets["text"],
                targets["prob_mask"],
                self.negative_ratio,
            )
            loss_thresh = masked_l1(
                preds["thresh"].float(), targets["thresh_map"], targets["thresh_mask"]
            )
            loss_binary = dice_loss(preds["binary"].float(), targets["text"], targets["prob_mask"])
            total = (
                self.prob_weight * loss_prob
                + self.thresh_weight * loss_thresh
                + self.binary_weight * loss_binary
            )
        return {
            "loss": total,
            "loss_prob": loss_prob,
            "loss_thresh": loss_thresh,
            "loss_binary": loss_binary,
        }
