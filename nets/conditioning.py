"""Exposure-time conditioning: log(days) as FiLM on a feature map or as a constant channel.

A net built with ``conditioning="film"`` scales and shifts its bottleneck features with
``h * (1 + gamma) + beta`` where ``(gamma, beta) = MLP(log(days))``; with
``conditioning="channel"`` it appends ``log(days)`` as one extra constant input channel.
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import nn

from ._checks import check_choice, check_positive_int

__all__ = ["CONDITIONING_MODES", "ExposureFiLM", "append_exposure_channel", "check_exposure"]

CONDITIONING_MODES = (None, "film", "channel")

_SPATIAL = {2: "x y", 3: "x y z"}


def check_exposure(
    exposure_days: torch.Tensor | None, batch: int, conditioning: str | None
) -> torch.Tensor | None:
    """Validate the exposure argument of a generator's ``forward``.

    Args:
        exposure_days: Exposure time per sample in days, shape ``(B,)``, or ``None``.
        batch: Batch size ``B`` of the image input.
        conditioning: The net's conditioning mode (``None``, ``"film"`` or ``"channel"``).

    Returns:
        ``exposure_days`` (unchanged), or ``None`` for an unconditioned net.

    Raises:
        ValueError: If a conditioned net gets no exposure, an unconditioned net gets one,
            the shape is not ``(B,)`` or a value is not positive.
    """
    check_choice("conditioning", conditioning, CONDITIONING_MODES)
    if conditioning is None:
        if exposure_days is not None:
            raise ValueError(
                "exposure_days was given but this net was built without conditioning; "
                "build it with conditioning='film' or 'channel', or pass exposure_days=None"
            )
        return None
    if exposure_days is None:
        raise ValueError(
            f"this net was built with conditioning={conditioning!r}: "
            "forward needs exposure_days, a (B,) tensor of exposure times in days"
        )
    if not isinstance(exposure_days, torch.Tensor) or tuple(exposure_days.shape) != (batch,):
        shape = tuple(exposure_days.shape) if isinstance(exposure_days, torch.Tensor) else exposure_days
        raise ValueError(f"exposure_days must be a tensor of shape ({batch},), got {shape}")
    if bool((exposure_days <= 0).any()):
        raise ValueError("exposure_days must be positive (days), got a value <= 0")
    return exposure_days


def _log_days(exposure_days: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Return ``log(days)`` as a float tensor of shape ``(B,)``."""
    return torch.log(exposure_days.to(torch.float32)).to(dtype)


def append_exposure_channel(x: torch.Tensor, exposure_days: torch.Tensor) -> torch.Tensor:
    """Append ``log(days)`` as a constant channel.

    Args:
        x: Input of shape ``(B, C, X, Y, Z)`` (or ``(B, C, X, Y)``).
        exposure_days: Exposure times in days, shape ``(B,)``.

    Returns:
        Tensor of shape ``(B, C + 1, X, Y, Z)``.
    """
    spatial = _SPATIAL[x.ndim - 2]
    sizes = dict(zip(spatial.split(), x.shape[2:]))
    channel = repeat(_log_days(exposure_days, x.dtype), f"b -> b 1 {spatial}", **sizes)
    return torch.cat([x, channel], dim=1)


class ExposureFiLM(nn.Module):
    """Feature-wise linear modulation of a feature map by ``log(exposure_days)``.

    ``out = h * (1 + gamma) + beta`` with ``(gamma, beta)`` from a two-layer MLP of
    ``log(days)``. The last layer starts small but nonzero so that conditioning has an
    effect (and gradients) from the first step while staying close to identity.

    Args:
        channels: Channel count ``C`` of the modulated feature map.
        hidden: Width of the MLP hidden layer.
        init_scale: Standard deviation of the last layer's initial weights.
    """

    def __init__(self, channels: int, hidden: int = 32, init_scale: float = 1e-2) -> None:
        super().__init__()
        check_positive_int("channels", channels)
        check_positive_int("hidden", hidden)
        self.mlp = nn.Sequential(nn.Linear(1, hidden), nn.SiLU(), nn.Linear(hidden, 2 * channels))
        nn.init.normal_(self.mlp[-1].weight, std=init_scale)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, h: torch.Tensor, exposure_days: torch.Tensor) -> torch.Tensor:
        """Modulate ``h``.

        Args:
            h: Features of shape ``(B, C, X, Y, Z)`` (or ``(B, C, X, Y)``).
            exposure_days: Exposure times in days, shape ``(B,)``.

        Returns:
            Modulated features, same shape as ``h``.
        """
        log_days = rearrange(_log_days(exposure_days, h.dtype), "b -> b 1")
        gamma, beta = rearrange(self.mlp(log_days), "b (two c) -> two b c", two=2)
        expand = "b c -> b c " + " ".join("1" for _ in range(h.ndim - 2))
        return h * (1 + rearrange(gamma, expand)) + rearrange(beta, expand)
