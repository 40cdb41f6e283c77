"""Measure the PoCA density that calibrates the dataset presets; prints one JSON line.

A preset checkpoint labelled D full-scale days must hold the same mean PoCA points per voxel
inside the block as the 1 m x 1 m x 0.2 m reference block at 2 mm after D days. That depends on
acceptance (detector over the block's footprint, muons that leave through a side face, PoCA
points that land outside the block), so it is measured here, not assumed:

* reference: ``examples/reference_block.json`` with its default detector for ``--reference-days``;
* each preset: the mean over ``--blocks`` of its random blocks (``case_block(preset, seed, i)``)
  with the preset's detector for ``--preset-days`` each.

Density = PoCA points inside the block per mm^3 per day. The simulated days of a checkpoint
labelled D are ``D * (2 mm)^3 * rho_reference / (voxel^3 * rho_preset)``; the script prints that
factor (``sim_days_per_equivalent_day``) per preset, which ``volumetric.data.build.PRESETS`` records.

    python benchmarks/calibrate_presets.py [--presets cpu tiny] [--blocks 4]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from volumetric.data.case import material_grid
from volumetric.data.build import PRESETS, case_block
from volumetric.physics.detector import default_detector
from volumetric.physics.geometry import load_geometry, rasterise
from volumetric.physics.simulate import iter_exposures

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_VOXEL_MM = 2.0


def poca_density(block, voxel_mm: float, days: float, seed: int) -> dict:
    """PoCA points inside ``block`` per mm^3 per day, from one simulation of ``days``."""
    raster = rasterise(block, voxel_mm)
    grid = material_grid(raster)
    exposure = list(iter_exposures(grid, default_detector(block.size_mm), [days], seed, progress=False,
                                   channels=("count",)))[-1]
    volume_mm3 = float(raster.label.size) * voxel_mm**3
    points = exposure.occupancy["poca_points_per_voxel"] * raster.label.size
    return {"points": int(round(points)), "muons_accepted": exposure.occupancy["muons"],
            "density_per_mm3_per_day": points / volume_mm3 / days}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["cpu", "tiny"])
    parser.add_argument("--blocks", type=int, default=4, help="random blocks per preset")
    parser.add_argument("--reference-days", type=float, default=0.1)
    parser.add_argument("--preset-days", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    reference = poca_density(load_geometry(ROOT / "examples" / "reference_block.json"), 10.0, args.reference_days,
                             args.seed)
    rho_ref = reference["density_per_mm3_per_day"]
    result = {"benchmark": "calibrate_presets", "reference": reference,
              "reference_poca_per_2mm_voxel_per_day": rho_ref * REFERENCE_VOXEL_MM**3, "presets": {}}
    for name in args.presets:
        preset = PRESETS[name]
        runs = [poca_density(case_block(preset, args.seed, i), preset.voxel_mm, args.preset_days, args.seed + i)
                for i in range(args.blocks)]
        rho = sum(r["density_per_mm3_per_day"] for r in runs) / len(runs)
        result["presets"][name] = {
            "density_per_mm3_per_day": rho,
            "density_over_reference": rho / rho_ref,
            "per_block": [round(r["density_per_mm3_per_day"] / rho_ref, 4) for r in runs],
            "sim_days_per_equivalent_day": REFERENCE_VOXEL_MM**3 * rho_ref / (preset.voxel_mm**3 * rho),
        }
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
