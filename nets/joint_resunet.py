"""``joint_resunet``: one ResUNet trunk with an image head and a segmentation head.

Upsampling and segmentation share every feature; two 1x1 convolutions read the
full-resolution decoder features: ``image`` (regression, no activation) and ``logits``
(K classes, no activation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from torch import nn

from ._checks import check_positive_int
from .registry import register_net
from .resunet import DEFAULT_ACT, ResUNetTrunk

__all__ = ["JointResUNet"]


@register_net("joint_resunet", kind="joint")
class JointResUNet(nn.Module):
    """Shared-trunk joint upsampler and segmenter.

    Args:
        in_channels: Input channels.
        num_classes: Segmentation classes ``K`` (background included).
        spatial_dims: 3 for ``(B, C, X, Y, Z)`` volumes, 2 for ``(B, C, X, Y)`` slices.
        channels: Trunk width per level; inputs must be divisible by ``2 ** len(channels)``.
        num_res_blocks: Residual blocks in the bottleneck.
        norm: MONAI norm spec; instance norm by default.
        act: MONAI activation spec.
        dropout: Dropout probability in the bottleneck residual blocks.
        conditioning: ``None``, ``"film"`` or ``"channel"`` exposure conditioning.
        film_hidden: Hidden width of the FiLM MLP.
        image_channels: Channels of the regression image.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        spatial_dims: int = 3,
        channels: Sequence[int] = (16, 32, 64),
        num_res_blocks: int = 6,
        norm: str | tuple | None = "instance",
        act: str | tuple | None = DEFAULT_ACT,
        dropout: float = 0.0,
        conditioning: str | None = None,
        film_hidden: int = 32,
        image_channels: int = 1,
    ) -> None:
        super().__init__()
        self.num_classes = check_positive_int("num_classes", num_classes, minimum=2)
        self.image_channels = check_positive_int("image_channels", image_channels)
        self.trunk = ResUNetTrunk(
            in_channels, spatial_dims, channels, num_res_blocks, norm, act, dropout, conditioning,
            film_hidden, name="joint_resunet",
        )
        features = self.trunk.out_features
        self.image_head = Convolution(spatial_dims, features, image_channels, kernel_size=1, conv_only=True)
        self.logits_head = Convolution(spatial_dims, features, num_classes, kernel_size=1, conv_only=True)
        self.in_channels = self.trunk.in_channels
        self.spatial_dims = self.trunk.spatial_dims
        self.conditioning = self.trunk.conditioning
        self.size_multiple = self.trunk.size_multiple

    def forward(self, x: torch.Tensor, exposure_days: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Predict the upsampled image and the segmentation logits.

        Args:
            x: Input of shape ``(B, C_in, X, Y, Z)``; spatial sizes divisible by ``size_multiple``.
            exposure_days: Exposure times in days, shape ``(B,)``; required iff conditioned.

        Returns:
            ``{"image": (B, image_channels, X, Y, Z), "logits": (B, K, X, Y, Z)}``.
        """
        features = self.trunk(x, exposure_days)
        return {"image": self.image_head(features), "logits": self.logits_head(features)}
