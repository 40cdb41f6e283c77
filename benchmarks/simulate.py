"""Throughput of the simulation chain at full scale; prints one JSON line.

Chain: EcoMug generation -> upper stations -> transport through the reference block at 2 mm
(500 x 500 x 100 voxels, 100 slabs) -> lower stations -> PoCA -> voxel statistics.
Reports generated muons per second (median of repeats) per transport method and CPU thread
count, a per-stage breakdown of one chunk, and, when ``muograph`` imports, our PoCA against
``muograph``'s ``POCA.compute_poca_points`` on identical tracks (time ratio and agreement).
With CUDA present the chain is timed on the GPU too.

    python benchmarks/simulate.py [--days 0.01] [--repeats 3] [--voxel-mm 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from volumetric.data.case import material_grid
from volumetric.physics.detector import default_detector, measure_tracks
from volumetric.physics.geometry import load_geometry, rasterise
from volumetric.physics.muons import EcoMugFlux
from volumetric.physics.reconstruction import poca
from volumetric.schema import channels_of_source
from volumetric.physics.statistics import ChannelAccumulator
from volumetric.physics.simulate import SimulationCounts, iter_exposures
from volumetric.physics.transport import TrackState, transport_through_block

ROOT = Path(__file__).resolve().parent.parent


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def chain_rate(grid, detector, days, method, device, repeats) -> dict:
    """Median generated and accepted muons per second over ``repeats`` runs."""
    rates, accepted = [], []
    for r in range(repeats):
        counts = SimulationCounts()
        _sync(device)
        start = time.perf_counter()
        for _ in iter_exposures(grid, detector, [days], seed=r, method=method, device=device, progress=False,
                                counts=counts):
            pass
        _sync(device)
        seconds = time.perf_counter() - start
        rates.append(counts.generated / seconds)
        accepted.append(counts.accepted / seconds)
    return {"generated_per_s": statistics.median(rates), "accepted_per_s": statistics.median(accepted)}


def stage_times(grid, detector, n_seconds: float, device) -> dict:
    """Seconds per stage for one chunk of muons (same code path as ``simulate_chunk``)."""
    flux = EcoMugFlux(theta_max_rad=detector.max_zenith_rad())
    plane = detector.generation_plane
    gen = torch.Generator(device=device).manual_seed(0)
    t = {}

    def tick(name, fn):
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        t[name] = round(time.perf_counter() - start, 4)
        return out

    muons = tick("generate", lambda: flux.sample_plane(0.0, n_seconds, plane.x_range_mm, plane.y_range_mm, 1, device))
    top = grid.top_z_mm
    incoming = tick("detect_in", lambda: measure_tracks(detector.above, muons.x_mm, muons.y_mm, muons.tx, muons.ty,
                                                        plane.z_mm, top, gen))
    generated = len(muons)
    muons, incoming = muons.select(incoming.ok), incoming.select(incoming.ok)  # as simulate_chunk: measured ones
    drop = plane.z_mm - top
    state = TrackState(muons.x_mm + muons.tx * drop, muons.y_mm + muons.ty * drop, muons.tx, muons.ty, muons.p_gev,
                       torch.ones(len(muons), dtype=torch.bool, device=device))
    out = tick("transport", lambda: transport_through_block(grid, state, gen, method="straight"))
    outgoing = tick("detect_out", lambda: measure_tracks(detector.below, out.x_mm, out.y_mm, out.tx, out.ty, 0.0, 0.0,
                                                         gen))
    keep = outgoing.ok & out.alive
    p1 = torch.stack([incoming.x_mm, incoming.y_mm, torch.full_like(incoming.x_mm, top)], -1)[keep]
    v1 = torch.stack([incoming.tx, incoming.ty, -torch.ones_like(incoming.tx)], -1)[keep]
    p2 = torch.stack([outgoing.x_mm, outgoing.y_mm, torch.zeros_like(outgoing.x_mm)], -1)[keep]
    v2 = torch.stack([outgoing.tx, outgoing.ty, -torch.ones_like(outgoing.tx)], -1)[keep]
    result = tick("poca", lambda: poca(p1, v1, p2, v2, fallback_z_mm=0.5 * top))
    lines = (p1, v1 / v1.norm(dim=-1, keepdim=True), p2, v2 / v2.norm(dim=-1, keepdim=True))
    for source in ("poca", "path"):  # the statistics channels of each source (volumetric.schema)
        names = [c.name for c in channels_of_source(source)]
        stats = ChannelAccumulator(grid.shape, grid.voxel_mm, grid.origin_mm, names, device=device)
        tick(f"voxelise_{source}", lambda: stats.add(*lines, result.point_mm, result.theta_rad))
    t["muons"] = generated
    t["transported"] = len(muons)
    t["accepted"] = int(keep.sum())
    t["path_over_transport"] = round(t["voxelise_path"] / t["transport"], 3)
    return t, (p1, v1, p2, v2, result)


def median_stage_times(grid, detector, n_seconds: float, device, repeats: int) -> tuple[dict, tuple]:
    """Per-key median of :func:`stage_times` over ``repeats`` chunks (the first run warms up)."""
    runs = [stage_times(grid, detector, n_seconds, device) for _ in range(repeats + 1)][1:]
    return {k: statistics.median(r[0][k] for r in runs) for k in runs[0][0]}, runs[-1][1]


def against_muograph(p1, v1, p2, v2, ours, repeats=3) -> dict:
    try:
        from muograph.reconstruction.poca import POCA
    except Exception as err:  # optional: muograph pins an old torch, install it with --no-deps
        return {"available": False, "reason": f"{type(err).__name__}: {err}"[:200]}
    v1n = (v1 / v1.norm(dim=-1, keepdim=True)).float()
    v2n = (v2 / v2.norm(dim=-1, keepdim=True)).float()
    theirs_t, ours_t = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        theirs = POCA.compute_poca_points(p1.float(), p2.float(), v1n, v2n)
        theirs_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        poca(p1, v1, p2, v2)
        ours_t.append(time.perf_counter() - start)
    ok = ~ours.parallel & (ours.theta_rad > 1e-3)  # both defined and well conditioned
    diff = (theirs.double() - ours.point_mm)[ok].norm(dim=-1)
    return {
        "available": True,
        "muons": int(p1.shape[0]),
        "ours_s": statistics.median(ours_t),
        "muograph_s": statistics.median(theirs_t),
        "speedup": statistics.median(theirs_t) / statistics.median(ours_t),
        "median_diff_mm_theta_gt_1mrad": float(diff.median()),
        "p99_diff_mm_theta_gt_1mrad": float(torch.quantile(diff, 0.99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=0.05, help="exposure per timed run (0.05 d = 720k muons/m^2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--voxel-mm", type=float, default=2.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--stages-only", action="store_true", help="skip the chain rates: stage shares only")
    args = parser.parse_args()
    block = load_geometry(ROOT / "examples" / "reference_block.json")
    start = time.perf_counter()
    raster = rasterise(block, args.voxel_mm)
    result = {"benchmark": "simulate", "grid": list(raster.label.shape), "voxel_mm": args.voxel_mm,
              "rasterise_s": round(time.perf_counter() - start, 2), "days_per_run": args.days, "cpu": {}}
    grid = material_grid(raster)
    start = time.perf_counter()
    grid.slabs  # one-time: padded uint8 lookup tables (reused by every chunk of a simulation)
    result["lookup_tables_s"] = round(time.perf_counter() - start, 2)
    detector = default_detector(block.size_mm)
    for threads in [] if args.stages_only else args.threads:
        torch.set_num_threads(threads)
        for method in ("straight", "stepwise"):
            result["cpu"][f"{method}_threads{threads}"] = chain_rate(grid, detector, args.days, method, "cpu",
                                                                     args.repeats)
    torch.set_num_threads(min(args.threads))
    result["stages_one_chunk_cpu_s"], tracks = median_stage_times(grid, detector, 800.0, "cpu", args.repeats)
    result["poca_vs_muograph"] = against_muograph(*tracks)
    if torch.cuda.is_available():
        gpu = grid.to("cuda")
        gpu.slabs
        result["cuda"] = {m: chain_rate(gpu, detector, args.days * 10, m, "cuda", args.repeats)
                          for m in ("straight", "stepwise")}
        result["stages_one_chunk_cuda_s"], _ = stage_times(gpu, detector, 800.0, "cuda")
        result["cuda_device"] = torch.cuda.get_device_name()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
