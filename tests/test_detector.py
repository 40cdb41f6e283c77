import math

import pytest
import torch

from volumetric.physics.detector import Detector, Station, default_detector, measure_tracks


def _lines(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, generator=g, dtype=torch.float64) * 800 + 100
    y = torch.rand(n, generator=g, dtype=torch.float64) * 800 + 100
    tx = torch.randn(n, generator=g, dtype=torch.float64) * 0.2
    ty = torch.randn(n, generator=g, dtype=torch.float64) * 0.2
    return x, y, tx, ty


def test_perfect_stations_recover_the_true_line():
    det = default_detector((1000, 1000, 200), resolution_mm=0.0, efficiency=1.0, margin_mm=1000)
    x, y, tx, ty = _lines(1000)
    fit = measure_tracks(det.above, x, y, tx, ty, 200.0, 200.0, torch.Generator().manual_seed(0))
    assert bool(fit.ok.all())
    assert torch.allclose(fit.x_mm, x) and torch.allclose(fit.tx, tx) and torch.allclose(fit.ty, ty)


def test_slope_resolution_is_sqrt2_sigma_over_lever_arm():
    sigma, lever = 0.58, 400.0
    det = default_detector((1000, 1000, 200), lever_arm_mm=lever, resolution_mm=sigma, efficiency=1.0, margin_mm=1000)
    x, y, tx, ty = _lines(50000, seed=1)
    fit = measure_tracks(det.above, x, y, tx, ty, 200.0, 200.0, torch.Generator().manual_seed(1))
    assert float((fit.tx - tx).std()) == pytest.approx(math.sqrt(2) * sigma / lever, rel=0.03)


def test_efficiency_and_acceptance():
    det = default_detector((1000, 1000, 200), efficiency=0.9)
    x, y, tx, ty = _lines(50000, seed=2)
    tx, ty = torch.zeros_like(tx), torch.zeros_like(ty)
    fit = measure_tracks(det.above, x, y, tx, ty, 200.0, 200.0, torch.Generator().manual_seed(2))
    assert float(fit.ok.double().mean()) == pytest.approx(0.81, abs=0.01)  # both of two planes
    outside = measure_tracks(det.above, x + 2000, y, tx, ty, 200.0, 200.0, torch.Generator().manual_seed(2))
    assert not bool(outside.ok.any())


def test_max_zenith_angle_and_serialisation():
    det = default_detector((1000, 1000, 200), gap_mm=50, lever_arm_mm=400)
    height = det.generation_plane.z_mm - min(s.z_mm for s in det.below)
    assert det.max_zenith_rad() == pytest.approx(math.atan(math.hypot(1000, 1000) / height))
    assert Detector.from_dict(det.to_dict()) == det


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(z_mm=float("nan")), "finite"),
        (dict(x_range_mm=(10.0, 0.0)), "empty active area"),
        (dict(efficiency=1.5), "efficiency"),
        (dict(resolution_mm=-1.0), "resolution"),
    ],
)
def test_bad_station(kwargs, match):
    args = dict(z_mm=300.0, x_range_mm=(0.0, 100.0), y_range_mm=(0.0, 100.0)) | kwargs
    with pytest.raises(ValueError, match=match):
        Station(**args)


def test_detector_needs_two_stations_per_side_and_clearance():
    s = Station(300.0, (0.0, 1.0), (0.0, 1.0))
    with pytest.raises(ValueError, match="two stations"):
        Detector((s,), (s, s))
    det = default_detector((1000, 1000, 200))
    with pytest.raises(ValueError, match="must lie above"):
        det.check_clears(0.0, 500.0)


def test_voxel_thicker_than_the_block_is_a_voxel_error_not_a_detector_error(tmp_path):
    from volumetric.data.case import simulate_case
    from volumetric.physics.geometry import Block

    with pytest.raises(ValueError, match=r"voxel 300 mm is larger than the block's smallest dimension 200 mm"):
        simulate_case(Block(), tmp_path / "case", 300.0, [0.001], progress=False)
    assert not list(tmp_path.iterdir())
