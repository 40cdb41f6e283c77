"""``patch_critic``: conditional PatchGAN critic without batch norm (safe for WGAN-GP).

The condition (e.g. the low-exposure input) and the candidate (real or generated
target) are concatenated on channels, so ``in_channels = cond_channels +
candidate_channels``. Each of ``num_layers`` stride-2 convolutions halves the size; two
stride-1 convolutions follow, the last giving one logit per patch.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution
from torch import nn

from ._checks import check_input, check_positive_int, check_spatial_dims, is_instance_norm
from .registry import register_net

__all__ = ["PatchCritic"]

DEFAULT_ACT = ("leakyrelu", {"negative_slope": 0.2})
_ALLOWED_NORMS = ("instance", "group")


def _check_norm(norm: str | tuple | None) -> str | tuple | None:
    """Reject batch norm (it couples samples and breaks the per-sample gradient penalty)."""
    name = norm[0] if isinstance(norm, tuple) and norm else norm
    if name is not None and (not isinstance(name, str) or name.lower() not in _ALLOWED_NORMS):
        raise ValueError(
            f"critic norm must be None or one of {list(_ALLOWED_NORMS)} (no batch norm), got {norm!r}"
        )
    return norm


@register_net("patch_critic", kind="critic")
class PatchCritic(nn.Module):
    """Conditional PatchGAN critic returning a tensor of patch logits.

    Args:
        in_channels: Condition channels plus candidate channels (e.g. 1 + 1 for
            upsampling, 1 + K for K-class segmentation probabilities).
        spatial_dims: 3 for ``(B, C, X, Y, Z)`` volumes, 2 for ``(B, C, X, Y)`` slices.
        channels: Width of the first layer; doubled per stride-2 layer up to ``max_channels``.
        num_layers: Stride-2 layers; inputs must be divisible by ``2 ** num_layers``.
        max_channels: Width cap.
        norm: ``"instance"`` (default), ``"group"`` (MONAI spec) or ``None``; batch norm is refused.
        act: MONAI activation spec, LeakyReLU(0.2) by default.
    """

    def __init__(
        self,
        in_channels: int = 2,
        spatial_dims: int = 3,
        channels: int = 32,
        num_layers: int = 3,
        max_channels: int = 256,
        norm: str | tuple | None = "instance",
        act: str | tuple | None = DEFAULT_ACT,
    ) -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels, minimum=2)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        check_positive_int("channels", channels)
        self.num_layers = check_positive_int("num_layers", num_layers)
        check_positive_int("max_channels", max_channels)
        _check_norm(norm)
        self.size_multiple = 2**num_layers
        self._instance_norm = is_instance_norm(norm)
        widths = [in_channels] + [min(channels * 2**i, max_channels) for i in range(num_layers)]
        kw = {"spatial_dims": spatial_dims, "kernel_size": 3, "act": act}
        layers = [
            Convolution(in_channels=c_in, out_channels=c_out, strides=2, norm=norm if i else None, **kw)
            for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:]))
        ]
        layers.append(Convolution(in_channels=widths[-1], out_channels=widths[-1], norm=norm, **kw))
        layers.append(Convolution(in_channels=widths[-1], out_channels=1, conv_only=True, **kw))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, candidate: torch.Tensor | None = None) -> torch.Tensor:
        """Score every patch of ``x`` (or of ``cat([x, candidate])``).

        Args:
            x: Condition of shape ``(B, C_cond, X, Y, Z)``, or the already concatenated
                ``(B, in_channels, X, Y, Z)`` when ``candidate`` is None.
            candidate: Real or generated target ``(B, C_cand, X, Y, Z)``, concatenated
                after ``x`` on channels.

        Returns:
            Patch logits of shape ``(B, 1, X / 2**num_layers, Y / 2**num_layers, Z / 2**num_layers)``.
        """
        if candidate is not None:
            x = _concat(x, candidate)
        what = f"patch_critic with {self.num_layers} stride-2 layers"
        check_input(x, self.in_channels, self.spatial_dims, self.size_multiple, what, self._instance_norm)
        return self.layers(x)


def _concat(cond: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """Concatenate condition and candidate on channels after checking they match."""
    tensors = isinstance(cond, torch.Tensor) and isinstance(candidate, torch.Tensor)
    if not tensors or (cond.shape[0], *cond.shape[2:]) != (candidate.shape[0], *candidate.shape[2:]):
        shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t) for t in (cond, candidate)]
        raise ValueError(
            f"condition {shapes[0]} and candidate {shapes[1]} must match in batch and spatial size"
        )
    return torch.cat([cond, candidate], dim=1)
