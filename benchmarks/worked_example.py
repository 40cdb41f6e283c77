"""The talk's worked example: the 1 m reference block segmented from a short and a long exposure.

The block (``examples/reference_block.json``: rebar grids, tendon ducts, voids) is simulated once at
the models' voxel size (``benchmarks/separability.py --reference DIR`` writes such a case: 1, 5, 20
and 100 full-scale-equivalent days at 5 mm). Each segmenter run is applied to two exposures and every
true object of the block is reported: found or not (>= 50% of its voxels labelled its class), the
fraction covered, its depth, and the z-smear of the predicted mask, with Dice per class.

The models are conditioned on the exposure of their training dataset, whose blocks are smaller (a
different detector acceptance), so the same days do not mean the same image. The exposure given to a
model is therefore matched by what the image holds: the case's measured PoCA points per voxel
(``simulation.json`` occupancy) interpolated on the training dataset's measured occupancy curve
(``dataset.json``), log-log. Usage::

    python benchmarks/worked_example.py --case runs/reference_5mm --data data/cpu \\
        --segmenter seg3d=study/cpu/runs/seg3d seg2d=study/cpu/runs/seg2d --out study/cpu/worked_example.md

Prints one JSON line (Dice per class and objects found per model and exposure).
"""

from __future__ import annotations

import argparse
import json
import warnings
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from volumetric.data.io import load_nifti, read_json_object  # noqa: E402
from volumetric.evaluation.metrics import dice_iou_per_class, match_objects  # noqa: E402
from volumetric.infer.files import read_input  # noqa: E402
from volumetric.infer.predictor import WindowSettings, checkpoint_file, load_model, predict  # noqa: E402
from volumetric.physics.geometry import load_geometry  # noqa: E402
from volumetric.schema import CLASS_NAMES  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", type=Path, required=True, help="simulated reference-block case folder")
    p.add_argument("--data", type=Path, required=True, help="the models' training dataset (its occupancy curve)")
    p.add_argument("--segmenter", nargs="+", required=True, help="NAME=RUN (a segment or joint run folder)")
    p.add_argument("--days", type=float, nargs=2, default=None,
                   help="the two case exposures (simulated days; default: shortest and longest)")
    p.add_argument("--out", type=Path, required=True, help="markdown section to write")
    p.add_argument("--device", default="auto", help="where windows run")
    return p.parse_args(argv)


def matched_days(poca_per_voxel: float, dataset_occupancy: dict[str, dict]) -> float:
    """Training-dataset days holding ``poca_per_voxel`` PoCA points per voxel (log-log interpolation)."""
    pairs = sorted((float(d), v["poca_points_per_voxel"]) for d, v in dataset_occupancy.items())
    days, occupancy = np.log([d for d, _ in pairs]), np.log([o for _, o in pairs])
    return float(math.exp(np.interp(math.log(poca_per_voxel), occupancy, days)))


def _key(occupancy: dict, days: float) -> str:
    return next(k for k in occupancy if math.isclose(float(k), days, rel_tol=1e-6))


def evaluate_model(model, case: Path, days: float, model_days: float, block, truth, voxel_mm: float) -> dict:
    raw = read_input(case, days)
    with warnings.catch_warnings():  # kept in pred.warnings and written into the markdown
        warnings.simplefilter("ignore")
        pred = predict(model, raw.raw, model_days, voxel_mm, settings=WindowSettings(), channels=raw.channels)
    label = pred.label.numpy()
    dice = dice_iou_per_class(label, truth)["dice"]
    matches = match_objects(block, label, voxel_mm, true_label=truth)
    return {"dice": {c: (None if np.isnan(v) else round(float(v), 3)) for c, v in zip(CLASS_NAMES, dice)},
            "objects": [m.to_dict() for m in matches], "warnings": list(pred.warnings)}


def _object_rows(results: dict, names: list[str], exposures: list[str]) -> list[str]:
    first = results[names[0]][exposures[0]]["objects"]
    header = "| object | size (mm) | depth (mm) | " + " | ".join(f"{n}, {e}" for n in names for e in exposures) + " |"
    lines = [header, "|---|---|---|" + "---|" * (len(names) * len(exposures))]
    for i, obj in enumerate(first):
        cells = []
        for n in names:
            for e in exposures:
                m = results[n][e]["objects"][i]
                cells.append("-" if not m["true_voxels"] else
                             f"{'found' if m['found'] else 'missed'} ({m['fraction']:.0%})")
        lines.append(f"| {obj['kind']} {obj['index']} | {obj['size_mm']:g} | {obj['depth_mm']:.0f} | "
                     + " | ".join(cells) + " |")
    return lines


def write_markdown(path: Path, results: dict, labels: dict[str, str], command: str) -> None:
    names, exposures = list(results), list(labels)
    lines = ["## Worked example: the talk's 1 m reference block", "",
             f"Generated by `{command}`. Exposures: " + "; ".join(f"{e}: {labels[e]}" for e in exposures) + ".", "",
             "| model | exposure | " + " | ".join(f"Dice {c}" for c in CLASS_NAMES[1:]) + " |",
             "|---|---|" + "---|" * (len(CLASS_NAMES) - 1)]
    for n in names:
        for e in exposures:
            dice = results[n][e]["dice"]
            lines.append(f"| {n} | {e} | " + " | ".join("-" if dice[c] is None else f"{dice[c]:.3f}"
                                                       for c in CLASS_NAMES[1:]) + " |")
    warnings = sorted({w for per in results.values() for r in per.values() for w in r["warnings"]})
    lines += ["", *(f"Warning: {w}." for w in warnings)] if warnings else []
    lines += ["", "Every true object (found = at least half its voxels labelled its class):", "",
              *_object_rows(results, names, exposures)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    args = parse_args(argv)
    simulation = read_json_object(args.case / "simulation.json")
    dataset = read_json_object(args.data / "dataset.json")
    voxel_mm, occupancy = float(simulation["voxel_mm"]), simulation["occupancy"]
    checkpoints = sorted(float(d) for d in simulation["checkpoints_days"])
    chosen = args.days or (checkpoints[0], checkpoints[-1])
    block, (truth, _) = load_geometry(args.case / "geometry.json"), load_nifti(args.case / "label.nii.gz")
    truth = np.asarray(truth, np.int64)
    scale = float(dataset.get("sim_days_per_equivalent_day") or 1.0)
    results, labels = {}, {}
    for spec in args.segmenter:
        name, _, run = spec.partition("=")
        model = load_model(checkpoint_file(run), args.device)
        results[name] = {}
        for days in chosen:
            poca = occupancy[_key(occupancy, days)]["poca_points_per_voxel"]
            model_days = matched_days(poca, dataset["measured_occupancy"])
            tag = f"{model_days / scale:.3g} d (full-scale eq.)"
            labels[tag] = (f"case {days:g} simulated days, {poca:.3g} PoCA points/voxel -> the model's "
                           f"{model_days:.4g} training days ({model_days / scale:.3g} full-scale-equivalent)")
            results[name][tag] = evaluate_model(model, args.case, days, model_days, block, truth, voxel_mm)
    command = " ".join(["python", "benchmarks/worked_example.py", *(argv if argv is not None else sys.argv[1:])])
    write_markdown(args.out, results, labels, command)
    print(json.dumps({n: {e: {"dice": r["dice"], "found": sum(o["found"] for o in r["objects"]),
                              "objects": len(r["objects"])} for e, r in per.items()} for n, per in results.items()}))


if __name__ == "__main__":
    main()
