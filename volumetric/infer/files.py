"""Files in, files out: a raw statistics NIfTI or a case folder in, NIfTI predictions with the input's affine out.

:func:`read_input` reads a volume and its channel names; :func:`infer_file` predicts it with
:func:`volumetric.infer.predictor.predict` and writes the upsampled image (per-muon units), the
label map, probabilities and TTA uncertainty maps, and a JSON record. The one NIfTI inference
path of the toolkit (``volumetric infer``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
from nibabel.affines import voxel_sizes
import torch

from volumetric.schema import per_muon_name
from volumetric.infer.predictor import LoadedModel, Prediction, WindowSettings, predict
from volumetric.data.io import load_statistics


__all__ = ["RawVolume", "read_input", "infer_file"]




def _case_exposures(folder: Path) -> dict[float, Path]:
    files = sorted((folder / "exposures").glob("*d.nii.gz"))
    found = {}
    for f in files:
        try:
            found[float(f.name[: -len("d.nii.gz")])] = f
        except ValueError:
            continue
    return found


class RawVolume(NamedTuple):
    """A raw statistics volume read by :func:`read_input`."""

    raw: torch.Tensor
    """``(C, X, Y, Z)`` float32 sums."""
    affine: np.ndarray
    stem: str
    """output file stem: the file name without ``.nii[.gz]``, or ``<case>_<days>d``."""
    exposure_days: float | None
    channels: tuple[str, ...]
    """channel names (``volumetric.schema``)."""


def read_input(path: str | Path, exposure_days: float | None = None) -> RawVolume:
    """Read a raw volume: a NIfTI ``(X, Y, Z, C)`` statistics file or a dataset case folder.

    For a case folder the exposure ``exposures/<days>d.nii.gz`` is ``exposure_days`` (default:
    the shortest one present). Channel names come from the file (written by
    ``volumetric.data.io.save_statistics``), else the case's ``simulation.json``, else the channel
    count (3: the legacy PoCA channels, 9: the full table).

    Raises:
        FileNotFoundError: for a missing file, case folder or exposure.
        ValueError: for a volume that is not ``(X, Y, Z, C)`` or whose channels are unknown.
    """

    path = Path(path)
    folder = None
    if path.is_dir():
        exposures = _case_exposures(path)
        if not exposures:
            raise FileNotFoundError(f"{path}: not a case folder (no exposures/<days>d.nii.gz)")
        days = min(exposures) if exposure_days is None else float(exposure_days)
        match = [d for d in exposures if math.isclose(d, days, rel_tol=1e-6)]
        if not match:
            raise FileNotFoundError(f"{path}: no exposure of {days:g} days (present: {sorted(exposures)})")
        file, stem, exposure_days, folder = exposures[match[0]], f"{path.name}_{days:g}d", days, path
    else:
        name = path.name
        file, stem = path, name[: -len(".nii.gz")] if name.endswith(".nii.gz") else name.removesuffix(".nii")
    array, affine, channels = load_statistics(file, folder)
    return RawVolume(torch.as_tensor(array), affine, stem, exposure_days, channels)


def _planned(model: LoadedModel, segmenter: LoadedModel | None, tta: bool, probabilities: bool) -> list[str]:
    keys = ["image"] if model.has_image else []
    if model.has_logits or segmenter is not None:
        keys += ["label"] + (["probabilities"] if probabilities else [])
    if tta:
        keys += [k for k, base in (("uncertainty", "image"), ("label_uncertainty", "label")) if base in keys]
    return keys + ["record"]


def _output_files(stem: str, out_dir: Path) -> dict[str, Path]:
    suffixes = {"image": "upsampled", "label": "label", "probabilities": "probabilities",
                "uncertainty": "uncertainty", "label_uncertainty": "label_uncertainty"}
    files = {k: out_dir / f"{stem}_{s}.nii.gz" for k, s in suffixes.items()}
    files["record"] = out_dir / f"{stem}_inference.json"
    return files


def _channels_last(t: torch.Tensor) -> np.ndarray:
    a = t.cpu().numpy()
    return a[0] if a.shape[0] == 1 else np.moveaxis(a, 0, -1)


def _arrays(pred: Prediction) -> dict[str, np.ndarray]:
    arrays = {}
    if pred.image_physical is not None:
        arrays["image"] = _channels_last(pred.image_physical).astype(np.float32)
    if pred.label is not None:
        arrays["label"] = pred.label.to(torch.uint8).cpu().numpy()
        arrays["probabilities"] = np.moveaxis(pred.probabilities.cpu().numpy(), 0, -1).astype(np.float32)
    if pred.image_std is not None:
        arrays["uncertainty"] = _channels_last(pred.image_std).astype(np.float32)
    if pred.label_std is not None:
        arrays["label_uncertainty"] = pred.label_std.cpu().numpy().astype(np.float32)
    return arrays


def infer_file(in_path: str | Path, out_dir: str | Path, model: LoadedModel, segmenter: LoadedModel | None = None,
               exposure_days: float | None = None, settings: WindowSettings | None = None,
               save_probabilities: bool = False, overwrite: bool = False) -> dict[str, Path]:
    """Predict a NIfTI file or case folder and write NIfTI outputs with the input's affine.

    Files (``<stem>`` = the input name without ``.nii[.gz]``, or ``<case>_<days>d``):
    ``<stem>_upsampled.nii.gz`` (image in per-muon units of ``image_channels``; ``(X, Y, Z)`` for one channel, else ``(X, Y, Z, C)``),
    ``<stem>_label.nii.gz`` (uint8 classes), ``<stem>_probabilities.nii.gz`` (``(X, Y, Z, K)``,
    with ``save_probabilities``), with TTA ``<stem>_uncertainty.nii.gz`` (image std, normalised
    units) and ``<stem>_label_uncertainty.nii.gz`` (std of the chosen class's probability), and
    ``<stem>_inference.json`` (models, exposure, the exposure each model was conditioned on,
    channels, settings, warnings).

    Raises:
        FileExistsError: when an output exists and ``overwrite`` is False (before predicting).
        ValueError: for a voxel spacing other than the model's (per axis), a bad volume, etc.
    """
    import dataclasses
    import json

    from volumetric.infer.sliding_window import check_spacing
    from volumetric.data.io import atomic_path, save_nifti_affine

    settings = settings or WindowSettings()
    raw, affine, stem, exposure_days, channels = read_input(in_path, exposure_days)
    for m in [model] + ([segmenter] if segmenter is not None else []):
        if m.voxel_mm is not None:
            check_spacing(affine, m.voxel_mm)
    files = _output_files(stem, Path(out_dir))
    keys = _planned(model, segmenter, settings.tta, save_probabilities)
    existing = [str(files[k]) for k in keys if files[k].exists()]
    if existing and not overwrite:
        raise FileExistsError(f"outputs exist: {', '.join(existing)}; pass --overwrite to replace them")
    voxel = float(voxel_sizes(np.asarray(affine, dtype=np.float64))[0])
    pred = predict(model, raw, exposure_days, voxel, segmenter, settings, channels)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    arrays = _arrays(pred)
    for key in keys[:-1]:
        save_nifti_affine(files[key], arrays[key], affine)
    record = {"input": str(in_path), "exposure_days": exposure_days, "conditioning_days": pred.conditioning_days,
              "model": str(model.source),
              "segmenter": str(segmenter.source) if segmenter else None, "image_channels": pred.image_channels,
              "image_units": [per_muon_name(c) for c in pred.image_channels or []],
              "settings": dataclasses.asdict(settings), "warnings": pred.warnings,
              "files": {k: str(files[k]) for k in keys[:-1]}}
    with atomic_path(files["record"]) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=2))
    return {k: files[k] for k in keys}
