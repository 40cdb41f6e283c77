"""Simulation chain: cosmic muons -> detector -> block -> detector -> PoCA -> voxel statistics.

One simulation covers the longest exposure; every muon has a Poisson arrival time, and the
volume of a ``k``-day exposure is the prefix of the first ``k`` days (shared/docs/PHYSICS.md
section 6). Muons are streamed in chunks of fixed duration, so memory is bounded by the chunk
size and one set of running sums, whatever the exposure. Each chunk has its own seed derived
from ``(seed, chunk index)``: the same seed and chunk size give the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from volumetric.physics.detector import Detector, measure_tracks
from volumetric.physics.muons import SECONDS_PER_DAY, EcoMugFlux
from volumetric.physics.reconstruction import PocaResult, poca
from volumetric.schema import CHANNEL_NAMES, DEFAULT_THETA_THRESHOLD_RAD
from volumetric.physics.statistics import ChannelAccumulator
from volumetric.physics.transport import MaterialGrid, TrackState, transport_through_block

__all__ = ["DetectedMuons", "Exposure", "SimulationCounts", "simulate_chunk", "iter_exposures", "chunk_seeds"]


@dataclass
class DetectedMuons:
    """Accepted muons of one chunk: truth, measured lines at the block faces, PoCA.

    All tensors have length N. ``in_pos_mm`` is the measured incoming line at the block's top
    face, ``out_pos_mm`` the outgoing line at its bottom face; directions are unit vectors
    pointing downward (``dz < 0``).
    """

    p_gev: torch.Tensor
    t_s: torch.Tensor
    in_pos_mm: torch.Tensor
    in_dir: torch.Tensor
    out_pos_mm: torch.Tensor
    out_dir: torch.Tensor
    poca: PocaResult


@dataclass
class Exposure:
    """The statistics of the cumulative exposure ``[0, days]``.

    Attributes:
        days: exposure (days).
        sums: ``(C, X, Y, Z)`` float64 sums of the channels named in ``channels``.
        channels: channel names (``volumetric.schema``).
        occupancy: measured mean PoCA points and path tracks per voxel of the grid, muons, PoCA
            points outside the grid (``ChannelAccumulator.occupancy``).
    """

    days: float
    sums: torch.Tensor
    channels: tuple[str, ...]
    occupancy: dict


@dataclass
class SimulationCounts:
    """How many muons were generated, stopped in the block (of those the upper stations measured, the
    only ones transported), accepted, and voxelised."""

    generated: int = 0
    stopped: int = 0
    accepted: int = 0
    poca_outside_grid: int = 0
    chunks: int = 0
    extra: dict = field(default_factory=dict)


def chunk_seeds(seed: int, chunk_index: int) -> tuple[int, int]:
    """Two independent 63-bit seeds (generation, transport+detector) for one chunk."""
    state = np.random.SeedSequence([int(seed), int(chunk_index)]).generate_state(2, dtype=np.uint64)
    return int(state[0] >> np.uint64(1)), int(state[1] >> np.uint64(1))


def _line(x, y, tx, ty, z_mm):
    pos = torch.stack([x, y, torch.full_like(x, z_mm)], -1)
    direction = torch.stack([tx, ty, -torch.ones_like(tx)], -1)
    return pos.double(), direction.double() / torch.linalg.vector_norm(direction.double(), dim=-1, keepdim=True)


def simulate_chunk(
    grid: MaterialGrid,
    detector: Detector,
    flux: EcoMugFlux,
    t_range_s: tuple[float, float],
    seed: int,
    chunk_index: int,
    method: str = "straight",
    device="cpu",
    kernel: str = "auto",
) -> tuple[DetectedMuons, dict]:
    """Generate, transport, detect and reconstruct the muons of one time window.

    Returns:
        The accepted muons and a dict of counts (``generated``, ``stopped``, ``accepted``). Only the
        muons the upper stations measured are transported (the others cannot be accepted): the
        same accepted sample in distribution, ~30% less transport. ``kernel`` is passed to
        :func:`transport_through_block`.
    """
    gen_seed, run_seed = chunk_seeds(seed, chunk_index)
    top, bottom = grid.top_z_mm, grid.origin_mm[2]
    plane = detector.generation_plane
    muons = flux.sample_plane(*t_range_s, plane.x_range_mm, plane.y_range_mm, seed=gen_seed, device=device)
    generator = torch.Generator(device=device).manual_seed(run_seed)
    incoming = measure_tracks(detector.above, muons.x_mm, muons.y_mm, muons.tx, muons.ty, plane.z_mm, top, generator)
    seen = incoming.ok  # only muons the upper stations measured can be accepted: transport just those (~70%)
    muons, incoming = muons.select(seen), incoming.select(seen)
    drop = plane.z_mm - top
    entry = TrackState(
        muons.x_mm + muons.tx * drop, muons.y_mm + muons.ty * drop, muons.tx, muons.ty, muons.p_gev,
        torch.ones_like(muons.p_gev, dtype=torch.bool),
    )
    exit_ = transport_through_block(grid, entry, generator, method=method, kernel=kernel)
    outgoing = measure_tracks(detector.below, exit_.x_mm, exit_.y_mm, exit_.tx, exit_.ty, bottom, bottom, generator)
    keep = outgoing.ok & exit_.alive
    in_pos, in_dir = _line(incoming.x_mm[keep], incoming.y_mm[keep], incoming.tx[keep], incoming.ty[keep], top)
    out_pos, out_dir = _line(outgoing.x_mm[keep], outgoing.y_mm[keep], outgoing.tx[keep], outgoing.ty[keep], bottom)
    result = poca(in_pos, in_dir, out_pos, out_dir, fallback_z_mm=0.5 * (top + bottom))
    detected = DetectedMuons(muons.p_gev[keep], muons.t_s[keep], in_pos, in_dir, out_pos, out_dir, result)
    counts = {"generated": len(seen), "stopped": int((~exit_.alive).sum()), "accepted": int(keep.sum())}
    return detected, counts


def _checkpoint_seconds(checkpoints_days) -> list[float]:
    days = [float(d) for d in checkpoints_days]
    if not days or any(not (math.isfinite(d) and d > 0) for d in days) or sorted(set(days)) != days:
        raise ValueError(f"checkpoints_days must be strictly increasing positive days, got {checkpoints_days}")
    return [d * SECONDS_PER_DAY for d in days]


def iter_exposures(
    grid: MaterialGrid,
    detector: Detector,
    checkpoints_days,
    seed: int,
    flux: EcoMugFlux | None = None,
    method: str = "straight",
    chunk_muons: int = 1 << 17,
    device="cpu",
    on_chunk: Callable[[DetectedMuons], None] | None = None,
    progress: bool | str = True,
    counts: SimulationCounts | None = None,
    channels=CHANNEL_NAMES,
    theta_threshold_rad: float = DEFAULT_THETA_THRESHOLD_RAD,
    kernel: str = "auto",
) -> Iterator[Exposure]:
    """Simulate up to the last checkpoint and yield ``(days, statistics)`` at each checkpoint.

    Args:
        grid: scattering maps of the block; also the grid of the output statistics.
        detector: tracking stations (see ``default_detector``).
        checkpoints_days: strictly increasing exposures in days (fractions allowed).
        seed: master seed.
        flux: muon generator; default EcoMug at 166.7 Hz/m^2 up to the detector's acceptance.
        method: transport method, ``"straight"`` (fast) or ``"stepwise"`` (reference).
        chunk_muons: expected muons per chunk (sets the chunk duration; part of the seed contract).
        device: torch device for generation, transport and PoCA; sums are kept on the CPU.
        on_chunk: called with every chunk's accepted muons (e.g. a track writer).
        progress: show a progress bar over muon chunks (tqdm, stderr), named ``simulate`` or, when a
            string, named by it (e.g. ``"simulate case_0003"``).
        counts: filled in with running totals if given.
        channels: statistics channels to accumulate (``volumetric.schema``).
        theta_threshold_rad: angle threshold of the ``*_above_threshold`` channels (rad).
        kernel: ``"auto"`` (the fused Numba kernels on the CPU, torch elsewhere), ``"torch"`` (the
            reference) or ``"numba"``, for transport and path statistics (``volumetric.physics.kernels``).
            The kernels agree to rounding; bytes are reproducible for one kernel and any thread count.

    Yields:
        One :class:`Exposure` per checkpoint (cumulative over ``[0, days]``).
    """
    detector.check_clears(grid.origin_mm[2], grid.top_z_mm)
    stops_s = _checkpoint_seconds(checkpoints_days)
    flux = flux or EcoMugFlux(theta_max_rad=detector.max_zenith_rad())
    plane = detector.generation_plane
    area_m2 = (plane.x_range_mm[1] - plane.x_range_mm[0]) * (plane.y_range_mm[1] - plane.y_range_mm[0]) * 1e-6
    chunk_s = chunk_muons / (flux.window_rate_hz_per_m2 * area_m2)
    n_chunks = int(math.ceil(stops_s[-1] / chunk_s - 1e-9))
    stats = ChannelAccumulator(grid.shape, grid.voxel_mm, grid.origin_mm, channels, theta_threshold_rad, device,
                               kernel)
    counts = counts if counts is not None else SimulationCounts()
    grid = grid.to(device)
    next_stop = 0
    label = progress if isinstance(progress, str) else "simulate"
    for index in tqdm(range(n_chunks), desc=label, unit="chunk", disable=not progress):
        t0, t1 = index * chunk_s, min((index + 1) * chunk_s, stops_s[-1])
        detected, chunk_counts = simulate_chunk(grid, detector, flux, (t0, t1), seed, index, method, device, kernel)
        for key, value in chunk_counts.items():
            setattr(counts, key, getattr(counts, key) + value)
        counts.chunks += 1
        if on_chunk is not None:
            on_chunk(detected)
        t_s = detected.t_s.cpu()
        start = 0
        while next_stop < len(stops_s) and stops_s[next_stop] <= t1:
            end = int(torch.searchsorted(t_s, torch.tensor(stops_s[next_stop], dtype=t_s.dtype), right=True))
            _accumulate(stats, detected, start, end)
            start = end
            counts.poca_outside_grid = stats.poca_outside
            yield Exposure(stops_s[next_stop] / SECONDS_PER_DAY, stats.volumes(), stats.channels, stats.occupancy())
            next_stop += 1
        _accumulate(stats, detected, start, None)
        counts.poca_outside_grid = stats.poca_outside


def _accumulate(stats: ChannelAccumulator, detected: DetectedMuons, start: int, end: int | None) -> None:
    part = slice(start, end)
    stats.add(detected.in_pos_mm[part], detected.in_dir[part], detected.out_pos_mm[part], detected.out_dir[part],
              detected.poca.point_mm[part], detected.poca.theta_rad[part])
