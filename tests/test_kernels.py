"""The fused Numba kernels compute the torch reference's sums (``volumetric.physics.kernels``)."""

import pytest
import torch

from volumetric.physics import kernels
from volumetric.physics.detector import default_detector
from volumetric.physics.materials import get_material
from volumetric.physics.muons import MUON_MASS_GEV
from volumetric.physics.simulate import SimulationCounts, iter_exposures
from volumetric.physics.statistics import ChannelAccumulator
from volumetric.physics.transport import MaterialGrid, TrackState, _line_integrals, _steps
from volumetric.schema import CHANNEL_NAMES


def random_grid(seed: int, shape=(12, 10, 8), voxel_mm=(4.0, 5.0, 3.0), origin_mm=(-20.0, 5.0, 10.0)) -> MaterialGrid:
    """Voxels drawn from concrete, steel and air: boundaries everywhere, non-cubic voxels, an offset origin."""
    materials = [get_material(name) for name in ("concrete", "steel", "air")]
    inv_x0 = torch.tensor([1.0 / m.x0_mm for m in materials])
    stopping = torch.tensor([m.stopping_power_mev_per_mm for m in materials])
    index = torch.randint(0, 3, shape, generator=torch.Generator().manual_seed(seed))
    return MaterialGrid(inv_x0[index], stopping[index], voxel_mm, origin_mm)


def random_muons(grid: MaterialGrid, n: int, seed: int) -> TrackState:
    """Muons on the top face, some entering beside the block, slopes up to 1.2, 0.12-20 GeV/c (some stop)."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda: torch.rand(n, generator=g, dtype=torch.float64)  # noqa: E731
    (x0, y0, _), (vx, vy, _) = grid.origin_mm, grid.voxel_mm
    width, depth = grid.shape[0] * vx, grid.shape[1] * vy
    x = x0 - 0.2 * width + 1.4 * width * rand()
    y = y0 - 0.2 * depth + 1.4 * depth * rand()
    p = torch.exp(torch.log(torch.tensor(0.12)) + torch.log(torch.tensor(20 / 0.12)) * rand())
    return TrackState(x, y, 2.4 * rand() - 1.2, 2.4 * rand() - 1.2, p, torch.ones(n, dtype=torch.bool))


def integrals(grid, state, kernel, energy_loss=True, step_mm=None):
    steps = list(_steps(grid.slabs, step_mm))
    energy0 = torch.sqrt(state.p_gev**2 + MUON_MASS_GEV**2)
    return _line_integrals(grid.slabs, steps, state, energy0, energy_loss, kernel)


@pytest.mark.parametrize("energy_loss,step_mm", [(True, None), (False, None), (True, 1.0)])
def test_line_integrals_match_the_torch_reference(energy_loss, step_mm):
    grid = random_grid(0)
    state = random_muons(grid, 4000, seed=1)
    reference = integrals(grid, state, "torch", energy_loss, step_mm)
    fused = integrals(grid, state, "numba", energy_loss, step_mm)
    exit_p = torch.sqrt((reference[4] ** 2 - MUON_MASS_GEV**2).clamp_min(0))
    kept = exit_p > 0.2  # near the end of its range 1/p^4 magnifies the reference's float32 energy sums
    assert kept.sum() > 3000
    if energy_loss:
        assert (~kept).sum() > 50  # the stopping muons are exercised too
    for name, ref, new in zip(("X/X0", "var_theta", "cov", "var_u", "exit_energy"), reference, fused):
        torch.testing.assert_close(new[kept], ref[kept], rtol=1e-6, atol=0, msg=name)
    # the muons that stop do so in both
    assert torch.equal(exit_p > 0.1, torch.sqrt((fused[4] ** 2 - MUON_MASS_GEV**2).clamp_min(0)) > 0.1)


def test_line_integrals_do_not_depend_on_the_thread_count():
    grid = random_grid(2)
    state = random_muons(grid, 3000, seed=3)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = integrals(grid, state, "numba")
        torch.set_num_threads(2)
        two = integrals(grid, state, "numba")
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(one, two))


def random_tracks(n: int, seed: int, size_mm=(48.0, 50.0, 24.0)):
    """Measured lines through a block, some leaving through the sides, PoCA above, inside and below it."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.rand(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    size = torch.tensor(size_mm, dtype=torch.float64)

    def line(z_mm):
        pos = torch.cat([rand(n, 2) * 1.2 * size[:2] - 0.1 * size[:2], torch.full((n, 1), z_mm)], 1)
        direction = torch.cat([2 * rand(n, 2) - 1, -torch.ones(n, 1)], 1)
        return pos, direction / direction.norm(dim=1, keepdim=True)

    poca = torch.cat([rand(n, 2) * size[:2], rand(n, 1) * 1.4 * size[2] - 0.2 * size[2]], 1)
    return (*line(float(size[2])), *line(0.0), poca, rand(n) * 0.05)


@pytest.mark.parametrize("batch", [1, 1 << 18])
def test_path_sums_match_the_torch_reference(batch):
    shape, voxel = (12, 10, 8), (4.0, 5.0, 3.0)
    sums = {}
    for kernel in ("torch", "numba"):
        stats = ChannelAccumulator(shape, voxel, channels=CHANNEL_NAMES, kernel=kernel, path_batch_tracks=batch)
        for seed in range(3):  # several adds: held back (large batch) or added at once (batch 1)
            stats.add(*random_tracks(700, seed))
        sums[kernel] = stats.volumes()
    assert sums["torch"][CHANNEL_NAMES.index("path_count")].sum() > 1000
    torch.testing.assert_close(sums["numba"], sums["torch"], rtol=1e-12, atol=1e-9)


def test_held_back_tracks_are_counted_when_read():
    stats = ChannelAccumulator((6, 6, 4), (10.0, 10.0, 10.0), channels=("path_count",), path_batch_tracks=10_000)
    stats.add(*random_tracks(50, 0, size_mm=(60.0, 60.0, 40.0)))
    assert stats.occupancy()["path_tracks_per_voxel"] > 0
    assert stats.volumes().sum() > 0


def test_kernel_choice():
    assert kernels.kernel_for("cpu") == "numba"
    assert kernels.kernel_for("cuda", "auto") == "torch"
    assert kernels.kernel_for("cpu", "torch") == "torch"
    with pytest.raises(ValueError, match="numba kernel runs on the CPU only"):
        kernels.kernel_for("cuda", "numba")
    with pytest.raises(ValueError, match="kernel must be one of"):
        kernels.kernel_for("cpu", "fast")


def test_simulations_agree_between_kernels():
    """Same seed, same random draws: only rounding separates the kernels, so the images agree closely."""
    grid = random_grid(4, shape=(10, 10, 6), voxel_mm=(10.0, 10.0, 10.0), origin_mm=(0.0, 0.0, 0.0))
    detector = default_detector((100.0, 100.0, 60.0))
    images, counts = {}, {}
    for kernel in ("torch", "numba"):
        counts[kernel] = SimulationCounts()
        (exposure,) = iter_exposures(grid, detector, [3.0], seed=5, progress=False, counts=counts[kernel],
                                     kernel=kernel)
        images[kernel] = exposure.sums
    assert counts["torch"].accepted == counts["numba"].accepted > 1000
    assert counts["torch"].stopped == counts["numba"].stopped
    torch.testing.assert_close(images["numba"], images["torch"], rtol=1e-6, atol=1e-6)
