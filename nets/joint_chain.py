"""``joint_chain``: an upsampler chained end to end into a segmenter.

``image = upsampler(x)``, then ``logits = segmenter(cat([image, x]))`` (or of ``image``
alone), trained jointly: the segmentation loss also trains the upsampler. Both parts are
any ``dense`` nets from the registry (``resunet``, ``swin_unetr``...).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ._checks import check_input, check_positive_int, check_spatial_dims
from .registry import create_net, net_kind, register_net

__all__ = ["JointChain"]

_RESERVED = ("in_channels", "out_channels", "spatial_dims")


def _build_part(role: str, name: str, kwargs: dict[str, Any] | None, **fixed: int) -> nn.Module:
    """Build one dense sub-net with the channel and dimension arguments set by the chain."""
    if net_kind(name) != "dense":
        raise ValueError(f"{role} must be a dense net such as 'resunet', got {name!r} ({net_kind(name)})")
    kwargs = dict(kwargs or {})
    clash = sorted(set(kwargs) & set(_RESERVED))
    if clash:
        raise ValueError(f"{role}_kwargs must not set {clash}: joint_chain sets them")
    return create_net(name, **fixed, **kwargs)


@register_net("joint_chain", kind="joint")
class JointChain(nn.Module):
    """Upsampler followed by a segmenter, returning both outputs.

    Args:
        in_channels: Input channels.
        num_classes: Segmentation classes ``K`` (background included).
        spatial_dims: 3 for ``(B, C, X, Y, Z)`` volumes, 2 for ``(B, C, X, Y)`` slices.
        upsampler: Registered dense net producing the 1-channel image.
        upsampler_kwargs: Its other arguments (not channels or ``spatial_dims``).
        segmenter: Registered dense net producing the K logits.
        segmenter_kwargs: Its other arguments (not channels or ``spatial_dims``).
        segmenter_sees_input: Feed ``cat([image, x])`` instead of ``image`` to the segmenter.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        spatial_dims: int = 3,
        upsampler: str = "resunet",
        upsampler_kwargs: dict[str, Any] | None = None,
        segmenter: str = "resunet",
        segmenter_kwargs: dict[str, Any] | None = None,
        segmenter_sees_input: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.num_classes = check_positive_int("num_classes", num_classes, minimum=2)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.segmenter_sees_input = bool(segmenter_sees_input)
        dims = {"spatial_dims": spatial_dims}
        up_channels = {"in_channels": in_channels, "out_channels": 1}
        self.upsampler = _build_part("upsampler", upsampler, upsampler_kwargs, **up_channels, **dims)
        seg_in = 1 + (in_channels if self.segmenter_sees_input else 0)
        seg_channels = {"in_channels": seg_in, "out_channels": num_classes}
        self.segmenter = _build_part("segmenter", segmenter, segmenter_kwargs, **seg_channels, **dims)
        self.size_multiple = math.lcm(self.upsampler.size_multiple, self.segmenter.size_multiple)
        parts = (self.upsampler, self.segmenter)
        self.conditioning = next((p.conditioning for p in parts if p.conditioning is not None), None)
        self._description = f"joint_chain ({upsampler} -> {segmenter})"

    def _part_days(self, part: nn.Module, exposure_days: torch.Tensor | None) -> torch.Tensor | None:
        """Pass the exposure only to the parts that are conditioned on it."""
        return exposure_days if part.conditioning is not None else None

    def forward(self, x: torch.Tensor, exposure_days: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Upsample, then segment the upsampled image.

        Args:
            x: Input of shape ``(B, C_in, X, Y, Z)``; spatial sizes divisible by ``size_multiple``.
            exposure_days: Exposure times in days, shape ``(B,)``; required iff a part is
                conditioned, refused otherwise.

        Returns:
            ``{"image": (B, 1, X, Y, Z), "logits": (B, K, X, Y, Z)}``.
        """
        check_input(x, self.in_channels, self.spatial_dims, self.size_multiple, self._description)
        if exposure_days is not None and self.conditioning is None:
            raise ValueError("exposure_days was given but neither part of this joint_chain is conditioned")
        image = self.upsampler(x, self._part_days(self.upsampler, exposure_days))
        seg_in = torch.cat([image, x], dim=1) if self.segmenter_sees_input else image
        logits = self.segmenter(seg_in, self._part_days(self.segmenter, exposure_days))
        return {"image": image, "logits": logits}
