"""``docs/results.md`` from the study's evaluation summaries (``benchmarks/study_cpu.py``).

Every number in the report is read from ``<study>/eval/<model>/summary.json`` (written by
``evaluate.py``) or ``<study>/train/<model>.json`` (the training summary); the plots are copied
next to the report. Exposures are given in dataset days and, for the ``cpu`` preset, in
full-scale-equivalent days (x15.625: the same expected muons per voxel as the 2 mm reference,
see docs/dataset_format.md).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from volumetric.dataset import CLASS_NAMES  # noqa: E402

CLASSES = CLASS_NAMES[1:]  # foreground classes
FULL_PER_CPU_DAY = 15.625  # (5 mm / 2 mm)^3: muons per voxel of a cpu-preset day vs a full-preset day
LABELS = {
    "up3d": "3D upsampler (cWGAN-GP)",
    "up2d": "2D slice-wise upsampler (cWGAN-GP)",
    "seg3d": "3D segmenter, raw input",
    "seg2d": "2D slice-wise segmenter, raw input",
    "seg3d_up": "3D segmenter, raw + 3D-upsampled input",
    "joint3d": "3D joint model",
}
MODEL_SOURCE = {"up3d": "upsampled", "up2d": "upsampled", "seg3d": "raw", "seg2d": "raw",
                "seg3d_up": "upsampled", "joint3d": "joint"}


def _fmt(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _days(d: float, scale: str) -> str:
    return f"{d:.3g} ({d * FULL_PER_CPU_DAY:.3g})" if scale == "cpu" else f"{d:.3g}"


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _load(evaluations: dict[str, Path]) -> dict[str, dict]:
    return {name: json.loads((folder / "summary.json").read_text()) for name, folder in evaluations.items()}


def _per(summary: dict, source: str, days: float) -> dict:
    table = summary["per_exposure"].get(source, {})
    return table.get(str(days)) or table.get(f"{days:g}") or {}


def _quality_table(summaries, scale) -> list[str]:
    image_models = [n for n in ("up3d", "up2d", "joint3d") if n in summaries]
    if not image_models:
        return []
    first = summaries[image_models[0]]
    lines = ["| input days (full-eq.) | raw SSIM | " + " | ".join(f"{n} SSIM" for n in image_models)
             + " | raw PSNR dB | " + " | ".join(f"{n} PSNR dB" for n in image_models) + " |",
             "|---" * (2 + 2 * len(image_models) + 1) + "|"]
    for d in first["exposures_days"]:
        raw = _per(first, "raw", d)
        ssim = [_fmt(_per(summaries[n], MODEL_SOURCE[n], d).get("ssim")) for n in image_models]
        psnr = [_fmt(_per(summaries[n], MODEL_SOURCE[n], d).get("psnr_db")) for n in image_models]
        lines.append(f"| {_days(d, scale)} | {_fmt(raw.get('ssim'))} | " + " | ".join(ssim)
                     + f" | {_fmt(raw.get('psnr_db'))} | " + " | ".join(psnr) + " |")
    return lines


def _equivalent_table(summaries, scale) -> list[str]:
    lines = ["| model | input days (full-eq.) | SSIM-equivalent days (full-eq.) | PSNR-equivalent days (full-eq.) |",
             "|---|---|---|---|"]
    for name in ("up3d", "up2d", "joint3d"):
        if name not in summaries:
            continue
        for d in summaries[name]["exposures_days"][:2]:
            row = _per(summaries[name], MODEL_SOURCE[name], d)
            cells = []
            for key in ("ssim", "psnr"):
                value, status = row.get(f"{key}_equivalent_days"), row.get(f"{key}_equivalent_status")
                text = _days(value, scale) if value is not None else "-"
                cells.append(text + (f" ({status})" if status not in (None, "inside") else ""))
            lines.append(f"| {name} | {_days(d, scale)} | {cells[0]} | {cells[1]} |")
    return lines


def _dice_table(summaries, scale) -> list[str]:
    seg_models = [n for n in ("seg3d", "seg2d", "seg3d_up", "joint3d") if n in summaries]
    lines = ["| model | input days (full-eq.) | " + " | ".join(f"Dice {c}" for c in CLASSES) + " | mean |",
             "|---|---|" + "---|" * (len(CLASSES) + 1)]
    for name in seg_models:
        for d in summaries[name]["exposures_days"]:
            row = _per(summaries[name], MODEL_SOURCE[name], d)
            dice = [_fmt(row.get(f"dice_{c}")) for c in CLASSES]
            lines.append(f"| {name} | {_days(d, scale)} | " + " | ".join(dice) + f" | {_fmt(row.get('mean_dice'))} |")
    return lines


def _void_table(summaries, scale) -> list[str]:
    lines = ["| model | input days | void diameter bin (mm): found / count |", "|---|---|---|"]
    for name in ("seg3d", "seg2d", "seg3d_up", "joint3d"):
        if name not in summaries:
            continue
        for d in summaries[name]["exposures_days"]:
            bins = _per(summaries[name], MODEL_SOURCE[name], d).get("void_detection_by_diameter") or []
            text = ", ".join(f"{b['lo_mm']:g}-{b['hi_mm']:g}: {b['found']}/{b['count']}" for b in bins if b["count"])
            lines.append(f"| {name} | {_days(d, scale)} | {text or 'no voids'} |")
    return lines


def _smear_table(summaries, scale) -> list[str]:
    lines = ["| source | input days (full-eq.) | z-smear of the image (mm) | z-smear of the class mask (mm) |",
             "|---|---|---|---|"]
    rows = [("raw", next(iter(summaries.values())), "raw")]
    rows += [(name, summaries[name], MODEL_SOURCE[name]) for name in LABELS if name in summaries]
    for label, summary, source in rows:
        for d in summary["exposures_days"][:2]:
            row = _per(summary, source, d)
            lines.append(f"| {label} | {_days(d, scale)} | {_fmt(row.get('z_smear_image_mm'))} | "
                         f"{_fmt(row.get('z_smear_label_mm'))} |")
    return lines


def _copy_plots(evaluations: dict[str, Path], target: Path) -> list[str]:
    target.mkdir(parents=True, exist_ok=True)
    links = []
    for name, folder in evaluations.items():
        pngs = sorted(folder.glob("*.png")) + sorted((folder / "montages").glob("*.png"))[:1]
        for png in pngs:
            dest = target / f"{name}_{png.name}"
            shutil.copyfile(png, dest)
            links.append(f"![{name} {png.stem}]({target.name}/{dest.name})")
    return links


def write_report(args, trained: dict[str, dict], evaluations: dict[str, Path], command: str) -> Path:
    """Write the markdown report ``args.results`` (and its plots folder next to it)."""
    summaries = _load(evaluations)
    first = next(iter(summaries.values()))
    data = first["data"]
    out = Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Results: the CPU-scale study" if args.scale == "cpu" else "# Results: quick smoke study (tiny preset)",
        "",
        f"Generated by `{command}` at commit `{_git_commit()}`; every number below is read from the",
        "evaluation summaries that run wrote (`evaluate.py` on the held-out test split); nothing is typed by hand.",
        "",
        f"Dataset `{data['name']}` (fingerprint `{data['fingerprint']}`), {data['voxel_mm']:g} mm voxels, "
        f"test cases: {', '.join(first['cases'])}. Exposures are dataset days"
        + (" and, in brackets, full-scale-equivalent days (x15.625: the same muons per voxel as the 2 mm "
           "reference)." if args.scale == "cpu" else "."),
        f"Training budget: {args.budget_min:g} wall-clock minutes per model on this 2-core machine, one model "
        "after the other (the machine was shared with other work, so budgets bought unequal step counts).",
        "",
        "| model | what | steps in budget | median step s | data-loader share |",
        "|---|---|---|---|---|",
    ]
    for name, summary in trained.items():
        lines.append(f"| {name} | {LABELS.get(name, name)} | {summary['steps']} | {_fmt(summary['median_step_s'])} | "
                     f"{_fmt(summary['data_share'], 2)} |")
    sections = [
        ("Image quality against the target (normalised mean theta^2, test cases mean)", _quality_table),
        ("Equivalent days (the raw exposure whose SSIM/PSNR curve the model output reaches)", _equivalent_table),
        ("Dice per class (NaN classes absent from both maps are skipped in means; '-' = absent)", _dice_table),
        ("Void detection by diameter (a void is found when >= 50% of its voxels are labelled void)", _void_table),
        ("z-smearing (extra spread along z as an equivalent Gaussian sigma; lower is better)", _smear_table),
    ]
    for title, table in sections:
        body = table(summaries, args.scale)
        if body:
            lines += ["", f"## {title}", "", *body]
    links = _copy_plots(evaluations, out.parent / (out.stem + "_plots"))
    if links:
        lines += ["", "## Plots", "", *links]
    out.write_text("\n".join(lines) + "\n")
    return out
