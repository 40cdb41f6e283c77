"""Augmentations the physics allows: flips along x and y, 90-degree rotations in the x-y plane.

Muons come from above, so the vertical axis z (the last spatial axis of ``(C, X, Y, Z)``) is
never flipped nor rotated into x or y. One random draw is applied to every key, so image,
target and label stay aligned. Plain tensors use ``torch.flip``/``torch.rot90`` directly (fast);
MONAI ``MetaTensor`` inputs go through MONAI's ``Flip``/``Rotate90`` so their affine follows.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from monai.transforms import Flip, MapTransform, Randomizable, Rotate90

__all__ = ["RandFlipRotateXY", "RandFlipRotateXYd", "xy_augmentations"]


class RandFlipRotateXY(Randomizable):
    """Random XY symmetry of a channel-first ``(C, X, Y, Z)`` volume (array version).

    Args:
        prob: probability of the flip along X, of the flip along Y, and of a rotation by
            ``k * 90`` degrees in the XY plane (``k`` uniform in 1..3), each drawn independently.
        rotate: allow rotations (they swap X and Y: square XY patches are needed to batch).
    """

    def __init__(self, prob: float = 0.5, rotate: bool = True):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.prob, self.rotate = prob, rotate
        self.flips: tuple[bool, bool] = (False, False)
        self.k = 0

    def randomize(self, data=None) -> None:
        self.flips = (bool(self.R.random() < self.prob), bool(self.R.random() < self.prob))
        rotate = self.rotate and self.R.random() < self.prob
        self.k = int(self.R.randint(1, 4)) if rotate else 0

    def apply(self, x):
        """Apply the last draw to ``x`` (plain tensor or MetaTensor)."""
        if hasattr(x, "affine"):  # MetaTensor: MONAI keeps the affine consistent
            for axis, flip in enumerate(self.flips):
                x = Flip(spatial_axis=axis)(x) if flip else x
            return Rotate90(k=self.k, spatial_axes=(0, 1))(x) if self.k else x
        x = torch.as_tensor(x)
        dims = [axis + 1 for axis, flip in enumerate(self.flips) if flip]
        x = torch.flip(x, dims) if dims else x
        return torch.rot90(x, self.k, (1, 2)) if self.k else x

    def __call__(self, x, randomize: bool = True):
        if randomize:
            self.randomize()
        return self.apply(x)


class RandFlipRotateXYd(MapTransform, Randomizable):
    """Dictionary version of :class:`RandFlipRotateXY`: one draw for all ``keys``."""

    def __init__(self, keys, prob: float = 0.5, rotate: bool = True, allow_missing_keys: bool = False):
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.array = RandFlipRotateXY(prob, rotate)

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.array.set_random_state(state=self.R)
        return self

    def randomize(self, data=None) -> None:
        self.array.randomize()

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            d[key] = self.array.apply(d[key])
        return d


def xy_augmentations(keys, prob: float = 0.5, rotate: bool = True) -> RandFlipRotateXYd:
    """The XY-only augmentation of the training pipeline (see :class:`RandFlipRotateXYd`)."""
    return RandFlipRotateXYd(keys, prob=prob, rotate=rotate)
