import math

import pytest
import torch

from volumetric.physics.reconstruction import poca


def _unit(v):
    return v / v.norm(dim=-1, keepdim=True)


def test_lines_through_a_point_give_that_point():
    g = torch.Generator().manual_seed(0)
    n = 1000
    point = torch.rand(n, 3, generator=g, dtype=torch.float64) * 200
    v1 = _unit(torch.randn(n, 3, generator=g, dtype=torch.float64) * torch.tensor([0.3, 0.3, 1.0]) - torch.tensor([0, 0, 2.0]))
    v2 = _unit(v1 + 0.05 * torch.randn(n, 3, generator=g, dtype=torch.float64))
    p1 = point - 300 * v1
    p2 = point + 250 * v2
    r = poca(p1, v1, p2, v2)
    assert torch.allclose(r.point_mm, point, atol=1e-8)
    assert float(r.dca_mm.max()) < 1e-8
    expected = torch.acos((v1 * v2).sum(-1).clamp(-1, 1))
    assert torch.allclose(r.theta_rad, expected, atol=1e-7)


def test_skew_lines_distance_and_midpoint():
    p1 = torch.tensor([[0.0, 0.0, 0.0]])
    v1 = torch.tensor([[1.0, 0.0, 0.0]])
    p2 = torch.tensor([[5.0, -3.0, 7.0]])
    v2 = torch.tensor([[0.0, 1.0, 0.0]])
    r = poca(p1, v1, p2, v2)
    assert r.dca_mm.item() == pytest.approx(7.0)
    assert r.point_mm[0].tolist() == pytest.approx([5.0, 0.0, 3.5])
    assert r.theta_rad.item() == pytest.approx(math.pi / 2)


def test_float32_inputs_at_milliradian_angles_stay_accurate():
    """The cross-product form in float64 avoids the a*c - b^2 cancellation at small angles."""
    g = torch.Generator().manual_seed(1)
    n = 20000
    point = torch.rand(n, 3, generator=g, dtype=torch.float64) * torch.tensor([1000.0, 1000.0, 200.0])
    v1 = _unit(torch.tensor([0.1, -0.2, -1.0], dtype=torch.float64).expand(n, 3))
    kick = torch.randn(n, 3, generator=g, dtype=torch.float64) * 1e-3
    v2 = _unit(v1 + kick - (kick * v1).sum(-1, keepdim=True) * v1)
    r = poca((point - 400 * v1).float(), v1.float(), (point + 400 * v2).float(), v2.float())
    err = (r.point_mm - point).norm(dim=-1)
    assert float(torch.quantile(err, 0.999)) < 2.0  # mm; the a*c-b^2 float32 form gave ~44 mm


def test_parallel_lines_fall_back_to_a_plane_crossing():
    p1 = torch.tensor([[10.0, 20.0, 200.0]])
    v = torch.tensor([[0.0, 0.0, -1.0]])
    r = poca(p1, v, torch.tensor([[10.0, 20.0, 0.0]]), v, fallback_z_mm=100.0)
    assert bool(r.parallel.all())
    assert r.point_mm[0].tolist() == pytest.approx([10.0, 20.0, 100.0])
    assert r.theta_rad.item() == 0.0


def test_agrees_with_muograph_when_installed():
    """PHYSICS.md 8.4: same PoCA as muograph's POCA.compute_poca_points on the same tracks.

    muograph pins torch<2.4; install it beside ours with ``pip install --no-deps muograph`` plus
    its pure-Python dependencies (see README) to run this comparison.
    """
    poca_module = pytest.importorskip("muograph.reconstruction.poca")
    g = torch.Generator().manual_seed(5)
    n = 2000
    point = torch.rand(n, 3, generator=g, dtype=torch.float64) * torch.tensor([1000.0, 1000.0, 200.0])
    v1 = _unit(torch.randn(n, 3, generator=g, dtype=torch.float64) * torch.tensor([0.3, 0.3, 0.0]) + torch.tensor([0, 0, -1.0]))
    v2 = _unit(v1 + 0.03 * torch.randn(n, 3, generator=g, dtype=torch.float64))
    shift = torch.randn(n, 3, generator=g, dtype=torch.float64)  # skew lines, DCA of a few mm
    p1, p2 = point - 300 * v1, point + 250 * v2 + shift
    ours = poca(p1, v1, p2, v2).point_mm
    theirs = poca_module.POCA.compute_poca_points(p1.float(), p2.float(), v1.float(), v2.float()).double()
    assert float((ours - theirs).norm(dim=-1).median()) < 1e-2
