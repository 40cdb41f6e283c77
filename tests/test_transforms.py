import json
from collections import Counter

import numpy as np
import pytest
import torch

from transforms.exposure import SelectExposure, SelectExposured
from transforms.normalise import ScatteringNormalise, ScatteringNormalised, check_normalisation, estimate_normalisation
from transforms.pipeline import training_transforms
from transforms.spatial import xy_augmentations
from volumetric.data.io import save_nifti
from volumetric.schema import CHANNEL_NAMES, LEGACY_CHANNEL_NAMES

PARAMS = {"name": "log-moments/1", "count_log_scale": float(np.log1p(50.0)), "theta2_ref_rad2": 4e-6}
CHECKPOINTS = [1.0, 2.0, 4.0, 8.0, 100.0]


def _draws(mode, n=3000, seed=0, **kw):
    sel = SelectExposure(mode, **kw)
    sel.set_random_state(seed=seed)
    return Counter(sel(CHECKPOINTS) for _ in range(n))


@pytest.mark.parametrize("mode", ["uniform", "log-uniform"])
def test_exposure_sampling_stays_on_input_checkpoints(mode):
    counts = _draws(mode)
    assert set(counts) == {1.0, 2.0, 4.0, 8.0}  # never the target (100 d), always a checkpoint


def test_exposure_sampling_frequencies():
    uniform = _draws("uniform")
    assert all(abs(c / 3000 - 0.25) < 0.04 for c in uniform.values())
    log = _draws("log-uniform")  # u ~ U(0, log 8), nearest in log: ends get half a cell
    for days, expected in {1.0: 1 / 6, 2.0: 1 / 3, 4.0: 1 / 3, 8.0: 1 / 6}.items():
        assert abs(log[days] / 3000 - expected) < 0.04


def test_exposure_sampling_is_seeded_and_fixed_mode():
    assert _draws("log-uniform", n=50, seed=3) == _draws("log-uniform", n=50, seed=3)
    assert _draws("fixed", n=20, fixed_days=8) == {8.0: 20}
    assert _draws("fixed", n=5, fixed_days=100) == {100.0: 5}
    assert _draws("fixed", n=5) == {1.0: 5}
    with pytest.raises(ValueError, match="not one of the checkpoints"):
        SelectExposure("fixed", fixed_days=3)(CHECKPOINTS)
    with pytest.raises(ValueError, match="sampling must be"):
        SelectExposure("gaussian")


def test_select_exposured_sets_image_and_days():
    exposures = {d: torch.full((3, 2, 2, 2), d) for d in CHECKPOINTS}
    t = SelectExposured(sampling="uniform").set_random_state(seed=1)
    for _ in range(10):
        out = t({"exposures": exposures, "target": exposures[100.0]})
        assert out["exposure_days"] in CHECKPOINTS[:-1] and "exposures" not in out
        assert torch.all(out["image"] == out["exposure_days"])


def _stats(rng, shape=(4, 5, 6)):
    n = rng.poisson(3.0, size=shape).astype(np.float64)
    theta2 = rng.exponential(4e-6, size=(8,) + shape)
    s2 = np.where(n > 0, n * theta2[0], 0.0)
    s4 = np.where(n > 0, n * theta2[1] ** 2 * 3, 0.0)
    return np.stack([n, s2, s4]).astype(np.float32)


def test_normalisation_inverts():
    x = _stats(np.random.default_rng(0))
    assert (x[0] == 0).any()
    t = ScatteringNormalise(PARAMS)
    y = t(torch.from_numpy(x))
    assert y.dtype == torch.float32 and torch.isfinite(y).all() and (y[:, x[0] == 0] == 0).all()
    np.testing.assert_allclose(t.inverse(y).numpy(), x, rtol=2e-5, atol=1e-12)


def test_normalisation_parameters_travel_as_plain_dict():
    from monai.data import MetaTensor

    x = MetaTensor(torch.from_numpy(_stats(np.random.default_rng(1))))
    d = ScatteringNormalised(["image", "target"], PARAMS)({"image": x, "target": x})
    assert json.loads(d["image"].meta["normalisation"]) == check_normalisation(PARAMS)
    back = ScatteringNormalised(["image"], json.loads(json.dumps(PARAMS))).inverse(d)
    np.testing.assert_allclose(back["image"].numpy(), x.numpy(), rtol=2e-5, atol=1e-12)
    est = estimate_normalisation([_stats(np.random.default_rng(2))], LEGACY_CHANNEL_NAMES)
    assert check_normalisation(json.loads(json.dumps(est))) == est
    with pytest.raises(ValueError, match="theta2_ref_rad2"):
        check_normalisation({**PARAMS, "theta2_ref_rad2": -1.0})
    with pytest.raises(ValueError, match="channel-first"):
        ScatteringNormalise(PARAMS)(torch.zeros(2, 3, 3, 3))
    with pytest.raises(ValueError, match="no parameters for channel"):
        ScatteringNormalise(PARAMS, CHANNEL_NAMES)


def test_legacy_parameters_give_the_documented_log_moments():
    """log-moments/1 checkpoints keep their transform: c0 = log1p(N)/L, c1 = log1p(S2/(N r)), c2 = log1p(S4/(N r^2))."""
    x = torch.from_numpy(_stats(np.random.default_rng(4)))
    y = ScatteringNormalise(PARAMS)(x).double()
    n, r, scale = x[0].double(), PARAMS["theta2_ref_rad2"], PARAMS["count_log_scale"]
    occupied = n > 0
    np.testing.assert_allclose(y[0], torch.log1p(n) / scale, rtol=1e-6)
    np.testing.assert_allclose(y[1][occupied], torch.log1p(x[1].double() / (n * r))[occupied], rtol=1e-5)
    np.testing.assert_allclose(y[2][occupied], torch.log1p(x[2].double() / (n * r * r))[occupied], rtol=1e-5)


def _all_channels(rng, shape=(4, 5, 6)):
    """Sums of every channel from simulated per-muon angles (PoCA and path counts differ)."""
    from volumetric.schema import channel, muon_weights

    sums = np.zeros((len(CHANNEL_NAMES),) + shape)
    rows = [channel(n) for n in CHANNEL_NAMES]
    for idx in np.ndindex(shape):
        for source, lam in (("poca", 2.0), ("path", 20.0)):
            theta = torch.from_numpy(rng.lognormal(np.log(0.01), 1.0, rng.poisson(lam)))
            mine = [i for i, r in enumerate(rows) if r.source == source]
            sums[(mine,) + idx] = muon_weights([rows[i] for i in mine], theta, 0.05).sum(0).numpy()
    return sums.astype(np.float32)


def test_every_channel_normalises_and_inverts():
    x = _all_channels(np.random.default_rng(5))
    params = estimate_normalisation([x], CHANNEL_NAMES)
    assert params["channels"]["sum_log_theta"]["mean"] == pytest.approx(np.log(0.01), abs=0.3)
    t = ScatteringNormalise(params, CHANNEL_NAMES)
    y = t(torch.from_numpy(x))
    assert y.shape == x.shape and torch.isfinite(y).all()
    empty = x[CHANNEL_NAMES.index("count")] == 0
    assert empty.any() and (y[:6, torch.from_numpy(empty)] == 0).all()  # PoCA channels are 0 where no PoCA
    fraction = y[CHANNEL_NAMES.index("path_count_above_threshold")]
    assert float(fraction.min()) >= 0 and float(fraction.max()) <= 1
    np.testing.assert_allclose(t.inverse(y).numpy(), x, rtol=5e-5, atol=1e-4)


def test_xy_augmentation_keeps_alignment_and_never_flips_z():
    image = torch.arange(6 * 6 * 4, dtype=torch.float32).reshape(1, 6, 6, 4)
    data = {"image": image, "target": 2 * image, "label": (image % 5).long()}
    t = xy_augmentations(["image", "target", "label"], prob=0.5)
    seen = set()
    for seed in range(40):
        t.set_random_state(seed=seed)
        out = t(dict(data))
        img = torch.as_tensor(out["image"])
        assert torch.equal(torch.as_tensor(out["target"]), 2 * img)
        assert torch.equal(torch.as_tensor(out["label"]), (img % 5).long())
        for k in range(4):  # each z slice stays at its height: the same set of values
            assert torch.equal(img[..., k].flatten().sort().values, image[..., k].flatten().sort().values)
        seen.add(tuple(img[0, :, :, 0].flatten().tolist()))
    assert len(seen) == 8  # all 8 XY symmetries of the square occur


@pytest.fixture
def synthetic_case(tmp_path):
    """A 20x20x10 case: concrete everywhere but one void voxel in the middle."""
    rng = np.random.default_rng(0)
    label = np.zeros((20, 20, 10), np.uint8)
    label[10, 10, 5] = 3
    days = [0.5, 1.0, 2.0]
    record = {"case": "synthetic", "label": str(save_nifti(tmp_path / "label.nii.gz", label, (10.0,) * 3)),
              "exposures": {}}
    for d in days:
        stats = np.moveaxis(_stats(rng, (20, 20, 10)), 0, -1)
        record["exposures"][d] = str(save_nifti(tmp_path / f"{d:g}d.nii.gz", stats, (10.0,) * 3))
    record["target"] = record["exposures"][2.0]
    return record


def test_pipeline_outputs_and_class_balanced_patches(synthetic_case):
    t = training_transforms(PARAMS, patch_size=(8, 8, 8), num_samples=4)
    t.set_random_state(seed=0)
    hits, total = 0, 0
    for _ in range(10):
        for s in t(dict(synthetic_case)):
            assert s["image"].shape == s["target"].shape == (3, 8, 8, 8) and s["image"].dtype == torch.float32
            assert s["label"].shape == (1, 8, 8, 8) and s["label"].dtype == torch.int64
            assert s["exposure_days"] in (0.5, 1.0)
            hits += int((s["label"] == 3).any())
            total += 1
    # a random 8^3 patch holds the void ~7% of the time; ratios (concrete 1, void 2) give ~2/3
    assert hits / total > 0.4


def test_pipeline_pads_small_volumes_and_fixed_evaluation(synthetic_case):
    t = training_transforms(PARAMS, patch_size=(16, 16, 16), sampling="fixed", fixed_days=1.0, augment=False)
    t.set_random_state(seed=0)
    (s,) = t(dict(synthetic_case))
    assert s["image"].shape == (3, 16, 16, 16) and s["exposure_days"] == 1.0
    whole = training_transforms(PARAMS, patch_size=None, sampling="fixed", augment=False)(dict(synthetic_case))
    assert whole["image"].shape == (3, 20, 20, 10) and whole["exposure_days"] == 0.5
    np.testing.assert_allclose(whole["image"].affine.numpy()[0, 0], 10.0)


def test_make_dataset_on_tiny_preset(tmp_path):
    from monai.data import DataLoader

    from volumetric.data.build import PRESETS, build_dataset

    from volumetric.data.dataset import make_dataset

    torch.set_num_threads(1)
    build_dataset(tmp_path / "ds", "tiny", 3, seed=1, progress=False)
    ds = make_dataset(tmp_path / "ds", "all", patch_size=(16, 16, 8), num_samples=2, seed=0)
    assert check_normalisation(ds.normalisation) == ds.normalisation
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["image"].shape == (4, len(CHANNEL_NAMES), 16, 16, 8) and batch["label"].dtype == torch.int64
    assert set(batch["exposure_days"].tolist()) <= set(PRESETS["tiny"].checkpoints_days[:-1])
    with pytest.raises(ValueError, match="unknown split"):
        make_dataset(tmp_path / "ds", "holdout")
    # the cache is shared without copies (copy_cache=False): samples must never modify it
    cached = ds._cache[0]
    before = {d: v.clone() for d, v in cached["exposures"].items()}
    ops = len(cached["target"].applied_operations)
    for _ in range(5):
        for sample in ds[0]:
            sample["image"] += 1  # a careless consumer
    assert all(torch.equal(cached["exposures"][d], v) for d, v in before.items())
    assert len(cached["target"].applied_operations) == ops


def test_xy_augmentation_of_metatensors_follows_the_affine():
    from monai.data import MetaTensor

    from transforms.spatial import RandFlipRotateXYd

    image = MetaTensor(torch.arange(4 * 4 * 3, dtype=torch.float32).reshape(1, 4, 4, 3), affine=torch.eye(4))
    t = RandFlipRotateXYd(["image", "label"], prob=1.0).set_random_state(seed=0)
    out = t({"image": image, "label": image.clone()})
    assert torch.equal(out["image"].as_tensor(), out["label"].as_tensor())
    assert not torch.equal(out["image"].affine, torch.eye(4, dtype=out["image"].affine.dtype))
    assert torch.equal(out["image"].affine[2], torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=out["image"].affine.dtype))


def test_preloaded_and_on_demand_exposures_agree(synthetic_case):
    kwargs = dict(patch_size=None, sampling="fixed", fixed_days=1.0, augment=False)
    cached = training_transforms(PARAMS, preload_exposures=True, **kwargs)(dict(synthetic_case))
    on_demand = training_transforms(PARAMS, preload_exposures=False, **kwargs)(dict(synthetic_case))
    assert torch.equal(cached["image"].as_tensor(), on_demand["image"].as_tensor())
    assert json.loads(on_demand["image"].meta["normalisation"]) == check_normalisation(PARAMS)
