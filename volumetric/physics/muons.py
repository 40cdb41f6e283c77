"""Cosmic-ray muon generator: EcoMug sky-plane flux, exact vectorised sampling, Poisson arrivals.

Flux (EcoMug, Pagano et al., NIM A 1014 (2021) 165732), p in GeV/c, J in m^-2 s^-1 sr^-1 (GeV/c)^-1::

    J(p, theta) = 1600 (p + 2.68)^-3.175 p^0.279 cos^n(theta),  n = max(0.1, 2.856 - 0.655 ln p)

Through a horizontal plane the rate density is ``J cos(theta) sin(theta) dtheta dphi dp``. With
``u = cos(theta)`` and ``u0 = cos(theta_max)`` the angular integral is
``2 pi (1 - u0^(n+2)) / (n+2)``, which gives the momentum marginal. We draw ``p`` by inverse CDF
of that marginal (tabulated on a fine log-p grid, linear interpolation of the CDF), then ``u``
exactly given ``p``: ``u = (u0^(n+2) + r (1 - u0^(n+2)))^(1/(n+2))``, and ``phi`` uniform.

Normalisation: ``rate_hz_per_m2`` is the rate through a horizontal plane of *all* muons in the
reference window (0.01-1000 GeV/c, theta < 90 deg), where EcoMug's own normalisation integrates
to 129.1 Hz/m^2. The default 166.7 Hz/m^2 (= 1 cm^-2 min^-1 = 14.4e6 muons/day/m^2) matches the
reference work. A generator restricted to a smaller window (p_min, theta_max) emits the
corresponding fraction of that rate, so an exposure in days stays physical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "MUON_MASS_GEV",
    "SECONDS_PER_DAY",
    "REFERENCE_P_RANGE_GEV",
    "MuonBatch",
    "EcoMugFlux",
]

MUON_MASS_GEV = 0.1056583755  # PDG 2024
SECONDS_PER_DAY = 86400.0
REFERENCE_P_RANGE_GEV = (0.01, 1000.0)
MU_PLUS_FRACTION = 1.28 / 2.28  # charge ratio mu+/mu- ~ 1.28 (EcoMug / PDG cosmic-ray review)


@dataclass
class MuonBatch:
    """Muons crossing the generation plane, all tensors of length N on one device.

    Attributes:
        x_mm, y_mm: crossing point on the generation plane (mm, block frame).
        tx, ty: track slopes dx/d(-z), dy/d(-z) (muons travel towards -z).
        p_gev: momentum in GeV/c.
        t_s: arrival time in seconds since the start of the exposure.
        charge: +1 or -1 (int8).
    """

    x_mm: torch.Tensor
    y_mm: torch.Tensor
    tx: torch.Tensor
    ty: torch.Tensor
    p_gev: torch.Tensor
    t_s: torch.Tensor
    charge: torch.Tensor

    def __len__(self) -> int:
        return int(self.p_gev.shape[0])

    def select(self, mask: torch.Tensor) -> "MuonBatch":
        """Return the muons where ``mask`` is true."""
        return MuonBatch(*(getattr(self, f)[mask] for f in self.__dataclass_fields__))


def _momentum_index(p_gev):
    """EcoMug's cos-power ``n(p) = max(0.1, 2.856 - 0.655 ln p)`` for numpy arrays or tensors."""
    if isinstance(p_gev, torch.Tensor):
        return torch.clamp(2.856 - 0.655 * torch.log(p_gev), min=0.1)
    return np.maximum(0.1, 2.856 - 0.655 * np.log(p_gev))


def _momentum_marginal(p_gev: np.ndarray, cos_theta_max: float) -> np.ndarray:
    """Rate density in p through a horizontal plane, m^-2 s^-1 (GeV/c)^-1, for theta < theta_max."""
    n = _momentum_index(p_gev)
    jp = 1600.0 * (p_gev + 2.68) ** -3.175 * p_gev**0.279
    return 2.0 * math.pi * jp * (1.0 - cos_theta_max ** (n + 2.0)) / (n + 2.0)


def _integrate(p_gev: np.ndarray, density: np.ndarray) -> np.ndarray:
    """Cumulative trapezoid integral, starting at 0."""
    steps = 0.5 * (density[1:] + density[:-1]) * np.diff(p_gev)
    return np.concatenate([[0.0], np.cumsum(steps)])


class EcoMugFlux:
    """Sampler of the EcoMug sky-plane flux in a momentum and zenith-angle window.

    Args:
        rate_hz_per_m2: total rate through a horizontal plane in the reference window
            (0.01-1000 GeV/c, all zenith angles); 166.7 Hz/m^2 reproduces the reference work.
        p_min_gev, p_max_gev: momentum window to generate, GeV/c.
        theta_max_rad: largest zenith angle generated, rad (< pi/2).
        grid_points: size of the log-p table used for the inverse CDF.
    """

    def __init__(
        self,
        rate_hz_per_m2: float = 166.7,
        p_min_gev: float = 0.1,
        p_max_gev: float = 1000.0,
        theta_max_rad: float = math.radians(80.0),
        grid_points: int = 20001,
    ):
        lo, hi = REFERENCE_P_RANGE_GEV
        if not (math.isfinite(rate_hz_per_m2) and rate_hz_per_m2 > 0):
            raise ValueError(f"rate_hz_per_m2 must be a positive number, got {rate_hz_per_m2}")
        if not (lo <= p_min_gev < p_max_gev <= hi):
            raise ValueError(f"momentum window must lie in {lo}..{hi} GeV/c, got {p_min_gev}..{p_max_gev}")
        if not (0.0 < theta_max_rad < math.pi / 2):
            raise ValueError(f"theta_max_rad must be in (0, pi/2), got {theta_max_rad}")
        self.p_min_gev, self.p_max_gev = float(p_min_gev), float(p_max_gev)
        self.theta_max_rad = float(theta_max_rad)
        self.cos_theta_max = math.cos(theta_max_rad)
        reference_grid = np.geomspace(lo, hi, 4 * grid_points)
        reference_rate = _integrate(reference_grid, _momentum_marginal(reference_grid, 0.0))[-1]
        self._p_table = np.geomspace(p_min_gev, p_max_gev, grid_points)
        cdf = _integrate(self._p_table, _momentum_marginal(self._p_table, self.cos_theta_max))
        self.window_fraction = float(cdf[-1] / reference_rate)
        self.rate_hz_per_m2 = float(rate_hz_per_m2)
        self._cdf_table = cdf / cdf[-1]

    @property
    def window_rate_hz_per_m2(self) -> float:
        """Rate of the muons this sampler emits, Hz per m^2 of horizontal plane."""
        return self.rate_hz_per_m2 * self.window_fraction

    def sample_momentum_and_angles(self, n: int, generator: torch.Generator, device="cpu"):
        """Draw ``n`` muons: momentum (GeV/c), cos(zenith) and azimuth (rad), float64 tensors."""
        cdf = torch.as_tensor(self._cdf_table, device=device)
        p_table = torch.as_tensor(self._p_table, device=device)
        r = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        hi = torch.searchsorted(cdf, r).clamp(1, len(cdf) - 1)
        lo = hi - 1
        frac = (r - cdf[lo]) / (cdf[hi] - cdf[lo]).clamp_min(1e-300)
        p = p_table[lo] * torch.exp(frac * torch.log(p_table[hi] / p_table[lo]))
        exponent = _momentum_index(p) + 2.0
        u0n = self.cos_theta_max**exponent
        r2 = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        cos_theta = (u0n + r2 * (1.0 - u0n)) ** (1.0 / exponent)
        phi = 2.0 * math.pi * torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        return p, cos_theta, phi

    def sample_plane(
        self,
        t_start_s: float,
        t_stop_s: float,
        x_range_mm: tuple[float, float],
        y_range_mm: tuple[float, float],
        seed: int,
        device="cpu",
    ) -> MuonBatch:
        """Muons crossing a horizontal rectangle during ``[t_start_s, t_stop_s)``.

        The number is Poisson with mean ``rate * area * duration``; arrival times are uniform in
        the window and sorted, i.e. a homogeneous Poisson process, so any fraction of a day is a
        physical exposure. The same ``seed`` gives the same muons (per device type).
        """
        generator = torch.Generator(device=device).manual_seed(int(seed))
        area_m2 = (x_range_mm[1] - x_range_mm[0]) * (y_range_mm[1] - y_range_mm[0]) * 1e-6
        mean = self.window_rate_hz_per_m2 * area_m2 * (t_stop_s - t_start_s)
        n = int(np.random.default_rng(int(seed)).poisson(mean))
        p, cos_theta, phi = self.sample_momentum_and_angles(n, generator, device)
        tan_theta = torch.sqrt(1.0 - cos_theta**2) / cos_theta
        uniform = torch.rand(3, n, generator=generator, device=device, dtype=torch.float64)
        t_s = torch.sort(t_start_s + uniform[0] * (t_stop_s - t_start_s)).values
        charge = torch.where(uniform[2] < MU_PLUS_FRACTION, 1, -1).to(torch.int8)
        x = x_range_mm[0] + uniform[1] * (x_range_mm[1] - x_range_mm[0])
        y_u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        y = y_range_mm[0] + y_u * (y_range_mm[1] - y_range_mm[0])
        return MuonBatch(
            x_mm=x.float(),
            y_mm=y.float(),
            tx=(tan_theta * torch.cos(phi)).float(),
            ty=(tan_theta * torch.sin(phi)).float(),
            p_gev=p.float(),
            t_s=t_s,
            charge=charge,
        )

