"""Object list from label maps: counts, positions and sizes on hand-built maps."""

import numpy as np
import pytest

from volumetric.data.io import nifti_affine
from volumetric.evaluation.metrics import ObjectInfo, match_mask
from volumetric.evaluation.objects import (
    detection_summary,
    find_objects,
    objects_as_dicts,
)


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


def test_objects_below_the_physical_size_are_dropped():
    labels = np.zeros((12, 12, 6), np.uint8)
    labels[1:5, 1, 1] = 3  # 4 voxels of 5 mm: 500 mm^3, a 9.85 mm sphere
    labels[1:6, 8, 3] = 3  # 5 voxels: 625 mm^3, a 10.61 mm sphere
    affine = nifti_affine((5.0, 5.0, 5.0))
    assert sorted(o.voxels for o in find_objects(labels, affine)) == [4, 5]
    kept = find_objects(labels, affine, min_diameter_mm=10.0)
    assert [o.voxels for o in kept] == [5] and kept[0].equivalent_diameter_mm == pytest.approx(10.61, abs=0.01)
    assert find_objects(labels, affine, min_diameter_mm=20.0) == []


def _two_bars_and_a_stray():
    """A 6-voxel rebar component along x and a 3-voxel rebar component elsewhere, 10 mm voxels."""
    labels = np.zeros((10, 10, 4), np.uint8)
    labels[2:8, 2, 1] = 1
    labels[5, 7, 2:5] = 1
    return labels, nifti_affine((10.0, 10.0, 10.0))


def test_confidence_is_the_mean_probability_of_the_class_over_the_object():
    labels, affine = _two_bars_and_a_stray()
    probabilities = np.zeros((5, *labels.shape), np.float32)
    probabilities[0] = 1.0
    probabilities[1][labels == 1] = 0.9
    probabilities[1, 2, 2, 1] = 0.3  # one voxel of the long bar is less sure: mean (5 * 0.9 + 0.3) / 6 = 0.8
    bar, stray = find_objects(labels, affine, probabilities=probabilities)
    assert bar.confidence == pytest.approx(0.8) and stray.confidence == pytest.approx(0.9)
    assert find_objects(labels, affine)[0].confidence is None


def test_each_object_is_matched_to_the_true_object_it_overlaps_most_or_is_a_false_positive():
    labels, affine = _two_bars_and_a_stray()
    grid_a, grid_b, duct = (np.zeros(labels.shape, bool) for _ in range(3))
    grid_a[2:4, 2, 1] = True  # 2 voxels of the long bar
    grid_b[4:9, 2, 1] = True  # 4 voxels of it: the better match
    duct[5, 7, 2:5] = True  # under the stray rebar voxels, but another class
    truth = [(ObjectInfo("rebar_grid", 0, 1, 20.0, 25.0), grid_a), (ObjectInfo("rebar_grid", 1, 1, 20.0, 25.0), grid_b),
             (ObjectInfo("duct", 0, 2, 30.0, 10.0), duct)]
    bar, stray = find_objects(labels, affine, min_voxels=1, truth=truth)
    assert bar.false_positive is False and stray.false_positive is True and stray.true_object is None
    assert bar.true_object.kind == "rebar_grid" and bar.true_object.index == 1 and bar.true_object.overlap_voxels == 4
    assert bar.true_object.centroid_mm == pytest.approx((65.0, 25.0, 15.0))  # centre of grid_b's voxels
    assert objects_as_dicts([bar])[0]["true_object"]["index"] == 1
    assert find_objects(labels, affine)[0].false_positive is None  # truth unknown
    matches = [match_mask(info, mask, labels, 10.0) for info, mask in truth]
    assert detection_summary(matches, [bar, stray]) == {
        "rebar": {"true": 2, "found": 2, "predicted": 2, "false_positives": 1},
        "duct": {"true": 1, "found": 0, "predicted": 0, "false_positives": 0},
        "void": {"true": 0, "found": 0, "predicted": 0, "false_positives": 0},
        "unknown": {"true": 0, "found": 0, "predicted": 0, "false_positives": 0}}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"probabilities": np.zeros((5, 4, 4, 3))}, "probabilities must be"),
     ({"probabilities": np.zeros((2, 4, 4, 4))}, "probabilities must be"),
     ({"truth": [(ObjectInfo("void", 0, 3, 10.0, 5.0), np.zeros((4, 4, 3), bool))]}, "true object masks"),
     ({"min_diameter_mm": -1.0}, "min_diameter_mm")],
)
def test_bad_extras(kwargs, match):
    with pytest.raises(ValueError, match=match):
        find_objects(np.zeros((4, 4, 4), np.uint8), np.eye(4), **kwargs)


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
