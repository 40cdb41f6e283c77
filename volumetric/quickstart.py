"""The quickstart (``volumetric demo``): simulate a block, run the shipped models, report what they found.

1. Simulate the reference block of the talk (``examples/reference_block.json``, or any geometry)
   at the shipped models' voxel size for their short input exposure (cpu preset: 0.064 days at
   5 mm, the muons per voxel of 1 day at 2 mm).
2. Run the shipped upsampler and segmenter (:mod:`volumetric.pretrained`) by sliding windows.
3. Write the upsampled volume and the label map (NIfTI, the case's affine), a PNG montage
   (raw, upsampled, predicted and true classes in XY and XZ), ``objects.json`` (each object found:
   class, position, size, depth) and ``quickstart.json`` (Dice per class against the block's
   true labels, timings).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from volumetric.data.case import simulate_case
from volumetric.data.io import check_output_folder, exposure_filename
from volumetric.schema import CLASS_NAMES
from volumetric.physics.geometry import Block, check_voxel_size
from volumetric.data.io import load_nifti, save_nifti_affine, write_output_marker
from volumetric.evaluation.metrics import dice_iou_per_class
from volumetric.evaluation.objects import find_objects, objects_as_dicts
from volumetric.pretrained import WEIGHTS_DIR, load_pretrained, manifest
from volumetric.figures import mean_theta2_mrad2, save_slice_montage

__all__ = ["run_quickstart"]

def _mean_theta2_image(prediction) -> np.ndarray:
    """Upsampled mean theta^2 in mrad^2 (the ``sum_theta2_rad2`` channel of the per-muon image)."""
    channel = prediction.image_channels.index("sum_theta2_rad2")
    return prediction.image_physical[channel].numpy() * 1e6


def _predict(case_dir: Path, days: float, voxel_mm: float, device: str, weights_dir: Path, progress: bool):
    from volumetric.infer.predictor import WindowSettings, predict
    from volumetric.infer.files import read_input

    raw, affine, _, _, channels = read_input(case_dir, days)
    upsampler = load_pretrained("upsampler", device, weights_dir)
    segmenter = load_pretrained("segmenter", device, weights_dir)
    settings = WindowSettings(progress=progress)
    image = predict(upsampler, raw, days, voxel_mm, settings=settings, channels=channels)
    classes = predict(segmenter, raw, days, voxel_mm, settings=settings, channels=channels)
    return raw.numpy(), affine, image, classes


def _dice(label: np.ndarray, truth: np.ndarray) -> dict[str, float | None]:
    scores = dice_iou_per_class(label, truth, len(CLASS_NAMES))["dice"]
    return {name: (None if np.isnan(v) else round(float(v), 4)) for name, v in zip(CLASS_NAMES, scores)}


def run_quickstart(out_dir, block: Block, seed: int = 0, device: str = "cpu", overwrite: bool = False,
                   progress: bool = True, weights_dir: str | Path = WEIGHTS_DIR, **simulate_kwargs) -> dict:
    """Simulate ``block``, run the shipped models, write the outputs into ``out_dir``.

    Args:
        out_dir: output folder (refused if non-empty unless ``overwrite``, and if non-empty
            without the marker of a volumetric output folder even then).
        block: the block to simulate (e.g. the reference block).
        seed: muon seed (same seed, same outputs).
        device: torch device for the simulation and the windows.
        overwrite: replace a non-empty ``out_dir``.
        progress: progress bars.
        weights_dir: folder with the shipped models' ``manifest.json``.
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
                  overwrite=True, **simulate_kwargs)
    t1 = time.perf_counter()
    raw, affine, image, classes = _predict(out / "case", days, voxel_mm, device, Path(weights_dir), progress)
    t2 = time.perf_counter()
    label = classes.label.numpy().astype(np.uint8)
    upsampled = _mean_theta2_image(image).astype(np.float32)
    save_nifti_affine(out / "upsampled_mean_theta2_mrad2.nii.gz", upsampled, affine)
    save_nifti_affine(out / "label.nii.gz", label, affine)
    truth, _ = load_nifti(out / "case" / "label.nii.gz")
    objects = objects_as_dicts(find_objects(label, affine))
    (out / "objects.json").write_text(json.dumps(objects, indent=1))
    save_slice_montage(out / "montage.png", {f"raw {days:g} d, mean theta^2 (mrad^2)": mean_theta2_mrad2(raw),
                                             "upsampled (mrad^2)": upsampled},
                       {"predicted classes": label, "true classes": np.asarray(truth, np.uint8)}, (voxel_mm,) * 3)
    summary = {"out": str(out), "input_days": days, "voxel_mm": voxel_mm, "models": shipped["models"],
               "dice": _dice(label, np.asarray(truth, np.int64)),
               "objects_found": {name: sum(o["kind"] == name for o in objects) for name in CLASS_NAMES[1:]},
               "warnings": image.warnings + classes.warnings,
               "simulate_s": round(t1 - t0, 1), "predict_s": round(t2 - t1, 1),
               "files": {"raw": str(out / "case" / exposure_filename(days)),
                         "upsampled": str(out / "upsampled_mean_theta2_mrad2.nii.gz"),
                         "label": str(out / "label.nii.gz"), "objects": str(out / "objects.json"),
                         "montage": str(out / "montage.png")}}
    (out / "quickstart.json").write_text(json.dumps(summary, indent=1))
    return summary
