"""Argument and input checks shared by the networks (all raise ``ValueError``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "check_choice",
    "check_input",
    "is_instance_norm",
    "check_positive_int",
    "check_positive_ints",
    "check_probability",
    "check_spatial_dims",
]


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` if it is an int ``>= minimum``, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_positive_ints(name: str, values: Any, min_len: int = 1) -> tuple[int, ...]:
    """Return ``values`` as a tuple of positive ints with at least ``min_len`` entries."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a sequence of positive integers, got {values!r}")
    if len(values) < min_len:
        raise ValueError(f"{name} needs at least {min_len} entries, got {values!r}")
    for value in values:
        check_positive_int(f"every entry of {name}", value)
    return tuple(values)


def check_spatial_dims(spatial_dims: Any) -> int:
    """Return ``spatial_dims`` if it is 2 or 3."""
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return int(spatial_dims)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_probability(name: str, value: Any) -> float:
    """Return ``value`` as a float in ``[0, 1)``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def is_instance_norm(norm: Any) -> bool:
    """Whether a MONAI norm spec (``"instance"`` or ``("instance", {...})``) is instance norm."""
    name = norm[0] if isinstance(norm, (tuple, list)) and norm else norm
    return isinstance(name, str) and name.lower().startswith("instance")


def check_input(
    x: torch.Tensor,
    in_channels: int,
    spatial_dims: int,
    multiple: int,
    what: str,
    instance_norm: bool = False,
) -> None:
    """Check a network input of shape ``(B, C, X, Y, Z)`` (or ``(B, C, X, Y)`` in 2D).

    Args:
        x: The input tensor.
        in_channels: Expected channel count ``C``.
        spatial_dims: 3 for volumes, 2 for slices.
        multiple: Every spatial size must be a multiple of this.
        what: Description used in the message, e.g. ``"resunet with 3 downsamplings"``.
        instance_norm: The net has instance norm at its coarsest level, which needs more
            than one voxel there (an input larger than ``multiple`` along some axis).

    Raises:
        ValueError: If the rank, channel count or a spatial size is wrong.
    """
    layout = "(B, C, X, Y, Z)" if spatial_dims == 3 else "(B, C, X, Y)"
    if not isinstance(x, torch.Tensor) or x.ndim != spatial_dims + 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected a {spatial_dims + 2}-D input {layout} for this {what}, got {shape}")
    if x.shape[1] != in_channels:
        raise ValueError(f"expected {in_channels} input channels for this {what}, got {x.shape[1]}")
    spatial = tuple(x.shape[2:])
    if any(size % multiple for size in spatial):
        raise ValueError(
            f"input spatial size {spatial} must be divisible by {multiple} for this {what}"
        )
    if instance_norm and all(size == multiple for size in spatial):
        raise ValueError(
            f"input spatial size {spatial} leaves one voxel at the coarsest level of this {what}; "
            f"instance norm needs more: use at least {2 * multiple} along one axis"
        )
