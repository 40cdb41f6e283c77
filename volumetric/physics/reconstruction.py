"""Point of Closest Approach (PoCA) reconstruction and per-voxel scattering statistics.

PoCA of the incoming line ``p1 + s v1`` and outgoing line ``p2 + t v2``, cross-product form
(shared/docs/PHYSICS.md section 5; the textbook ``a c - b^2`` form loses precision at small
angles)::

    n = v1 x v2,   s = ((p2 - p1) x v2) . n / |n|^2,   t = ((p2 - p1) x v1) . n / |n|^2

The PoCA is the midpoint of the two closest points, the distance of closest approach (DCA) is
their separation, and the scattering angle is ``atan2(|v1 x v2|, v1 . v2)``. Computed in float64.

The per-voxel statistics built from PoCA points and measured lines live in
``volumetric.physics.statistics`` (channels declared in ``volumetric.schema``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["PocaResult", "poca"]

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
