"""``swin_unetr``: hybrid conv-transformer UNet wrapping MONAI ``SwinUNETR``.

A Swin transformer encoder (windowed self-attention over 2x2x2 patches, four merging
stages) with a convolutional UNETR decoder. This wrapper adds argument checks, an input
check naming the required multiple (32), and optional exposure conditioning: FiLM on the
deepest features (``16 * feature_size`` channels) or ``log(days)`` as an input channel.
Works as a generator (``out_channels=1``) or a segmenter (``out_channels=K``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import SwinUNETR
from torch import nn

from ._checks import (
    check_choice,
    check_input,
    check_positive_int,
    check_positive_ints,
    check_probability,
    check_spatial_dims,
    is_instance_norm,
)
from .conditioning import CONDITIONING_MODES, ExposureFiLM, append_exposure_channel, check_exposure
from .registry import register_net

__all__ = ["SwinUNETRNet"]

_STAGES = 4
_PATCH = 2


@register_net("swin_unetr")
class SwinUNETRNet(nn.Module):
    """Small-by-default SwinUNETR for ``(B, C, X, Y, Z)`` volumes or ``(B, C, X, Y)`` slices.

    Inputs must have every spatial size divisible by 32 (2x2x2 patches, then four 2x
    merging stages).

    Args:
        in_channels: Input channels.
        out_channels: Output channels (1 for an image, K for segmentation logits); no
            output activation.
        spatial_dims: 3 or 2.
        feature_size: Embedding width of the first stage; a multiple of 12.
        depths: Swin blocks per stage (4 entries).
        num_heads: Attention heads per stage (4 entries); stage ``i`` has
            ``feature_size * 2**i`` channels, which must divide by ``num_heads[i]``.
        window_size: Attention window edge in patches.
        norm: Decoder norm (MONAI ``norm_name``), instance by default.
        dropout_path_rate: Stochastic depth rate in the transformer.
        use_checkpoint: Gradient checkpointing in the transformer (saves memory).
        conditioning: ``None``, ``"film"`` or ``"channel"`` exposure conditioning.
        film_hidden: Hidden width of the FiLM MLP.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        spatial_dims: int = 3,
        feature_size: int = 12,
        depths: Sequence[int] = (1, 1, 1, 1),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        norm: str | tuple = "instance",
        dropout_path_rate: float = 0.0,
        use_checkpoint: bool = False,
        conditioning: str | None = None,
        film_hidden: int = 32,
    ) -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.out_channels = check_positive_int("out_channels", out_channels)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self._check_widths(feature_size, depths, num_heads)
        check_positive_int("window_size", window_size)
        check_probability("dropout_path_rate", dropout_path_rate)
        self.conditioning = check_choice("conditioning", conditioning, CONDITIONING_MODES)
        check_positive_int("film_hidden", film_hidden)
        self.size_multiple = _PATCH ** (_STAGES + 1)
        self._instance_norm = is_instance_norm(norm)
        self.swin = SwinUNETR(
            in_channels=in_channels + (1 if conditioning == "channel" else 0),
            out_channels=out_channels,
            patch_size=_PATCH,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            window_size=window_size,
            feature_size=feature_size,
            norm_name=norm,
            dropout_path_rate=dropout_path_rate,
            use_checkpoint=use_checkpoint,
            spatial_dims=spatial_dims,
        )
        deepest = feature_size * 2**_STAGES
        self.film = ExposureFiLM(deepest, film_hidden) if conditioning == "film" else None

    @staticmethod
    def _check_widths(feature_size: int, depths: Sequence[int], num_heads: Sequence[int]) -> None:
        """Check ``feature_size``, ``depths`` and ``num_heads`` together."""
        check_positive_int("feature_size", feature_size)
        if feature_size % 12:
            raise ValueError(f"feature_size must be a multiple of 12, got {feature_size}")
        for name, values in (("depths", depths), ("num_heads", num_heads)):
            if len(check_positive_ints(name, values)) != _STAGES:
                raise ValueError(f"{name} needs {_STAGES} entries (one per stage), got {values!r}")
        for stage, heads in enumerate(num_heads):
            width = feature_size * 2**stage
            if width % heads:
                raise ValueError(f"stage {stage} width {width} does not divide by num_heads[{stage}]={heads}")

    def forward(self, x: torch.Tensor, exposure_days: torch.Tensor | None = None) -> torch.Tensor:
        """Map an input volume to an output volume of the same spatial size.

        Args:
            x: Input of shape ``(B, C_in, X, Y, Z)``; spatial sizes divisible by 32.
            exposure_days: Exposure times in days, shape ``(B,)``; required iff conditioned.

        Returns:
            Output of shape ``(B, out_channels, X, Y, Z)`` (no activation).
        """
        what = "swin_unetr (2x patches, 4 merging stages)"
        check_input(x, self.in_channels, self.spatial_dims, self.size_multiple, what, self._instance_norm)
        exposure_days = check_exposure(exposure_days, x.shape[0], self.conditioning)
        if self.conditioning == "channel":
            x = append_exposure_channel(x, exposure_days)
        swin = self.swin
        hidden = swin.swinViT(x, swin.normalize)
        enc0 = swin.encoder1(x)
        enc1 = swin.encoder2(hidden[0])
        enc2 = swin.encoder3(hidden[1])
        enc3 = swin.encoder4(hidden[2])
        deepest = hidden[4] if self.film is None else self.film(hidden[4], exposure_days)
        dec = swin.decoder5(swin.encoder10(deepest), hidden[3])
        dec = swin.decoder4(dec, enc3)
        dec = swin.decoder3(dec, enc2)
        dec = swin.decoder2(dec, enc1)
        return swin.out(swin.decoder1(dec, enc0))
