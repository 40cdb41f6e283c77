"""Invertible normalisation of the per-voxel scattering statistics (``log-moments/1``).

Input channels (as written in ``exposures/<days>d.nii.gz``): ``N`` (count), ``S2 = sum theta^2``
(rad^2), ``S4 = sum theta^4`` (rad^4). Output channels, with two per-dataset constants
``L = count_log_scale`` and ``r = theta2_ref_rad2``::

    c0 = log1p(N) / L
    c1 = log1p(S2 / (N r))         (mean theta^2 relative to r; 0 where N = 0)
    c2 = log1p(S4 / (N r^2))       (mean theta^4 relative to r^2; 0 where N = 0)

and the exact inverse ``N = expm1(c0 L)``, ``S2 = N r expm1(c1)``, ``S4 = N r^2 expm1(c2)``.
It is defined for every physical input (``N >= 0``; ``S2 = S4 = 0`` where ``N = 0``), so
``inverse(forward(x)) == x`` up to float32 rounding (counts exactly: the inverse rounds them).
The forward pass runs in float32; empty voxels (``N = 0``, hence ``S2 = S4 = 0``) map to 0. ``L`` is ``log1p`` of a high count
percentile of the highest exposure (so c0 ~ 0..1); ``r`` is the median mean theta^2 over
occupied voxels (concrete dominates: c1 ~ log 2 there). The parameters are a plain dict
(``{"name": "log-moments/1", "count_log_scale": L, "theta2_ref_rad2": r}``): store it with
checkpoints; the dictionary transform also writes it (JSON) into the image metadata under
``"normalisation"``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.transforms import MapTransform, Transform

__all__ = ["NORMALISATION_NAME", "check_normalisation", "estimate_normalisation", "ScatteringNormalise",
           "ScatteringNormalised"]

NORMALISATION_NAME = "log-moments/1"


def check_normalisation(params: Mapping) -> dict:
    """Validate a parameters dict; returns a plain copy."""
    if not isinstance(params, Mapping) or params.get("name") != NORMALISATION_NAME:
        raise ValueError(f"normalisation parameters must be a dict with name {NORMALISATION_NAME!r}, got {params!r}")
    out = {"name": NORMALISATION_NAME}
    for key in ("count_log_scale", "theta2_ref_rad2"):
        value = params.get(key)
        if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
            raise ValueError(f"normalisation parameter {key!r} must be a positive number, got {value!r}")
        out[key] = float(value)
    return out


def estimate_normalisation(target_paths: Sequence, count_percentile: float = 99.0) -> dict:
    """Parameters from the highest-exposure volumes of some (training) cases.

    Args:
        target_paths: NIfTI files ``(X, Y, Z, 3)`` (or arrays ``(3, X, Y, Z)``).
        count_percentile: the count percentile mapped to ``c0 = 1``.
    """
    from volumetric.io import load_nifti

    counts, means = [], []
    for item in target_paths:
        array = np.moveaxis(load_nifti(item)[0], -1, 0) if isinstance(item, (str, bytes)) or hasattr(
            item, "__fspath__") else np.asarray(item)
        n, s2 = array[0].astype(np.float64), array[1].astype(np.float64)
        counts.append(n.ravel())
        means.append(s2[n > 0] / n[n > 0])
    counts, means = np.concatenate(counts), np.concatenate(means)
    if not len(means) or not (means > 0).any():
        raise ValueError("cannot estimate the normalisation: no voxel holds a scattered muon")
    return {
        "name": NORMALISATION_NAME,
        "count_log_scale": float(np.log1p(max(np.percentile(counts, count_percentile), 1.0))),
        "theta2_ref_rad2": float(np.median(means[means > 0])),
    }


def _plain(x) -> torch.Tensor:
    """A float32 torch tensor without MONAI metadata (MetaTensor ops are slow per call)."""
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    return (x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))).to(torch.float32)


class ScatteringNormalise(Transform):
    """``log-moments/1`` on a channel-first ``(3, X, Y, Z)`` volume (array version).

    Args:
        params: parameters dict (see the module docstring).
    """

    def __init__(self, params: Mapping):
        self.params = check_normalisation(params)

    def _check(self, x) -> None:
        if x.ndim < 2 or x.shape[0] != 3:
            raise ValueError(f"expected channel-first (3, X, Y, Z) scattering statistics, got shape {tuple(x.shape)}")

    def __call__(self, x) -> torch.Tensor:
        """Forward: statistics -> normalised float32 channels."""
        self._check(x)
        v = _plain(x)
        L, r = self.params["count_log_scale"], self.params["theta2_ref_rad2"]
        n = v[0].clamp_min(0)
        per_muon = 1.0 / (n.clamp_min(1) * r)  # empty voxels have S2 = S4 = 0: their channels are 0
        out = torch.stack([torch.log1p(n) / L, torch.log1p(v[1].clamp_min(0) * per_muon),
                           torch.log1p(v[2].clamp_min(0) * per_muon / r)])
        out = self._like(x, out)
        if hasattr(out, "meta"):
            out.meta["normalisation"] = json.dumps(self.params)
        return out

    def inverse(self, y) -> torch.Tensor:
        """Inverse: normalised channels -> ``(count, sum theta^2 rad^2, sum theta^4 rad^4)`` float32."""
        self._check(y)
        v = _plain(y).to(torch.float64)
        L, r = self.params["count_log_scale"], self.params["theta2_ref_rad2"]
        n = torch.round(torch.expm1(v[0] * L))  # counts are integers
        out = torch.stack([n, n * r * torch.expm1(v[1]), n * r * r * torch.expm1(v[2])]).to(torch.float32)
        return self._like(y, out)

    @staticmethod
    def _like(x, out: torch.Tensor):
        if hasattr(x, "affine"):  # MetaTensor: keep its metadata
            from monai.data import MetaTensor

            return MetaTensor(out, meta=dict(x.meta))
        return out if isinstance(x, torch.Tensor) else out.numpy()


class ScatteringNormalised(MapTransform):
    """Dictionary version of :class:`ScatteringNormalise` (keys e.g. ``image``, ``target``)."""

    def __init__(self, keys, params: Mapping, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.normalise = ScatteringNormalise(params)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalise(d[key])
        return d

    def inverse(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalise.inverse(d[key])
        return d
