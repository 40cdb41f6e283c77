"""``resunet``: a pix2pix-style UNet with a residual-block bottleneck.

Encoder: one stride-2 convolution per entry of ``channels`` (the first reads the input,
so no convolution runs on many channels at full resolution). Bottleneck: ``num_res_blocks``
MONAI ``ResidualUnit`` blocks at the coarsest level, optionally FiLM-conditioned on the
exposure time. Decoder: one stride-2 transposed convolution per level, reading the
concatenation of the previous level and the encoder skip; the last one returns
``channels[0]`` features at full resolution. A 1x1 convolution head gives the output with
no activation (regression image or segmentation logits).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution, ResidualUnit
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

__all__ = ["DEFAULT_ACT", "ResUNet", "ResUNetTrunk"]

DEFAULT_ACT = ("leakyrelu", {"negative_slope": 0.2})


class ResUNetTrunk(nn.Module):
    """Encoder, residual bottleneck and decoder of :class:`ResUNet`, without the output head.

    Args:
        in_channels: Input channels ``C``.
        spatial_dims: 3 for ``(B, C, X, Y, Z)`` volumes, 2 for ``(B, C, X, Y)`` slices.
        channels: Feature width per level, one stride-2 downsampling each; inputs must be
            divisible by ``2 ** len(channels)``.
        num_res_blocks: Residual blocks in the bottleneck (0 allowed).
        norm: MONAI norm spec (``"instance"``, ``"group"``, ``None``...). Instance norm by
            default, which suits GAN training; batch norm works but is not recommended.
        act: MONAI activation spec, LeakyReLU(0.2) by default.
        dropout: Dropout probability inside the bottleneck residual blocks.
        conditioning: ``None``, ``"film"`` (FiLM of the bottleneck by ``log(days)``) or
            ``"channel"`` (``log(days)`` appended as an input channel).
        film_hidden: Hidden width of the FiLM MLP.
        name: Net name used in error messages.
    """

    def __init__(
        self,
        in_channels: int = 1,
        spatial_dims: int = 3,
        channels: Sequence[int] = (16, 32, 64),
        num_res_blocks: int = 6,
        norm: str | tuple | None = "instance",
        act: str | tuple | None = DEFAULT_ACT,
        dropout: float = 0.0,
        conditioning: str | None = None,
        film_hidden: int = 32,
        name: str = "resunet",
    ) -> None:
        super().__init__()
        self.name = name
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.channels = check_positive_ints("channels", channels)
        check_positive_int("num_res_blocks", num_res_blocks, minimum=0)
        dropout = check_probability("dropout", dropout)
        self.conditioning = check_choice("conditioning", conditioning, CONDITIONING_MODES)
        check_positive_int("film_hidden", film_hidden)
        self.num_downsamplings = len(self.channels)
        self.size_multiple = 2**self.num_downsamplings
        self.out_features = self.channels[0]
        self._instance_norm = is_instance_norm(norm)

        conv_kw = {"spatial_dims": spatial_dims, "norm": norm, "act": act, "kernel_size": 3}
        stem_channels = in_channels + (1 if conditioning == "channel" else 0)
        self.downs = self._encoder(stem_channels, conv_kw)
        bottom = self.channels[-1]
        self.film = ExposureFiLM(bottom, film_hidden) if conditioning == "film" else None
        self.bottleneck = nn.Sequential(
            *(
                ResidualUnit(in_channels=bottom, out_channels=bottom, dropout=dropout or None, **conv_kw)
                for _ in range(num_res_blocks)
            )
        )
        self.ups = self._decoder(conv_kw)

    def _encoder(self, in_channels: int, conv_kw: dict) -> nn.ModuleList:
        """One stride-2 convolution per level."""
        widths = (in_channels, *self.channels)
        return nn.ModuleList(
            Convolution(in_channels=c_in, out_channels=c_out, strides=2, **conv_kw)
            for c_in, c_out in zip(widths[:-1], widths[1:])
        )

    def _decoder(self, conv_kw: dict) -> nn.ModuleList:
        """One stride-2 transposed convolution per level, from coarse to fine.

        All but the deepest read the previous output concatenated with the encoder skip.
        """
        finer = list(reversed(self.channels[:-1]))
        widths_in = [self.channels[-1]] + [2 * c for c in finer]
        widths_out = finer + [self.channels[0]]
        return nn.ModuleList(
            Convolution(in_channels=c_in, out_channels=c_out, strides=2, is_transposed=True, **conv_kw)
            for c_in, c_out in zip(widths_in, widths_out)
        )

    @property
    def description(self) -> str:
        """Short description used in error messages."""
        return f"{self.name} with {self.num_downsamplings} downsamplings"

    def forward(self, x: torch.Tensor, exposure_days: torch.Tensor | None = None) -> torch.Tensor:
        """Compute full-resolution decoder features.

        Args:
            x: Input of shape ``(B, C_in, X, Y, Z)``; every spatial size divisible by
                ``size_multiple``.
            exposure_days: Exposure times in days, shape ``(B,)``; required iff the trunk
                was built with conditioning.

        Returns:
            Features of shape ``(B, channels[0], X, Y, Z)``.
        """
        check_input(
            x, self.in_channels, self.spatial_dims, self.size_multiple, self.description, self._instance_norm
        )
        exposure_days = check_exposure(exposure_days, x.shape[0], self.conditioning)
        if self.conditioning == "channel":
            x = append_exposure_channel(x, exposure_days)
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
        h = skips.pop()
        if self.film is not None:
            h = self.film(h, exposure_days)
        h = self.bottleneck(h)
        for index, up in enumerate(self.ups):
            h = up(h) if index == 0 else up(torch.cat([h, skips.pop()], dim=1))
        return h


@register_net("resunet")
class ResUNet(nn.Module):
    """pix2pix-style UNet with a residual bottleneck, for upsampling or segmentation.

    Use ``out_channels=1`` for a regression image (no output activation) or
    ``out_channels=K`` for K-class segmentation logits.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        spatial_dims: 3 for ``(B, C, X, Y, Z)`` volumes, 2 for ``(B, C, X, Y)`` slices.
        channels: Feature width per level, one stride-2 downsampling each; inputs must be
            divisible by ``2 ** len(channels)`` (8 by default).
        num_res_blocks: Residual blocks in the bottleneck.
        norm: MONAI norm spec; instance norm by default (no batch norm).
        act: MONAI activation spec; LeakyReLU(0.2) by default.
        dropout: Dropout probability in the bottleneck residual blocks.
        conditioning: ``None``, ``"film"`` or ``"channel"`` exposure conditioning.
        film_hidden: Hidden width of the FiLM MLP.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        spatial_dims: int = 3,
        channels: Sequence[int] = (16, 32, 64),
        num_res_blocks: int = 6,
        norm: str | tuple | None = "instance",
        act: str | tuple | None = DEFAULT_ACT,
        dropout: float = 0.0,
        conditioning: str | None = None,
        film_hidden: int = 32,
    ) -> None:
        super().__init__()
        self.out_channels = check_positive_int("out_channels", out_channels)
        self.trunk = ResUNetTrunk(
            in_channels, spatial_dims, channels, num_res_blocks, norm, act, dropout, conditioning, film_hidden
        )
        features = self.trunk.out_features
        self.head = Convolution(spatial_dims, features, out_channels, kernel_size=1, conv_only=True)
        self.in_channels = self.trunk.in_channels
        self.spatial_dims = self.trunk.spatial_dims
        self.conditioning = self.trunk.conditioning
        self.size_multiple = self.trunk.size_multiple

    def forward(self, x: torch.Tensor, exposure_days: torch.Tensor | None = None) -> torch.Tensor:
        """Map an input volume to an output volume of the same spatial size.

        Args:
            x: Input of shape ``(B, C_in, X, Y, Z)``; spatial sizes divisible by ``size_multiple``.
            exposure_days: Exposure times in days, shape ``(B,)``; required iff conditioned.

        Returns:
            Output of shape ``(B, out_channels, X, Y, Z)`` (image or logits, no activation).
        """
        return self.head(self.trunk(x, exposure_days))
