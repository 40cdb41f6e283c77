import math

import numpy as np
import pytest
import torch

from volumetric.schema import CHANNEL_NAMES, THETA_FLOOR_RAD
from volumetric.physics.statistics import ChannelAccumulator

POCA3 = ("count", "sum_theta2_rad2", "sum_theta4_rad4")


def _vertical_lines(points):
    """Incoming and outgoing vertical lines through ``points`` (N, 3)."""
    down = torch.tensor([[0.0, 0.0, -1.0]], dtype=torch.float64).expand(len(points), 3)
    return points.clone(), down, points.clone(), down


def test_poca_channels_hand_computed():
    stats = ChannelAccumulator((2, 3, 4), voxel_mm=(10.0, 10.0, 5.0), channels=POCA3)
    points = torch.tensor([[1.0, 1.0, 1.0], [9.9, 29.0, 19.0], [9.0, 28.0, 16.0], [25.0, 0.0, 0.0], [-1.0, 5.0, 5.0]],
                          dtype=torch.float64)
    theta = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5], dtype=torch.float64)
    stats.add(*_vertical_lines(points), points, theta)
    vol = stats.volumes()
    assert stats.poca_outside == 2
    assert vol[0].sum() == 3
    assert vol[0, 0, 0, 0] == 1 and vol[1, 0, 0, 0] == pytest.approx(0.01)
    assert vol[0, 0, 2, 3] == 2
    assert vol[1, 0, 2, 3] == pytest.approx(0.04 + 0.09)
    assert vol[2, 0, 2, 3] == pytest.approx(0.2**4 + 0.3**4)


def test_log_and_threshold_channels_hand_computed():
    names = ("count", "sum_log_theta", "sum_log_theta_sq", "count_above_threshold")
    stats = ChannelAccumulator((1, 1, 1), (10.0, 10.0, 10.0), channels=names, theta_threshold_rad=0.02)
    points = torch.full((3, 3), 5.0, dtype=torch.float64)
    theta = torch.tensor([0.01, 0.03, 0.0], dtype=torch.float64)
    stats.add(*_vertical_lines(points), points, theta)
    vol = stats.volumes()[:, 0, 0, 0]
    logs = [math.log(0.01), math.log(0.03), math.log(THETA_FLOOR_RAD)]
    assert vol.tolist() == pytest.approx([3, sum(logs), sum(v * v for v in logs), 1])


def brute_force_path(shape, voxel, lines, poca_z, weights):
    """Independent reference: loop over tracks and layers in plain Python floats.

    A track adds ``weights[i]`` to the voxel where its line crosses the mid-plane of each layer:
    the incoming line at or above the PoCA depth (clamped to the block), the outgoing one below.
    """
    nx, ny, nz = shape
    out = np.zeros((len(weights[0]),) + tuple(shape))
    top = nz * voxel
    for i in range(len(poca_z)):
        split = min(max(poca_z[i], 0.0), top)
        for k in range(nz):
            z = (k + 0.5) * voxel
            pos, d = (lines[0][i], lines[1][i]) if z >= split else (lines[2][i], lines[3][i])
            s = (z - pos[2]) / d[2]
            x, y = pos[0] + s * d[0], pos[1] + s * d[1]
            ix, iy = math.floor(x / voxel), math.floor(y / voxel)
            if 0 <= ix < nx and 0 <= iy < ny:
                out[:, ix, iy, k] += weights[i]
    return out


def _random_tracks(n, shape, voxel, seed):
    rng = np.random.default_rng(seed)
    size = np.array(shape) * voxel
    top = size[2]
    # entry points spread beyond the footprint so that some tracks leave or enter through a side face
    entry = np.column_stack([rng.uniform(-0.3, 1.3, n) * size[0], rng.uniform(-0.3, 1.3, n) * size[1], np.full(n, top)])
    slopes_in = rng.uniform(-1.5, 1.5, (n, 2))
    d_in = np.column_stack([slopes_in, -np.ones(n)])
    d_in /= np.linalg.norm(d_in, axis=1, keepdims=True)
    poca_z = rng.uniform(-0.2, 1.2, n) * top  # some PoCA above or below the block
    poca = entry + ((poca_z - top) / d_in[:, 2])[:, None] * d_in
    poca[:, :2] += rng.normal(0, 0.3 * voxel, (n, 2))
    d_out = np.column_stack([slopes_in + rng.normal(0, 0.3, (n, 2)), -np.ones(n)])
    d_out /= np.linalg.norm(d_out, axis=1, keepdims=True)
    exit_ = poca + ((0.0 - poca[:, 2]) / d_out[:, 2])[:, None] * d_out
    theta = np.arccos(np.clip((d_in * d_out).sum(1), -1, 1))
    return (entry, d_in, exit_, d_out), poca, theta


@pytest.mark.parametrize("seed", [0, 1])
def test_path_channels_match_a_brute_force_traversal(seed):
    shape, voxel = (6, 5, 4), 10.0
    lines, poca, theta = _random_tracks(300, shape, voxel, seed)
    names = ("path_count", "path_sum_log_theta", "path_count_above_threshold")
    stats = ChannelAccumulator(shape, (voxel,) * 3, channels=names, theta_threshold_rad=0.2)
    stats.add(*(torch.from_numpy(a) for a in lines), torch.from_numpy(poca), torch.from_numpy(theta))
    weights = np.column_stack([np.ones_like(theta), np.log(np.maximum(theta, THETA_FLOOR_RAD)), theta > 0.2])
    expected = brute_force_path(shape, voxel, lines, poca[:, 2], weights)
    got = stats.volumes().numpy()
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[2], expected[2])
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-12, atol=1e-9)
    assert 0 < got[0].sum() < len(theta) * shape[2]  # some layers were missed through the side faces


def test_known_tracks_visit_known_voxels():
    """A vertical track, a 45-degree track leaving through the x face, and a PoCA-depth switch."""
    shape, voxel = (4, 2, 4), 10.0
    down = np.array([0.0, 0.0, -1.0])
    diag = np.array([1.0, 0.0, -1.0]) / math.sqrt(2)
    entry = np.array([[5.0, 5.0, 40.0], [21.0, 5.0, 40.0], [5.0, 15.0, 40.0]])
    d_in = np.stack([down, diag, down])
    # track 3 kinks at z = 20: below it goes straight down from x = 35
    exit_ = np.array([[5.0, 5.0, 0.0], [61.0, 5.0, 0.0], [35.0, 15.0, 0.0]])
    d_out = np.stack([down, diag, down])
    poca = np.array([[5.0, 5.0, 20.0], [41.0, 5.0, 20.0], [5.0, 15.0, 20.0]])
    theta = np.array([0.01, 0.01, 0.01])
    stats = ChannelAccumulator(shape, (voxel,) * 3, channels=("path_count",))
    stats.add(*(torch.from_numpy(a) for a in (entry, d_in, exit_, d_out, poca, theta)))
    hits = {tuple(int(v) for v in ijk) for ijk in np.argwhere(stats.volumes()[0].numpy() > 0)}
    vertical = {(0, 0, k) for k in range(4)}
    diagonal = {(2, 0, 3), (3, 0, 2)}  # x = 26, 36 at z = 35, 25; then x = 46, 56: outside through the x face
    kinked = {(0, 1, 3), (0, 1, 2), (3, 1, 1), (3, 1, 0)}
    assert hits == vertical | diagonal | kinked
    assert stats.volumes()[0].sum() == 10


def test_disjoint_batches_add_up_exactly_for_counts():
    shape, voxel = (5, 5, 5), 10.0
    lines, poca, theta = _random_tracks(2000, shape, voxel, 3)
    tensors = [torch.from_numpy(a) for a in (*lines, poca, theta)]
    whole, parts = ChannelAccumulator(shape, (voxel,) * 3), ChannelAccumulator(shape, (voxel,) * 3)
    whole.add(*tensors)
    parts.add(*(t[:777] for t in tensors))
    parts.add(*(t[777:] for t in tensors))
    counts = [CHANNEL_NAMES.index(n) for n in ("count", "count_above_threshold", "path_count",
                                                "path_count_above_threshold")]
    assert torch.equal(whole.volumes()[counts], parts.volumes()[counts])
    assert torch.allclose(whole.volumes(), parts.volumes(), rtol=1e-12, atol=1e-9)
    assert whole.occupancy() == parts.occupancy()


def test_occupancy_and_bad_channels():
    stats = ChannelAccumulator((2, 2, 2), (10.0, 10.0, 10.0))
    points = torch.tensor([[5.0, 5.0, 5.0], [50.0, 5.0, 5.0]], dtype=torch.float64)
    stats.add(*_vertical_lines(points), points, torch.tensor([0.01, 0.02], dtype=torch.float64))
    occ = stats.occupancy()
    assert occ["poca_points_per_voxel"] == pytest.approx(1 / 8) and occ["poca_outside_grid"] == 1
    assert occ["path_tracks_per_voxel"] == pytest.approx(2 / 8)  # the second track is outside the footprint
    with pytest.raises(ValueError, match="unknown statistics channel"):
        ChannelAccumulator((2, 2, 2), (1.0, 1.0, 1.0), channels=("count", "mean_theta"))
    with pytest.raises(ValueError, match="needs its count channel 'path_count'"):
        ChannelAccumulator((2, 2, 2), (1.0, 1.0, 1.0), channels=("path_sum_log_theta",))
