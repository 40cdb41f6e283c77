"""Object list from a label map: connected components per class, with positions and sizes in mm.

What an inspector reads off a segmentation: each rebar, duct, void or unknown object found, where
it is and how big. Components are 26-connected regions of one class (``scipy.ndimage.label``);
positions come from the NIfTI affine (voxel index -> mm, voxel centres), so they are in the
block frame of the input volume. Depth is measured down from the block's top face
(``top_mm``, default the top of the volume), as in the reference talk.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from nibabel.affines import voxel_sizes
from scipy import ndimage

from volumetric.schema import CLASS_NAMES as DATASET_CLASS_NAMES

__all__ = ["FoundObject", "find_objects", "objects_as_dicts"]

CLASS_NAMES = dict(enumerate(DATASET_CLASS_NAMES))
del CLASS_NAMES[0]  # foreground classes only: 1 rebar ... 4 unknown


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
    """

    label: int
    kind: str
    voxels: int
    volume_mm3: float
    centroid_mm: tuple[float, float, float]
    extent_mm: tuple[float, float, float]
    equivalent_diameter_mm: float
    depth_mm: float


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


def find_objects(label_map: np.ndarray, affine: np.ndarray, min_voxels: int = 2,
                 top_mm: float | None = None) -> list[FoundObject]:
    """Connected components of every foreground class, largest first within a class.

    Args:
        label_map: ``(X, Y, Z)`` integer class ids (0 concrete ... 4 unknown), z up.
        affine: 4x4 voxel-index -> mm affine (voxel centres), e.g. from the NIfTI file.
        min_voxels: smaller components are dropped (isolated noise voxels).
        top_mm: z of the block's top face in mm (default: top of the volume).

    Returns:
        The objects, ordered by class id then decreasing size.
    """
    labels, affine = _check(label_map, affine)
    spacing = _spacing(affine)
    if top_mm is None:
        top_mm = float((affine @ np.array([0, 0, labels.shape[2] - 1, 1.0]))[2] + 0.5 * spacing[2])
    structure = np.ones((3, 3, 3), bool)
    found = []
    for label, kind in CLASS_NAMES.items():
        components, count = ndimage.label(labels == label, structure=structure)
        if count == 0:
            continue
        index = np.arange(1, count + 1)
        sizes = ndimage.sum_labels(np.ones_like(components), components, index)
        centres = ndimage.center_of_mass(np.ones_like(components), components, index)
        boxes = ndimage.find_objects(components)
        for size, centre, box in zip(sizes, centres, boxes):
            if size < min_voxels:
                continue
            found.append(_describe(label, kind, int(size), centre, box, affine, spacing, top_mm))
    found.sort(key=lambda o: (o.label, -o.voxels))
    return found


def _describe(label, kind, voxels, centre, box, affine, spacing, top_mm) -> FoundObject:
    centroid = (affine @ np.array([*centre, 1.0]))[:3]
    extent = np.array([s.stop - s.start for s in box]) * spacing
    volume = voxels * float(np.prod(spacing))
    diameter = (6.0 * volume / np.pi) ** (1.0 / 3.0)
    return FoundObject(label, kind, voxels, round(volume, 3), tuple(round(float(v), 2) for v in centroid),
                       tuple(round(float(v), 2) for v in extent), round(float(diameter), 2),
                       round(float(top_mm - centroid[2]), 2))


def objects_as_dicts(objects: list[FoundObject]) -> list[dict]:
    """JSON-ready list."""
    return [asdict(o) for o in objects]
