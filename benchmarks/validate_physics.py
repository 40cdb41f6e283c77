"""Validation figures of the transport against PDG/Highland; prints one JSON line.

For fixed momenta through 2 cm of iron and 20 cm of concrete (vertical muons, energy loss
off, as in the formula): sigma_theta / theta0, sigma_x / (L theta0 / sqrt 3) and corr(x, theta)
per transport method; the 1 mm against 10 mm step ratio; EcoMug sample summaries.
The tests assert the same quantities with fewer muons.

    python benchmarks/validate_physics.py [--muons 400000]
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from volumetric.physics.materials import get_material
from volumetric.physics.muons import MUON_MASS_GEV, EcoMugFlux
from volumetric.physics.transport import MaterialGrid, TrackState, highland_theta0_rad, transport_through_block


def slab(material: str, thickness_mm: float, voxel_mm: float) -> MaterialGrid:
    m = get_material(material)
    nz = int(round(thickness_mm / voxel_mm))
    return MaterialGrid(torch.full((2, 2, nz), 1 / m.x0_mm), torch.full((2, 2, nz), m.stopping_power_mev_per_mm),
                        (1e4, 1e4, voxel_mm), (-1e4, -1e4, 0.0))


def vertical(n: int, p_gev: float) -> TrackState:
    z = torch.zeros(n)
    return TrackState(z, z.clone(), z.clone(), z.clone(), torch.full((n,), p_gev), torch.ones(n, dtype=torch.bool))


def slab_figures(material, thickness_mm, p_gev, method, n, step_mm=None, seed=0) -> dict:
    grid = slab(material, thickness_mm, 1.0 if material == "steel" else 2.0)
    out = transport_through_block(grid, vertical(n, p_gev), torch.Generator().manual_seed(seed), method=method,
                                  step_mm=step_mm, energy_loss=False)
    beta = p_gev / math.hypot(p_gev, MUON_MASS_GEV)
    theta0 = float(highland_theta0_rad(p_gev, thickness_mm / get_material(material).x0_mm, beta))
    theta = torch.atan(out.tx).double().numpy()
    x = out.x_mm.double().numpy()
    return {
        "sigma_theta_over_highland": round(float(theta.std() / theta0), 4),
        "sigma_x_over_pdg": round(float(x.std() / (thickness_mm * theta0 / math.sqrt(3))), 4),
        "corr_x_theta": round(float(np.corrcoef(x, theta)[0, 1]), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--muons", type=int, default=400_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {"benchmark": "validate_physics", "muons": args.muons, "slabs": {}}
    for material, thickness in (("steel", 20.0), ("concrete", 200.0)):
        for p in (1.0, 3.0, 10.0):
            for method in ("stepwise", "straight"):
                key = f"{material}_{thickness:g}mm_p{p:g}_{method}"
                result["slabs"][key] = slab_figures(material, thickness, p, method, args.muons)
    for method in ("stepwise", "straight"):
        fine = slab_figures("concrete", 200.0, 3.0, method, args.muons, step_mm=1.0, seed=1)
        coarse = slab_figures("concrete", 200.0, 3.0, method, args.muons, step_mm=10.0, seed=2)
        result[f"step_1mm_over_10mm_{method}"] = round(
            fine["sigma_theta_over_highland"] / coarse["sigma_theta_over_highland"], 4)
    full = EcoMugFlux(p_min_gev=0.01, theta_max_rad=math.radians(89.999))
    p, cos_theta, _ = full.sample_momentum_and_angles(args.muons, torch.Generator().manual_seed(3))
    result["ecomug_samples"] = {
        "mean_p_gev": round(float(p.mean()), 3),
        "median_p_gev": round(float(p.median()), 3),
        "fraction_theta_below_30deg": round(float((cos_theta > math.cos(math.radians(30))).double().mean()), 4),
        "window_fraction_0.1GeV_80deg": round(EcoMugFlux().window_fraction, 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
