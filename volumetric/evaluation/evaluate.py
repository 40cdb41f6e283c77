"""Whole-volume evaluation of trained runs on a dataset split: the numbers reported (``evaluate.py``).

For every test case and every evaluated input exposure ``d`` (default: all checkpoints but the
highest, which is the target), each *source* gives an image and/or a class map:

* ``raw``: the raw input itself, segmented by a segmenter trained on raw inputs (if any);
* ``upsampled``: the upsampler's output (an upsample run, or the frozen upsampler inside a
  segment run), segmented by the segmenter that follows it (``--segmenter``, or the segment
  run itself when it was trained on upsampled input);
* ``joint``: the image and classes of a joint run.

**Image metrics** (SSIM 3D, PSNR in dB, MAE) compare the source's image with the target on
one common scale: **the normalised mean theta^2 channel** ``c1 = log1p(mean theta^2 / r)``
(``transforms.normalise``, the run's parameters), with ``data_range`` = max - min of the
target's ``c1`` over the case (the same range for every source and exposure of a case, so the
numbers compare). SSIM uses a Gaussian window of ``min(7, smallest dimension)`` voxels (odd).
A model that does not predict channel 1 gets no image metrics.

**Equivalent days** (:func:`volumetric.evaluation.metrics.equivalent_days`): the raw curve is the raw
source's SSIM (PSNR) against the target at every input checkpoint of the case; a model image
at ``d`` is credited with the raw exposure whose curve reaches its value (log-days
interpolation; ``status`` says if it is below/above the curve). Per case in the rows; per
exposure in ``per_exposure`` from the case-mean curves and the case-mean value.

**Segmentation**: Dice/IoU per class (NaN for a class absent from prediction and truth; mean
Dice over the foreground classes with nanmean). **Objects**: each object of the case's
``geometry.json`` is found when at least ``threshold`` of its true voxels are predicted as its
class; void detection rate against diameter and depth (pooled over cases). **z-smearing**
(:func:`volumetric.evaluation.metrics.z_smearing`, mm): of the predicted class mask (``z_smear_label_mm``)
and of the source's ``c1`` image (``z_smear_image_mm``: background = median ``c1`` over true
concrete voxels of that image, polarity = sign of the object's contrast in the target).

Outputs in ``out_dir``: ``summary.json`` (``rows``: one per case x exposure x source;
``objects``: one per object x case x exposure x source; ``per_exposure``: means per source and
exposure; ``means``: per source over everything; ``raw_curve``), ``metrics.csv`` (the rows),
and PNGs from :mod:`volumetric.figures` (``quality_vs_exposure.png``, ``dice_vs_exposure.png``,
``void_detection.png`` when there is something to plot, ``montages/<case>_<days>d.png`` at the
lowest evaluated exposure). NaN and infinite values are written as JSON ``null``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from volumetric.data.io import check_output_folder
from volumetric.schema import CLASS_NAMES
from volumetric.data.dataset import load_dataset
from volumetric.data.io import write_output_marker
from volumetric.evaluation.metrics import (
    ObjectMatch,
    detection_rate,
    dice_iou_per_class,
    equivalent_days,
    mae,
    match_mask,
    nanmean_classes,
    object_masks,
    psnr,
    ssim_3d,
    z_smearing,
)
from volumetric.infer.predictor import (
    LoadedModel,
    WindowSettings,
    frozen_upsampler,
    load_model,
    normalise_input,
    predict,
    select_channels,
)
from volumetric.infer.files import read_input

__all__ = ["FORMAT", "SOURCES", "METRIC_CHANNEL", "Plan", "build_plan", "evaluate", "void_bins_mm"]

FORMAT = "volumetric-evaluation/1"
SOURCES = ("raw", "upsampled", "joint")
METRIC_CHANNEL = "sum_theta2_rad2"  # the image metrics compare normalised mean theta^2
_LABELS = ("rebar", "duct", "void", "unknown")


@dataclass
class Plan:
    """Which models give which source (see the module docstring).

    Attributes:
        scale: the normalisation of the common metric scale (the ``--run``'s).
        upsampler: gives the ``upsampled`` image, or ``None``.
        seg_raw: segments the raw input (``raw`` classes), or ``None``.
        seg_up: segments after ``upsampler`` (``upsampled`` classes), or ``None``.
        joint: a joint model (``joint`` source), or ``None``.
        models: every distinct model, for compatibility checks and provenance.
    """

    scale: dict
    upsampler: LoadedModel | None = None
    seg_raw: LoadedModel | None = None
    seg_up: LoadedModel | None = None
    joint: LoadedModel | None = None
    models: dict[str, LoadedModel] = field(default_factory=dict)

    def sources(self) -> list[str]:
        return ["raw"] + (["upsampled"] if self.upsampler or self.seg_up else []) + (["joint"] if self.joint else [])


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def build_plan(run: str | Path, segmenter: str | Path | None = None, device="cpu") -> Plan:
    """Load the run(s) and assign them to sources.

    Accepted: an upsample run, a segment run (raw input, or with its frozen upsampler), a joint
    run, or an upsample run followed by a segment run (``segmenter``).

    Raises:
        ValueError: for a segmenter after a run that is not an upsampler, or a ``segmenter``
            that is not a segment run.
    """
    main = load_model(run, device)
    plan = Plan(scale=main.normalisation, models={"run": main})
    if segmenter is not None:
        seg = load_model(segmenter, device)
        if main.task != "upsample" or seg.task != "segment":
            raise ValueError(f"--segmenter needs an upsample --run and a segment run; got {main.task!r} run "
                             f"and {seg.task!r} segmenter")
        plan.models["segmenter"] = seg
        plan.upsampler, plan.seg_up = main, seg
        if seg.segment_input == "raw":
            plan.seg_raw = seg
        elif not _same_weights(seg.pipeline.upsampler, main.pipeline.net):
            warnings.warn(f"{seg.source}: its frozen upsampler differs from {main.source}; the upsampled "
                          f"classes come from its own upsampler", UserWarning, stacklevel=2)
        return plan
    if main.task == "upsample":
        plan.upsampler = main
    elif main.task == "joint":
        plan.joint = main
    elif main.segment_input == "raw":
        plan.seg_raw = main
    else:
        plan.seg_up, plan.upsampler = main, frozen_upsampler(main)
    return plan


def void_bins_mm(voxel_mm: float) -> list[float]:
    """Default void-diameter bin edges (mm): multiples 0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64 of the voxel."""
    return [voxel_mm * m for m in (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)]


# ---------------------------------------------------------------------------------------------
# one case


@dataclass
class _Case:
    """What one case holds, loaded once."""

    name: str
    record: dict
    target_c1: np.ndarray
    label: np.ndarray
    data_range: float
    masks: list
    polarity: list[int]


def _load_raw(path: str):
    """The raw statistics of one exposure file with its channel names (``RawVolume``)."""
    return read_input(path)


def _c1(volume, normalisation: dict) -> np.ndarray:
    """Normalised mean theta^2 (``METRIC_CHANNEL`` over its count) of a raw volume."""
    names = ("count", METRIC_CHANNEL)
    return normalise_input(select_channels(volume.raw, volume.channels, names), normalisation, names)[1].numpy()


def _load_case(record: dict, plan: Plan, voxel_mm: float) -> _Case:
    from volumetric.physics.geometry import load_geometry
    from volumetric.data.io import load_nifti

    target = _c1(_load_raw(record["target"]), plan.scale)
    label = np.asarray(load_nifti(record["label"])[0]).astype(np.int64) if "label" in record else None
    geometry = Path(record["target"]).parent.parent / "geometry.json"
    masks = []
    if label is not None and geometry.is_file():
        masks = list(object_masks(load_geometry(geometry), voxel_mm, label))
    concrete = np.median(target[label == 0]) if label is not None and (label == 0).any() else 0.0
    polarity = [1 if (not m.any() or target[m].mean() >= concrete) else -1 for _, m in masks]
    span = float(target.max() - target.min())
    return _Case(record["case"], record, target, label, span if span > 0 else 1.0, masks, polarity)


def _ssim_window(shape: Sequence[int]) -> int:
    w = min(7, *shape)
    return w if w % 2 else w - 1


def _image_metrics(image: np.ndarray, case: _Case) -> dict:
    win = _ssim_window(image.shape)
    return {"ssim": ssim_3d(image, case.target_c1, case.data_range, win_size=win),
            "psnr_db": psnr(image, case.target_c1, case.data_range),
            "mae": mae(image, case.target_c1)}


def _segmentation_metrics(label: np.ndarray, case: _Case) -> dict:
    scores = dice_iou_per_class(label, case.label, len(CLASS_NAMES))
    out = {"mean_dice": nanmean_classes(scores["dice"]), "mean_iou": nanmean_classes(scores["iou"])}
    out.update({f"dice_{n}": float(v) for n, v in zip(CLASS_NAMES, scores["dice"])})
    out.update({f"iou_{n}": float(v) for n, v in zip(CLASS_NAMES, scores["iou"])})
    return out


def _match(case: _Case, label: np.ndarray | None, image: np.ndarray | None, voxel_mm: float,
           threshold: float) -> list[dict]:
    """:func:`volumetric.evaluation.metrics.match_objects` on the case's cached masks, plus the image z-smear."""
    rows = []
    background = float(np.median(image[case.label == 0])) if image is not None and (case.label == 0).any() else 0.0
    for (info, mask), polarity in zip(case.masks, case.polarity):
        n = int(mask.sum())
        if label is not None:
            row = dataclasses.asdict(match_mask(info, mask, label, voxel_mm, threshold))
            row["z_smear_label_mm"] = row.pop("z_smear_mm")
        else:
            row = dataclasses.asdict(ObjectMatch(**dataclasses.asdict(info), true_voxels=n))
            row.pop("z_smear_mm")
            row.update(found=None, fraction=float("nan"), z_smear_label_mm=float("nan"))
        row["z_smear_image_mm"] = (z_smearing(image, mask, voxel_mm, background, polarity).smear_mm
                                   if image is not None and n else float("nan"))
        rows.append(row)
    return rows


def _source_outputs(plan: Plan, volume, days: float, voxel_mm: float,
                    settings: WindowSettings) -> dict[str, tuple]:
    """``{source: (c1 image or None, label map or None)}`` for one exposure of one case."""
    outputs, raw, ch = {}, volume.raw, volume.channels
    raw_label = predict(plan.seg_raw, raw, days, voxel_mm, settings=settings, channels=ch).label \
        if plan.seg_raw else None
    outputs["raw"] = (_c1(volume, plan.scale), raw_label)
    if plan.upsampler or plan.seg_up:
        if plan.upsampler is not None:
            pred = predict(plan.upsampler, raw, days, voxel_mm, plan.seg_up, settings, channels=ch)
        else:
            pred = predict(plan.seg_up, raw, days, voxel_mm, settings=settings, channels=ch)
        outputs["upsampled"] = (_model_c1(pred), pred.label)
    if plan.joint:
        pred = predict(plan.joint, raw, days, voxel_mm, settings=settings, channels=ch)
        outputs["joint"] = (_model_c1(pred), pred.label)
    return {k: (img, None if lab is None else lab.numpy()) for k, (img, lab) in outputs.items()}


def _model_c1(pred) -> np.ndarray | None:
    if pred.image is None or not pred.image_channels or METRIC_CHANNEL not in pred.image_channels:
        return None
    return pred.image[pred.image_channels.index(METRIC_CHANNEL)].numpy()


def _raw_curve(case: _Case, plan: Plan, curve_days: Sequence[float]) -> dict[float, dict]:
    return {d: _image_metrics(_c1(_load_raw(case.record["exposures"][d]), plan.scale), case) for d in curve_days}


def _equivalent(row: dict, curve: dict[float, dict]) -> None:
    days = sorted(curve)
    for metric in ("ssim", "psnr_db"):
        values = [curve[d][metric] for d in days]
        value = row.get(metric)
        name = metric.split("_")[0]
        if len(days) < 2 or value is None or not all(map(math.isfinite, values + [value])):
            row[f"{name}_equivalent_days"], row[f"{name}_equivalent_status"] = float("nan"), ""
            continue
        result = equivalent_days(days, values, value)
        row[f"{name}_equivalent_days"], row[f"{name}_equivalent_status"] = result.days, result.status


def _evaluate_case(case: _Case, plan: Plan, exposures: Sequence[float], curve_days: Sequence[float],
                   voxel_mm: float, settings: WindowSettings, threshold: float):
    """Rows, object rows, raw curve and the montage volumes of the lowest exposure."""
    curve = _raw_curve(case, plan, curve_days)
    rows, objects, montage = [], [], None
    for days in exposures:
        outputs = _source_outputs(plan, _load_raw(case.record["exposures"][days]), days, voxel_mm, settings)
        for source, (image, label) in outputs.items():
            row = {"case": case.name, "exposure_days": days, "source": source}
            if image is not None:
                row.update(_image_metrics(image, case))
                if source != "raw":
                    _equivalent(row, curve)
            if label is not None and case.label is not None:
                row.update(_segmentation_metrics(label, case))
            found = _match(case, label, image, voxel_mm, threshold) if case.label is not None else []
            objects += [{"case": case.name, "exposure_days": days, "source": source, **o} for o in found]
            row.update(_object_summary(found))
            rows.append(row)
        if montage is None:
            montage = (days, outputs)
    return rows, objects, curve, montage


def _object_summary(found: list[dict]) -> dict:
    voids = [o for o in found if o["kind"] == "void"]
    scored = [o for o in found if o["found"] is not None and o["true_voxels"]]
    labelled = any(o["found"] is not None for o in found)
    return {"objects": len(found), "objects_found": sum(bool(o["found"]) for o in scored) if labelled else None,
            "voids": len(voids), "voids_found": sum(bool(o["found"]) for o in voids) if labelled else None,
            "z_smear_image_mm": _nanmean([o["z_smear_image_mm"] for o in found]),
            "z_smear_label_mm": _nanmean([o["z_smear_label_mm"] for o in found])}


def _nanmean(values) -> float:
    a = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return float(np.nanmean(a)) if a.size and not np.all(np.isnan(a)) else float("nan")


# ---------------------------------------------------------------------------------------------
# aggregation


_MEAN_KEYS = ("ssim", "psnr_db", "mae", "mean_dice", "mean_iou", *(f"dice_{n}" for n in CLASS_NAMES),
              *(f"iou_{n}" for n in CLASS_NAMES), "z_smear_image_mm", "z_smear_label_mm")


def _means(rows: list[dict]) -> dict:
    out = {k: _nanmean([r.get(k) for r in rows]) for k in _MEAN_KEYS if any(k in r for r in rows)}
    out["cases"] = len({r["case"] for r in rows})
    return out


def _mean_curve(curves: list[dict]) -> dict[float, dict]:
    days = sorted(curves[0]) if curves else []
    return {d: {m: _nanmean([c[d][m] for c in curves]) for m in ("ssim", "psnr_db", "mae")} for d in days}


def _per_exposure(rows, objects, curve, exposures, sources, bins, depth_bins) -> dict:
    out = {}
    for source in sources:
        out[source] = {}
        for days in exposures:
            chosen = [r for r in rows if r["source"] == source and r["exposure_days"] == days]
            entry = _means(chosen)
            if source != "raw" and "ssim" in entry:
                _equivalent(entry, curve)
            matches = [_as_match(o) for o in objects if o["source"] == source and o["exposure_days"] == days
                       and o["found"] is not None]
            if matches:
                entry["void_detection_by_diameter"] = detection_rate(matches, bins, "void", "size")
                entry["void_detection_by_depth"] = detection_rate(matches, depth_bins, "void", "depth")
            out[source][f"{days:g}"] = entry
    return out


def _as_match(row: dict) -> ObjectMatch:
    names = {f.name for f in dataclasses.fields(ObjectMatch)}
    return ObjectMatch(**{k: v for k, v in row.items() if k in names})


def _clean(value):
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python, float keys -> str."""
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, float) else f"{k:g}": _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


_CSV_KEYS = ("case", "exposure_days", "source", "ssim", "psnr_db", "mae", "ssim_equivalent_days",
             "ssim_equivalent_status", "psnr_equivalent_days", "psnr_equivalent_status", "mean_dice", "mean_iou",
             *(f"dice_{n}" for n in CLASS_NAMES), *(f"iou_{n}" for n in CLASS_NAMES), "objects", "objects_found",
             "voids", "voids_found", "z_smear_image_mm", "z_smear_label_mm")


def _write_csv(path: Path, rows: list[dict]) -> None:
    from volumetric.data.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_CSV_KEYS, extrasaction="ignore")
        writer.writeheader()
        for row in _clean(rows):
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in _CSV_KEYS})


# ---------------------------------------------------------------------------------------------
# entry point


def _exposures(checkpoints: list[float], requested: Sequence[float] | None) -> tuple[list[float], list[float]]:
    inputs = checkpoints[:-1] or checkpoints
    if requested is None:
        return inputs, inputs
    chosen = []
    for d in requested:
        match = [c for c in checkpoints if math.isclose(c, float(d), rel_tol=1e-6)]
        if not match:
            raise ValueError(f"exposure {d:g} days is not a checkpoint of the dataset ({checkpoints})")
        chosen.append(match[0])
    return sorted(set(chosen)), inputs


def _check_models(plan: Plan, voxel_mm: float, exposures: Sequence[float]) -> list[str]:
    from volumetric.infer.checkpoint import check_compatible

    issued = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for model in plan.models.values():
            for days in exposures:
                issued += check_compatible(model.meta, voxel_mm=voxel_mm, exposure_days=days)
    return list(dict.fromkeys(issued))


def _provenance(plan: Plan) -> dict:
    return {role: {"checkpoint": str(m.source), "task": m.task, "step": m.step, "segment_input": m.segment_input,
                   "image_channels": m.image_channels, "trained_on": m.meta.get("dataset_name")}
            for role, m in plan.models.items()}


def _check_report_folder(out: Path, overwrite: bool) -> None:
    """Refuse an existing report unless ``overwrite``, and any other folder that may not be written into.

    Raises:
        FileExistsError: for ``summary.json`` without ``overwrite``, or a folder refused by
            :func:`volumetric.data.case.check_output_folder` (non-empty, or non-empty without the marker).
    """
    if (out / "summary.json").exists() and not overwrite:
        raise FileExistsError(f"{out / 'summary.json'} exists; pass --overwrite or choose another --out")
    check_output_folder(out, overwrite)


def evaluate(
    run: str | Path,
    data: str | Path,
    out_dir: str | Path,
    split: str = "test",
    segmenter: str | Path | None = None,
    max_cases: int | None = None,
    exposures: Sequence[float] | None = None,
    settings: WindowSettings | None = None,
    device: str = "cpu",
    threshold: float = 0.5,
    overwrite: bool = False,
    progress: bool = True,
    plots: bool = True,
) -> dict:
    """Evaluate a run (or upsample -> segment runs) on a dataset split and write the report.

    Args:
        run: run folder or checkpoint (upsample, segment or joint).
        data: dataset folder (``dataset.json``).
        out_dir: report folder; refused if non-empty unless ``overwrite``, and if non-empty
            without the marker of a volumetric output folder even then (it gets the marker).
        split: ``train``, ``val``, ``test`` or ``all``.
        segmenter: a segment run applied after an upsample ``run``.
        max_cases: evaluate only the first N cases of the split.
        exposures: input exposures in days (default: all checkpoints but the target).
        settings: sliding-window settings.
        device: where windows run (``cpu``, ``cuda``, ``auto``).
        threshold: fraction of an object's voxels to call it found.
        overwrite: replace an existing report.
        progress: progress bar over cases.
        plots: write the PNGs (summary plots and montages).

    Returns:
        The summary written to ``summary.json`` (NaN as ``None``).

    Raises:
        FileExistsError: for an existing report without ``overwrite``, or a folder holding files
            volumetric did not write.
        ValueError: for an empty split, an unknown exposure, incompatible models (voxel size).
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    _check_report_folder(out, overwrite)
    info = load_dataset(data, check_data=False)
    records = info.split(split)[: max_cases if max_cases is not None else None]
    if not records:
        raise ValueError(f"{Path(data) / 'dataset.json'}: split {split!r} holds no cases")
    voxel = float(info.meta["voxel_mm"])
    checkpoints = [float(d) for d in info.meta["checkpoints_days"]]
    chosen, curve_days = _exposures(checkpoints, exposures)
    plan = build_plan(run, segmenter, device)
    notes = _check_models(plan, voxel, chosen)
    settings = settings or WindowSettings()
    write_output_marker(out, "volumetric.evaluation.evaluate.evaluate")
    rows, objects, curves = [], [], []
    from volumetric import figures

    for record in tqdm(records, desc="evaluate", unit="case", disable=not progress):
        case = _load_case(record, plan, voxel)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # exposure warnings are in notes
            case_rows, case_objects, curve, montage = _evaluate_case(case, plan, chosen, curve_days, voxel,
                                                                     settings, threshold)
        rows += case_rows
        objects += case_objects
        curves.append(curve)
        if plots:
            figures.case_montage(out / "montages" / f"{case.name}_{montage[0]:g}d.png", case, montage[1], voxel)
    curve = _mean_curve(curves)
    bins, depth_bins = void_bins_mm(voxel), list(np.linspace(0, info.meta["block_size_mm"][2], 6))
    per_exposure = _per_exposure(rows, objects, curve, chosen, plan.sources(), bins, depth_bins)
    summary = {
        "format": FORMAT, "runs": _provenance(plan),
        "data": {"path": str(data), "name": info.meta.get("name"), "fingerprint": info.meta.get("fingerprint"),
                 "split": split, "voxel_mm": voxel, "checkpoints_days": checkpoints},
        "scale": {"channel": METRIC_CHANNEL, "quantity": "normalised mean theta^2, c1 = log1p(mean theta^2 / r)",
                  "normalisation": plan.scale, "data_range": "per case: max - min of the target's c1"},
        "settings": {**dataclasses.asdict(settings), "threshold": threshold, "device": str(device)},
        "exposures_days": chosen, "cases": [r["case"] for r in records], "sources": plan.sources(),
        "raw_curve": curve, "per_exposure": per_exposure,
        "means": {s: _means([r for r in rows if r["source"] == s]) for s in plan.sources()},
        "rows": rows, "objects": objects, "warnings": notes,
    }
    summary["plots"] = [str(p) for p in figures.summary_plots(out, _clean(summary))] if plots else []
    return _write(out, summary, rows)


def _write(out: Path, summary: dict, rows: list[dict]) -> dict:
    from volumetric.data.io import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "metrics.csv", rows)
    clean = _clean(summary)
    with atomic_path(out / "summary.json") as tmp:
        Path(tmp).write_text(json.dumps(clean, indent=1, allow_nan=False))
    return clean
