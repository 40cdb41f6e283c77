"""Evaluate trained runs on whole test blocks: ``python evaluate.py --run RUN_DIR --data DATA_DIR --out OUT_DIR``.

Thin entry point: parses arguments and calls :func:`volumetric.evaluation.evaluate.evaluate`, which
writes ``summary.json``, ``metrics.csv`` and PNG plots into ``--out`` (see that module for every
definition); prints one JSON line with the main numbers. Upsample -> segment: ``--run
UPSAMPLE_RUN --segmenter SEGMENT_RUN``. Errors the user can fix print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from volumetric.cli import device_arg, overlap_arg, positive_int


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, type=Path, help="run folder or checkpoint (upsample, segment or joint)")
    p.add_argument("--data", required=True, type=Path, help="dataset folder (dataset.json)")
    p.add_argument("--out", required=True, type=Path, help="report folder (summary.json, metrics.csv, PNGs)")
    p.add_argument("--split", default="test", choices=("train", "val", "test", "all"), help="cases to evaluate")
    p.add_argument("--segmenter", type=Path, default=None, help="segment run applied after an upsample --run")
    p.add_argument("--max-cases", type=positive_int, default=None, help="evaluate only the first N cases of the split")
    p.add_argument("--exposures", type=float, nargs="+", default=None,
                   help="input exposures in days (default: every checkpoint but the target)")
    p.add_argument("--roi", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="window in voxels (default: each run's validation window or patch size)")
    p.add_argument("--overlap", type=overlap_arg, default=0.25, help="window overlap fraction in [0, 1)")
    p.add_argument("--sw-batch-size", type=positive_int, default=4, help="windows per forward pass")
    p.add_argument("--device", type=device_arg, default="auto", help="where windows run: auto, cpu, cuda, cuda:N")
    p.add_argument("--tta", action="store_true", help="average predictions over the 8 XY flips/rotations")
    p.add_argument("--threshold", type=float, default=0.5, help="fraction of an object's voxels to count it found")
    p.add_argument("--overwrite", action="store_true", help="replace an existing summary in --out")
    p.add_argument("--no-plots", action="store_true", help="numbers only: no PNGs (plots and montages)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _headline(summary: dict) -> dict:
    keys = ("ssim", "psnr_db", "mae", "mean_dice", "ssim_equivalent_days")
    per = {s: {d: {k: e[k] for k in keys if k in e} for d, e in v.items()} for s, v in summary["per_exposure"].items()}
    return {"out": summary["out"], "cases": len(summary["cases"]), "per_exposure": per, "plots": summary["plots"]}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from volumetric.evaluation.evaluate import evaluate
        from volumetric.infer.predictor import WindowSettings, resolve_device

        device = resolve_device(args.device)
        if args.max_cases is not None and args.max_cases < 1:
            raise ValueError(f"--max-cases must be >= 1, got {args.max_cases}")
        settings = WindowSettings(roi_size=tuple(args.roi) if args.roi else None, overlap=args.overlap,
                                  sw_batch_size=args.sw_batch_size, amp=device.type == "cuda", tta=args.tta)
        summary = evaluate(args.run, args.data, args.out, args.split, args.segmenter, args.max_cases,
                           args.exposures, settings, str(device), args.threshold, args.overwrite,
                           progress=not args.no_progress, plots=not args.no_plots)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as err:
        print(f"evaluate.py: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(_headline({**summary, "out": str(args.out)})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
