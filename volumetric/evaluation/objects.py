"""Object list from a label map: connected components per class, with positions and sizes in mm.

What an inspector reads off a segmentation: each rebar, duct, void or unknown object found, where
it is and how big. Components are 26-connected regions of one class (``scipy.ndimage.label``);
positions come from the NIfTI affine (voxel index -> mm, voxel centres), so they are in the
block frame of the input volume. Depth is measured down from the block's top face
(``top_mm``, default the top of the volume), as in the reference talk.

Optionally each object gets the segmenter's **confidence** (mean probability of its class over
its voxels) and, when the truth is known, the **true object** it overlaps most (same class, most
shared voxels; the objects of a :class:`~volumetric.physics.geometry.Block` as given by
:func:`volumetric.evaluation.metrics.object_masks`) or ``false_positive``.
:func:`detection_summary` counts per class how many true objects were found and how many found
objects match none.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from nibabel.affines import voxel_sizes
from scipy import ndimage

from volumetric.schema import CLASS_NAMES as DATASET_CLASS_NAMES

__all__ = ["FoundObject", "TrueObject", "detection_summary", "find_objects", "objects_as_dicts"]

CLASS_NAMES = dict(enumerate(DATASET_CLASS_NAMES))
del CLASS_NAMES[0]  # foreground classes only: 1 rebar ... 4 unknown


_STRUCTURE = np.ones((3, 3, 3), bool)  # 26-connectivity


@dataclass(frozen=True)
class TrueObject:
    """The object of the block a found object overlaps most (same class).

    Attributes:
        kind: ``rebar_grid``, ``duct``, ``void`` or ``unknown`` (which list of the block).
        index: position in that list of the block (``geometry.json``).
        size_mm: bar diameter (grids), outer diameter (ducts, voids, spheres, cylinders) or
            longest edge (boxes), mm.
        depth_mm: depth of its centre below the top face, mm.
        centroid_mm: centre of its true voxels ``(x, y, z)``, mm (same frame as the affine).
        overlap_voxels: voxels of the found object inside it.
    """

    kind: str
    index: int
    size_mm: float
    depth_mm: float
    centroid_mm: tuple[float, float, float]
    overlap_voxels: int


@dataclass(frozen=True)
class FoundObject:
    """One connected component of a class in a label map.

    Attributes:
        label: class id (1 rebar, 2 duct, 3 void, 4 unknown).
        kind: class name.
        voxels: number of voxels.
        volume_mm3: ``voxels`` times the voxel volume, mm^3.
        centroid_mm: centre of mass ``(x, y, z)`` in mm (block frame of the affine).
        extent_mm: bounding-box edge lengths ``(x, y, z)`` in mm (whole voxels).
        equivalent_diameter_mm: diameter of the sphere of the same volume, mm.
        depth_mm: depth of the centroid below the top face, mm.
        confidence: mean predicted probability of its class over its voxels (``None`` without
            probabilities).
        true_object: the true object it overlaps most (``None`` when it overlaps none, or
            without truth).
        false_positive: it overlaps no true object of its class (``None`` without truth).
    """

    label: int
    kind: str
    voxels: int
    volume_mm3: float
    centroid_mm: tuple[float, float, float]
    extent_mm: tuple[float, float, float]
    equivalent_diameter_mm: float
    depth_mm: float
    confidence: float | None = None
    true_object: TrueObject | None = None
    false_positive: bool | None = None


def _spacing(affine: np.ndarray) -> np.ndarray:
    return voxel_sizes(np.asarray(affine, dtype=np.float64))


def _check(label_map: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(label_map)
    if labels.ndim != 3:
        raise ValueError(f"expected an (X, Y, Z) label map, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"the label map must hold integer class ids, got dtype {labels.dtype}")
    bad = sorted(set(np.unique(labels).tolist()) - {0, *CLASS_NAMES})
    if bad:
        raise ValueError(f"unknown class ids {bad} in the label map (expected 0-4)")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise ValueError(f"expected a finite 4x4 affine, got {affine.shape}")
    return labels, affine


def _check_extras(probabilities, truth, shape) -> tuple[np.ndarray | None, list | None]:
    """Probabilities as ``(K, X, Y, Z)`` float array and truth as a list of ``(info, mask)``, checked."""
    if probabilities is not None:
        probabilities = np.asarray(probabilities)
        if probabilities.shape[1:] != shape or probabilities.shape[0] <= max(CLASS_NAMES):
            raise ValueError(f"probabilities must be (K >= {max(CLASS_NAMES) + 1}, *{shape}), "
                             f"got shape {probabilities.shape}")
    if truth is not None:
        truth = [(info, np.asarray(mask, bool)) for info, mask in truth]
        bad = [info.kind for info, mask in truth if mask.shape != shape]
        if bad:
            raise ValueError(f"true object masks must have the label map's shape {shape} ({bad[0]} does not)")
    return probabilities, truth


def _keep_size(min_voxels: int, min_diameter_mm: float, spacing: np.ndarray) -> int:
    """Fewest voxels kept: ``min_voxels`` and an equivalent diameter of at least ``min_diameter_mm``."""
    if not (np.isfinite(min_diameter_mm) and min_diameter_mm >= 0):
        raise ValueError(f"min_diameter_mm must be a non-negative number of mm, got {min_diameter_mm!r}")
    volume = np.pi * min_diameter_mm**3 / 6.0
    return max(int(min_voxels), int(np.ceil(volume / float(np.prod(spacing)) - 1e-9)))


def find_objects(label_map: np.ndarray, affine: np.ndarray, min_voxels: int = 2, top_mm: float | None = None,
                 min_diameter_mm: float = 0.0, probabilities: np.ndarray | None = None,
                 truth: Iterable | None = None) -> list[FoundObject]:
    """Connected components of every foreground class, largest first within a class.

    Args:
        label_map: ``(X, Y, Z)`` integer class ids (0 concrete ... 4 unknown), z up.
        affine: 4x4 voxel-index -> mm affine (voxel centres), e.g. from the NIfTI file.
        min_voxels: smaller components are dropped (isolated noise voxels).
        top_mm: z of the block's top face in mm (default: top of the volume).
        min_diameter_mm: components whose equivalent diameter (sphere of the same volume) is
            below this are dropped too, mm (0: no physical threshold).
        probabilities: optional ``(K, X, Y, Z)`` class probabilities of the segmenter; gives
            each object its ``confidence``.
        truth: optional ``(ObjectInfo, mask)`` pairs of the true objects on the same grid, as
            yielded by :func:`volumetric.evaluation.metrics.object_masks`; gives each object
            its ``true_object`` (most shared voxels, same class) or ``false_positive``.

    Returns:
        The objects, ordered by class id then decreasing size.
    """
    labels, affine = _check(label_map, affine)
    probabilities, truth = _check_extras(probabilities, truth, labels.shape)
    spacing = _spacing(affine)
    if top_mm is None:
        top_mm = float((affine @ np.array([0, 0, labels.shape[2] - 1, 1.0]))[2] + 0.5 * spacing[2])
    keep = _keep_size(min_voxels, min_diameter_mm, spacing)
    found = []
    for label, kind in CLASS_NAMES.items():
        components, count = ndimage.label(labels == label, structure=_STRUCTURE)
        sizes = ndimage.sum_labels(np.ones_like(components), components, np.arange(1, count + 1))
        index = np.flatnonzero(sizes >= keep) + 1
        if index.size == 0:
            continue
        centres = ndimage.center_of_mass(np.ones_like(components), components, index)
        boxes = ndimage.find_objects(components)
        confidence = _confidence(probabilities, label, components, index)
        matches = _matches(truth, label, components, index, affine)
        for i, centre, conf, match in zip(index, centres, confidence, matches):
            found.append(_describe(label, kind, int(sizes[i - 1]), centre, boxes[i - 1], affine, spacing, top_mm,
                                   conf, match, None if truth is None else match is None))
    found.sort(key=lambda o: (o.label, -o.voxels))
    return found


def _confidence(probabilities, label: int, components: np.ndarray, index: np.ndarray) -> list[float | None]:
    if probabilities is None:
        return [None] * index.size
    return [round(float(v), 4) for v in ndimage.mean(probabilities[label], components, index)]


def _matches(truth, label: int, components: np.ndarray, index: np.ndarray, affine) -> list[TrueObject | None]:
    """Per component of ``index``: the true object of class ``label`` sharing most voxels, or ``None``."""
    if truth is None:
        return [None] * index.size
    best, best_overlap = np.full(index.size, -1), np.zeros(index.size, np.int64)
    for t, (info, mask) in enumerate(truth):
        if info.label == label:
            overlap = np.bincount(components[mask], minlength=int(components.max()) + 1)[index]
            better = overlap > best_overlap
            best[better], best_overlap[better] = t, overlap[better]
    centres = {t: _centroid_mm(truth[t][1], affine) for t in set(best.tolist()) - {-1}}
    return [None if t < 0 else _true_object(truth[t][0], centres[t], int(n)) for t, n in zip(best, best_overlap)]


def _centroid_mm(mask: np.ndarray, affine: np.ndarray) -> tuple[float, ...]:
    centre = (affine @ np.array([*np.argwhere(mask).mean(axis=0), 1.0]))[:3]
    return tuple(round(float(v), 2) for v in centre)


def _true_object(info, centroid_mm: tuple[float, ...], overlap: int) -> TrueObject:
    return TrueObject(info.kind, int(info.index), round(float(info.size_mm), 2), round(float(info.depth_mm), 2),
                      centroid_mm, overlap)


def _describe(label, kind, voxels, centre, box, affine, spacing, top_mm, confidence, match, false_positive):
    centroid = (affine @ np.array([*centre, 1.0]))[:3]
    extent = np.array([s.stop - s.start for s in box]) * spacing
    volume = voxels * float(np.prod(spacing))
    diameter = (6.0 * volume / np.pi) ** (1.0 / 3.0)
    return FoundObject(label, kind, voxels, round(volume, 3), tuple(round(float(v), 2) for v in centroid),
                       tuple(round(float(v), 2) for v in extent), round(float(diameter), 2),
                       round(float(top_mm - centroid[2]), 2), confidence, match, false_positive)


def detection_summary(matches: Sequence, objects: Sequence[FoundObject]) -> dict[str, dict[str, int]]:
    """Per foreground class: true objects, those found, objects predicted, and predicted ones matching none.

    Args:
        matches: :class:`~volumetric.evaluation.metrics.ObjectMatch` of every true object
            (:func:`~volumetric.evaluation.metrics.match_objects`: found = enough of its voxels
            predicted as its class).
        objects: the found objects, from :func:`find_objects` with ``truth``.

    Returns:
        ``{class name: {"true": M, "found": N, "predicted": P, "false_positives": F}}``.
    """
    return {kind: {"true": sum(m.label == label for m in matches),
                   "found": sum(m.label == label and bool(m.found) for m in matches),
                   "predicted": sum(o.label == label for o in objects),
                   "false_positives": sum(o.label == label and bool(o.false_positive) for o in objects)}
            for label, kind in CLASS_NAMES.items()}


def objects_as_dicts(objects: list[FoundObject]) -> list[dict]:
    """JSON-ready list."""
    return [asdict(o) for o in objects]
