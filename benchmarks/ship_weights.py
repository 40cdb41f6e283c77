"""Ship the study's models as the package's reference weights (``volumetric/weights/``).

Exports the chosen runs' ``best.pt`` as inference-only float16 checkpoints (adding the training
dataset's measured PoCA points per voxel, by which the predictor matches an input's exposure, to runs
trained before checkpoints recorded it), copies one held-out test block (its input at ``--days``,
default the 1-day-equivalent checkpoint, and its true label map) to ``tests/fixtures/heldout/``, and
writes ``volumetric/weights/manifest.json`` with each file's sha256 (checked by
:func:`volumetric.pretrained.pretrained_path` before a shipped file is used), the Dice that
``evaluate.py`` recorded for that block in the study (``dice_study``) and the Dice the exported
weights give on it (``dice_exported``). ``tests/test_pretrained.py`` checks the shipped weights reproduce the
recorded Dice. Usage::

    python benchmarks/ship_weights.py --study study/cpu --data data/cpu \
        --upsampler up3d --segmenter seg3d [--days 0.2515] [--overwrite]

The demo simulates the 1 m reference block at the models' voxel size; ``input_days`` in the manifest
is the exposure that gives that block the PoCA points per voxel of ``--equivalent-days`` full-scale days
(the 2 mm full-scale voxel holds (2 / voxel_mm)^3 of a voxel's muons: 0.064 days at 5 mm for 1 day,
measured 0.0988 against 0.0986 points per voxel in docs/separability.md).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from study_report import MODEL_SOURCE  # noqa: E402

from volumetric.data.io import exposure_filename  # noqa: E402
from volumetric.infer.checkpoint import export_weights, load_checkpoint  # noqa: E402
from volumetric.schema import CLASS_NAMES  # noqa: E402
from volumetric.data.dataset import dataset_occupancy, equivalent_days, load_dataset  # noqa: E402
from volumetric.pretrained import WEIGHTS_DIR, file_sha256  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "heldout"
FULL_SCALE_VOXEL_MM = 2.0  # the calibration reference: the 1 m block at 2 mm (volumetric.data.build)


def _heldout_days(meta: dict, days: float | None, equivalent: float) -> float:
    if days is not None:
        return days
    labels = equivalent_days(meta)
    match = [d for d, e in labels.items() if math.isclose(e, equivalent)]
    if not match:
        raise SystemExit(f"no dataset checkpoint is {equivalent:g} full-scale-equivalent days; pass --days")
    return match[0]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--upsampler", default="up3d")
    p.add_argument("--segmenter", default="seg3d")
    p.add_argument("--days", type=float, default=None,
                   help="held-out input exposure, dataset days (default: the 1-day-equivalent checkpoint)")
    p.add_argument("--equivalent-days", type=float, default=1.0,
                   help="full-scale-equivalent days of the demo's input")
    p.add_argument("--case", default=None, help="held-out case (default: the first test case)")
    p.add_argument("--overwrite", action="store_true")
    return p.parse_args(argv)


def _study_dice(study: Path, name: str, case: str, days: float) -> dict:
    summary = json.loads((study / "eval" / name / "summary.json").read_text())
    rows = [r for r in summary["rows"] if r["case"] == case and math.isclose(r["exposure_days"], days)
            and r["source"] == MODEL_SOURCE[name]]
    if not rows:
        raise SystemExit(f"no evaluation row for {name} on {case} at {days:g} days")
    return {c: rows[0].get(f"dice_{c}") for c in CLASS_NAMES}


def _exported_dice(segmenter: Path, case_dir: Path, days: float, voxel_mm: float) -> dict:
    import numpy as np

    from volumetric.data.io import load_nifti
    from volumetric.evaluation.metrics import dice_iou_per_class
    from volumetric.infer.predictor import load_model, predict
    from volumetric.infer.files import read_input

    raw, _, _, _, channels = read_input(case_dir / "input.nii.gz")
    label = predict(load_model(segmenter), raw, days, voxel_mm, channels=channels).label.numpy()
    truth, _ = load_nifti(case_dir / "label.nii.gz")
    dice = dice_iou_per_class(label, np.asarray(truth, np.int64), len(CLASS_NAMES))["dice"]
    return {c: None if np.isnan(v) else float(v) for c, v in zip(CLASS_NAMES, dice)}


def _model_entry(run: Path, file: Path) -> dict:
    """Manifest entry of one exported model: its provenance, size (bytes) and sha256."""
    ckpt = load_checkpoint(file)
    return {"file": file.name, "run": run.name, "task": ckpt["task"], "net": ckpt["net"]["name"],
            "step": ckpt["step"], "dataset": ckpt["data"].get("dataset_name"),
            "fingerprint": ckpt["data"].get("fingerprint"), "size_bytes": file.stat().st_size,
            "sha256": file_sha256(file)}


def main(argv=None) -> None:
    args = parse_args(argv)
    if (WEIGHTS_DIR / "manifest.json").exists():
        if not args.overwrite:
            raise SystemExit(f"{WEIGHTS_DIR}/manifest.json exists; pass --overwrite to replace the shipped weights")
        shutil.rmtree(WEIGHTS_DIR)
        shutil.rmtree(FIXTURE, ignore_errors=True)
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    info = load_dataset(args.data, check_data=False)
    case = args.case or info.meta["splits"]["test"][0]
    args.days = _heldout_days(info.meta, args.days, args.equivalent_days)
    updates = {"occupancy_poca_per_voxel": dataset_occupancy(info.meta)}
    source = args.data / "cases" / case
    FIXTURE.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / exposure_filename(args.days), FIXTURE / "input.nii.gz")
    for name in ("label.nii.gz", "geometry.json"):
        shutil.copyfile(source / name, FIXTURE / name)
    models = {}
    for role, name in (("upsampler", args.upsampler), ("segmenter", args.segmenter)):
        run = args.study / "runs" / name
        models[role] = _model_entry(run, export_weights(run / "checkpoints" / "best.pt", WEIGHTS_DIR / f"{name}.pt",
                                                        data_updates=updates))
    voxel_mm = float(info.meta["voxel_mm"])
    manifest = {
        "format": "volumetric-weights/1",
        "input_days": round(args.equivalent_days * (FULL_SCALE_VOXEL_MM / voxel_mm) ** 3, 6),
        "input_equivalent_days": args.equivalent_days,
        "voxel_mm": voxel_mm,
        "models": models,
        "heldout": {"case": case, "days": args.days, "fixture": "tests/fixtures/heldout",
                    "dice_study": _study_dice(args.study, args.segmenter, case, args.days),
                    "dice_exported": _exported_dice(WEIGHTS_DIR / f"{args.segmenter}.pt", FIXTURE, args.days,
                                                    voxel_mm)},
        "results": "docs/results.md",
    }
    (WEIGHTS_DIR / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(json.dumps(manifest))


if __name__ == "__main__":
    main()
