"""Which voxel statistic separates rebar, ducts and voids from concrete: CNR and AUC per exposure.

Scores every feature of :mod:`volumetric.evaluation.separability` (each statistics channel and the means
derived from them, raw and 3x3x3-smoothed) for every exposure, pooled over the given cases, and
writes a Markdown report; prints one JSON line with the headline numbers.

    python benchmarks/separability.py --reference runs/reference_5mm      # simulate once, then score
    python benchmarks/separability.py --data DATASET [--split test|val|train|all]
    python benchmarks/separability.py --cases CASE [CASE ...] [--equivalent-scale S]

``--reference OUTDIR`` simulates ``examples/reference_block.json`` at 5 mm voxels for 1, 5, 20
and 100 days / 15.625 (unless OUTDIR already holds it): with the same block and detector, a
5 mm voxel collects the muons of a 2 mm voxel in (5/2)^3 = 15.625 times less time, so those
exposures are the 1, 5, 20 and 100-day full-scale (2 mm) equivalents and are labelled so.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

from volumetric.data.io import atomic_path
from volumetric.evaluation.separability import (
    SCORED_CLASSES,
    case_days,
    dataset_case_folders,
    dataset_equivalent_days,
    markdown_table,
    separability_table,
)

REPO = Path(__file__).resolve().parents[1]
REFERENCE_GEOMETRY = REPO / "examples" / "reference_block.json"
REFERENCE_VOXEL_MM = 5.0
REFERENCE_SCALE = (REFERENCE_VOXEL_MM / 2.0) ** 3  # 15.625: 5 mm voxel vs the 2 mm full-scale voxel
REFERENCE_FULL_SCALE_DAYS = (1, 5, 20, 100)
HEADLINE_POCA = ("mean_log_theta", "mean_theta2_rad2")
HEADLINE_PATH = "path_mean_log_theta"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="dataset folder (dataset.json, cases/)")
    source.add_argument("--cases", type=Path, nargs="+", help="case folders")
    source.add_argument("--reference", type=Path, metavar="OUTDIR",
                        help="simulate examples/reference_block.json at 5 mm into OUTDIR if absent, then score it")
    parser.add_argument("--split", default="test", choices=("train", "val", "test", "all"),
                        help="dataset split for --data (default test)")
    parser.add_argument("--days", type=float, nargs="+", help="exposures to score (default: all of the cases)")
    parser.add_argument("--trim-layers", type=int, default=2,
                        help="z-layers left out at the top and bottom faces (default 2)")
    parser.add_argument("--equivalent-scale", type=float,
                        help="label exposures with days * S full-scale-equivalent days (--data, --cases)")
    parser.add_argument("--out-md", type=Path, default=REPO / "docs" / "separability.md",
                        help="Markdown report (default docs/separability.md)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out-md")
    args = parser.parse_args(argv)
    if args.equivalent_scale is not None and (args.reference or not args.equivalent_scale > 0):
        parser.error("--equivalent-scale takes a positive number and is fixed at 15.625 for --reference")
    if args.out_md.exists() and not args.overwrite:
        parser.error(f"{args.out_md}: exists; pass --overwrite or choose another --out-md")
    return args


def reference_case(out_dir: Path) -> Path:
    """Simulate the reference block at 5 mm into ``out_dir`` unless a matching case is there."""
    days = [d / REFERENCE_SCALE for d in REFERENCE_FULL_SCALE_DAYS]
    simulation = out_dir / "simulation.json"
    if simulation.is_file():
        settings = json.loads(simulation.read_text())
        same = (math.isclose(settings.get("voxel_mm", 0), REFERENCE_VOXEL_MM)
                and len(settings.get("checkpoints_days", [])) == len(days)
                and all(math.isclose(a, b) for a, b in zip(settings["checkpoints_days"], days)))
        if not same:
            raise ValueError(f"{simulation}: not the 5 mm reference simulation (voxel_mm "
                             f"{settings.get('voxel_mm')}, checkpoints {settings.get('checkpoints_days')}); "
                             "choose another --reference folder")
        return out_dir
    from volumetric.data.case import simulate_case
    from volumetric.physics.geometry import load_geometry

    simulate_case(load_geometry(REFERENCE_GEOMETRY), out_dir, voxel_mm=REFERENCE_VOXEL_MM, checkpoints_days=days,
                  seed=0, progress=True)
    return out_dir


def resolve_input(args) -> tuple[list[Path], dict[float, float] | None, str]:
    """``(case folders, {days: equivalent days} or None, description of the input)``."""
    if args.reference:
        folder = reference_case(args.reference)
        equivalent = {d: d * REFERENCE_SCALE for d in case_days(folder)}
        return [folder], equivalent, (f"reference block `{REFERENCE_GEOMETRY.relative_to(REPO)}` at "
                                      f"{REFERENCE_VOXEL_MM:g} mm voxels, seed 0, in `{folder}`")
    if args.data:
        folders = dataset_case_folders(args.data, args.split)
        equivalent = dataset_equivalent_days(args.data)
        description = f"dataset `{args.data}`, split `{args.split}` ({len(folders)} cases)"
    else:
        folders = list(args.cases)
        equivalent = None
        description = f"{len(folders)} case folder(s): " + ", ".join(f"`{f}`" for f in folders)
    if args.equivalent_scale is not None:
        equivalent = {d: d * args.equivalent_scale for d in (args.days or case_days(folders[0]))}
    return folders, equivalent, description


def _pick(rows, days, feature, smoothed) -> dict | None:
    for row in rows:
        if row["days"] == days and row["feature"] == feature and row["smoothed"] == smoothed:
            return row
    return None


def _r(value) -> float | None:
    return round(value, 4) if value is not None and math.isfinite(value) else None


def headline(rows: list[dict]) -> list[dict]:
    """Per exposure: void AUC of the path features, rebar AUC/CNR of PoCA mean ln(theta) vs mean theta^2."""
    out = []
    for days in sorted({r["days"] for r in rows}):
        entry = {"days": days, "equivalent_days": next(r["equivalent_days"] for r in rows if r["days"] == days)}
        for smoothed, key in ((True, "smoothed"), (False, "raw")):
            row = _pick(rows, days, HEADLINE_PATH, smoothed)
            entry[f"void_auc_{HEADLINE_PATH}_{key}"] = _r(row["auc_void"]) if row else None
        path_rows = [r for r in rows if r["days"] == days and r["source"] == "path" and math.isfinite(r["auc_void"])]
        if path_rows:
            best = max(path_rows, key=lambda r: abs(r["auc_void"] - 0.5))
            entry["void_best_path_feature"] = {"feature": best["feature"], "smoothed": best["smoothed"],
                                               "auc": _r(best["auc_void"])}
        for feature in HEADLINE_POCA:
            for smoothed, key in ((False, "raw"), (True, "smoothed")):
                row = _pick(rows, days, feature, smoothed)
                entry[f"rebar_{feature}_{key}"] = (
                    {"auc": _r(row["auc_rebar"]), "cnr": _r(row["cnr_rebar"])} if row else None)
        out.append(entry)
    return out


def report(rows: list[dict], args, description: str) -> str:
    first = rows[0] if rows else {}
    counts = ", ".join(f"{c} {first.get(f'n_{c}', 0)}" for c in ("concrete", *SCORED_CLASSES))
    command = "python benchmarks/separability.py " + shlex.join(sys.argv[1:])
    return "\n".join([
        "# Separability of the voxel statistics",
        "",
        f"Command: `{command}`",
        "",
        f"Input: {description}.",
        "",
        f"Scored voxels (all but the top and bottom {args.trim_layers} z-layers, pooled over the cases): {counts}.",
        "",
        "Features (`volumetric.evaluation.separability`): each statistics channel as stored (a sum over the voxel's muons) "
        "and, for each sum, its mean per muon (PoCA) or per track (path): `mean_log_theta` = mean ln(theta), "
        "`mean_theta2_rad2` = mean theta^2 (rad^2), `fraction_above_threshold` = fraction of muons above the "
        "angle threshold, `path_*` the same over the tracks crossing the voxel. Voxels without muons get the "
        "feature's mean over the occupied voxels.",
        "",
        markdown_table(rows),
    ])


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        folders, equivalent, description = resolve_input(args)
        rows = separability_table(folders, args.days, args.trim_layers, equivalent_days=equivalent, progress=True)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        sys.exit(f"separability: error: {err}")
    with atomic_path(args.out_md) as tmp:
        tmp.write_text(report(rows, args, description))
    print(json.dumps({"benchmark": "separability", "cases": len(folders), "out_md": str(args.out_md),
                      "trim_layers": args.trim_layers, "exposures": headline(rows)}))


if __name__ == "__main__":
    main()
