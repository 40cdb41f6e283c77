"""Throughput of the simulation chain at full scale; prints one JSON line.

Chain: EcoMug generation -> upper stations -> transport through the reference block at 2 mm
(500 x 500 x 100 voxels, 100 slabs) -> lower stations -> PoCA -> voxel statistics (all channels).
Reports generated muons per second (median of repeats) for each kernel (``torch``, the reference,
and the fused ``numba`` kernels) and CPU thread count, measured side by side in one run with the
configurations interleaved, their ratios, the per-stage seconds of a chunk, and, when
``muograph`` imports, our PoCA against ``muograph``'s ``POCA.compute_poca_points`` on identical
tracks. With CUDA present the chain is timed on the GPU too, with its speedup over the CPU.

    python benchmarks/simulate.py [--days 1] [--repeats 3] [--voxel-mm 2] [--threads 1 2]
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
from volumetric.schema import CHANNEL_NAMES
from volumetric.physics.statistics import ChannelAccumulator
from volumetric.physics.simulate import SimulationCounts, iter_exposures
from volumetric.physics.transport import TrackState, transport_through_block

ROOT = Path(__file__).resolve().parent.parent


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def chain_seconds(grid, detector, days, method, device, kernel, seed) -> tuple[float, SimulationCounts]:
    """Seconds to simulate ``days`` (one exposure written at the end) and the counts."""
    counts = SimulationCounts()
    _sync(device)
    start = time.perf_counter()
    for _ in iter_exposures(grid, detector, [days], seed=seed, method=method, device=device, progress=False,
                            counts=counts, kernel=kernel):
        pass
    _sync(device)
    return time.perf_counter() - start, counts


def chain_rates(grid, detector, days, configs, repeats, device="cpu") -> dict:
    """Median generated and accepted muons/s per ``(name, method, kernel, threads)`` config.

    The configurations are interleaved repeat by repeat, so a slow spell of a shared machine
    hits them alike; each config is warmed up (compiled) once first.
    """
    rates = {name: ([], []) for name, *_ in configs}
    for repeat in range(-1, repeats):
        for name, method, kernel, threads in configs:
            torch.set_num_threads(threads)
            seconds, counts = chain_seconds(grid, detector, days if repeat >= 0 else days / 10, method, device,
                                            kernel, seed=max(repeat, 0))
            if repeat >= 0:
                rates[name][0].append(counts.generated / seconds)
                rates[name][1].append(counts.accepted / seconds)
    return {name: {"generated_per_s": round(statistics.median(g)), "accepted_per_s": round(statistics.median(a)),
                   "runs": len(g)} for name, (g, a) in rates.items()}


def stage_times(grid, detector, n_seconds: float, device, kernel: str, n_chunks: int) -> tuple[dict, tuple]:
    """Seconds per stage per chunk, averaged over ``n_chunks`` chunks (the code path of ``simulate_chunk``).

    The statistics accumulate across the chunks as in a simulation (path tracks held back and
    added in batches). ``n_chunks`` untimed chunks go first: they compile the kernels and touch
    the sums' memory (the first write to each page of a fresh 1.8 GB accumulator faults), so
    the figures are the steady state of a long simulation.
    """
    flux = EcoMugFlux(theta_max_rad=detector.max_zenith_rad())
    plane = detector.generation_plane
    gen = torch.Generator(device=device).manual_seed(0)
    stats = ChannelAccumulator(grid.shape, grid.voxel_mm, grid.origin_mm, CHANNEL_NAMES, device=device, kernel=kernel)
    t = dict.fromkeys(("generate", "detect_in", "transport", "detect_out", "poca", "voxelise"), 0.0)
    counts = dict.fromkeys(("muons", "transported", "accepted"), 0)

    timed = False

    def tick(name, fn):
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        t[name] += (time.perf_counter() - start) * timed
        return out

    for chunk in range(2 * n_chunks):
        if chunk == n_chunks:
            stats.flush()
            timed = True
        muons = tick("generate", lambda: flux.sample_plane(0.0, n_seconds, plane.x_range_mm, plane.y_range_mm,
                                                           chunk, device))
        top = grid.top_z_mm
        incoming = tick("detect_in", lambda: measure_tracks(detector.above, muons.x_mm, muons.y_mm, muons.tx,
                                                            muons.ty, plane.z_mm, top, gen))
        counts["muons"] += len(muons) * timed
        muons, incoming = muons.select(incoming.ok), incoming.select(incoming.ok)  # as simulate_chunk
        drop = plane.z_mm - top
        state = TrackState(muons.x_mm + muons.tx * drop, muons.y_mm + muons.ty * drop, muons.tx, muons.ty,
                           muons.p_gev, torch.ones(len(muons), dtype=torch.bool, device=device))
        out = tick("transport", lambda: transport_through_block(grid, state, gen, method="straight", kernel=kernel))
        outgoing = tick("detect_out", lambda: measure_tracks(detector.below, out.x_mm, out.y_mm, out.tx, out.ty,
                                                             0.0, 0.0, gen))
        keep = outgoing.ok & out.alive
        p1 = torch.stack([incoming.x_mm, incoming.y_mm, torch.full_like(incoming.x_mm, top)], -1)[keep]
        v1 = torch.stack([incoming.tx, incoming.ty, -torch.ones_like(incoming.tx)], -1)[keep]
        p2 = torch.stack([outgoing.x_mm, outgoing.y_mm, torch.zeros_like(outgoing.x_mm)], -1)[keep]
        v2 = torch.stack([outgoing.tx, outgoing.ty, -torch.ones_like(outgoing.tx)], -1)[keep]
        result = tick("poca", lambda: poca(p1, v1, p2, v2, fallback_z_mm=0.5 * top))
        lines = (p1, v1 / v1.norm(dim=-1, keepdim=True), p2, v2 / v2.norm(dim=-1, keepdim=True))
        tick("voxelise", lambda: stats.add(*lines, result.point_mm, result.theta_rad))
        counts["transported"] += len(muons) * timed
        counts["accepted"] += int(keep.sum()) * timed
    tick("voxelise", stats.flush)  # the last held-back path tracks
    per_chunk = {k: round(v / n_chunks, 4) for k, v in t.items()}
    total = sum(per_chunk.values())
    return {"seconds_per_chunk": per_chunk, "share": {k: round(v / total, 3) for k, v in per_chunk.items()},
            "per_chunk": {k: v // n_chunks for k, v in counts.items()}}, (p1, v1, p2, v2, result)


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
    parser.add_argument("--days", type=float, default=1.0,
                        help="exposure per timed run (1 d: 100 chunks, 11.4M generated muons at 2 mm; the one "
                             "exposure written at the end costs ~2 s at 2 mm, ~10%% of a run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--voxel-mm", type=float, default=2.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--kernels", nargs="+", choices=("torch", "numba"), default=["torch", "numba"])
    parser.add_argument("--stepwise", action="store_true", help="also time the stepwise method (torch, 1 thread)")
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
    configs = [(f"straight_{k}_threads{n}", "straight", k, n) for n in args.threads for k in args.kernels]
    configs += [("stepwise_torch_threads1", "stepwise", "torch", 1)] if args.stepwise else []
    if not args.stages_only:
        result["cpu"] = chain_rates(grid, detector, args.days, configs, args.repeats)
        result["ratios"] = _ratios(result["cpu"], args.threads, args.kernels)
    torch.set_num_threads(min(args.threads))
    result["stages_cpu"] = {}
    for kernel in args.kernels:
        result["stages_cpu"][kernel], tracks = stage_times(grid, detector, 800.0, "cpu", kernel, n_chunks=8)
    result["poca_vs_muograph"] = against_muograph(*tracks)
    if torch.cuda.is_available():
        gpu = grid.to("cuda")
        gpu.slabs
        result["cuda"] = chain_rates(gpu, detector, args.days * 10, [("straight_torch", "straight", "torch", 1)],
                                     args.repeats, device="cuda")
        best_cpu = max((r["generated_per_s"] for r in result["cpu"].values()), default=None)
        if best_cpu:
            result["cuda_speedup_over_best_cpu"] = round(result["cuda"]["straight_torch"]["generated_per_s"] / best_cpu,
                                                         2)
        result["stages_cuda"], _ = stage_times(gpu, detector, 800.0, "cuda", "torch", n_chunks=8)
        result["cuda_device"] = torch.cuda.get_device_name()
    print(json.dumps(result))


def _ratios(rates: dict, threads: list[int], kernels: list[str]) -> dict:
    """numba / torch at each thread count, and each kernel's rate at n threads over 1 thread."""
    rate = lambda k, n: rates[f"straight_{k}_threads{n}"]["generated_per_s"]  # noqa: E731
    out = {}
    if {"torch", "numba"} <= set(kernels):
        out.update({f"numba_over_torch_threads{n}": round(rate("numba", n) / rate("torch", n), 2) for n in threads})
        out[f"numba_threads{max(threads)}_over_torch_threads1"] = round(rate("numba", max(threads))
                                                                      / rate("torch", min(threads)), 2)
    if len(threads) > 1:
        out.update({f"{k}_threads{n}_over_threads{min(threads)}": round(rate(k, n) / rate(k, min(threads)), 2)
                    for k in kernels for n in threads if n != min(threads)})
    return out


if __name__ == "__main__":
    main()
