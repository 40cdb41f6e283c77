import pytest
import torch

from volumetric.physics.detector import default_detector
from volumetric.physics.materials import get_material
from volumetric.physics.statistics import ChannelAccumulator
from volumetric.schema import CHANNEL_NAMES
from volumetric.physics.simulate import SimulationCounts, iter_exposures
from volumetric.physics.transport import MaterialGrid

SHAPE, VOXEL = (20, 20, 10), 10.0
BAR = (slice(None), slice(8, 12), slice(4, 6))


def bar_grid() -> MaterialGrid:
    """200 x 200 x 100 mm of concrete with one 40 x 20 mm steel bar along x."""
    c, s = get_material("concrete"), get_material("steel")
    inv = torch.full(SHAPE, 1 / c.x0_mm)
    stopping = torch.full(SHAPE, c.stopping_power_mev_per_mm)
    inv[BAR], stopping[BAR] = 1 / s.x0_mm, s.stopping_power_mev_per_mm
    return MaterialGrid(inv, stopping, (VOXEL,) * 3)


DETECTOR = default_detector((200, 200, 100), gap_mm=20, lever_arm_mm=200)


def simulate(days, seed=1, chunk_muons=4000, on_chunk=None, counts=None):
    exposures = iter_exposures(bar_grid(), DETECTOR, days, seed, chunk_muons=chunk_muons, on_chunk=on_chunk,
                               progress=False, counts=counts)
    return {e.days: e.sums for e in exposures}


def test_checkpoints_are_prefixes_and_add_up():
    """PHYSICS.md 8.6: disjoint day sums equal the longer exposure, for every channel (counts exactly)."""
    chunks = []
    volumes = simulate([0.05, 0.1], on_chunk=chunks.append)
    t = torch.cat([c.t_s for c in chunks])
    lines = [torch.cat([getattr(c, k) for c in chunks]) for k in ("in_pos_mm", "in_dir", "out_pos_mm", "out_dir")]
    points = torch.cat([c.poca.point_mm for c in chunks])
    theta = torch.cat([c.poca.theta_rad for c in chunks])
    first, second = ChannelAccumulator(SHAPE, (VOXEL,) * 3), ChannelAccumulator(SHAPE, (VOXEL,) * 3)
    early = t <= 0.05 * 86400
    first.add(*(x[early] for x in lines), points[early], theta[early])
    second.add(*(x[~early] for x in lines), points[~early], theta[~early])
    assert len(chunks) > 2
    counts = [CHANNEL_NAMES.index(n) for n in ("count", "count_above_threshold", "path_count",
                                                  "path_count_above_threshold")]
    assert torch.equal(volumes[0.05][counts], first.volumes()[counts])
    assert torch.equal(volumes[0.1][counts], (first.volumes() + second.volumes())[counts])
    assert torch.allclose(volumes[0.05], first.volumes(), rtol=1e-12, atol=1e-12)
    assert torch.allclose(volumes[0.1], first.volumes() + second.volumes(), rtol=1e-12, atol=1e-9)
    assert volumes[0.1][0].sum() > 1.5 * volumes[0.05][0].sum()
    assert volumes[0.1][CHANNEL_NAMES.index("path_count")].sum() > 5 * volumes[0.1][0].sum()


def test_same_seed_same_bytes_other_seed_differs():
    a, b, c = simulate([0.03]), simulate([0.03]), simulate([0.03], seed=2)
    assert torch.equal(a[0.03], b[0.03])
    assert not torch.equal(a[0.03], c[0.03])


def test_steel_scatters_more_than_concrete_in_the_poca_image():
    volumes = simulate([0.1], chunk_muons=20000)[0.1]
    mean_theta2 = volumes[1] / volumes[0].clamp_min(1)
    steel = mean_theta2[BAR][volumes[0][BAR] > 0].mean()
    concrete = mean_theta2[:, :5, 4:6][volumes[0][:, :5, 4:6] > 0].mean()
    assert steel > 2 * concrete


def test_generated_count_follows_the_rate():
    counts = SimulationCounts()
    simulate([0.02], counts=counts)
    plane = DETECTOR.generation_plane
    from volumetric.physics.muons import EcoMugFlux

    flux = EcoMugFlux(theta_max_rad=DETECTOR.max_zenith_rad())
    area_m2 = (plane.x_range_mm[1] - plane.x_range_mm[0]) * (plane.y_range_mm[1] - plane.y_range_mm[0]) * 1e-6
    mean = flux.window_rate_hz_per_m2 * area_m2 * 0.02 * 86400
    assert abs(counts.generated - mean) < 5 * mean**0.5
    assert 0 < counts.accepted < counts.generated


@pytest.mark.parametrize("days", [[], [1.0, 0.5], [0.0], [float("nan")]])
def test_bad_checkpoints(days):
    with pytest.raises(ValueError, match="checkpoints_days"):
        simulate(days)


@pytest.mark.parametrize(("progress", "name"), [(True, "simulate: 100%"), ("simulate case_0003", "simulate case_0003: 100%")])
def test_the_progress_bar_is_named(progress, name, capsys):
    list(iter_exposures(bar_grid(), DETECTOR, [0.01], 1, chunk_muons=4000, progress=progress))
    err = capsys.readouterr().err
    assert name in err and "chunk" in err and "muon chunks" not in err
