"""Object list from label maps: counts, positions and sizes on hand-built maps."""

import numpy as np
import pytest

from volumetric.data.io import nifti_affine
from volumetric.evaluation.objects import find_objects, objects_as_dicts


def _sphere(shape, centre, radius):
    idx = np.indices(shape).astype(float)
    return sum((i - c) ** 2 for i, c in zip(idx, centre)) <= radius**2


def test_a_void_and_a_bar_are_found_where_they_are():
    labels = np.zeros((30, 30, 20), np.uint8)
    labels[_sphere(labels.shape, (10, 10, 8), 4)] = 3
    labels[2:28, 20, 15] = 1  # a bar along x, one voxel thick
    labels[25, 3, 3] = 4  # a single noise voxel: dropped with min_voxels=2
    affine = nifti_affine((5.0, 5.0, 5.0), origin_mm=(100.0, 0.0, 0.0))
    objects = find_objects(labels, affine)
    assert [o.kind for o in objects] == ["rebar", "void"]
    bar, void = objects
    assert bar.voxels == 26 and bar.extent_mm == (130.0, 5.0, 5.0)
    assert bar.centroid_mm == pytest.approx((100 + 5 * 14.5 + 2.5, 5 * 20 + 2.5, 5 * 15 + 2.5))
    assert void.centroid_mm == pytest.approx((100 + 52.5, 52.5, 42.5))
    # volume of the voxelised sphere of radius 4 voxels (20 mm): diameter close to 40 mm
    assert void.equivalent_diameter_mm == pytest.approx(40.0, rel=0.05)
    assert void.depth_mm == pytest.approx(100.0 - 42.5)  # top face at z = 20 voxels * 5 mm
    assert objects_as_dicts(objects)[1]["kind"] == "void"


def test_separate_components_are_separate_objects_and_diagonals_join():
    labels = np.zeros((10, 10, 4), np.int64)
    labels[1, 1, 1] = labels[2, 2, 2] = 2  # diagonal neighbours: one 26-connected duct
    labels[6:9, 6:9, 1] = 2
    found = find_objects(labels, np.eye(4), min_voxels=1)
    assert sorted(o.voxels for o in found) == [2, 9]


@pytest.mark.parametrize(
    ("labels", "affine", "match"),
    [
        (np.zeros((4, 4), np.uint8), np.eye(4), "label map"),
        (np.zeros((4, 4, 4), np.float32), np.eye(4), "integer"),
        (np.full((4, 4, 4), 7, np.uint8), np.eye(4), "unknown class ids"),
        (np.zeros((4, 4, 4), np.uint8), np.full((4, 4), np.nan), "affine"),
    ],
)
def test_bad_input(labels, affine, match):
    with pytest.raises(ValueError, match=match):
        find_objects(labels, affine)
