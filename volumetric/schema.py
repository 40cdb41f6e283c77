"""The statistics channels: one table that simulation, import, datasets, normalisation, training
and inference all read.

Every channel is an **additive** per-voxel sum over muons (so disjoint exposures add exactly and
the exposure series comes from one simulation). A row says where a muon adds (``source``), what
it adds (``adds``: a function of its measured scattering angle theta), the unit of the sum, and
how the channel is normalised for the networks (``normalise``, averaged over the count channel
``per``). Adding a channel means adding a row here (and a weight in :data:`MUON_WEIGHTS` if it adds
something new); nothing else names channels.

Sources:

* ``poca``: the voxel holding the muon's Point of Closest Approach (PoCA).
* ``path``: every voxel layer crossed by the muon's measured incoming line down to the PoCA depth
  and its measured outgoing line below it (Angle-Statistics-Reconstruction style, the idea of
  Stapleton et al., JINST 9 (2014) P11019); see ``volumetric.physics.statistics`` for the exact rule.

Angles are the measured scattering angle theta (rad) between the detector's incoming and
outgoing lines, so they include the detector's resolution. ``log theta`` is the natural log of
``max(theta, THETA_FLOOR_RAD)``: the floor (1 urad, far below the ~1.6 mrad angular resolution)
only keeps parallel pairs finite. The mean of log theta separates materials better than the mean
of theta^2 because the momentum spectrum gives theta a heavy tail (measured in
``benchmarks/separability.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "CLASS_NAMES",
    "CLASS_COLOURS",
    "NUM_CLASSES",
    "THETA_FLOOR_RAD",
    "DEFAULT_THETA_THRESHOLD_RAD",
    "NORMALISE_KINDS",
    "Channel",
    "CHANNELS",
    "CHANNEL_NAMES",
    "LEGACY_CHANNEL_NAMES",
    "MUON_WEIGHTS",
    "channel",
    "check_channel_names",
    "channels_of_source",
    "muon_weights",
    "per_muon_name",
    "non_negative",
    "Task",
    "TASKS",
    "task_spec",
    "channel_indices",
    "legacy_channel_names",
]

CLASS_NAMES: tuple[str, ...] = ("concrete", "rebar", "duct", "void", "unknown")
"""Label ids 0..4 (concrete is the background class)."""
NUM_CLASSES = len(CLASS_NAMES)


@dataclass(frozen=True)
class Task:
    """What a training task's model is and gives (read by training, inference and evaluation).

    Attributes:
        name: ``upsample``, ``segment`` or ``joint``.
        net_kind: registry kind of its net (``dense``: one output tensor; ``joint``: a dict).
        has_image: the model predicts an image (normalised statistics of the target exposure).
        has_logits: the model predicts class logits.
        dense_output: for a ``dense`` net, which output its tensor is (``image`` or ``logits``).
        val_metric: in-training validation metric (``l1`` on the image, ``dice`` on the classes).
    """

    name: str
    net_kind: str
    has_image: bool
    has_logits: bool
    dense_output: str | None
    val_metric: str


TASKS: dict[str, Task] = {
    "upsample": Task("upsample", "dense", True, False, "image", "l1"),
    "segment": Task("segment", "dense", False, True, "logits", "dice"),
    "joint": Task("joint", "joint", True, True, None, "dice"),
}


def task_spec(name: str) -> Task:
    """The :class:`Task` called ``name``; a ``ValueError`` names the known tasks."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {tuple(TASKS)}")
    return TASKS[name]
CLASS_COLOURS: tuple[str, ...] = ("#d9d9d9", "#d62728", "#1f77b4", "#ffffff", "#ff7f0e")
"""Display colour of each class id (concrete grey, rebar red, duct blue, void white, unknown orange)."""

THETA_FLOOR_RAD = 1e-6
"""Angles below this (rad) count as this in ``log theta`` (keeps parallel pairs finite)."""

DEFAULT_THETA_THRESHOLD_RAD = 0.05
"""Angle (rad) above which a muon counts in the ``*_above_threshold`` channels: about the 88th
percentile of measured angles through 20 cm of plain concrete with the EcoMug spectrum and the
default detector (measured: median 11 mrad, 80th percentile 33 mrad, 90th 58 mrad, from
``volumetric simulate --geometry examples/plain_slab.json --days 0.02 --voxel-mm 10 --save-tracks``).
A simulation setting, recorded in ``simulation.json`` and ``dataset.json``."""

NORMALISE_KINDS = ("log_count", "log_mean", "centred_mean", "fraction")
"""How a channel becomes a network input (``transforms.normalise``):

* ``log_count``: ``log1p(N) / scale``;
* ``log_mean``: ``log1p(S / (N ref))`` (0 where N = 0);
* ``centred_mean``: ``(S / N - mean) / std`` (0 where N = 0);
* ``fraction``: ``S / N`` (0 where N = 0).
"""


@dataclass(frozen=True)
class Channel:
    """One additive statistics channel.

    Attributes:
        name: file and config name, e.g. ``sum_log_theta``.
        source: ``poca`` or ``path`` (where one muon adds).
        adds: key of :data:`MUON_WEIGHTS`: what one muon adds.
        unit: unit of the per-voxel sum.
        normalise: one of :data:`NORMALISE_KINDS`.
        per: the count channel a sum is averaged over (``None`` for counts).
        description: one line for documentation and error messages.
    """

    name: str
    source: str
    adds: str
    unit: str
    normalise: str
    per: str | None
    description: str


CHANNELS: tuple[Channel, ...] = (
    Channel("count", "poca", "one", "muons", "log_count", None, "muons whose PoCA lies in the voxel"),
    Channel("sum_theta2_rad2", "poca", "theta2", "rad^2", "log_mean", "count", "sum of theta^2 over those muons"),
    Channel("sum_theta4_rad4", "poca", "theta4", "rad^4", "log_mean", "count", "sum of theta^4 over those muons"),
    Channel("sum_log_theta", "poca", "log_theta", "ln(rad)", "centred_mean", "count",
            "sum of ln(theta) over those muons"),
    Channel("sum_log_theta_sq", "poca", "log_theta_sq", "ln(rad)^2", "centred_mean", "count",
            "sum of ln(theta)^2 over those muons"),
    Channel("count_above_threshold", "poca", "above_threshold", "muons", "fraction", "count",
            "those muons with theta above the dataset's threshold"),
    Channel("path_count", "path", "one", "tracks", "log_count", None, "tracks whose measured path crosses the voxel"),
    Channel("path_sum_log_theta", "path", "log_theta", "ln(rad)", "centred_mean", "path_count",
            "sum of ln(theta) over those tracks"),
    Channel("path_count_above_threshold", "path", "above_threshold", "tracks", "fraction", "path_count",
            "those tracks with theta above the dataset's threshold"),
)
CHANNEL_NAMES: tuple[str, ...] = tuple(c.name for c in CHANNELS)
LEGACY_CHANNEL_NAMES: tuple[str, ...] = ("count", "sum_theta2_rad2", "sum_theta4_rad4")
"""The channels of ``volumetric-dataset/1`` files (PoCA count, sum theta^2, sum theta^4)."""

_BY_NAME = {c.name: c for c in CHANNELS}


def _log_theta(theta: torch.Tensor) -> torch.Tensor:
    return torch.log(theta.clamp_min(THETA_FLOOR_RAD))


MUON_WEIGHTS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "one": lambda theta, threshold: torch.ones_like(theta),
    "theta2": lambda theta, threshold: theta * theta,
    "theta4": lambda theta, threshold: (theta * theta) ** 2,
    "log_theta": lambda theta, threshold: _log_theta(theta),
    "log_theta_sq": lambda theta, threshold: _log_theta(theta) ** 2,
    "above_threshold": lambda theta, threshold: (theta > threshold).to(theta.dtype),
}
"""What one muon of measured angle ``theta`` (rad) adds, given the angle threshold (rad)."""


def channel(name: str) -> Channel:
    """The table row of ``name``.

    Raises:
        ValueError: naming the unknown channel and the known ones.
    """
    if name not in _BY_NAME:
        raise ValueError(f"unknown statistics channel {name!r}; known channels: {', '.join(CHANNEL_NAMES)}")
    return _BY_NAME[name]


def check_channel_names(names: Sequence[str], where: str = "channels") -> tuple[str, ...]:
    """Validate a list of channel names: known, distinct, each with its count channel present.

    Raises:
        ValueError: one line naming ``where`` and the problem.
    """
    names = tuple(names)
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{where}: expected a non-empty list of channel names, got {list(names)!r}")
    unknown = [n for n in names if n not in _BY_NAME]
    if unknown:
        raise ValueError(f"{where}: unknown statistics channel(s) {unknown}; known channels: {', '.join(CHANNEL_NAMES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: repeated channel names in {list(names)}")
    orphans = [n for n in names if _BY_NAME[n].per is not None and _BY_NAME[n].per not in names]
    if orphans:
        raise ValueError(f"{where}: {orphans[0]!r} needs its count channel {_BY_NAME[orphans[0]].per!r}")
    return names


def channels_of_source(source: str, names: Sequence[str] = CHANNEL_NAMES) -> tuple[Channel, ...]:
    """Rows of ``names`` whose source is ``source`` (``poca`` or ``path``), in table order."""
    return tuple(c for c in CHANNELS if c.source == source and c.name in names)


def muon_weights(rows: Sequence[Channel], theta_rad: torch.Tensor, threshold_rad: float) -> torch.Tensor:
    """``(N, len(rows))`` what each of N muons adds to each channel (float64)."""
    theta = theta_rad.to(torch.float64)
    return torch.stack([MUON_WEIGHTS[r.adds](theta, float(threshold_rad)) for r in rows], dim=1)


def per_muon_name(name: str) -> str:
    """Name of a channel's per-muon value: counts keep their name, ``sum_X`` -> ``mean_X``,
    ``count_X`` -> ``fraction_X`` (``path_`` kept), e.g. ``path_sum_log_theta`` -> ``path_mean_log_theta``."""
    row = channel(name)
    if row.per is None:
        return name
    prefix, base = ("path_", name[5:]) if name.startswith("path_") else ("", name)
    for old, new in (("sum_", "mean_"), ("count_", "fraction_")):
        if base.startswith(old):
            return prefix + new + base[len(old):]
    return prefix + "mean_" + base


def channel_indices(names: Sequence[str], layout: Sequence[str], where: str) -> list[int]:
    """Positions of ``names`` in ``layout`` (a volume's channel order).

    Raises:
        ValueError: naming ``where``, the missing channels and what the layout holds.
    """
    missing = [n for n in names if n not in layout]
    if missing:
        raise ValueError(f"{where}: channel(s) {missing} are not in the data (it holds {', '.join(layout)}); "
                         f"rebuild the dataset with this version or choose other channels")
    return [list(layout).index(n) for n in names]


def legacy_channel_names(channels: Sequence) -> list[str]:
    """Channel names of a record that may hold ``volumetric-dataset/1``-era indices (0, 1, 2)."""
    return [LEGACY_CHANNEL_NAMES[c] if isinstance(c, int) else str(c) for c in channels]


def non_negative(name: str) -> bool:
    """Whether a channel's sums are never negative (all but sums of ln theta)."""
    return channel(name).adds != "log_theta"
