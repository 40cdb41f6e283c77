"""Point of Closest Approach (PoCA) reconstruction and per-voxel scattering statistics.

PoCA of the incoming line ``p1 + s v1`` and outgoing line ``p2 + t v2``, cross-product form
(shared/docs/PHYSICS.md section 5; the textbook ``a c - b^2`` form loses precision at small
angles)::

    n = v1 x v2,   s = ((p2 - p1) x v2) . n / |n|^2,   t = ((p2 - p1) x v1) . n / |n|^2

The PoCA is the midpoint of the two closest points, the distance of closest approach (DCA) is
their separation, and the scattering angle is ``atan2(|v1 x v2|, v1 . v2)``. Computed in float64.

Per voxel we keep additive sufficient statistics of the muons whose PoCA falls in it: the count
``N``, ``sum theta^2`` (rad^2) and ``sum theta^4`` (rad^4); mean theta^2, RMS and log-metrics
follow from them, and disjoint exposures add exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["PocaResult", "poca", "VoxelStatistics", "STATISTIC_NAMES"]

STATISTIC_NAMES = ("count", "sum_theta2_rad2", "sum_theta4_rad4")
PARALLEL_EPS = 1e-14  # |v1 x v2|^2 below this: lines parallel, PoCA undefined


@dataclass
class PocaResult:
    """PoCA points ``(N, 3)`` mm, scattering angles ``(N,)`` rad, DCA ``(N,)`` mm, float64.

    ``parallel`` marks pairs whose PoCA is undefined (no measurable scattering); their point is
    the incoming line's crossing of ``fallback_z_mm`` and their angle is 0 (or tiny).
    """

    point_mm: torch.Tensor
    theta_rad: torch.Tensor
    dca_mm: torch.Tensor
    parallel: torch.Tensor


def poca(p1, v1, p2, v2, fallback_z_mm: float | None = None) -> PocaResult:
    """PoCA of two sets of lines.

    Args:
        p1, v1: points on and directions of the incoming lines, ``(N, 3)``.
        p2, v2: the same for the outgoing lines. Directions need not be unit vectors.
        fallback_z_mm: height at which to place the point of (near) parallel pairs; ``None``
            places it at ``p1``.
    """
    p1, v1, p2, v2 = (t.to(torch.float64) for t in (p1, v1, p2, v2))
    v1 = v1 / torch.linalg.vector_norm(v1, dim=-1, keepdim=True)
    v2 = v2 / torch.linalg.vector_norm(v2, dim=-1, keepdim=True)
    n = torch.linalg.cross(v1, v2)
    n2 = (n * n).sum(-1)
    parallel = n2 < PARALLEL_EPS
    safe_n2 = torch.where(parallel, torch.ones_like(n2), n2)
    w = p2 - p1
    s = (torch.linalg.cross(w, v2) * n).sum(-1) / safe_n2
    t = (torch.linalg.cross(w, v1) * n).sum(-1) / safe_n2
    c1 = p1 + s[:, None] * v1
    c2 = p2 + t[:, None] * v2
    point = 0.5 * (c1 + c2)
    dca = torch.linalg.vector_norm(c1 - c2, dim=-1)
    theta = torch.atan2(torch.sqrt(n2), (v1 * v2).sum(-1))
    if bool(parallel.any()):
        if fallback_z_mm is None:
            fallback = p1
        else:
            fallback = p1 + ((fallback_z_mm - p1[:, 2]) / v1[:, 2])[:, None] * v1
        point = torch.where(parallel[:, None], fallback, point)
        dca = torch.where(parallel, torch.zeros_like(dca), dca)
    return PocaResult(point, theta, dca, parallel)


class VoxelStatistics:
    """Running per-voxel sums ``(count, sum theta^2, sum theta^4)`` on a regular grid (float64, CPU).

    Points are assigned by integer floor of ``(point - origin) / voxel``; points outside the
    grid are ignored (and counted in ``outside``). O(N) scatter-add, never an N x voxels matrix.
    """

    def __init__(self, shape: tuple[int, int, int], voxel_mm, origin_mm=(0.0, 0.0, 0.0)):
        self.shape = tuple(int(s) for s in shape)
        self.voxel_mm = torch.tensor(voxel_mm, dtype=torch.float64)
        self.origin_mm = torch.tensor(origin_mm, dtype=torch.float64)
        self.sums = torch.zeros((3, self.shape[0] * self.shape[1] * self.shape[2]), dtype=torch.float64)
        self.outside = 0

    def add(self, point_mm: torch.Tensor, theta_rad: torch.Tensor) -> None:
        """Accumulate muons with PoCA ``point_mm`` ``(N, 3)`` and angle ``theta_rad`` ``(N,)``."""
        point_mm, theta_rad = point_mm.detach().cpu().double(), theta_rad.detach().cpu().double()
        ijk = torch.floor((point_mm - self.origin_mm) / self.voxel_mm).long()
        size = torch.tensor(self.shape)
        inside = ((ijk >= 0) & (ijk < size)).all(-1)
        self.outside += int((~inside).sum())
        ijk, theta2 = ijk[inside], theta_rad[inside] ** 2
        flat = (ijk[:, 0] * self.shape[1] + ijk[:, 1]) * self.shape[2] + ijk[:, 2]
        self.sums[0].index_add_(0, flat, torch.ones_like(theta2))
        self.sums[1].index_add_(0, flat, theta2)
        self.sums[2].index_add_(0, flat, theta2 * theta2)

    def volumes(self) -> torch.Tensor:
        """A copy of the sums as ``(3, X, Y, Z)`` float64 (channels ``STATISTIC_NAMES``)."""
        return self.sums.reshape((3,) + self.shape).clone()
