"""``docs/results.md`` from the study's evaluation summaries (``benchmarks/study_cpu.py``).

Every number in the report is read from ``<study>/eval/<model>/summary.json`` (written by
``evaluate.py``) or ``<study>/train/<model>.json`` (the training summary); the plots are copied
next to the report. Exposures are given in dataset (simulated) days and, where ``dataset.json``
records them, in full-scale-equivalent days (the same mean PoCA points per voxel as the 1 m block
at 2 mm; see docs/dataset_format.md).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from volumetric.schema import CLASS_NAMES  # noqa: E402
from volumetric.data.dataset import equivalent_days  # noqa: E402

CLASSES = CLASS_NAMES[1:]  # foreground classes
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


def _days(d: float, equivalent: dict[float, float]) -> str:
    """Dataset days, with the full-scale-equivalent days in brackets when known."""
    label = next((e for k, e in equivalent.items() if math.isclose(k, d, rel_tol=1e-6)), None)
    return f"{d:.3g} ({label:.3g})" if label is not None else f"{d:.3g}"


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


def _quality_table(summaries, equivalent) -> list[str]:
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
        lines.append(f"| {_days(d, equivalent)} | {_fmt(raw.get('ssim'))} | " + " | ".join(ssim)
                     + f" | {_fmt(raw.get('psnr_db'))} | " + " | ".join(psnr) + " |")
    return lines


def _equivalent_table(summaries, equivalent) -> list[str]:
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
                text = _days(value, equivalent) if value is not None else "-"
                cells.append(text + (f" ({status})" if status not in (None, "inside") else ""))
            lines.append(f"| {name} | {_days(d, equivalent)} | {cells[0]} | {cells[1]} |")
    return lines


def _dice_table(summaries, equivalent) -> list[str]:
    seg_models = [n for n in ("seg3d", "seg2d", "seg3d_up", "joint3d") if n in summaries]
    lines = ["| model | input days (full-eq.) | " + " | ".join(f"Dice {c}" for c in CLASSES) + " | mean |",
             "|---|---|" + "---|" * (len(CLASSES) + 1)]
    for name in seg_models:
        for d in summaries[name]["exposures_days"]:
            row = _per(summaries[name], MODEL_SOURCE[name], d)
            dice = [_fmt(row.get(f"dice_{c}")) for c in CLASSES]
            lines.append(f"| {name} | {_days(d, equivalent)} | " + " | ".join(dice) + f" | {_fmt(row.get('mean_dice'))} |")
    return lines


def _void_table(summaries, equivalent) -> list[str]:
    lines = ["| model | input days | void diameter bin (mm): found / count |", "|---|---|---|"]
    for name in ("seg3d", "seg2d", "seg3d_up", "joint3d"):
        if name not in summaries:
            continue
        for d in summaries[name]["exposures_days"]:
            bins = _per(summaries[name], MODEL_SOURCE[name], d).get("void_detection_by_diameter") or []
            text = ", ".join(f"{b['lo_mm']:g}-{b['hi_mm']:g}: {b['found']}/{b['count']}" for b in bins if b["count"])
            lines.append(f"| {name} | {_days(d, equivalent)} | {text or 'no voids'} |")
    return lines


def _smear_table(summaries, equivalent) -> list[str]:
    lines = ["| source | input days (full-eq.) | z-smear of the image (mm) | z-smear of the class mask (mm) |",
             "|---|---|---|---|"]
    rows = [("raw", next(iter(summaries.values())), "raw")]
    rows += [(name, summaries[name], MODEL_SOURCE[name]) for name in LABELS if name in summaries]
    for label, summary, source in rows:
        for d in summary["exposures_days"][:2]:
            row = _per(summary, source, d)
            lines.append(f"| {label} | {_days(d, equivalent)} | {_fmt(row.get('z_smear_image_mm'))} | "
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
    equivalent = equivalent_days(json.loads((Path(args.data) / "dataset.json").read_text()))
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
        f"test cases: {', '.join(first['cases'])}. Exposures are dataset (simulated) days"
        + (" and, in brackets, full-scale-equivalent days (the same mean PoCA points per voxel as the 1 m block "
           "at 2 mm, from dataset.json)." if equivalent else "."),
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
        body = table(summaries, equivalent)
        if body:
            lines += ["", f"## {title}", "", *body]
    links = _copy_plots(evaluations, out.parent / (out.stem + "_plots"))
    if links:
        lines += ["", "## Plots", "", *links]
    out.write_text("\n".join(lines) + "\n")
    return out
