"""Whole-volume evaluation metrics: overlap, image quality, equivalent days, objects, z-smearing.

All volumes are ``(X, Y, Z)`` arrays in the block frame (z up, index ``k = 0`` at the bottom
face), as written by :func:`volumetric.physics.geometry.rasterise` and :mod:`volumetric.data.io`.

* **Overlap** (:func:`dice_iou_per_class`): Dice and IoU per class from integer label maps
  (``0 concrete, 1 rebar, 2 duct, 3 void, 4 unknown``), NaN for a class absent from both maps
  (the nnU-Net convention), class means with :func:`nanmean_classes`.
* **Image quality** (:func:`ssim_3d`, :func:`psnr`, :func:`mae`): 3D SSIM with a Gaussian window,
  PSNR in dB and mean absolute error, for a reconstructed volume against its target.
* **Equivalent days** (:func:`equivalent_days`): the raw exposure whose metric curve reaches a
  given value (how many days of muons the upsampler saves).
* **Objects** (:func:`object_masks`, :func:`match_objects`, :func:`detection_rate`): per
  object of a :class:`~volumetric.physics.geometry.Block` its true voxels, the fraction of them
  predicted as its class and whether it was found.
* **z-smearing** (:func:`z_smearing`): the extra spread of a reconstructed object along z,
  as an equivalent Gaussian blur in mm (see the function for the definition).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from monai.metrics import PSNRMetric, SSIMMetric, compute_dice

from volumetric.physics.geometry import (
    LABEL_DUCT,
    LABEL_REBAR,
    LABEL_UNKNOWN,
    LABEL_VOID,
    Block,
    RebarGrid,
    Unknown,
    rasterise,
)

__all__ = [
    "dice_iou_per_class",
    "nanmean_classes",
    "ssim_3d",
    "psnr",
    "mae",
    "EquivalentDays",
    "equivalent_days",
    "ObjectInfo",
    "ObjectMatch",
    "object_masks",
    "match_objects",
    "match_mask",
    "detection_rate",
    "ZSmear",
    "z_smearing",
]

from volumetric.schema import NUM_CLASSES  # noqa: E402  (one class table)


# --------------------------------------------------------------------------- overlap


def _label_tensor(label: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """``(X, Y, Z)`` integer label map (float labels from ``LoadImaged`` accepted) -> long tensor."""
    t = torch.as_tensor(np.asarray(label) if not isinstance(label, torch.Tensor) else label)
    if t.ndim != 3:
        raise ValueError(f"{name} must be an (X, Y, Z) label map, got shape {tuple(t.shape)}")
    if t.is_floating_point():
        if not torch.all(t == torch.round(t)):
            raise ValueError(f"{name} must hold integer class labels, got non-integer values")
    return t.long()


def dice_iou_per_class(
    pred_label: np.ndarray | torch.Tensor, true_label: np.ndarray | torch.Tensor, num_classes: int = NUM_CLASSES
) -> dict[str, np.ndarray]:
    """Dice and IoU per class of two integer label maps.

    Dice comes from MONAI's :func:`~monai.metrics.compute_dice` on the label maps; IoU is
    ``Dice / (2 - Dice)`` (the identity between the two for a binary mask). A class absent from
    both maps gets NaN in both (nnU-Net convention); a class in only one of them gets 0.

    Args:
        pred_label: predicted labels ``(X, Y, Z)``, integers in ``[0, num_classes)``.
        true_label: true labels ``(X, Y, Z)``, same shape.
        num_classes: ``K``, background (concrete) included.

    Returns:
        ``{"dice": (K,), "iou": (K,)}`` float64 arrays.

    Raises:
        ValueError: for mismatched shapes, a wrong rank, non-integer or out-of-range labels.
    """
    pred = _label_tensor(pred_label, "pred_label")
    true = _label_tensor(true_label, "true_label")
    if pred.shape != true.shape:
        raise ValueError(f"pred_label shape {tuple(pred.shape)} differs from true_label shape {tuple(true.shape)}")
    for name, t in (("pred_label", pred), ("true_label", true)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise ValueError(f"{name} values must be in [0, {num_classes}), got {int(t.min())}..{int(t.max())}")
    dice = compute_dice(pred[None, None], true[None, None], ignore_empty=False, num_classes=num_classes)
    dice = dice[0].double().numpy()
    present = np.bincount(pred.flatten().numpy(), minlength=num_classes) + np.bincount(
        true.flatten().numpy(), minlength=num_classes
    )
    dice = np.where(present > 0, dice, np.nan)
    return {"dice": dice, "iou": dice / (2.0 - dice)}


def nanmean_classes(values: np.ndarray, include_background: bool = False) -> float:
    """Mean over classes ignoring NaN (absent) classes; NaN if every class is absent.

    Args:
        values: per-class values ``(K,)``, e.g. ``dice_iou_per_class(...)["dice"]``.
        include_background: include class 0 (concrete) in the mean.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values if include_background else values[1:]
    if values.size == 0 or np.all(np.isnan(values)):
        return float("nan")
    return float(np.nanmean(values))


# --------------------------------------------------------------------------- image quality


def _pair(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """Two ``(X, Y, Z)`` volumes as float32 ``(1, 1, X, Y, Z)`` tensors, checked."""
    a = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()
    b = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).float()
    if a.ndim != 3 or b.ndim != 3:
        raise ValueError(f"expected two (X, Y, Z) volumes, got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape != b.shape:
        raise ValueError(f"volume shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("volumes must be finite (found NaN or Inf)")
    return a[None, None], b[None, None]


def _data_range(data_range: float) -> float:
    if not (isinstance(data_range, (int, float)) and math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a positive number, got {data_range!r}")
    return float(data_range)


def ssim_3d(x, y, data_range: float, win_size: int = 7, sigma: float = 1.5) -> float:
    """3D structural similarity with a Gaussian window (MONAI :class:`~monai.metrics.SSIMMetric`).

    Args:
        x: reconstructed volume ``(X, Y, Z)``.
        y: target volume ``(X, Y, Z)``.
        data_range: value range of the data (e.g. target max - min), in the volume's units.
        win_size: window edge in voxels; must not exceed the smallest dimension (7 suits
            blocks as thin as 7 voxels).
        sigma: Gaussian window standard deviation in voxels.

    Returns:
        Mean SSIM over the valid (unpadded) window positions, at most 1.

    Raises:
        ValueError: for different shapes, non-finite values, a bad ``data_range`` or a window
            larger than the smallest dimension.
    """
    a, b = _pair(x, y)
    smallest = min(a.shape[2:])
    if not isinstance(win_size, int) or win_size < 1 or win_size > smallest:
        raise ValueError(
            f"win_size {win_size!r} must be an integer in [1, {smallest}] (the smallest dimension of "
            f"volumes of shape {tuple(a.shape[2:])})"
        )
    metric = SSIMMetric(spatial_dims=3, data_range=_data_range(data_range), win_size=win_size, kernel_sigma=sigma)
    return float(metric(a, b).mean())


def psnr(x, y, data_range: float) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` in dB (inf for identical volumes).

    Args:
        x: reconstructed volume ``(X, Y, Z)``.
        y: target volume ``(X, Y, Z)``.
        data_range: peak value range, in the volume's units.
    """
    a, b = _pair(x, y)
    return float(PSNRMetric(max_val=_data_range(data_range))(a, b).mean())


def mae(x, y) -> float:
    """Mean absolute error between two ``(X, Y, Z)`` volumes, in the volume's units."""
    a, b = _pair(x, y)
    return float((a.double() - b.double()).abs().mean())


# --------------------------------------------------------------------------- equivalent days


class EquivalentDays(NamedTuple):
    """Result of :func:`equivalent_days`.

    Attributes:
        days: the equivalent raw exposure in days; the curve's first (last) exposure when the
            value is below (above) the curve's range.
        status: ``"inside"`` (interpolated), ``"below"`` (worse than the shortest raw
            exposure: ``days`` is an upper bound) or ``"above"`` (better than the longest raw
            exposure: ``days`` is a lower bound).
    """

    days: float
    status: str


def equivalent_days(curve_days: Sequence[float], curve_values: Sequence[float], value: float) -> EquivalentDays:
    """Raw exposure whose metric equals ``value``, interpolated linearly in ``log(days)``.

    The curve is a quality metric of the *raw* reconstruction against exposure (higher is
    better, e.g. SSIM or PSNR). It is sorted by days and made monotone with its running
    maximum (a longer exposure is never credited with less than a shorter one; a dip from
    noise is ignored). The answer is the first point where the monotone curve reaches
    ``value``, interpolated in log-days between the bracketing exposures. Values outside the
    curve's range give the nearest exposure and a ``"below"``/``"above"`` status instead of an
    extrapolation. Example: SSIM 0.6, 0.8 at 1 and 100 days, value 0.7 -> 10 days.

    Args:
        curve_days: raw exposures in days, positive, distinct, at least two.
        curve_values: metric of the raw volume at each exposure, finite.
        value: metric of the processed (e.g. upsampled) volume.

    Returns:
        :class:`EquivalentDays` ``(days, status)``.

    Raises:
        ValueError: for mismatched lengths, fewer than two points, non-positive or repeated
            days, or non-finite values.
    """
    days = np.asarray(curve_days, dtype=np.float64).ravel()
    values = np.asarray(curve_values, dtype=np.float64).ravel()
    if days.size != values.size or days.size < 2:
        raise ValueError(f"need two or more (days, value) points of equal count, got {days.size} and {values.size}")
    if not (np.all(np.isfinite(days)) and np.all(days > 0)):
        raise ValueError(f"curve_days must be positive and finite, got {days.tolist()}")
    if not (np.all(np.isfinite(values)) and math.isfinite(value)):
        raise ValueError("curve_values and value must be finite")
    order = np.argsort(days)
    days, values = days[order], np.maximum.accumulate(values[order])
    if np.any(np.diff(days) == 0):
        raise ValueError(f"curve_days must be distinct, got {sorted(days.tolist())}")
    if value < values[0]:
        return EquivalentDays(float(days[0]), "below")
    if value > values[-1]:
        return EquivalentDays(float(days[-1]), "above")
    i = int(np.argmax(values >= value))
    if i == 0 or values[i] == value:
        return EquivalentDays(float(days[i]), "inside")
    t = (value - values[i - 1]) / (values[i] - values[i - 1])
    log_days = math.log(days[i - 1]) + t * (math.log(days[i]) - math.log(days[i - 1]))
    return EquivalentDays(float(math.exp(log_days)), "inside")


# --------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class ObjectInfo:
    """One object of a block, as reported by the object metrics.

    Attributes:
        kind: ``"rebar_grid"``, ``"duct"``, ``"void"`` or ``"unknown"``.
        index: position in the block's list of that kind.
        label: its class (1 rebar, 2 duct, 3 void, 4 unknown).
        size_mm: bar diameter (grids), outer diameter (ducts, voids, spheres, cylinders) or
            longest edge (boxes).
        depth_mm: depth of the object's centre below the top face.
    """

    kind: str
    index: int
    label: int
    size_mm: float
    depth_mm: float


@dataclass(frozen=True)
class ObjectMatch(ObjectInfo):
    """:class:`ObjectInfo` plus how a prediction covered the object.

    Attributes:
        true_voxels: voxels of the object in the truth (see :func:`object_masks`).
        fraction: fraction of those voxels predicted as the object's class; NaN if
            ``true_voxels`` is 0 (an object smaller than the grid resolves).
        found: ``fraction >= threshold`` (False when ``true_voxels`` is 0).
        z_smear_mm: :func:`z_smearing` of the predicted class mask around the object (NaN
            when undefined).
    """

    true_voxels: int = 0
    fraction: float = float("nan")
    found: bool = False
    z_smear_mm: float = float("nan")

    def to_dict(self) -> dict:
        """JSON-ready dictionary of every field."""
        return dataclasses.asdict(self)


_KINDS = (("rebar_grids", "rebar_grid", LABEL_REBAR), ("ducts", "duct", LABEL_DUCT),
          ("voids", "void", LABEL_VOID), ("unknowns", "unknown", LABEL_UNKNOWN))


def _info(obj, kind: str, index: int, label: int, thickness: float) -> ObjectInfo:
    if isinstance(obj, RebarGrid):
        size, z = obj.bar_diameter_mm, obj.z_mm
    elif isinstance(obj, Unknown):
        size = max(obj.size_mm) if obj.shape == "box" else obj.diameter_mm
        z = obj.centre_mm[2]
    else:
        size = obj.diameter_mm
        z = obj.z_mm if kind == "duct" else obj.centre_mm[2]
    return ObjectInfo(kind, index, label, float(size), float(thickness - z))


def object_masks(
    block: Block, voxel_mm: float, true_label: np.ndarray | None = None, supersample: int = 3
) -> Iterator[tuple[ObjectInfo, np.ndarray]]:
    """Yield every object of ``block`` with its true voxel mask.

    A mask is the object's class in :func:`~volumetric.physics.geometry.rasterise` of a block holding
    only that object (same size and matrix). If ``true_label`` (the full block's label map) is
    given, voxels where a higher-priority object painted over this one are removed (mask AND
    ``true_label == label``). Each object costs one rasterisation of the whole grid.

    Args:
        block: the geometry.
        voxel_mm: voxel edge in mm of the label maps.
        true_label: optional full truth ``(X, Y, Z)`` on the same grid.
        supersample: sub-points per voxel edge, as for the truth (default of ``rasterise``).

    Yields:
        ``(ObjectInfo, mask)`` with ``mask`` a boolean ``(X, Y, Z)`` array; order: rebar grids,
        ducts, voids, unknowns.
    """
    for field, kind, label in _KINDS:
        for index, obj in enumerate(getattr(block, field)):
            alone = Block(size_mm=block.size_mm, matrix=block.matrix, **{field: (obj,)})
            mask = rasterise(alone, voxel_mm, supersample=supersample).label == label
            if true_label is not None:
                if np.shape(true_label) != mask.shape:
                    raise ValueError(f"true_label shape {np.shape(true_label)} differs from the grid {mask.shape}")
                mask &= np.asarray(true_label) == label
            yield _info(obj, kind, index, label, block.size_mm[2]), mask


def match_objects(
    block: Block,
    pred_label: np.ndarray,
    voxel_mm: float,
    threshold: float = 0.5,
    true_label: np.ndarray | None = None,
    supersample: int = 3,
) -> list[ObjectMatch]:
    """Which objects of a block a predicted label map found.

    An object is *found* when at least ``threshold`` of its true voxels (see
    :func:`object_masks`) are predicted as its class (a recall test per object; false
    positives elsewhere are Dice's business).

    Args:
        block: the geometry the prediction should reproduce.
        pred_label: predicted labels ``(X, Y, Z)`` on the grid ``rasterise(block, voxel_mm)``.
        voxel_mm: voxel edge in mm.
        threshold: minimum fraction of true voxels predicted as the class, in ``(0, 1]``.
        true_label: optional full truth on the same grid (removes painted-over voxels).
        supersample: as for :func:`object_masks`.

    Returns:
        One :class:`ObjectMatch` per object, in :func:`object_masks` order.

    Raises:
        ValueError: for a bad threshold or a prediction not on the block's grid.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    pred = np.asarray(pred_label)
    out = []
    for info, mask in object_masks(block, voxel_mm, true_label, supersample):
        if pred.shape != mask.shape:
            raise ValueError(
                f"pred_label shape {pred.shape} differs from the block's grid {mask.shape} at {voxel_mm} mm"
            )
        out.append(match_mask(info, mask, pred, voxel_mm, threshold))
    return out


def match_mask(info: ObjectInfo, mask: np.ndarray, pred_label: np.ndarray, voxel_mm: float,
               threshold: float = 0.5) -> ObjectMatch:
    """How ``pred_label`` covers one object given its true voxel ``mask`` (see :func:`match_objects`)."""
    hit = pred_label == info.label
    n = int(mask.sum())
    fraction = float((hit & mask).sum() / n) if n else float("nan")
    smear = z_smearing(hit, mask, voxel_mm).smear_mm if n else float("nan")
    return ObjectMatch(**dataclasses.asdict(info), true_voxels=n, fraction=fraction,
                       found=bool(n and fraction >= threshold), z_smear_mm=smear)


def detection_rate(
    matches: Sequence[ObjectMatch], bins_mm: Sequence[float], kind: str = "void", by: str = "size"
) -> list[dict]:
    """Fraction of objects found per bin of size or depth.

    Args:
        matches: output of :func:`match_objects` (possibly pooled over blocks).
        bins_mm: increasing bin edges in mm; bin ``i`` is ``[edges[i], edges[i+1])``.
        kind: object kind to count (``"void"``, ``"duct"``, ``"rebar_grid"``, ``"unknown"``).
        by: ``"size"`` (``size_mm``) or ``"depth"`` (``depth_mm``).

    Returns:
        One dict per bin: ``lo_mm``, ``hi_mm``, ``count``, ``found``, ``rate`` (NaN when empty).
    """
    if by not in ("size", "depth"):
        raise ValueError(f"by must be 'size' or 'depth', got {by!r}")
    edges = np.asarray(bins_mm, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bins_mm must be two or more increasing edges, got {list(bins_mm)}")
    chosen = [m for m in matches if m.kind == kind]
    x = np.array([m.size_mm if by == "size" else m.depth_mm for m in chosen])
    found = np.array([m.found for m in chosen], dtype=bool)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (x >= lo) & (x < hi) if x.size else np.zeros(0, bool)
        count, hits = int(inside.sum()), int(found[inside].sum()) if x.size else 0
        rows.append({"lo_mm": float(lo), "hi_mm": float(hi), "count": count, "found": hits,
                     "rate": hits / count if count else float("nan")})
    return rows


# --------------------------------------------------------------------------- z-smearing


class ZSmear(NamedTuple):
    """Result of :func:`z_smearing` (all in mm except ``ratio``).

    Attributes:
        sigma_true_mm: standard deviation along z of the true object's voxels.
        sigma_pred_mm: standard deviation along z of the weights in the analysis window.
        smear_mm: ``sqrt(max(0, sigma_pred^2 - sigma_true^2))``: the Gaussian blur along z
            that, applied to the true object, gives the measured spread.
        ratio: ``sigma_pred / sigma_true``.
    """

    sigma_true_mm: float
    sigma_pred_mm: float
    smear_mm: float
    ratio: float


def _z_sigma(weights: np.ndarray, z_mm: np.ndarray) -> float:
    """Standard deviation of ``z`` under ``weights`` summed over x, y."""
    profile = weights.sum(axis=(0, 1), dtype=np.float64)
    total = profile.sum()
    if total <= 0:
        return float("nan")
    mean = (profile * z_mm).sum() / total
    return float(math.sqrt(max(0.0, (profile * (z_mm - mean) ** 2).sum() / total)))


def z_smearing(
    volume: np.ndarray,
    true_mask: np.ndarray,
    voxel_mm: float,
    background: float = 0.0,
    polarity: int = 1,
    margin_mm: float | None = None,
) -> ZSmear:
    """How far a reconstruction spreads an object along z beyond its true extent.

    The weights are ``max(0, polarity * (volume - background))``: a probability or a 0/1
    class mask as is (background 0); a raw or upsampled scattering volume with
    ``background`` set to the concrete level (e.g. the median over concrete voxels) and
    ``polarity=-1`` for objects that scatter less than concrete (voids) or ``+1`` for those
    that scatter more (steel). Only the weights inside the *analysis window* count: the
    object's XY footprint (columns holding a true voxel) and its true z range widened by
    ``margin_mm`` above and below. The spread is the standard deviation along z of the
    weight profile; since variances add under convolution, a z-blur of a Gaussian of
    standard deviation ``s`` gives ``smear_mm = s`` (while the window holds the blurred
    tails). A perfect reconstruction gives 0.

    Args:
        volume: reconstruction ``(X, Y, Z)`` (probability, mask or scattering density).
        true_mask: the object's true voxels ``(X, Y, Z)`` (boolean).
        voxel_mm: voxel edge in mm (along z).
        background: level subtracted from ``volume`` before clipping at 0.
        polarity: ``+1`` or ``-1``, sign of the object's contrast.
        margin_mm: window widening; default the object's true z extent (at least 3 voxels).

    Returns:
        :class:`ZSmear`; NaN fields when the mask or the window's weights are empty.
    """
    vol = np.asarray(volume, dtype=np.float64)
    mask = np.asarray(true_mask, dtype=bool)
    if vol.shape != mask.shape or vol.ndim != 3:
        raise ValueError(f"volume {vol.shape} and true_mask {mask.shape} must be equal (X, Y, Z) shapes")
    if polarity not in (1, -1):
        raise ValueError(f"polarity must be 1 or -1, got {polarity!r}")
    if not mask.any():
        nan = float("nan")
        return ZSmear(nan, nan, nan, nan)
    ks = np.flatnonzero(mask.any(axis=(0, 1)))
    extent = (ks[-1] - ks[0] + 1) * voxel_mm
    margin = max(extent, 3 * voxel_mm) if margin_mm is None else float(margin_mm)
    m = int(math.ceil(margin / voxel_mm - 1e-9))
    lo, hi = max(0, ks[0] - m), min(mask.shape[2], ks[-1] + m + 1)
    footprint = mask.any(axis=2)
    weights = np.clip(polarity * (vol[:, :, lo:hi] - background), 0.0, None) * footprint[:, :, None]
    z_mm = (np.arange(lo, hi) + 0.5) * voxel_mm
    sigma_true = _z_sigma(mask[:, :, lo:hi].astype(np.float64), z_mm)
    sigma_pred = _z_sigma(weights, z_mm)
    smear = math.sqrt(max(0.0, sigma_pred**2 - sigma_true**2)) if math.isfinite(sigma_pred) else float("nan")
    ratio = sigma_pred / sigma_true if sigma_true > 0 else float("nan")
    return ZSmear(sigma_true, sigma_pred, smear, ratio)
