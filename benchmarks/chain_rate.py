"""Generated muons/s of the simulation chain of one checkout; prints one JSON line.

Runs ``iter_exposures`` on the reference block at 2 mm for ``--days`` (one exposure written at
the end) with the ``volumetric`` package of ``--repo`` (default: this checkout), so another
commit can be timed side by side with this one, e.g. before and after a change::

    git worktree add /tmp/before <commit>
    for seed in 1 2 3; do
        python benchmarks/chain_rate.py --repo /tmp/before --threads 1 --seed $seed
        python benchmarks/chain_rate.py --threads 1 --kernel numba --seed $seed
    done

``--kernel`` is passed only when given (commits before the kernels do not take it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kernel", default=None, help="auto, torch or numba (omit for commits without kernels)")
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--voxel-mm", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    repo = args.repo.resolve()
    sys.path.insert(0, str(repo))
    import torch

    import volumetric
    from volumetric.data.case import material_grid
    from volumetric.physics.detector import default_detector
    from volumetric.physics.geometry import load_geometry, rasterise
    from volumetric.physics.simulate import SimulationCounts, iter_exposures

    if not Path(volumetric.__file__).resolve().is_relative_to(repo):
        raise SystemExit(f"imported volumetric from {volumetric.__file__}, not from {repo}")
    torch.set_num_threads(args.threads)
    block = load_geometry(repo / "examples" / "reference_block.json")
    grid = material_grid(rasterise(block, args.voxel_mm))
    detector = default_detector(block.size_mm)
    kernel = {} if args.kernel is None else {"kernel": args.kernel}
    list(iter_exposures(grid, detector, [0.02], seed=99, progress=False, **kernel))  # warm-up: tables, compilation
    counts = SimulationCounts()
    start = time.perf_counter()
    list(iter_exposures(grid, detector, [args.days], seed=args.seed, progress=False, counts=counts, **kernel))
    seconds = time.perf_counter() - start
    print(json.dumps({"benchmark": "chain_rate", "repo": str(repo), "threads": args.threads,
                      "kernel": args.kernel or "default", "days": args.days, "seconds": round(seconds, 2),
                      "generated": counts.generated, "accepted": counts.accepted,
                      "generated_per_s": round(counts.generated / seconds)}))


if __name__ == "__main__":
    main()
