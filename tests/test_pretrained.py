"""The shipped reference weights load and reproduce the Dice the study recorded on a held-out block."""

import math

import numpy as np
import pytest

from volumetric.data.io import load_nifti
from volumetric.evaluation.metrics import dice_iou_per_class
from volumetric.pretrained import WEIGHTS_DIR, load_pretrained, manifest, pretrained_path
from volumetric.infer.predictor import predict
from volumetric.infer.files import read_input

ROOT = WEIGHTS_DIR.parent.parent
CLASSES = ("concrete", "rebar", "duct", "void", "unknown")


def test_manifest_names_small_weight_files():
    shipped = manifest()
    assert set(shipped["models"]) == {"upsampler", "segmenter"}
    for role in shipped["models"]:
        assert pretrained_path(role).stat().st_size < 10e6  # a few MB, inside the package


def test_shipped_segmenter_reproduces_the_recorded_dice_on_the_heldout_block():
    shipped = manifest()
    heldout = shipped["heldout"]
    fixture = ROOT / heldout["fixture"]
    raw, _, _, _, _ = read_input(fixture / "input.nii.gz")
    label = predict(load_pretrained("segmenter"), raw, heldout["days"], shipped["voxel_mm"]).label.numpy()
    truth, _ = load_nifti(fixture / "label.nii.gz")
    dice = dice_iou_per_class(label, np.asarray(truth, np.int64), len(CLASSES))["dice"]
    for name, value in zip(CLASSES, dice):
        recorded = heldout["dice_study"][name]
        if recorded is None:
            assert math.isnan(value)
        else:  # float16 weights against the study's float32 run
            assert value == pytest.approx(recorded, abs=0.02), name


def test_shipped_upsampler_refuses_another_voxel_size():
    shipped = manifest()
    raw, _, _, _, _ = read_input(ROOT / shipped["heldout"]["fixture"] / "input.nii.gz")
    with pytest.raises(ValueError, match="voxel size"):
        predict(load_pretrained("upsampler"), raw, shipped["input_days"], voxel_mm=2.0)


def test_manifest_records_each_shipped_file_sha256():
    from volumetric.pretrained import file_sha256

    for role, entry in manifest()["models"].items():
        assert file_sha256(WEIGHTS_DIR / entry["file"]) == entry["sha256"], role


def test_shipped_models_condition_a_demo_block_by_its_poca_points():
    """The demo block (1 m, 0.064 d at 5 mm) holds the PoCA points per voxel of the training data's
    1-day-equivalent checkpoint: the models are conditioned on that, not on the demo's 0.064 days."""
    from volumetric.infer.checkpoint import matched_exposure_days, occupancy_curve

    shipped = manifest()
    for role in shipped["models"]:
        curve = occupancy_curve(load_pretrained(role).meta)
        assert curve is not None, role
    reference_poca_per_voxel = 0.0988  # the 1 m block at 0.064 d, 5 mm (docs/separability.md)
    days = matched_exposure_days(reference_poca_per_voxel, curve)
    assert days == pytest.approx(shipped["heldout"]["days"], rel=0.05) and days > 3 * shipped["input_days"]
