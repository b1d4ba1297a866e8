"""DBNet: backbone, FPN neck and DB head."""

from __future__ import annotations

from torch import Tensor, nn

from training.model.head import DBHead
from training.model.neck import FPN

STRIDE = 32  # the coarsest backbone level; input sides must be multiples of it


class DBNet(nn.Module):
    """Text detector producing DB maps at the input resolution.

    Args:
        backbone: returns ``[C2, C3, C4, C5]`` (strides 4 to 32) and has an
            ``out_channels`` tuple.
        neck_channels: FPN output channels (divisible by 4).
        k: steepness of the approximate binary map.
    """

    def __init__(self, backbone: nn.Module, neck_channels: int, k: float = 50.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = FPN(backbone.out_channels, neck_channels)
        self.head = DBHead(neck_channels, k)

    def forward(self, image: Tensor, *, with_thresh: bool | None = None) -> dict[str, Tensor]:
        """Run the detector on a normalised float image.

        Args:
            image: ``(B, 3, H, W)``, H and W multiples of 32.
            with_thresh: also compute ``thresh`` and ``binary`` (needed for the loss);
                ``None`` means "in training mode only", so inference pays for the
                probability branch alone.

        Returns:
            ``prob`` and ``prob_logits`` ``(B, 1, H, W)``, plus ``thresh`` and
            ``binary`` ``(B, 1, H, W)`` when ``with_thresh``.

        Raises:
            ValueError: the image is not 4-D or its sides are not multiples of 32.
        """
        if image.ndim != 4 or image.shape[-2] % STRIDE or image.shape[-1] % STRIDE:
            raise ValueError(
                f"image of shape {tuple(image.shape)}: expected (B, 3, H, W) with H and W "
                f"multiples of {STRIDE}"
            )
        if with_thresh is None:
            with_thresh = self.training
        features = self.backbone(image)  # [(B, C_i, H/2^(i+2), W/2^(i+2))]
        fused = self.neck(features)  # (B, neck_channels, H/4, W/4)
        return self.head(fused, with_thresh=with_thresh)
