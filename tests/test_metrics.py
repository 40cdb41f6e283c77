import math

import numpy as np
import pytest

from volumetric.physics.geometry import Block, Duct, Void, rasterise
from volumetric.evaluation.metrics import (
    detection_rate,
    dice_iou_per_class,
    equivalent_days,
    mae,
    match_objects,
    nanmean_classes,
    object_masks,
    psnr,
    ssim_3d,
    z_smearing,
)


def gaussian_filter1d(a, sigma, axis, mode="constant"):
    """Zero-padded Gaussian blur along one axis (numpy only; scipy is not a dependency)."""
    assert mode == "constant"
    r = int(4 * sigma + 0.5)
    x = np.arange(-r, r + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    return np.apply_along_axis(lambda v: np.convolve(v, k, mode="same"), axis, a)


def _label_maps():
    true = np.zeros((4, 4, 2), np.uint8)
    pred = np.zeros((4, 4, 2), np.uint8)
    true[0, 0, 0] = true[1, 0, 0] = 1  # rebar: 2 true voxels, 1 of them predicted
    pred[0, 0, 0] = 1
    pred[2, 2, 0] = 3  # void predicted, absent from the truth
    return pred, true  # duct (2) and unknown (4) absent from both


def test_dice_iou_hand_computed_with_absent_classes():
    pred, true = _label_maps()
    out = dice_iou_per_class(pred, true)
    # concrete: 32 voxels; true 30, pred 30, shared 29 -> Dice 58/60, IoU 29/31
    np.testing.assert_allclose(out["dice"][[0, 1, 3]], [58 / 60, 2 / 3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(out["iou"][[0, 1, 3]], [29 / 31, 1 / 2, 0.0], rtol=1e-6)
    assert np.isnan(out["dice"][[2, 4]]).all() and np.isnan(out["iou"][[2, 4]]).all()
    assert nanmean_classes(out["dice"]) == pytest.approx((2 / 3 + 0.0) / 2)
    assert nanmean_classes(out["dice"], include_background=True) == pytest.approx((58 / 60 + 2 / 3) / 3)


def test_dice_accepts_float_labels_and_rejects_bad_maps():
    pred, true = _label_maps()
    out = dice_iou_per_class(pred.astype(np.float32), true.astype(np.float32))  # as from LoadImaged
    assert out["dice"][1] == pytest.approx(2 / 3)
    assert np.isnan(nanmean_classes(np.full(5, np.nan)))
    with pytest.raises(ValueError, match="differs"):
        dice_iou_per_class(pred, true[:3])
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        dice_iou_per_class(pred + 5, true)
    with pytest.raises(ValueError, match="integer"):
        dice_iou_per_class(pred + 0.5, true)


def test_image_metrics_and_their_errors():
    rng = np.random.default_rng(0)
    x = rng.random((12, 10, 8)).astype(np.float32)
    assert ssim_3d(x, x, data_range=1.0) == pytest.approx(1.0, abs=1e-5)
    assert ssim_3d(x, rng.random(x.shape), data_range=1.0) < 0.2
    assert psnr(x, x + 0.1, data_range=1.0) == pytest.approx(20.0, abs=1e-3)  # MSE 0.01
    assert mae(x, x - 0.25) == pytest.approx(0.25, abs=1e-6)
    with pytest.raises(ValueError, match="smallest dimension"):
        ssim_3d(x, x, data_range=1.0, win_size=11)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(x, x[:, :, :4], data_range=1.0)
    with pytest.raises(ValueError, match="data_range"):
        psnr(x, x, data_range=0.0)


@pytest.mark.parametrize(
    ("value", "days", "status"),
    [
        (0.7, 10.0, "inside"),  # halfway in SSIM between 1 and 100 days: 10 days in log-days
        (0.6, 1.0, "inside"),
        (0.75, 10**1.5, "inside"),
        (0.8, 100.0, "inside"),
        (0.5, 1.0, "below"),
        (0.9, 100.0, "above"),
    ],
)
def test_equivalent_days_on_a_known_curve(value, days, status):
    out = equivalent_days([100.0, 1.0], [0.8, 0.6], value)  # unsorted on purpose
    assert out.days == pytest.approx(days) and out.status == status


def test_equivalent_days_uses_the_running_maximum():
    # raw curve dips at 10 days (noise): monotone curve is 0.6, 0.7, 0.7, 0.9
    curve_days, curve = [1.0, 3.0, 10.0, 30.0], [0.6, 0.7, 0.65, 0.9]
    assert equivalent_days(curve_days, curve, 0.7) == (pytest.approx(3.0), "inside")  # first to reach it
    assert equivalent_days(curve_days, curve, 0.8).days == pytest.approx(math.exp((math.log(10) + math.log(30)) / 2))
    with pytest.raises(ValueError, match="distinct"):
        equivalent_days([1.0, 1.0], [0.1, 0.2], 0.15)
    with pytest.raises(ValueError, match="positive"):
        equivalent_days([0.0, 1.0], [0.1, 0.2], 0.15)


def _block():
    return Block(
        size_mm=(200.0, 200.0, 100.0),
        voids=(Void(centre_mm=(120.0, 100.0, 50.0), diameter_mm=40.0),),
        ducts=(Duct(direction="x", transverse_mm=50.0, z_mm=40.0, diameter_mm=30.0),),
    )


def test_object_matching_all_found_then_none():
    block = _block()
    truth = rasterise(block, 10.0).label
    found = match_objects(block, truth, 10.0, true_label=truth)
    assert [(m.kind, m.label, m.found) for m in found] == [("duct", 2, True), ("void", 3, True)]
    duct, void = found
    assert (duct.size_mm, duct.depth_mm, void.size_mm, void.depth_mm) == (30.0, 60.0, 40.0, 50.0)
    assert void.true_voxels == int((truth == 3).sum()) and void.fraction == 1.0 and void.z_smear_mm == 0.0
    none = match_objects(block, np.zeros_like(truth), 10.0)
    assert [(m.found, m.fraction) for m in none] == [(False, 0.0), (False, 0.0)]
    rates = detection_rate(found + none, [0.0, 30.0, 60.0])
    assert [(r["count"], r["found"]) for r in rates] == [(0, 0), (2, 1)]
    assert math.isnan(rates[0]["rate"]) and rates[1]["rate"] == 0.5


def test_object_found_threshold_counts_fraction_of_true_voxels():
    block = _block()
    truth = rasterise(block, 10.0).label
    _, void_mask = list(object_masks(block, 10.0))[1]
    pred = truth.copy()
    keep = np.flatnonzero(void_mask.ravel())
    pred.ravel()[keep[: len(keep) // 4]] = 0  # lose a quarter of the void
    void = match_objects(block, pred, 10.0)[1]
    assert void.fraction == pytest.approx(1 - (len(keep) // 4) / len(keep))
    assert void.found and not match_objects(block, pred, 10.0, threshold=0.9)[1].found
    with pytest.raises(ValueError, match="grid"):
        match_objects(block, truth[:5], 10.0)


def test_z_smearing_recovers_a_known_gaussian_blur():
    mask = np.zeros((12, 12, 60), bool)
    mask[3:9, 3:9, 26:34] = True  # 8 voxels thick at 2 mm
    sigma_vox = 2.0
    blurred = gaussian_filter1d(mask.astype(np.float64), sigma_vox, axis=2, mode="constant")
    out = z_smearing(blurred, mask, voxel_mm=2.0, margin_mm=30.0)
    assert out.smear_mm == pytest.approx(sigma_vox * 2.0, rel=0.02)
    assert out.ratio > 1 and z_smearing(mask, mask, 2.0).smear_mm == 0.0
    # a void in a raw volume: scattering dips below the concrete level 5.0
    raw = 5.0 - 3.0 * blurred
    assert z_smearing(raw, mask, 2.0, background=5.0, polarity=-1, margin_mm=30.0).smear_mm == pytest.approx(
        out.smear_mm
    )
    assert math.isnan(z_smearing(np.zeros(mask.shape), mask, 2.0).smear_mm)
