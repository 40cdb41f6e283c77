"""Tracking detector: horizontal x-y stations above and below the block, and track fitting.

Each station measures both coordinates of the crossing point with Gaussian resolution (a
scintillating-fibre plane of pitch ``d`` has ``sigma = d / sqrt(12)``; 2 mm pitch gives 0.58 mm,
arXiv:1310.1715) and a per-station efficiency. A muon is accepted when at least two stations
above and two below record it inside their active area. Tracks are straight-line least-squares
fits to the *measured* hits only; the true momentum is never used. Air between stations and
block is treated as empty (its 0.0015 X0 over 0.45 m scatters ~0.15 mrad at 3 GeV/c, well
under the ~1.6 mrad angular resolution).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

__all__ = ["Station", "Detector", "MeasuredTracks", "default_detector", "measure_tracks"]


@dataclass(frozen=True)
class Station:
    """One x-y tracking plane.

    Attributes:
        z_mm: height of the plane, block frame (mm).
        x_range_mm, y_range_mm: active area (mm).
        resolution_mm: Gaussian resolution per coordinate (mm).
        efficiency: probability that the plane records a crossing muon.
    """

    z_mm: float
    x_range_mm: tuple[float, float]
    y_range_mm: tuple[float, float]
    resolution_mm: float = 2.0 / math.sqrt(12.0)
    efficiency: float = 0.98

    def __post_init__(self):
        values = (self.z_mm, *self.x_range_mm, *self.y_range_mm, self.resolution_mm, self.efficiency)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"station at z={self.z_mm}: all fields must be finite")
        if self.x_range_mm[1] <= self.x_range_mm[0] or self.y_range_mm[1] <= self.y_range_mm[0]:
            raise ValueError(f"station at z={self.z_mm}: empty active area {self.x_range_mm} x {self.y_range_mm}")
        if self.resolution_mm < 0 or not 0 < self.efficiency <= 1:
            raise ValueError(f"station at z={self.z_mm}: resolution_mm >= 0 and 0 < efficiency <= 1 required")


@dataclass(frozen=True)
class Detector:
    """Stations above the block (``z`` above its top face) and below it (``z`` below its bottom)."""

    above: tuple[Station, ...]
    below: tuple[Station, ...]

    def __post_init__(self):
        if len(self.above) < 2 or len(self.below) < 2:
            raise ValueError("a detector needs at least two stations above and two below the block")

    def check_clears(self, bottom_z_mm: float, top_z_mm: float) -> None:
        """Raise if a station lies inside the block's height range."""
        if min(s.z_mm for s in self.above) <= top_z_mm or max(s.z_mm for s in self.below) >= bottom_z_mm:
            raise ValueError(
                f"detector stations must lie above z={top_z_mm} mm and below z={bottom_z_mm} mm (the block)"
            )

    @property
    def generation_plane(self) -> Station:
        """The highest station: muons are generated on its plane and active area."""
        return max(self.above, key=lambda s: s.z_mm)

    def max_zenith_rad(self) -> float:
        """Largest zenith angle that can cross the highest and the lowest station (rad)."""
        top, bottom = self.generation_plane, min(self.below, key=lambda s: s.z_mm)
        dx = max(top.x_range_mm[1], bottom.x_range_mm[1]) - min(top.x_range_mm[0], bottom.x_range_mm[0])
        dy = max(top.y_range_mm[1], bottom.y_range_mm[1]) - min(top.y_range_mm[0], bottom.y_range_mm[0])
        return math.atan(math.hypot(dx, dy) / (top.z_mm - bottom.z_mm))

    def to_dict(self) -> dict:
        return {"above": [asdict(s) for s in self.above], "below": [asdict(s) for s in self.below]}

    @classmethod
    def from_dict(cls, d: dict) -> "Detector":
        def station(s):
            return Station(s["z_mm"], tuple(s["x_range_mm"]), tuple(s["y_range_mm"]), s["resolution_mm"], s["efficiency"])

        return cls(tuple(station(s) for s in d["above"]), tuple(station(s) for s in d["below"]))


def default_detector(
    block_size_mm: tuple[float, float, float],
    gap_mm: float = 50.0,
    lever_arm_mm: float = 400.0,
    margin_mm: float = 0.0,
    resolution_mm: float = 2.0 / math.sqrt(12.0),
    efficiency: float = 0.98,
) -> Detector:
    """Two stations above and two below a block at the origin, covering its footprint.

    Stations sit ``gap_mm`` from the faces and ``lever_arm_mm`` apart (PHYSICS.md section 4:
    0.3-0.5 m lever arm, 2 mm fibre pitch, efficiency ~0.98).
    """
    sx, sy, sz = block_size_mm
    xr, yr = (-margin_mm, sx + margin_mm), (-margin_mm, sy + margin_mm)

    def plane(z):
        return Station(z, xr, yr, resolution_mm, efficiency)

    above = (plane(sz + gap_mm + lever_arm_mm), plane(sz + gap_mm))
    below = (plane(-gap_mm), plane(-gap_mm - lever_arm_mm))
    return Detector(above, below)


@dataclass
class MeasuredTracks:
    """Fitted straight lines, evaluated at reference heights.

    ``x(z) = x_ref + tx * (z_ref - z)``; slopes are per unit of downward travel.
    """

    x_mm: torch.Tensor
    y_mm: torch.Tensor
    tx: torch.Tensor
    ty: torch.Tensor
    z_ref_mm: float
    ok: torch.Tensor = field(default=None)

    def select(self, mask: torch.Tensor) -> "MeasuredTracks":
        """Return the tracks where ``mask`` is true."""
        return MeasuredTracks(self.x_mm[mask], self.y_mm[mask], self.tx[mask], self.ty[mask], self.z_ref_mm,
                              None if self.ok is None else self.ok[mask])


def _hits(stations, x, y, tx, ty, z_ref, generator):
    """Measured hits ``(S, N)`` and a validity mask for straight lines given at ``z_ref``."""
    zs, xs, ys, ok = [], [], [], []
    for st in stations:
        dz = z_ref - st.z_mm
        xt, yt = x + tx * dz, y + ty * dz
        noise = torch.randn((2,) + x.shape, generator=generator, device=x.device, dtype=x.dtype)
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        inside = (xt >= st.x_range_mm[0]) & (xt < st.x_range_mm[1]) & (yt >= st.y_range_mm[0]) & (yt < st.y_range_mm[1])
        zs.append(st.z_mm)
        xs.append(xt + st.resolution_mm * noise[0])
        ys.append(yt + st.resolution_mm * noise[1])
        ok.append(inside & (u < st.efficiency))
    return zs, torch.stack(xs), torch.stack(ys), torch.stack(ok)


def _fit_lines(zs, xs, ys, ok, z_ref) -> MeasuredTracks:
    """Unweighted least-squares line through the valid hits; needs two or more per muon."""
    w = ok.to(xs.dtype)
    d = torch.tensor([z_ref - z for z in zs], dtype=xs.dtype, device=xs.device)[:, None]  # downward distance
    sw, sd, sdd = w.sum(0), (w * d).sum(0), (w * d * d).sum(0)
    det = (sw * sdd - sd * sd).clamp_min(1e-12)

    def fit(v):
        sv, sdv = (w * v).sum(0), (w * d * v).sum(0)
        slope = (sw * sdv - sd * sv) / det
        return (sv - slope * sd) / sw.clamp_min(1), slope

    x0, tx = fit(xs)
    y0, ty = fit(ys)
    return MeasuredTracks(x0, y0, tx, ty, z_ref, sw >= 2)


def measure_tracks(stations, x, y, tx, ty, z_ref_mm, fit_z_ref_mm, generator) -> MeasuredTracks:
    """Hits of true straight lines on ``stations`` and the fitted measured line.

    Args:
        stations: the stations on one side of the block.
        x, y, tx, ty: the true lines at height ``z_ref_mm`` (straight on this side).
        fit_z_ref_mm: height at which the fitted line is reported (e.g. the block face).
        generator: torch generator on the muons' device.
    """
    zs, xs, ys, ok = _hits(stations, x, y, tx, ty, z_ref_mm, generator)
    return _fit_lines(zs, xs, ys, ok, fit_z_ref_mm)
