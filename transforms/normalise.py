"""Invertible normalisation of the per-voxel statistics channels (``channels/1``).

Each channel of ``volumetric.schema`` is normalised by its row's ``normalise`` kind. Sums are
first turned into per-muon means over their count channel (``Channel.per``; 0 where the count is
0), then mapped with per-dataset constants::

    log_count      c = log1p(N) / scale                      N = round(expm1(c scale))
    log_mean       c = log1p(S / (N ref))                     S = N ref expm1(c)
    centred_mean   c = (S / N - mean) / std                   S = N (c std + mean)
    fraction       c = S / N                                  S = round(N c)

so ``inverse(forward(x)) == x`` up to float32 rounding for every physical input (counts exactly).
Empty voxels map to 0 in every channel. The constants are estimated from the highest exposure of
some training cases (:func:`estimate_normalisation`): ``scale`` = log1p of a high count
percentile (c ~ 0..1), ``ref`` = the median per-muon mean, ``mean``/``std`` of the per-muon mean
over occupied voxels. Parameters are a plain dict, stored with checkpoints::

    {"name": "channels/1", "channels": {"count": {"scale": L}, "sum_theta2_rad2": {"ref": r}, ...}}

The earlier ``log-moments/1`` dict (``count_log_scale`` L, ``theta2_ref_rad2`` r, three PoCA
channels) is read as the same transform: count ``scale = L``, theta^2 ``ref = r``, theta^4
``ref = r^2`` (:func:`check_normalisation` converts it), so older checkpoints keep working.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.transforms import MapTransform, Transform

from volumetric.schema import check_channel_names, channel

__all__ = ["NORMALISATION_NAME", "LEGACY_NORMALISATION_NAME", "check_normalisation", "estimate_normalisation",
           "per_muon_to_normalised", "normalised_to_per_muon", "ScatteringNormalise", "ScatteringNormalised"]

NORMALISATION_NAME = "channels/1"
LEGACY_NORMALISATION_NAME = "log-moments/1"
_KEYS = {"log_count": ("scale",), "log_mean": ("ref",), "centred_mean": ("mean", "std"), "fraction": ()}
_POSITIVE = {"scale", "ref", "std"}


def _legacy(params: Mapping) -> dict:
    scale, ref = params.get("count_log_scale"), params.get("theta2_ref_rad2")
    for key, value in (("count_log_scale", scale), ("theta2_ref_rad2", ref)):
        if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
            raise ValueError(f"normalisation parameter {key!r} must be a positive number, got {value!r}")
    return {"name": NORMALISATION_NAME, "channels": {
        "count": {"scale": float(scale)}, "sum_theta2_rad2": {"ref": float(ref)},
        "sum_theta4_rad4": {"ref": float(ref) ** 2}}}


def check_normalisation(params: Mapping) -> dict:
    """Validate a parameters dict (``channels/1``, or ``log-moments/1`` converted); returns a plain copy.

    Raises:
        ValueError: naming the bad channel or parameter.
    """
    if isinstance(params, Mapping) and params.get("name") == LEGACY_NORMALISATION_NAME:
        params = _legacy(params)
    if not isinstance(params, Mapping) or params.get("name") != NORMALISATION_NAME or not isinstance(
            params.get("channels"), Mapping):
        raise ValueError(f"normalisation parameters must be a dict with name {NORMALISATION_NAME!r} and "
                         f"'channels', got {params!r}")
    names = check_channel_names(list(params["channels"]), "normalisation channels")
    out = {"name": NORMALISATION_NAME, "channels": {}}
    for name in names:
        kind, given = channel(name).normalise, params["channels"][name]
        entry = {}
        for key in _KEYS[kind]:
            value = given.get(key) if isinstance(given, Mapping) else None
            ok = isinstance(value, (int, float)) and np.isfinite(value) and (value > 0 or key not in _POSITIVE)
            if not ok:
                raise ValueError(f"normalisation of {name!r} ({kind}) needs {key!r} as a "
                                 f"{'positive' if key in _POSITIVE else 'finite'} number, got {value!r}")
            entry[key] = float(value)
        out["channels"][name] = entry
    return out


def _as_channels(item, channels: Sequence[str]) -> np.ndarray:
    from volumetric.data.io import load_statistics

    if isinstance(item, (str, bytes)) or hasattr(item, "__fspath__"):
        array, _, names = load_statistics(item)
        if tuple(names) != tuple(channels):
            raise ValueError(f"{item}: channels {list(names)}, expected {list(channels)}")
    else:
        array = np.asarray(item)
    if array.shape[0] != len(channels):
        raise ValueError(f"{item if isinstance(item, str) else 'volume'}: {array.shape[0]} channels, expected "
                         f"{len(channels)} ({', '.join(channels)})")
    return array.astype(np.float64)


def estimate_normalisation(target_paths: Sequence, channels: Sequence[str], count_percentile: float = 99.0) -> dict:
    """Parameters from the highest-exposure volumes of some (training) cases.

    Args:
        target_paths: NIfTI files ``(X, Y, Z, C)`` (or arrays ``(C, X, Y, Z)``).
        channels: their channel names, in order.
        count_percentile: the count percentile mapped to ``c = 1`` for count channels.
    """
    channels = check_channel_names(channels, "normalisation channels")
    volumes = [_as_channels(item, channels) for item in target_paths]
    index = {name: i for i, name in enumerate(channels)}
    out = {"name": NORMALISATION_NAME, "channels": {}}
    for name in channels:
        row = channel(name)
        values = np.concatenate([v[index[name]].ravel() for v in volumes])
        if row.per is None:
            out["channels"][name] = {"scale": float(np.log1p(max(np.percentile(values, count_percentile), 1.0)))}
            continue
        counts = np.concatenate([v[index[row.per]].ravel() for v in volumes])
        means = values[counts > 0] / counts[counts > 0]
        if not len(means):
            raise ValueError(f"cannot estimate the normalisation of {name!r}: no voxel holds a muon")
        if row.normalise == "log_mean":
            positive = means[means > 0]
            if not len(positive):
                raise ValueError(f"cannot estimate the normalisation of {name!r}: no voxel holds a scattered muon")
            out["channels"][name] = {"ref": float(np.median(positive))}
        elif row.normalise == "centred_mean":
            out["channels"][name] = {"mean": float(means.mean()), "std": float(max(means.std(), 1e-6))}
        else:
            out["channels"][name] = {}
    return check_normalisation(out)


def per_muon_to_normalised(value: torch.Tensor, name: str, params: Mapping) -> torch.Tensor:
    """Per-muon value (the count itself for counts, else the mean ``S / N``) -> normalised channel."""
    p = params["channels"][name]
    kind = channel(name).normalise
    if kind == "log_count":
        return torch.log1p(value.clamp_min(0)) / p["scale"]
    if kind == "log_mean":
        return torch.log1p(value.clamp_min(0) / p["ref"])
    if kind == "centred_mean":
        return (value - p["mean"]) / p["std"]
    return value


def normalised_to_per_muon(c: torch.Tensor, name: str, params: Mapping) -> torch.Tensor:
    """Inverse of :func:`per_muon_to_normalised`."""
    p = params["channels"][name]
    kind = channel(name).normalise
    if kind == "log_count":
        return torch.expm1(c * p["scale"])
    if kind == "log_mean":
        return p["ref"] * torch.expm1(c)
    if kind == "centred_mean":
        return c * p["std"] + p["mean"]
    return c


def _plain(x) -> torch.Tensor:
    """A float32 torch tensor without MONAI metadata (MetaTensor ops are slow per call)."""
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    return (x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))).to(torch.float32)


class ScatteringNormalise(Transform):
    """``channels/1`` on a channel-first ``(C, X, Y, Z)`` statistics volume (array version).

    Args:
        params: parameters dict (see the module docstring).
        channels: names of the input's channels in order (default: those of ``params``); every
            one needs parameters, and every sum its count channel among them.
    """

    def __init__(self, params: Mapping, channels: Sequence[str] | None = None):
        self.params = check_normalisation(params)
        self.channels = check_channel_names(channels if channels is not None else list(self.params["channels"]),
                                            "input channels")
        missing = [n for n in self.channels if n not in self.params["channels"]]
        if missing:
            raise ValueError(f"the normalisation has no parameters for channel(s) {missing}")

    def _check(self, x) -> None:
        if x.ndim < 2 or x.shape[0] != len(self.channels):
            raise ValueError(f"expected channel-first ({len(self.channels)}, X, Y, Z) statistics "
                             f"({', '.join(self.channels)}), got shape {tuple(x.shape)}")

    def _count(self, v: torch.Tensor, name: str) -> torch.Tensor:
        per = channel(name).per
        return v[self.channels.index(per)].clamp_min(0) if per else None

    def __call__(self, x) -> torch.Tensor:
        """Forward: statistics -> normalised float32 channels (same order)."""
        self._check(x)
        v = _plain(x)
        out = []
        for i, name in enumerate(self.channels):
            n = self._count(v, name)
            if n is None:
                out.append(per_muon_to_normalised(v[i], name, self.params))
                continue
            mean = v[i] / n.clamp_min(1)
            out.append(torch.where(n > 0, per_muon_to_normalised(mean, name, self.params), 0.0))
        out = self._like(x, torch.stack(out))
        if hasattr(out, "meta"):
            out.meta["normalisation"] = json.dumps(self.params)
        return out

    def inverse(self, y) -> torch.Tensor:
        """Inverse: normalised channels -> the channels' sums (float32), counts rounded."""
        self._check(y)
        v = _plain(y).to(torch.float64)
        counts = {name: torch.round(normalised_to_per_muon(v[i], name, self.params)).clamp_min(0)
                  for i, name in enumerate(self.channels) if channel(name).per is None}
        out = []
        for i, name in enumerate(self.channels):
            row = channel(name)
            if row.per is None:
                out.append(counts[name])
                continue
            total = counts[row.per] * normalised_to_per_muon(v[i], name, self.params)
            out.append(torch.round(total) if row.normalise == "fraction" else total)
        return self._like(y, torch.stack(out).to(torch.float32))

    @staticmethod
    def _like(x, out: torch.Tensor):
        if hasattr(x, "affine"):  # MetaTensor: keep its metadata
            from monai.data import MetaTensor

            return MetaTensor(out, meta=dict(x.meta))
        return out if isinstance(x, torch.Tensor) else out.numpy()


class ScatteringNormalised(MapTransform):
    """Dictionary version of :class:`ScatteringNormalise` (keys e.g. ``image``, ``target``)."""

    def __init__(self, keys, params: Mapping, channels: Sequence[str] | None = None, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.normalise = ScatteringNormalise(params, channels)

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
