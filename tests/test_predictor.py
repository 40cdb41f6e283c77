"""volumetric.infer.predictor: loading runs, scales, predict (chain, checks) and XY test-time augmentation."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from volumetric.infer.sliding_window import XY_SYMMETRIES, predict_volume_tta, xy_symmetry
from volumetric.infer.predictor import (
    WindowSettings,
    compose_input,
    load_model,
    normalise_input,
    normalised_channels,
    physical_channels,
    predict,
    run_model,
)

from volumetric.train.config import DEFAULT_TARGET_CHANNELS
from volumetric.data.build import PRESETS
from volumetric.schema import CHANNEL_NAMES, LEGACY_CHANNEL_NAMES

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
ONE_WINDOW = WindowSettings(roi_size=(20, 20, 12))  # the whole 20x20x10 tiny block in one window
NORM = {"name": "log-moments/1", "count_log_scale": 2.0, "theta2_ref_rad2": 1e-3}
LEGACY = list(LEGACY_CHANNEL_NAMES)
D0 = PRESETS["tiny"].checkpoints_days[0]  # the shortest tiny exposure (days)


def train_tiny(config: str, dataset, out, name: str, *extra: str) -> Path:
    """A 2-step run without validation (only ``checkpoints/last.pt``), in this process."""
    from volumetric.train.config import load_config
    from volumetric.train.engine import train_from_config

    overrides = [f"data.path={dataset}", f"train.out_dir={out}", f"train.run_name={name}", "train.progress=false",
                 "train.threads=1", "train.steps=2", "validation.every=0", *extra]
    return Path(train_from_config(load_config(CONFIGS / config, overrides))["run_dir"])


def case_raw(dataset, name: str | None = None, days: float = D0) -> torch.Tensor:
    from volumetric.data.io import load_nifti

    name = name or sorted((Path(dataset) / "cases").iterdir())[0].name
    array = load_nifti(Path(dataset) / "cases" / name / "exposures" / f"{days:g}d.nii.gz")[0]
    return torch.as_tensor(np.moveaxis(array, -1, 0).copy())


@pytest.fixture(scope="module")
def runs(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("predictor_runs")
    return {"upsample": train_tiny("upsample_tiny.yaml", tiny_dataset, out, "up"),
            "segment": train_tiny("segment_tiny.yaml", tiny_dataset, out, "seg")}


# ---------------------------------------------------------------------------- scales (hand-computed)


def test_physical_channels_are_per_muon_means():
    image = torch.tensor([1.0, math.log(2.0), math.log(3.0)]).reshape(3, 1, 1, 1)
    phys = physical_channels(image, LEGACY, NORM)
    np.testing.assert_allclose(phys.flatten().numpy(), [math.expm1(2.0), 1e-3, 2 * 1e-6], rtol=1e-5)
    np.testing.assert_allclose(normalised_channels(phys, LEGACY, NORM).numpy(), image.numpy(), rtol=1e-5)
    # one channel only (mean theta^2): no count needed; negative outputs clip to 0
    np.testing.assert_allclose(physical_channels(torch.tensor([[[[-1.0]]]]), ["sum_theta2_rad2"], NORM).item(), 0.0)
    # a mean of ln(theta) may be negative: c std + mean, not clipped
    log_norm = {"name": "channels/1", "channels": {"count": {"scale": 2.0}, "sum_log_theta": {"mean": -5.0, "std": 2.0}}}
    value = physical_channels(torch.tensor([[[[0.5]]]]), ["sum_log_theta"], log_norm).item()
    assert value == pytest.approx(-4.0)


def test_normalise_input_matches_the_documented_formula():
    raw = torch.tensor([4.0, 8e-3, 0.0]).reshape(3, 1, 1, 1)  # 4 muons, mean theta^2 2e-3 rad^2
    x = normalise_input(raw, NORM).flatten()
    np.testing.assert_allclose(x.numpy(), [math.log(5.0) / 2.0, math.log(3.0), 0.0], rtol=1e-6)


def test_compose_input_replaces_predicted_channels_and_converts_scale():
    raw = torch.zeros(3, 2, 2, 2)
    image = torch.full((1, 2, 2, 2), math.log(2.0))  # mean theta^2 = r1 = 1e-3
    same = compose_input(raw, image, ["sum_theta2_rad2"], NORM, NORM)
    assert torch.equal(same[1], image[0]) and torch.equal(same[[0, 2]], raw[[0, 2]])
    other = {**NORM, "theta2_ref_rad2": 2e-3}  # 1e-3 rad^2 is half the other reference: log1p(0.5)
    np.testing.assert_allclose(compose_input(raw, image, ["sum_theta2_rad2"], NORM, other)[1].numpy(), math.log(1.5),
                               rtol=1e-6)


# ---------------------------------------------------------------------------- TTA


class _Constant(nn.Module):
    in_channels, size_multiple = 1, 1

    def forward(self, x, exposure_days=None):
        return torch.full((x.shape[0], 5, *x.shape[2:]), 0.25) + torch.arange(5.0).view(1, 5, 1, 1, 1)


class _Identity(nn.Module):
    in_channels, size_multiple = 1, 1

    def forward(self, x, exposure_days=None):
        return x.clone()


class _XRamp(nn.Module):
    """Multiplies by the window's x coordinate: not symmetric, so TTA must disagree."""

    in_channels, size_multiple = 1, 1

    def forward(self, x, exposure_days=None):
        return x * torch.arange(x.shape[2], dtype=x.dtype).view(1, 1, -1, 1, 1)


@pytest.mark.parametrize("k, flip", XY_SYMMETRIES)
def test_xy_symmetry_inverse_round_trips_non_square_blocks(k, flip):
    x = torch.arange(2 * 5 * 3 * 4, dtype=torch.float32).reshape(2, 5, 3, 4)
    y = xy_symmetry(x, k, flip)
    assert y.shape == ((2, 3, 5, 4) if k % 2 else (2, 5, 3, 4))  # z never moves
    assert torch.equal(y.sum((1, 2)), x.sum((1, 2)))  # every z slice keeps its voxels
    assert torch.equal(xy_symmetry(y, k, flip, inverse=True), x)


def test_tta_constant_net_gives_zero_label_uncertainty():
    x = torch.rand(1, 11, 9, 6)
    out = predict_volume_tta(_Constant(), x, roi_size=(8, 6, 6), dense_output="logits")
    assert out["probabilities"].shape == (5, 11, 9, 6) and out["label_std"].shape == (11, 9, 6)
    assert float(out["label_std"].max()) < 1e-6  # zero up to the float rounding of Gaussian blending
    assert bool((out["probabilities"].argmax(0) == 4).all())


def test_tta_identity_gives_input_back_with_no_uncertainty_and_asymmetric_net_does_not():
    x = torch.rand(1, 11, 9, 6)
    out = predict_volume_tta(_Identity(), x, roi_size=(8, 6, 6), dense_output="image")
    np.testing.assert_allclose(out["image"].numpy(), x.numpy(), rtol=1e-5, atol=1e-6)
    assert float(out["image_std"].max()) < 1e-5
    ramp = predict_volume_tta(_XRamp(), x, roi_size=(8, 6, 6), dense_output="image")
    assert float(ramp["image_std"].max()) > 0.1


# ---------------------------------------------------------------------------- trained runs


def test_load_model_rebuilds_the_training_pipeline(runs):
    up = load_model(runs["upsample"])
    assert up.task == "upsample" and up.image_channels == list(DEFAULT_TARGET_CHANNELS) and up.conditioned
    assert up.channels == CHANNEL_NAMES
    assert up.source.name == "best.pt" and up.roi_size == (16, 16, 8) and up.voxel_mm == 10.0
    seg = load_model(runs["segment"] / "checkpoints" / "last.pt")
    assert seg.task == "segment" and seg.image_channels is None and seg.segment_input == "raw"


def test_predict_upsampler_image_scales_and_segmenter_chain(runs, tiny_dataset):
    up, seg = load_model(runs["upsample"]), load_model(runs["segment"])
    raw = case_raw(tiny_dataset)
    pred = predict(up, raw, exposure_days=D0, voxel_mm=10.0, settings=ONE_WINDOW)
    assert pred.image.shape == (3, 20, 20, 10) and pred.label is None and pred.image_std is None
    torch.testing.assert_close(pred.image_physical, physical_channels(pred.image, pred.image_channels,
                                                                      up.normalisation))
    chain = predict(up, raw, D0, 10.0, segmenter=seg, settings=ONE_WINDOW)
    torch.testing.assert_close(chain.image, pred.image)
    composed = compose_input(normalise_input(raw, seg.normalisation, seg.channels), pred.image, pred.image_channels,
                             up.normalisation, seg.normalisation, seg.channels)
    direct = run_model(seg, composed, chain.conditioning_days["segmenter"], ONE_WINDOW)
    assert chain.label.shape == (20, 20, 10) and torch.equal(chain.label, direct.label)
    torch.testing.assert_close(chain.probabilities.sum(0), torch.ones(20, 20, 10))


def test_window_bars_are_named_by_the_caller_or_by_the_task(runs, tiny_dataset, capsys):
    up, seg = load_model(runs["upsample"]), load_model(runs["segment"])
    raw = case_raw(tiny_dataset)
    predict(up, raw, D0, 10.0, segmenter=seg, settings=WindowSettings(roi_size=(20, 20, 12), progress=True))
    err = capsys.readouterr().err
    assert "upsample: 100%" in err and "segment: 100%" in err and "1/1" in err
    predict(seg, raw, D0, 10.0, settings=WindowSettings(roi_size=(20, 20, 12), progress="segmenter"))
    assert "segmenter: 100%" in capsys.readouterr().err


def test_predict_with_tta_returns_uncertainty(runs, tiny_dataset):
    seg = load_model(runs["segment"])
    pred = predict(seg, case_raw(tiny_dataset), D0, 10.0, settings=WindowSettings(roi_size=(20, 20, 12), tta=True))
    assert pred.label_std.shape == (20, 20, 10) and float(pred.label_std.min()) >= 0


@pytest.mark.parametrize(
    "change, error, message",
    [
        (lambda raw: raw[:2], ValueError, "expected raw statistics"),
        (lambda raw: torch.where(raw == raw.max(), float("nan"), raw), ValueError, "NaN"),
        (lambda raw: -raw, ValueError, "negative"),
    ],
)
def test_bad_volumes_are_refused(runs, tiny_dataset, change, error, message):
    up = load_model(runs["upsample"])
    with pytest.raises(error, match=message):
        predict(up, change(case_raw(tiny_dataset)), D0, 10.0)


def test_model_compatibility_checks(runs, tiny_dataset, tmp_path):
    up = load_model(runs["upsample"])
    raw = case_raw(tiny_dataset)
    with pytest.raises(ValueError, match="differs from the model's training voxel size 10 mm"):
        predict(up, raw, D0, voxel_mm=5.0)
    with pytest.warns(UserWarning, match="outside the model's training range"):
        pred = predict(up, raw * 100, D0, 10.0)  # 100x the PoCA points of any training image
    assert pred.warnings and "extrapolation" in pred.warnings[0]
    up.meta.pop("occupancy_poca_per_voxel")  # a checkpoint from before occupancy curves: the stated days
    with pytest.raises(ValueError, match="exposure-conditioned"):
        predict(up, raw, None, 10.0)
    with pytest.warns(UserWarning, match="outside the model's training range"):
        predict(up, raw, 30.0, 10.0)
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no checkpoints"):
        load_model(tmp_path / "empty")
    with pytest.raises(ValueError, match="segmenter goes after an upsample run"):
        predict(load_model(runs["segment"]), raw, D0, 10.0, segmenter=load_model(runs["segment"]))


def test_conditioning_is_calibrated_by_the_poca_points_the_input_holds(runs, tiny_dataset):
    from volumetric.data.dataset import load_dataset

    up, seg = load_model(runs["upsample"]), load_model(runs["segment"])
    measured = load_dataset(tiny_dataset, check_data=False).meta["measured_occupancy"]
    raw = case_raw(tiny_dataset, days=PRESETS["tiny"].checkpoints_days[1])  # inside the training curve
    held = float(raw[CHANNEL_NAMES.index("count")].double().mean())
    pred = predict(up, raw, 123.0, 10.0, segmenter=seg, settings=ONE_WINDOW)  # the stated days are not used
    days = pred.conditioning_days
    assert set(days) == {"model", "segmenter"} and days["model"] == days["segmenter"] and not pred.warnings
    curve = {float(d): v["poca_points_per_voxel"] for d, v in measured.items()}
    below = max((d for d in curve if curve[d] <= held), default=min(curve))
    above = min((d for d in curve if curve[d] >= held), default=max(curve))
    assert below * 0.999 <= days["model"] <= above * 1.001  # between the training days bracketing it
    doubled = predict(up, raw * 2, None, 10.0, settings=ONE_WINDOW).conditioning_days["model"]
    assert doubled > days["model"]  # twice the points: a longer training exposure
    without = predict(up, raw, D0, 10.0, settings=ONE_WINDOW)
    seg.meta.pop("occupancy_poca_per_voxel")
    assert predict(seg, raw, D0, 10.0, settings=ONE_WINDOW).conditioning_days == {"model": D0}
    with pytest.raises(ValueError, match="PoCA points per voxel must be positive"):
        predict(up, torch.zeros_like(raw), D0, 10.0, settings=ONE_WINDOW)
    assert without.conditioning_days["model"] == pytest.approx(days["model"])


def test_channels_are_picked_by_name(runs, tiny_dataset):
    seg = load_model(runs["segment"])
    raw = case_raw(tiny_dataset)
    order = list(reversed(range(len(CHANNEL_NAMES))))
    shuffled = [CHANNEL_NAMES[i] for i in order]
    a = predict(seg, raw, D0, 10.0, settings=ONE_WINDOW)
    b = predict(seg, raw[order], D0, 10.0, settings=ONE_WINDOW, channels=shuffled)
    assert torch.equal(a.label, b.label)
    with pytest.raises(ValueError, match=r"channel\(s\) \['path_count'"):
        predict(seg, raw[:6], D0, 10.0, channels=CHANNEL_NAMES[:6])
