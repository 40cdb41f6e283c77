"""Exposure selection: pick the input exposure of a sample among the checkpoints.

A sample (see ``volumetric.data.dataset.make_dataset``) carries ``exposures``, a mapping from days
(float) to a volume ``(C, X, Y, Z)`` or the path of its NIfTI file. :class:`SelectExposured`
puts the chosen one under ``image`` and its days under ``exposure_days``.

Sampling modes, over the *input* checkpoints (all but the highest, which is the target; all of
them if there is only one):

* ``uniform``: every checkpoint equally likely;
* ``log-uniform``: ``u ~ U(log d_first, log d_last)``, then the checkpoint nearest to ``u`` in
  log-days (equally log-spaced checkpoints are equally likely; dense ones share their weight);
* ``fixed``: always ``fixed_days`` (evaluation), which must be one of the checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from monai.transforms import LoadImage, MapTransform, Randomizable

__all__ = ["SAMPLING_MODES", "SelectExposure", "SelectExposured", "LoadExposuresd", "load_volume"]

SAMPLING_MODES = ("uniform", "log-uniform", "fixed")


def load_volume(path):
    """A NIfTI volume as a channel-first MONAI ``MetaTensor`` ``(C, X, Y, Z)`` float32 with its affine."""
    return LoadImage(image_only=True, ensure_channel_first=True)(str(path))


class SelectExposure(Randomizable):
    """Choose exposure days among checkpoints (array version: returns the days).

    Args:
        sampling: ``uniform``, ``log-uniform`` or ``fixed``.
        fixed_days: the exposure for ``fixed`` (default: the shortest checkpoint).
        include_target: also allow the highest checkpoint as input.
    """

    def __init__(self, sampling: str = "log-uniform", fixed_days: float | None = None, include_target: bool = False):
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {sampling!r}")
        if fixed_days is not None and not (isinstance(fixed_days, (int, float)) and fixed_days > 0):
            raise ValueError(f"fixed_days must be positive days, got {fixed_days!r}")
        self.sampling = sampling
        self.fixed_days = fixed_days
        self.include_target = include_target
        self._days = None

    def candidates(self, checkpoints_days: Sequence[float]) -> list[float]:
        """Sorted input checkpoints (days)."""
        days = sorted(float(d) for d in checkpoints_days)
        if not days:
            raise ValueError("no exposure checkpoints to choose from")
        return days if self.include_target or len(days) == 1 else days[:-1]

    def randomize(self, checkpoints_days: Sequence[float]) -> None:
        days = self.candidates(checkpoints_days)
        if self.sampling == "fixed":
            want = days[0] if self.fixed_days is None else float(self.fixed_days)
            match = [d for d in sorted(float(c) for c in checkpoints_days) if math.isclose(d, want, rel_tol=1e-9)]
            if not match:
                raise ValueError(f"fixed_days {want:g} is not one of the checkpoints {sorted(checkpoints_days)}")
            self._days = match[0]
        elif self.sampling == "uniform":
            self._days = days[int(self.R.randint(len(days)))]
        else:
            logs = np.log(days)
            u = self.R.uniform(logs[0], logs[-1]) if len(days) > 1 else logs[0]
            self._days = days[int(np.argmin(np.abs(logs - u)))]

    def __call__(self, checkpoints_days: Sequence[float], randomize: bool = True) -> float:
        if randomize or self._days is None:
            self.randomize(checkpoints_days)
        return self._days


class SelectExposured(MapTransform, Randomizable):
    """Put one exposure of ``data[exposures_key]`` under ``image_key`` and its days under ``exposure_days``.

    Args:
        exposures_key: key of the ``{days: volume or path}`` mapping.
        image_key: output key of the chosen volume (channel first).
        days_key: output key of the chosen exposure (float, days).
        sampling, fixed_days, include_target: see :class:`SelectExposure`.
        drop_exposures: remove ``exposures_key`` from the output (saves collation of paths).
    """

    def __init__(self, exposures_key: str = "exposures", image_key: str = "image", days_key: str = "exposure_days",
                 sampling: str = "log-uniform", fixed_days: float | None = None, include_target: bool = False,
                 drop_exposures: bool = True):
        MapTransform.__init__(self, [exposures_key])
        self.exposures_key, self.image_key, self.days_key = exposures_key, image_key, days_key
        self.selector = SelectExposure(sampling, fixed_days, include_target)
        self.drop_exposures = drop_exposures

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.selector.set_random_state(state=self.R)
        return self

    def randomize(self, data=None) -> None:
        self.selector.randomize(data)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        exposures = d[self.exposures_key]
        if not isinstance(exposures, Mapping) or not exposures:
            raise ValueError(f"{self.exposures_key!r} must map exposure days to volumes or paths")
        by_days = {float(k): v for k, v in exposures.items()}
        days = self.selector(list(by_days))
        volume = by_days[days]
        # a preloaded volume is shared with the cache: later transforms must not modify it in place
        is_path = isinstance(volume, (str, bytes)) or hasattr(volume, "__fspath__")
        d[self.image_key] = load_volume(volume) if is_path else volume
        d[self.days_key] = float(days)
        if self.drop_exposures:
            d.pop(self.exposures_key)
        return d


class LoadExposuresd(MapTransform):
    """Load every exposure path of ``data[key]`` into memory (deterministic: runs before the cache).

    Args:
        key: key of the ``{days: path}`` mapping.
        pad_to: zero-pad each volume to at least this spatial size ``(X, Y, Z)`` (patch size).
        transform: an array transform applied to each volume after padding (e.g. the
            normalisation, so that it is cached instead of recomputed per sample).
    """

    def __init__(self, key: str = "exposures", pad_to: Sequence[int] | None = None, transform=None):
        super().__init__([key])
        self.key = key
        self.transform = transform
        self.pad = None
        if pad_to is not None:
            from monai.transforms import SpatialPad

            self.pad = SpatialPad(spatial_size=pad_to)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        volumes = {}
        for days, value in d[self.key].items():
            volume = load_volume(value) if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__") else value
            volume = self.pad(volume) if self.pad is not None else volume
            volumes[float(days)] = self.transform(volume) if self.transform is not None else volume
        d[self.key] = volumes
        return d
