import math

import numpy as np
import pytest
import torch

from volumetric.physics.muons import SECONDS_PER_DAY, EcoMugFlux, _momentum_index


def _joint_density(p, u):
    """EcoMug J(p, theta) * cos(theta) on a horizontal plane, per d(cos theta) dp (phi integrated)."""
    n = _momentum_index(p)
    return 2 * math.pi * 1600 * (p + 2.68) ** -3.175 * p**0.279 * u ** (n + 1)


def _reference_rate(p_lo, p_hi, u0, n_p=4000, n_u=2000):
    """Independent 2D trapezoid integral of the sky-plane flux, Hz/m^2."""
    p = np.geomspace(p_lo, p_hi, n_p)
    u = np.linspace(u0, 1.0, n_u)
    dens = _joint_density(p[:, None], u[None, :])
    return np.trapezoid(np.trapezoid(dens, u, axis=1), p)


def test_full_window_integrates_to_ecomug_rate():
    rate = _reference_rate(0.01, 1000.0, 0.0)
    assert rate == pytest.approx(129.08, rel=2e-3)  # EcoMug paper's integrated flux


@pytest.mark.parametrize("p_min,theta_max_deg", [(0.1, 80.0), (0.5, 45.0), (2.0, 30.0)])
def test_window_fraction_matches_2d_integral(p_min, theta_max_deg):
    flux = EcoMugFlux(rate_hz_per_m2=129.08, p_min_gev=p_min, theta_max_rad=math.radians(theta_max_deg))
    expected = _reference_rate(p_min, 1000.0, math.cos(math.radians(theta_max_deg)))
    assert flux.window_rate_hz_per_m2 == pytest.approx(129.08 * expected / _reference_rate(0.01, 1000.0, 0.0), rel=3e-3)


def _ks_statistic(samples: np.ndarray, grid: np.ndarray, cdf: np.ndarray) -> float:
    samples = np.sort(samples)
    model = np.interp(samples, grid, cdf)
    n = len(samples)
    return float(max(np.max(np.arange(1, n + 1) / n - model), np.max(model - np.arange(n) / n)))


def test_cos_theta_follows_ecomug_law():
    u0 = math.cos(math.radians(75))
    flux = EcoMugFlux(p_min_gev=0.1, theta_max_rad=math.radians(75))
    p, cos_theta, phi = flux.sample_momentum_and_angles(40000, torch.Generator().manual_seed(3))
    u = np.linspace(u0, 1.0, 801)
    pp = np.geomspace(0.1, 1000.0, 4000)
    dens = np.trapezoid(_joint_density(pp[:, None], u[None, :]), pp, axis=0)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(u))])
    d = _ks_statistic(cos_theta.numpy(), u, cdf / cdf[-1])
    assert d < 1.63 / math.sqrt(40000)  # KS 99% critical value
    assert 0 <= phi.min() and phi.max() < 2 * math.pi


def test_momentum_and_angle_summaries_match_physics_notes():
    flux = EcoMugFlux(p_min_gev=0.01, theta_max_rad=math.radians(89.99))
    p, cos_theta, _ = flux.sample_momentum_and_angles(200000, torch.Generator().manual_seed(1))
    assert float(p.mean()) == pytest.approx(5.2, rel=0.05)
    assert float(p.median()) == pytest.approx(2.1, rel=0.05)
    assert float((cos_theta > math.cos(math.radians(30))).double().mean()) == pytest.approx(0.46, abs=0.01)


def test_poisson_count_and_sorted_times():
    flux = EcoMugFlux(rate_hz_per_m2=166.7)
    batch = flux.sample_plane(0.0, 600.0, (0.0, 500.0), (0.0, 400.0), seed=5)
    mean = flux.window_rate_hz_per_m2 * 0.2 * 600.0
    assert abs(len(batch) - mean) < 5 * math.sqrt(mean)
    assert bool((batch.t_s[1:] >= batch.t_s[:-1]).all())
    assert 0 <= float(batch.t_s.min()) and float(batch.t_s.max()) < 600.0
    assert 0 <= float(batch.x_mm.min()) and float(batch.x_mm.max()) <= 500.0


def test_default_rate_is_reference_muons_per_day():
    flux = EcoMugFlux(rate_hz_per_m2=166.7, p_min_gev=0.01, theta_max_rad=math.radians(89.999))
    assert flux.window_rate_hz_per_m2 * SECONDS_PER_DAY == pytest.approx(14.4e6, rel=1e-3)


def test_same_seed_same_muons_and_other_seed_differs():
    flux = EcoMugFlux()
    a = flux.sample_plane(0.0, 10.0, (0.0, 1000.0), (0.0, 1000.0), seed=11)
    b = flux.sample_plane(0.0, 10.0, (0.0, 1000.0), (0.0, 1000.0), seed=11)
    c = flux.sample_plane(0.0, 10.0, (0.0, 1000.0), (0.0, 1000.0), seed=12)
    assert torch.equal(a.p_gev, b.p_gev) and torch.equal(a.tx, b.tx) and torch.equal(a.t_s, b.t_s)
    assert len(a) != len(c) or not torch.equal(a.p_gev, c.p_gev)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(rate_hz_per_m2=-1.0), "rate_hz_per_m2"),
        (dict(rate_hz_per_m2=float("nan")), "rate_hz_per_m2"),
        (dict(p_min_gev=5.0, p_max_gev=1.0), "momentum window"),
        (dict(theta_max_rad=2.0), "theta_max_rad"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EcoMugFlux(**kwargs)
