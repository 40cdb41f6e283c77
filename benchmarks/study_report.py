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
    "seg3d_poca3": "3D segmenter, raw input, old 3 PoCA channels only (ablation)",
    "seg2d": "2D slice-wise segmenter, raw input",
    "seg3d_up": "3D segmenter, raw + 3D-upsampled input",
    "joint3d": "3D joint model",
}
MODEL_SOURCE = {"up3d": "upsampled", "up2d": "upsampled", "seg3d": "raw", "seg3d_poca3": "raw", "seg2d": "raw",
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
    return lines if len(lines) > 2 else []


SEGMENTERS = ("seg3d", "seg2d", "seg3d_poca3", "seg3d_up", "joint3d")
# the reference work (2D slice-wise pix2pix cWGAN-GP on Geant4 data, 1-day input upsampled); voids: "below 0.15"
REFERENCE_DICE = {"rebar": "0.82", "duct": "0.87", "void": "< 0.15", "unknown": "-"}
# issue targets on the cpu test split: {full-scale-equivalent input days: {class: Dice}}
TARGETS = {1.0: {"rebar": 0.4, "duct": 0.6, "void": 0.15}, 100.0: {"rebar": 0.7, "duct": 0.8, "void": 0.4}}


def _dice_table(summaries, equivalent) -> list[str]:
    seg_models = [n for n in SEGMENTERS if n in summaries]
    lines = ["| model | input days (full-eq.) | " + " | ".join(f"Dice {c}" for c in CLASSES) + " | mean |",
             "|---|---|" + "---|" * (len(CLASSES) + 1),
             "| reference: 2D pix2pix cWGAN-GP, Geant4 (talk) | 1 (full scale) | "
             + " | ".join(REFERENCE_DICE[c] for c in CLASSES) + " | - |"]
    for name in seg_models:
        for d in summaries[name]["exposures_days"]:
            row = _per(summaries[name], MODEL_SOURCE[name], d)
            dice = [_fmt(row.get(f"dice_{c}")) for c in CLASSES]
            lines.append(f"| {name} | {_days(d, equivalent)} | " + " | ".join(dice) + f" | {_fmt(row.get('mean_dice'))} |")
    return lines


def _full_days(d: float, equivalent: dict[float, float]) -> float | None:
    return equivalent.get(d) if equivalent else None


def _target_table(summaries, equivalent) -> list[str]:
    """The issue's Dice targets against what each segmenter reached (test split means)."""
    lines = ["| model | input (full-eq. days) | " + " | ".join(f"{c}: reached / target" for c in ("rebar", "duct", "void"))
             + " |", "|---|---|---|---|---|"]
    for name in (n for n in SEGMENTERS if n in summaries):
        for d in summaries[name]["exposures_days"]:
            target = TARGETS.get(_full_days(d, equivalent))
            if target is None:
                continue
            row = _per(summaries[name], MODEL_SOURCE[name], d)
            cells = []
            for c, goal in target.items():
                value = row.get(f"dice_{c}")
                verdict = "-" if value is None else ("met" if value >= goal else "not met")
                cells.append(f"{_fmt(value)} / {goal:g} ({verdict})")
            lines.append(f"| {name} | {_days(d, equivalent)} | " + " | ".join(cells) + " |")
    return lines if len(lines) > 2 else []


def _detection_table(summaries, equivalent, key: str, what: str) -> list[str]:
    lines = [f"| model | input days | void {what} bin (mm): found / count |", "|---|---|---|"]
    for name in (n for n in SEGMENTERS if n in summaries):
        for d in summaries[name]["exposures_days"]:
            bins = _per(summaries[name], MODEL_SOURCE[name], d).get(key) or []
            text = ", ".join(f"{b['lo_mm']:g}-{b['hi_mm']:g}: {b['found']}/{b['count']}" for b in bins if b["count"])
            lines.append(f"| {name} | {_days(d, equivalent)} | {text or 'no voids'} |")
    return lines


def _void_table(summaries, equivalent) -> list[str]:
    return _detection_table(summaries, equivalent, "void_detection_by_diameter", "diameter")


def _void_depth_table(summaries, equivalent) -> list[str]:
    return _detection_table(summaries, equivalent, "void_detection_by_depth", "centre depth below the top face")


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


def _duct_kind(data: Path, case: str, index: int) -> str:
    """``"grout fill, steel sheath"``: what a test duct holds (the case's ``geometry.json``)."""
    duct = json.loads((data / "cases" / case / "geometry.json").read_text())["ducts"][index]
    fill = duct["fill"] + (f" {duct['fill_fraction']:.0%}" if duct.get("fill_fraction") else "")
    return f"{fill} fill, {duct['sheath_material']} sheath, {duct['diameter_mm']:.0f} mm"


def _duct_table(summaries, equivalent, data: Path) -> list[str]:
    """Fraction of each test duct labelled duct, by what the duct holds (grout is nearly concrete)."""
    names = [n for n in ("seg3d", "seg2d") if n in summaries]
    if not names:
        return []
    days = summaries[names[0]]["exposures_days"]
    picked = [days[0], days[-1]]
    lines = ["| case | duct | " + " | ".join(f"{n}, {_days(d, equivalent)}" for n in names for d in picked) + " |",
             "|---|---|" + "---|" * (len(names) * len(picked))]
    ducts = sorted({(o["case"], o["index"]) for o in summaries[names[0]]["objects"] if o["kind"] == "duct"})
    for case, index in ducts:
        cells = []
        for n in names:
            for d in picked:
                hit = [o for o in summaries[n]["objects"] if o["kind"] == "duct" and o["case"] == case
                       and o["index"] == index and math.isclose(o["exposure_days"], d) and o["source"] == MODEL_SOURCE[n]]
                cells.append(f"{hit[0]['fraction']:.0%}" if hit else "-")
        lines.append(f"| {case} | {_duct_kind(data, case, index)} | " + " | ".join(cells) + " |")
    return lines


def _3d_vs_2d_table(summaries, equivalent) -> list[str]:
    """Per exposure and foreground class: does the 3D segmenter beat the 2D slice-wise one?"""
    if "seg3d" not in summaries or "seg2d" not in summaries:
        return []
    lines = ["| input days (full-eq.) | " + " | ".join(f"{c}: 3D / 2D" for c in CLASSES) + " |",
             "|---|" + "---|" * len(CLASSES)]
    wins = total = 0
    for d in summaries["seg3d"]["exposures_days"]:
        cells = []
        for c in CLASSES:
            a, b = (_per(summaries[n], "raw", d).get(f"dice_{c}") for n in ("seg3d", "seg2d"))
            if a is not None and b is not None and (a > 0 or b > 0):
                total, wins = total + 1, wins + (a > b)
            cells.append(f"{_fmt(a)} / {_fmt(b)}")
        lines.append(f"| {_days(d, equivalent)} | " + " | ".join(cells) + " |")
    return lines + ["", f"3D ahead in {wins} of {total} (exposure, class) pairs where either finds the class."]


def _ablation_table(summaries, equivalent) -> list[str]:
    """The 3D segmenter on all statistics channels against the old three PoCA channels, same budget."""
    if "seg3d" not in summaries or "seg3d_poca3" not in summaries:
        return []
    lines = ["| input days (full-eq.) | all channels: rebar / duct / void | PoCA-3 only: rebar / duct / void |",
             "|---|---|---|"]
    for d in summaries["seg3d"]["exposures_days"]:
        cells = [" / ".join(_fmt(_per(summaries[n], "raw", d).get(f"dice_{c}")) for c in ("rebar", "duct", "void"))
                 for n in ("seg3d", "seg3d_poca3")]
        lines.append(f"| {_days(d, equivalent)} | {cells[0]} | {cells[1]} |")
    return lines


def learning_curve(run: Path) -> list[tuple[int, float]]:
    """``(step, validation Dice)`` of a run's ``metrics.jsonl`` (validation entries, in order)."""
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(int(r["step"]), float(r["val_dice"])) for r in rows if r.get("split") == "val" and "val_dice" in r]


def curve_verdict(curve: list[tuple[int, float]], margin: float = 0.01) -> str:
    """``still improving`` when the best Dice of the last third beats the best before it by ``margin``."""
    if len(curve) < 3:
        return "too few validations to tell"
    cut = len(curve) - max(1, len(curve) // 3)
    before, last = max(v for _, v in curve[:cut]), max(v for _, v in curve[cut:])
    if last > before + margin:
        return f"still improving (best of the last third {last:.3f} > {before:.3f} before it)"
    return f"plateaued (best of the last third {last:.3f}, best before it {before:.3f})"


def _learning_table(study: Path, names) -> list[str]:
    lines = []
    for name in names:
        curve = learning_curve(study / "runs" / name)
        if curve:
            lines += [f"- **{name}**: " + ", ".join(f"{step}: {dice:.3f}" for step, dice in curve)
                      + f". Verdict: {curve_verdict(curve)}."]
    return lines


def _worked_example(study: Path) -> list[str]:
    """The talk's reference block, from ``benchmarks/worked_example.py`` (``<study>/worked_example.md``)."""
    path = study / "worked_example.md"
    return path.read_text().splitlines() if path.is_file() else []


def _copy_plots(evaluations: dict[str, Path], target: Path) -> list[str]:
    if target.exists():  # plots of an earlier study must not linger beside this one's
        shutil.rmtree(target)
    target.mkdir(parents=True)
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
        (f"Training budget: {args.budget_min:g} wall-clock minutes per model, "
         f"{getattr(args, 'threads', 2)} CPU thread(s) per process on a 2-core machine; with one thread, "
         "processes were pinned to a core each (`taskset`) and up to two models trained side by side, sharing "
         "memory bandwidth, so equal budgets bought somewhat unequal step counts (below)."),
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
        ("Void detection by depth (centre depth below the top face)", _void_depth_table),
        ("z-smearing (extra spread along z as an equivalent Gaussian sigma; lower is better)", _smear_table),
        ("Targets of the study issue (test split; 100-day input = the target exposure segmented)", _target_table),
        ("3D vs 2D slice-wise segmenter (same data, same budget), Dice per class", _3d_vs_2d_table),
        ("Channel ablation: 3D segmenter, all 9 statistics channels vs the old 3 PoCA channels", _ablation_table),
    ]
    for title, table in sections:
        body = table(summaries, equivalent)
        if body:
            lines += ["", f"## {title}", "", *body]
    ducts = _duct_table(summaries, equivalent, Path(args.data))
    if ducts:
        lines += ["", "## Ducts by what they hold (fraction of the duct's voxels labelled duct)", "", *ducts]
    curves = _learning_table(Path(args.out), [n for n in SEGMENTERS if n in trained])
    if curves:
        lines += ["", "## Learning curves (validation Dice, lowest exposure, every `validation.every` steps)", "",
                  *curves]
    example = _worked_example(Path(args.out))
    if example:
        lines += ["", *example]
    links = _copy_plots(evaluations, out.parent / (out.stem + "_plots"))
    if links:
        lines += ["", "## Plots", "", *links]
    out.write_text("\n".join(lines) + "\n")
    return out
