"""Muon transport through a voxelised block: multiple Coulomb scattering and energy loss.

Vectorised over muons with torch; the same code runs on CPU and CUDA. A muon is a straight
line between interactions, described by its position ``(x, y)`` on a horizontal plane and its
slopes ``tx = dx/d(-z)``, ``ty = dy/d(-z)`` (muons travel towards -z). The block is crossed in
horizontal steps from its top face to its bottom face; outside the block's footprint a muon is
in air.

Scattering model (PDG RPP, "Passage of particles through matter", eqs. 34.15-34.20):

* Highland / Lynch-Dahl width for the *whole* path of ``X`` radiation lengths::

      theta0 = 13.6 MeV / (beta c p) * sqrt(X) * (1 + 0.038 ln(X / beta^2))      (z = 1)

* Split variance (shared/docs/PHYSICS.md section 2): applying the formula with its log term to
  each small step underestimates the total. A first pass along the entry line gives
  ``X_tot = sum_i l_i / X0_i``; step ``i`` then gets the variance
  ``sigma_i^2 = (13.6 MeV / (beta_i p_i))^2 (l_i / X0_i) (1 + 0.038 ln(X_tot / beta^2))^2`` so
  that ``sum_i sigma_i^2 = theta0(X_tot)^2`` at constant momentum.
* Within a step of path length ``l``, per projected plane (PDG eq. 34.20 and the text after it)::

      y = l * sigma * (z1 / sqrt(12) + z2 / 2),     theta = z2 * sigma

  with ``z1, z2`` independent unit normals, which gives ``corr(y, theta) = +sqrt(3)/2``.
* The two projections are taken in the plane perpendicular to the track; their effect on the
  slopes follows from the slope covariance of a kick of rms ``sigma`` (the standard tracking
  process-noise matrix) ``sigma^2 s^2 [[1 + tx^2, tx ty], [tx ty, 1 + ty^2]]``,
  ``s = sqrt(1 + tx^2 + ty^2)``, whose Cholesky factor ``L`` maps the two kicks to slope changes;
  ``L / s`` maps perpendicular displacements to displacements in the horizontal plane.
* Continuous energy loss ``dE = S * l`` with ``S`` the stopping power map (MeV/mm); muons whose
  momentum falls below ``p_cut_gev`` are flagged dead (the caller drops them).
* Gaussian core only: single large-angle (Rutherford) tails are not modelled.

Two methods share this physics:

* ``"stepwise"`` (reference): kicks and displacements applied step by step; the material of
  each step is looked up where the scattered muon actually is.
* ``"straight"`` (fast): the material is looked up along the entry line and the step kicks are
  summed in closed form: the exit angle and displacement per projection are a bivariate normal
  with ``Var(theta) = sum s_i^2``, ``Cov = sum s_i^2 (l_i/2 + R_i)``,
  ``Var(y) = sum s_i^2 (l_i^2/12 + (l_i/2 + R_i)^2)``, ``R_i`` the path left after step ``i``.
  Exact for the Gaussian model when the deflection stays within a voxel; 4 normals per muon
  instead of 4 per muon and step.

The sums along the entry line (both methods need ``X_tot``) are computed by the torch code
below (the reference, and the CUDA path) or, on the CPU, by the fused Numba kernel of
``volumetric.physics.kernels`` (``kernel=``), which adds the same terms.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from volumetric.physics import kernels
from volumetric.physics.muons import MUON_MASS_GEV

__all__ = ["HIGHLAND_MEV", "MaterialGrid", "TrackState", "highland_theta0_rad", "transport_through_block"]

HIGHLAND_MEV = 13.6  # PDG Highland constant, MeV
HIGHLAND_LOG = 0.038
MIN_LOG_X0 = 1e-3  # below 1e-3 X0 the Highland log term is outside its validity: clamp X there
METHODS = ("stepwise", "straight")


def highland_theta0_rad(p_gev, x_over_x0, beta=1.0):
    """Highland/PDG projected width theta0 (rad) for momentum ``p_gev`` and ``x_over_x0`` X0."""
    x = np.asarray(x_over_x0, dtype=np.float64)
    log_term = 1.0 + HIGHLAND_LOG * np.log(np.maximum(x, MIN_LOG_X0) / beta**2)
    return HIGHLAND_MEV * 1e-3 / (beta * np.asarray(p_gev)) * np.sqrt(x) * log_term


@dataclass
class TrackState:
    """Muons on a horizontal plane: positions (mm), slopes, momentum (GeV/c), alive flag."""

    x_mm: torch.Tensor
    y_mm: torch.Tensor
    tx: torch.Tensor
    ty: torch.Tensor
    p_gev: torch.Tensor
    alive: torch.Tensor


@dataclass
class MaterialGrid:
    """Scattering maps of a block on a regular grid, block frame (z up, index 0 at the bottom).

    Attributes:
        inv_x0_per_mm: ``(X, Y, Z)`` float tensor of 1/X0 in 1/mm.
        stopping_power_mev_per_mm: ``(X, Y, Z)`` float tensor of dE/dx * rho in MeV/mm.
        voxel_mm: voxel size ``(vx, vy, vz)`` in mm.
        origin_mm: position of the grid's low corner ``(x0, y0, z0)`` in mm.
    """

    inv_x0_per_mm: torch.Tensor
    stopping_power_mev_per_mm: torch.Tensor
    voxel_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self):
        if self.inv_x0_per_mm.ndim != 3 or self.inv_x0_per_mm.shape != self.stopping_power_mev_per_mm.shape:
            raise ValueError(
                "inv_x0_per_mm and stopping_power_mev_per_mm must be 3D (X, Y, Z) maps of one shape, got "
                f"{tuple(self.inv_x0_per_mm.shape)} and {tuple(self.stopping_power_mev_per_mm.shape)}"
            )
        if len(self.voxel_mm) != 3 or not all(math.isfinite(v) and v > 0 for v in self.voxel_mm):
            raise ValueError(f"voxel_mm must be three positive sizes in mm, got {self.voxel_mm}")
        for name in ("inv_x0_per_mm", "stopping_power_mev_per_mm"):
            t = getattr(self, name)
            if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
                raise ValueError(f"{name} must be finite and non-negative")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.inv_x0_per_mm.shape)

    @property
    def top_z_mm(self) -> float:
        return self.origin_mm[2] + self.shape[2] * self.voxel_mm[2]

    @functools.cached_property
    def slabs(self) -> "_PaddedSlabs":
        """Flattened per-slab lookup tables with an air ring (built once, reused by every chunk)."""
        return _PaddedSlabs(self, *_air_values())

    def to(self, device) -> "MaterialGrid":
        """This grid on ``device`` (itself, with its cached tables, if already there)."""
        if self.inv_x0_per_mm.device == torch.device(device):
            return self
        return MaterialGrid(
            self.inv_x0_per_mm.to(device), self.stopping_power_mev_per_mm.to(device), self.voxel_mm, self.origin_mm
        )


class _PaddedSlabs:
    """Per-slab flattened maps with a one-voxel ring of air around the footprint.

    Looking up a clamped index then returns air for any muon outside the block, with no masks.
    When the block has at most 256 distinct ``(1/X0, dE/dx)`` pairs (pure materials plus the
    mixtures of boundary voxels; 30-170 for sampled blocks at 2 mm) the maps are stored as
    uint8 codes into a small palette: a 500 x 500 x 100 block then takes 25 MB instead of
    200 MB, which fits the CPU's last-level cache and makes the random look-ups cheap.
    """

    def __init__(self, grid: MaterialGrid, air_inv_x0_per_mm: float, air_stopping_mev_per_mm: float):
        self.nx, self.ny, self.nz = grid.shape
        self.voxel_mm, self.origin_mm = grid.voxel_mm, grid.origin_mm
        inv_x0 = self._pad(grid.inv_x0_per_mm, air_inv_x0_per_mm)
        stopping = self._pad(grid.stopping_power_mev_per_mm, air_stopping_mev_per_mm)
        self.slab_size = inv_x0.shape[1]
        self.codes, self.palette = _palette(inv_x0, stopping)
        self.tables = None if self.codes is not None else torch.stack([inv_x0.reshape(-1), stopping.reshape(-1)])

    def _pad(self, volume: torch.Tensor, air_value: float) -> torch.Tensor:
        padded = torch.nn.functional.pad(volume.float().permute(2, 0, 1), (1, 1, 1, 1), value=air_value)
        return padded.reshape(self.nz, -1).contiguous()  # (Z, (X+2)*(Y+2))

    def flat_index(self, x_mm: torch.Tensor, y_mm: torch.Tensor) -> torch.Tensor:
        """Index within one slab of the voxel column holding ``(x, y)`` (air ring outside)."""
        ix = torch.floor((x_mm - self.origin_mm[0]) / self.voxel_mm[0]).clamp_(-1, self.nx) + 1
        iy = torch.floor((y_mm - self.origin_mm[1]) / self.voxel_mm[1]).clamp_(-1, self.ny) + 1
        return (ix * (self.ny + 2) + iy).long()

    def flat_index_along(self, x_mm, y_mm, tx, ty, depth_mm) -> torch.Tensor:
        """In-slab indices ``(K, n)`` of straight lines ``(n,)`` at depths ``(K,)`` below the top."""
        u = torch.addcmul(((x_mm - self.origin_mm[0]) / self.voxel_mm[0] + 1), depth_mm[:, None],
                          tx / self.voxel_mm[0])
        v = torch.addcmul(((y_mm - self.origin_mm[1]) / self.voxel_mm[1] + 1), depth_mm[:, None],
                          ty / self.voxel_mm[1])
        ix = u.floor_().clamp_(0, self.nx + 1)
        iy = v.floor_().clamp_(0, self.ny + 1)
        return torch.add(iy, ix, alpha=self.ny + 2).long()

    def lookup(self, slab, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(1/X0 in 1/mm, dE/dx in MeV/mm)`` at in-slab index ``flat`` of slab(s) ``slab``.

        ``slab`` is an int or a tensor broadcasting against ``flat``.
        """
        index = flat + slab * self.slab_size
        if self.codes is not None:
            index = torch.take(self.codes, index).long()
            return torch.take(self.palette[0], index), torch.take(self.palette[1], index)
        return torch.take(self.tables[0], index), torch.take(self.tables[1], index)


def _palette(inv_x0: torch.Tensor, stopping: torch.Tensor):
    """uint8 codes and a ``(2, U)`` palette of the distinct value pairs, or ``(None, None)``."""
    key = (inv_x0.view(torch.int32).long() << 32) | (stopping.view(torch.int32).long() & 0xFFFFFFFF)
    values, codes = torch.unique(key.reshape(-1), return_inverse=True)
    if values.numel() > 256:
        return None, None
    palette = torch.stack([(values >> 32).int().view(torch.float32), (values & 0xFFFFFFFF).int().view(torch.float32)])
    return codes.to(torch.uint8).reshape(-1).contiguous(), palette


def _air_values() -> tuple[float, float]:
    from volumetric.physics.materials import get_material

    air = get_material("air")
    return 1.0 / air.x0_mm, air.stopping_power_mev_per_mm


def _steps(slabs: _PaddedSlabs, step_mm: float | None):
    """Yield ``(slab_index, step_height_mm, height_above_grid_bottom_after_step_mm)`` top to bottom."""
    vz = slabs.voxel_mm[2]
    n_sub = 1 if step_mm is None else max(1, int(math.ceil(vz / step_mm - 1e-9)))
    h = vz / n_sub
    for k in range(slabs.nz - 1, -1, -1):
        for j in range(n_sub - 1, -1, -1):
            yield k, h, k * vz + j * h


def _step_tensors(steps, device, dtype):
    """Slab index ``(K,)``, mid-step depths ``(K,)``, lever-arm moments ``(3, K)``, step height.

    All steps have the same height ``h`` (``_steps``), so a muon's path per step is ``h s`` and
    its lever arm ``l/2 + R_k = s (h/2 + H_k)`` with ``H_k`` the height left below step ``k``:
    the moments ``[1, c_k, c_k^2]`` with ``c_k = h/2 + H_k`` are the same for every muon.
    """
    h = steps[0][1]
    slab_k = torch.tensor([k for k, _, _ in steps], device=device)
    c = torch.tensor([0.5 * h + ha for _, _, ha in steps], device=device, dtype=dtype)
    depth_mid = (torch.arange(len(steps), device=device, dtype=dtype) + 0.5) * h
    return slab_k, depth_mid, torch.stack([torch.ones_like(c), c, c * c]), h


def _line_integrals(slabs, steps, state, energy0, energy_loss, kernel: str = "torch", batch: int = 8192):
    """Integrals along each muon's entry line, in batches of muons sorted by entry voxel.

    Returns ``(x_total, var_theta, cov, var_u, exit_energy)`` per muon: X/X0, and the sums of
    ``w_i = (l_i / X0_i) / (beta_i p_i)^2`` (GeV^-2), ``w_i (l_i/2 + R_i)`` and
    ``w_i (l_i^2/12 + (l_i/2 + R_i)^2)``. Sorting keeps the table look-ups cache-local.
    ``kernel="numba"`` computes the same sums in one fused pass per muon (``kernels``).
    """
    step_tensors = _step_tensors(steps, state.x_mm.device, state.x_mm.dtype)
    order = torch.argsort(slabs.flat_index(state.x_mm, state.y_mm))
    if kernel == "numba" and slabs.codes is not None:  # more than 256 materials: float tables, torch path
        slab_k, depth_mid, lever_moments, h = step_tensors
        sorted_state = (state.x_mm[order], state.y_mm[order], state.tx[order], state.ty[order], energy0[order])
        values = kernels.line_integrals(slabs, slab_k, depth_mid, lever_moments[1], h, *sorted_state, energy_loss,
                                        MUON_MASS_GEV)
        out = [torch.empty_like(state.x_mm) for _ in range(5)]
        for total, value in zip(out, values):
            total[order] = value.to(total.dtype)
        return out
    out = [torch.empty_like(state.x_mm) for _ in range(5)]
    for lo in range(0, order.shape[0], batch):
        part = order[lo : lo + batch]
        values = _line_integrals_batch(
            slabs, *step_tensors, state.x_mm[part], state.y_mm[part], state.tx[part], state.ty[part],
            energy0[part], energy_loss,
        )
        for total, value in zip(out, values):
            total[part] = value
    return out


def _cumulative_over_steps(values: torch.Tensor) -> torch.Tensor:
    """Cumulative sum over dim 0 of ``(K, n)``; in place row by row on CPU (3x faster there)."""
    if values.device.type != "cpu":
        return torch.cumsum(values, 0)
    for k in range(1, values.shape[0]):
        values[k] += values[k - 1]
    return values


def _line_integrals_batch(slabs, slab_k, depth_mid, lever_moments, h, x, y, tx, ty, energy0, energy_loss):
    """One batch of ``_line_integrals``: step tensors ``(K,)``, muon tensors ``(n,)``, work ``(K, n)``.

    With ``w_k = (1/X0_k) E_k^2 / p_k^4`` (the per-mm weight) and path ``l = h s`` per step:
    ``sum_k w_k l``, ``sum_k w_k l (l/2 + R_k) = l s sum_k w_k c_k`` and
    ``sum_k w_k l (l^2/12 + (l/2 + R_k)^2) = l (l^2/12 sum_k w_k + s^2 sum_k w_k c_k^2)``; the
    three sums over steps are one ``(3, K) @ (K, n)`` product.
    """
    s = torch.sqrt(1 + tx * tx + ty * ty)
    path = h * s
    flat = slabs.flat_index_along(x, y, tx, ty, depth_mid)
    inv_x0, stopping = slabs.lookup(slab_k[:, None], flat)
    if energy_loss:
        energy = torch.addcmul(energy0, _cumulative_over_steps(stopping), path, value=-1e-3)
    else:
        energy = energy0.expand_as(inv_x0)
    e2 = energy * energy
    p2 = (e2 - MUON_MASS_GEV**2).clamp_(min=1e-6)
    # (1 / (beta p))^2 = E^2 / p^4; a stopped muon (E <= m) gets no more kicks
    weight = inv_x0 * e2 / (p2 * p2) * (e2 > MUON_MASS_GEV**2)
    w0, w1, w2 = lever_moments @ weight
    return (
        inv_x0.sum(0) * path,
        w0 * path,
        w1 * path * s,
        path * (path * path / 12 * w0 + s * s * w2),
        energy[-1],
    )


def _energy_after(energy, stopping, path_mm, energy_loss: bool):
    if not energy_loss:
        return energy
    return energy - stopping * path_mm * 1e-3  # MeV/mm * mm -> GeV


def _momentum_and_beta(energy_gev):
    p = torch.sqrt(torch.clamp(energy_gev**2 - MUON_MASS_GEV**2, min=1e-6))
    return p, p / energy_gev.clamp_min(MUON_MASS_GEV)


def _slope_factors(tx, ty):
    """Cholesky factor ``(L11, L21, L22)`` of the slope covariance per unit kick, and ``s``."""
    s = torch.sqrt(1 + tx**2 + ty**2)
    a = torch.sqrt(1 + tx**2)
    return s * a, s * tx * ty / a, s * s / a, s


def transport_through_block(
    grid: MaterialGrid,
    state: TrackState,
    generator: torch.Generator,
    method: str = "stepwise",
    step_mm: float | None = None,
    energy_loss: bool = True,
    p_cut_gev: float = 0.1,
    kernel: str = "auto",
) -> TrackState:
    """Carry muons from the grid's top face to its bottom face.

    Args:
        grid: scattering maps (on the same device as ``state``).
        state: muons on the plane ``z = grid.top_z_mm``.
        generator: torch random generator on the muons' device.
        method: ``"stepwise"`` (reference) or ``"straight"`` (closed form along the entry line).
        step_mm: vertical step; ``None`` means one step per voxel slab. Must divide into slabs.
        energy_loss: apply continuous energy loss.
        p_cut_gev: muons below this momentum (GeV/c) are flagged dead.
        kernel: how the line integrals are computed: ``"torch"`` (reference, any device),
            ``"numba"`` (fused CPU kernel, same sums) or ``"auto"`` (numba on the CPU when it imports).

    Returns:
        The muons on the plane ``z = grid.origin_mm[2]`` (bottom face).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if step_mm is not None and not step_mm > 0:
        raise ValueError(f"step_mm must be positive, got {step_mm}")
    slabs = grid.slabs
    steps = list(_steps(slabs, step_mm))
    energy0 = torch.sqrt(state.p_gev**2 + MUON_MASS_GEV**2)
    kernel = kernels.kernel_for(state.x_mm.device, kernel)
    integrals = _line_integrals(slabs, steps, state, energy0, energy_loss, kernel)
    beta0 = state.p_gev / energy0
    log_factor = 1 + HIGHLAND_LOG * torch.log(integrals[0].clamp_min(MIN_LOG_X0) / beta0**2)
    if method == "stepwise":
        out = _transport_stepwise(slabs, state, steps, generator, log_factor, energy0, energy_loss)
    else:
        out = _transport_straight(state, steps, generator, log_factor, *integrals[1:])
    out.alive = out.alive & (out.p_gev >= p_cut_gev)
    return out


def _transport_stepwise(slabs, state, steps, generator, log_factor, energy, energy_loss):
    x, y, tx, ty = state.x_mm.clone(), state.y_mm.clone(), state.tx.clone(), state.ty.clone()
    kick_scale = HIGHLAND_MEV * 1e-3 * log_factor
    for k, h, _ in steps:
        l11, l21, l22, s = _slope_factors(tx, ty)
        inv_x0, stopping = slabs.lookup(k, slabs.flat_index(x + tx * (0.5 * h), y + ty * (0.5 * h)))
        path = h * s
        energy = _energy_after(energy, stopping, path, energy_loss)
        p, beta = _momentum_and_beta(energy)
        moving = energy > MUON_MASS_GEV  # a stopped muon gets no more kicks (it is dropped later)
        sigma = kick_scale / (beta * p) * torch.sqrt(path * inv_x0) * moving
        z = torch.randn((4,) + x.shape, generator=generator, device=x.device, dtype=x.dtype)
        theta_a, theta_b = sigma * z[1], sigma * z[3]
        u_a = path * sigma * (z[0] * (1 / math.sqrt(12)) + 0.5 * z[1])
        u_b = path * sigma * (z[2] * (1 / math.sqrt(12)) + 0.5 * z[3])
        x = x + tx * h + (l11 / s) * u_a
        y = y + ty * h + (l21 * u_a + l22 * u_b) / s
        tx = tx + l11 * theta_a
        ty = ty + l21 * theta_a + l22 * theta_b
    p, _ = _momentum_and_beta(energy)
    return TrackState(x, y, tx, ty, p, state.alive & (energy > MUON_MASS_GEV))


def _transport_straight(state, steps, generator, log_factor, var_theta, cov, var_u, energy):
    """Exit state from the closed-form Gaussian sums along the entry line."""
    kick2 = (HIGHLAND_MEV * 1e-3 * log_factor) ** 2
    var_theta, cov, var_u = var_theta * kick2, cov * kick2, var_u * kick2
    l11, l21, l22, s = _slope_factors(state.tx, state.ty)
    g = torch.randn((4,) + state.x_mm.shape, generator=generator, device=s.device, dtype=s.dtype)
    sd_theta = torch.sqrt(var_theta)
    slope_u = cov / sd_theta.clamp_min(1e-30)
    resid_u = torch.sqrt(torch.clamp(var_u - slope_u**2, min=0.0))
    theta_a, theta_b = sd_theta * g[0], sd_theta * g[2]
    u_a = slope_u * g[0] + resid_u * g[1]
    u_b = slope_u * g[2] + resid_u * g[3]
    depth = sum(h for _, h, _ in steps)
    x = state.x_mm + state.tx * depth + (l11 / s) * u_a
    y = state.y_mm + state.ty * depth + (l21 * u_a + l22 * u_b) / s
    tx = state.tx + l11 * theta_a
    ty = state.ty + l21 * theta_a + l22 * theta_b
    p, _ = _momentum_and_beta(energy)
    return TrackState(x, y, tx, ty, p, state.alive & (energy > MUON_MASS_GEV))
