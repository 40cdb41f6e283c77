"""Slice-wise 2D nets on 3D volumes: the reference work's 2D approach, as drop-in 3D nets.

The reference (pix2pix cWGAN-GP, ``../shared/docs/MISSION.md``) upsampled and segmented each
horizontal (XY) slice on its own. ``slicewise`` wraps any registered 2D net so it takes the
same ``(B, C, X, Y, Z)`` volumes as the 3D nets: the ``Z`` slices become batch entries
``(B * Z, C, X, Y)``, the 2D net runs on each, and the outputs are stacked back along ``Z``.
No information crosses slices, so training and evaluating it with the same ``train.py`` /
``evaluate.py`` as the 3D nets is the 3D-against-2D comparison with everything else equal.

Three registry entries, one per kind: ``slicewise`` (dense), ``slicewise_joint`` (joint) and
``slicewise_critic`` (critic). Note for the critic: the WGAN-GP gradient penalty is computed
by :func:`volumetric.train.losses.gradient_penalty` per *volume* (gradient norm over all slices of a
sample), not per slice as in the 2D reference.
"""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from torch import nn

from ._checks import check_positive_int
from .registry import create_net, net_kind, register_net

__all__ = ["SliceWise", "SliceWiseJoint", "SliceWiseCritic"]

_COPIED = ("in_channels", "out_channels", "num_classes", "size_multiple", "conditioning")


def _to_slices(x: torch.Tensor) -> torch.Tensor:
    return rearrange(x, "b c x y z -> (b z) c x y")


def _to_volume(x: torch.Tensor, batch: int) -> torch.Tensor:
    return rearrange(x, "(b z) c x y -> b c x y z", b=batch)


class _SliceWiseBase(nn.Module):
    """Holds the inner 2D net and copies its size and channel attributes."""

    kind = "dense"

    def __init__(self, net: str, net_kwargs: dict[str, Any] | None, **channels: int) -> None:
        super().__init__()
        if net_kind(net) != self.kind:
            raise ValueError(f"{type(self).__name__} wraps {self.kind!r} nets; {net!r} is a {net_kind(net)!r} net")
        kwargs = dict(net_kwargs or {})
        clash = sorted(set(kwargs) & {"spatial_dims", *channels})
        if clash:
            raise ValueError(f"net_kwargs must not set {clash}: the slice-wise wrapper sets them")
        self.net = create_net(net, spatial_dims=2, **channels, **kwargs)
        for name in _COPIED:
            if hasattr(self.net, name):
                setattr(self, name, getattr(self.net, name))
        self.spatial_dims = 3

    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 5:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected a 5-D input (B, C, X, Y, Z) for this slice-wise net, got {shape}")

    def _days(self, exposure_days: torch.Tensor | None, depth: int) -> torch.Tensor | None:
        return None if exposure_days is None else exposure_days.repeat_interleave(depth)


@register_net("slicewise", kind="dense")
class SliceWise(_SliceWiseBase):
    """A 2D dense net (``resunet``, ``swin_unetr``...) applied to every XY slice.

    Args:
        in_channels: Input channels.
        out_channels: Output channels (1 image channel or K logits).
        net: Registered dense net, built with ``spatial_dims=2``.
        net_kwargs: Its other arguments (not channels or ``spatial_dims``).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, net: str = "resunet",
                 net_kwargs: dict[str, Any] | None = None) -> None:
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        super().__init__(net, net_kwargs, in_channels=in_channels, out_channels=out_channels)

    def forward(self, x: torch.Tensor, exposure_days: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C_in, X, Y, Z)`` -> ``(B, C_out, X, Y, Z)``, slice by slice."""
        self._check(x)
        out = self.net(_to_slices(x), self._days(exposure_days, x.shape[-1]))
        return _to_volume(out, x.shape[0])


@register_net("slicewise_joint", kind="joint")
class SliceWiseJoint(_SliceWiseBase):
    """A 2D joint net (``joint_resunet``, ``joint_chain``) applied to every XY slice.

    Args:
        in_channels: Input channels.
        num_classes: Segmentation classes ``K``.
        net: Registered joint net, built with ``spatial_dims=2``.
        net_kwargs: Its other arguments (not channels or ``spatial_dims``).
    """

    kind = "joint"

    def __init__(self, in_channels: int = 1, num_classes: int = 2, net: str = "joint_resunet",
                 net_kwargs: dict[str, Any] | None = None) -> None:
        check_positive_int("in_channels", in_channels)
        check_positive_int("num_classes", num_classes, minimum=2)
        super().__init__(net, net_kwargs, in_channels=in_channels, num_classes=num_classes)

    def forward(self, x: torch.Tensor, exposure_days: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``(B, C_in, X, Y, Z)`` -> ``{"image": (B, 1, X, Y, Z), "logits": (B, K, X, Y, Z)}``."""
        self._check(x)
        out = self.net(_to_slices(x), self._days(exposure_days, x.shape[-1]))
        return {key: _to_volume(value, x.shape[0]) for key, value in out.items()}


@register_net("slicewise_critic", kind="critic")
class SliceWiseCritic(_SliceWiseBase):
    """A 2D critic (``patch_critic``) scoring the patches of every XY slice.

    Args:
        in_channels: Condition + candidate channels.
        net: Registered critic, built with ``spatial_dims=2``.
        net_kwargs: Its other arguments (not ``in_channels`` or ``spatial_dims``).
    """

    kind = "critic"

    def __init__(self, in_channels: int = 2, net: str = "patch_critic",
                 net_kwargs: dict[str, Any] | None = None) -> None:
        check_positive_int("in_channels", in_channels)
        super().__init__(net, net_kwargs, in_channels=in_channels)

    def forward(self, x: torch.Tensor, candidate: torch.Tensor | None = None) -> torch.Tensor:
        """Patch logits ``(B, 1, x', y', Z)``: one 2D patch map per slice."""
        self._check(x)
        if candidate is not None:
            self._check(candidate)
            candidate = _to_slices(candidate)
        return _to_volume(self.net(_to_slices(x), candidate), x.shape[0])
