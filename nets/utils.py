"""Small helpers about networks."""

from __future__ import annotations

from torch import nn

__all__ = ["count_parameters"]


def count_parameters(net: nn.Module, trainable_only: bool = True) -> int:
    """Return the number of (trainable) parameters of ``net``."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)
