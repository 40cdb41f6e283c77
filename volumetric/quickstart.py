"""The quickstart (``volumetric demo``): simulate a block, run the shipped models, report what they found.

1. Simulate the reference block of the talk (``examples/reference_block.json``, or any geometry)
   at the shipped models' voxel size for their short input exposure (cpu preset: 0.064 days at
   5 mm, the muons per voxel of 1 day at 2 mm). The case folder holds the raw statistics and,
   beside them, the raw mean theta^2 image (mrad^2) for a viewer.
2. Run the shipped upsampler and segmenter (:mod:`volumetric.pretrained`) by sliding windows.
3. Write the upsampled volume and the label map (NIfTI, the case's affine), a PNG montage
   (raw, upsampled, predicted and true classes in XY and XZ, in mm at the true aspect, with
   colour bars and a class legend), ``objects.json`` (each object found: class, position, size,
   depth, the segmenter's confidence, and the true object it overlaps or ``false_positive``;
   objects smaller than ``min_object_diameter_mm`` dropped) and ``quickstart.json`` (Dice per
   class and, per class, how many of the block's true objects were found, against the block's
   truth; warnings; timings).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from volumetric.data.case import simulate_case
from volumetric.data.io import (
    check_output_folder,
    exposure_filename,
    load_nifti,
    mean_theta2_filename,
    save_nifti_affine,
    write_output_marker,
)
from volumetric.evaluation.metrics import dice_iou_per_class, match_mask, object_masks
from volumetric.evaluation.objects import (
    detection_summary,
    find_objects,
    objects_as_dicts,
)
from volumetric.figures import MEAN_THETA2_LABEL, mean_theta2_mrad2, save_slice_montage
from volumetric.physics.geometry import Block, check_voxel_size
from volumetric.pretrained import WEIGHTS_DIR, load_pretrained, manifest
from volumetric.schema import CLASS_NAMES

__all__ = ["LOW_DICE", "MIN_OBJECT_DIAMETER_MM", "run_quickstart"]

MIN_OBJECT_DIAMETER_MM = 10.0
"""Default size threshold of ``objects.json``: found objects whose equivalent diameter (sphere of
the same volume) is below this are dropped, mm. At the demo's 5 mm voxels that drops components
of up to 4 voxels (4 x 125 mm^3 = a 9.8 mm sphere): isolated noise, not a 10 mm bar or void."""

LOW_DICE = 0.5
"""A class present in the truth with a Dice below this gets a warning in ``quickstart.json``."""


def _mean_theta2_image(prediction) -> np.ndarray:
    """Upsampled mean theta^2 in mrad^2 (the ``sum_theta2_rad2`` channel of the per-muon image)."""
    channel = prediction.image_channels.index("sum_theta2_rad2")
    return prediction.image_physical[channel].numpy() * 1e6


def _predict(case_dir: Path, days: float, voxel_mm: float, device: str, weights_dir: Path, progress: bool):
    from volumetric.infer.files import read_input
    from volumetric.infer.predictor import WindowSettings, predict

    raw, affine, _, _, channels = read_input(case_dir, days)
    upsampler = load_pretrained("upsampler", device, weights_dir)
    segmenter = load_pretrained("segmenter", device, weights_dir)
    bars = ("upsampler", "segmenter") if progress else (False, False)
    image = predict(upsampler, raw, days, voxel_mm, settings=WindowSettings(progress=bars[0]), channels=channels)
    classes = predict(segmenter, raw, days, voxel_mm, settings=WindowSettings(progress=bars[1]), channels=channels)
    return mean_theta2_mrad2(raw.numpy(), channels), affine, image, classes


def _model_name(shipped: dict, role: str) -> str:
    """The shipped model's run name (``manifest.json``), else its file's stem."""
    entry = shipped["models"][role]
    return str(entry.get("run") or Path(entry["file"]).stem)


def _dice(label: np.ndarray, truth: np.ndarray) -> dict[str, float | None]:
    scores = dice_iou_per_class(label, truth, len(CLASS_NAMES))["dice"]
    return {name: (None if np.isnan(v) else round(float(v), 4)) for name, v in zip(CLASS_NAMES, scores)}


def _dice_warnings(dice: dict[str, float | None], truth: np.ndarray, segmenter: str) -> list[str]:
    """One line per class present in ``truth`` whose Dice is below :data:`LOW_DICE`."""
    present = set(np.unique(truth).tolist())
    return [f"Dice {name} {dice[name]:.2g} is low (< {LOW_DICE:g}): the shipped model {segmenter} comes from a "
            f"short CPU study and does not segment {name} reliably yet; treat its {name} objects as unconfirmed"
            for k, name in enumerate(CLASS_NAMES) if k in present and dice[name] is not None and dice[name] < LOW_DICE]


def _objects(label, probabilities, affine, block: Block, truth, voxel_mm: float, min_diameter_mm: float):
    """Found objects (with confidence and true-object match) and the per-class detection counts."""
    true_objects = list(object_masks(block, voxel_mm, truth))
    matches = [match_mask(info, mask, label, voxel_mm) for info, mask in true_objects]
    found = find_objects(label, affine, min_diameter_mm=min_diameter_mm, probabilities=probabilities,
                         truth=true_objects)
    return found, detection_summary(matches, found)


def _object_rules(min_diameter_mm: float) -> str:
    return (f"a true object (a rebar grid is one object) is found when at least half of its voxels are predicted as "
            f"its class; predicted objects are 26-connected components of one class with an equivalent diameter of "
            f"at least {min_diameter_mm:g} mm, false positives when they share no voxel with a true object of "
            f"their class")


def _objects_found(counts: dict[str, dict[str, int]]) -> dict[str, str]:
    return {name: f"found {c['found']} of {c['true']} true objects ({c['predicted']} predicted, "
                  f"{c['false_positives']} matching no true object)" for name, c in counts.items()}


def _montage(path: Path, days: float, raw: np.ndarray, upsampled: np.ndarray, label: np.ndarray, truth: np.ndarray,
             names: tuple[str, str], voxel_mm: float) -> Path:
    images = {f"raw {days:g} d": raw, f"upsampled by {names[0]}": upsampled}
    labels = {f"segmented by {names[1]}": label, "true classes": truth}
    return save_slice_montage(path, images, labels, (voxel_mm,) * 3, colour_label=MEAN_THETA2_LABEL)


def _files(out: Path, days: float) -> dict[str, str]:
    names = {"raw": "case/" + exposure_filename(days), "raw_mean_theta2": "case/" + mean_theta2_filename(days),
             "upsampled": "upsampled_mean_theta2_mrad2.nii.gz", "label": "label.nii.gz",
             "objects": "objects.json", "montage": "montage.png"}
    return {key: str(out / name) for key, name in names.items()}


def run_quickstart(out_dir, block: Block, seed: int = 0, device: str = "cpu", overwrite: bool = False,
                   progress: bool = True, weights_dir: str | Path = WEIGHTS_DIR,
                   min_object_diameter_mm: float = MIN_OBJECT_DIAMETER_MM, **simulate_kwargs) -> dict:
    """Simulate ``block``, run the shipped models, write the outputs into ``out_dir``.

    Args:
        out_dir: output folder (refused if non-empty unless ``overwrite``, and if non-empty
            without the marker of a volumetric output folder even then).
        block: the block to simulate (e.g. the reference block).
        seed: muon seed (same seed, same outputs).
        device: torch device for the simulation and the windows.
        overwrite: replace a non-empty ``out_dir``.
        progress: progress bars (named ``simulate case``, ``upsampler``, ``segmenter``).
        weights_dir: folder with the shipped models' ``manifest.json``.
        min_object_diameter_mm: found objects with a smaller equivalent diameter are left out of
            ``objects.json`` and the counts, mm (recorded in ``quickstart.json``).
        **simulate_kwargs: passed to :func:`volumetric.data.case.simulate_case` (``method``,
            ``detector``, ``rate_hz_per_m2``, ``save_tracks``).

    Returns:
        The ``quickstart.json`` content.
    """
    out = Path(out_dir)
    shipped = manifest(weights_dir)
    days, voxel_mm = float(shipped["input_days"]), float(shipped["voxel_mm"])
    check_voxel_size(block.size_mm, voxel_mm)
    check_output_folder(out, overwrite)
    write_output_marker(out, "volumetric.quickstart.run_quickstart")
    t0 = time.perf_counter()
    simulate_case(block, out / "case", voxel_mm, [days], seed=seed, device=device, progress=progress,
                  overwrite=True, mean_theta2_nifti=True, **simulate_kwargs)
    t1 = time.perf_counter()
    raw, affine, image, classes = _predict(out / "case", days, voxel_mm, device, Path(weights_dir), progress)
    t2 = time.perf_counter()
    label = classes.label.numpy().astype(np.uint8)
    upsampled = _mean_theta2_image(image).astype(np.float32)
    save_nifti_affine(out / "upsampled_mean_theta2_mrad2.nii.gz", upsampled, affine)
    save_nifti_affine(out / "label.nii.gz", label, affine)
    truth = np.asarray(load_nifti(out / "case" / "label.nii.gz")[0], np.uint8)
    found, counts = _objects(label, classes.probabilities.numpy(), affine, block, truth, voxel_mm,
                             min_object_diameter_mm)
    (out / "objects.json").write_text(json.dumps(objects_as_dicts(found), indent=1))
    names = (_model_name(shipped, "upsampler"), _model_name(shipped, "segmenter"))
    _montage(out / "montage.png", days, raw, upsampled, label, truth, names, voxel_mm)
    dice = _dice(label, truth)
    summary = {"out": str(out), "input_days": days, "voxel_mm": voxel_mm, "models": shipped["models"],
               "dice": dice, "objects_found": _objects_found(counts), "object_counts": counts,
               "false_positives": sum(c["false_positives"] for c in counts.values()),
               "min_object_diameter_mm": float(min_object_diameter_mm),
               "object_rules": _object_rules(min_object_diameter_mm),
               "warnings": image.warnings + classes.warnings + _dice_warnings(dice, truth, names[1]),
               "simulate_s": round(t1 - t0, 1), "predict_s": round(t2 - t1, 1), "files": _files(out, days)}
    (out / "quickstart.json").write_text(json.dumps(summary, indent=1))
    return summary
