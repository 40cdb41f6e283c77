"""What a trained model sees: the input pipeline shared by training and inference.

:class:`InputPipeline` selects the model's channels from the full normalised input, runs a frozen
upsampler first for a segmenter trained on upsampled input, and passes ``exposure_days`` only to
exposure-conditioned nets. Training (``volumetric.train.engine``) builds it around the net it
trains; inference (``volumetric.infer.predictor``) rebuilds it from a checkpoint, so inference
never imports training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["InputPipeline", "is_conditioned"]


def is_conditioned(net: nn.Module) -> bool:
    """Whether ``net`` takes ``exposure_days`` (an exposure-conditioned net)."""
    return getattr(net, "conditioning", None) is not None


class InputPipeline(nn.Module):
    """What the trained net sees: channel selection, optional frozen upsampler, the net itself.

    Takes the full normalised input ``(B, C, X, Y, Z)`` (every channel of ``layout``) so that
    :func:`predict_volume` can run it on whole volumes; passes ``exposure_days`` ``(B,)`` only to
    exposure-conditioned nets.

    Args:
        net: the trained net (possibly compiled).
        input_channels: positions in the input of the channels given to ``net`` (``raw`` part).
        upsampler: frozen upsampler (segment task) or ``None``.
        upsampler_channels: positions of the upsampler's input channels.
        segment_input: ``raw``, ``upsampled`` or ``both``.
        in_channels: channels ``C`` of the full input.
    """

    def __init__(self, net: nn.Module, input_channels: Sequence[int], upsampler: nn.Module | None = None,
                 upsampler_channels: Sequence[int] = (), segment_input: str = "raw", in_channels: int = 3) -> None:
        super().__init__()
        self.net = net
        self.upsampler = upsampler
        self.segment_input = segment_input
        self.register_buffer("input_index", torch.tensor(list(input_channels)), persistent=False)
        self.register_buffer("upsampler_index", torch.tensor(list(upsampler_channels), dtype=torch.long),
                             persistent=False)
        self.in_channels = int(in_channels)
        multiples = [int(getattr(net, "size_multiple", 1))]
        if upsampler is not None:
            multiples.append(int(getattr(upsampler, "size_multiple", 1)))
        self.size_multiple = math.lcm(*multiples)

    def forward(self, x: torch.Tensor, exposure_days: torch.Tensor | None = None):
        """``x`` ``(B, C, X, Y, Z)`` -> the net's output (tensor or ``{"image", "logits"}``)."""
        parts = []
        if self.upsampler is None or self.segment_input in ("raw", "both"):
            parts.append(x.index_select(1, self.input_index))
        if self.upsampler is not None and self.segment_input in ("upsampled", "both"):
            with torch.no_grad():
                up_in = x.index_select(1, self.upsampler_index)
                days = exposure_days if is_conditioned(self.upsampler) else None
                parts.append(self.upsampler(up_in, days).detach())
        net_in = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return self.net(net_in, exposure_days if is_conditioned(self.net) else None)
