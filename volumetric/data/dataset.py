"""Dataset contract: a folder of simulated (or imported) cases described by ``dataset.json``.

Layout (documented in ``docs/dataset_format.md``)::

    <root>/dataset.json            settings, class map, checkpoints, splits, fingerprint
    <root>/cases/case_0000/        one case folder as written by :func:`volumetric.data.case.simulate_case`
    <root>/cases/case_0001/ ...

This module reads and validates a dataset and wraps it for MONAI; it never imports the
simulator (building one is :mod:`volumetric.data.build`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.affines import voxel_sizes

from volumetric.data.io import exposure_filename, load_nifti, nifti_affine, read_json_object, statistics_channels
from volumetric.schema import CLASS_NAMES, LEGACY_CHANNEL_NAMES, check_channel_names, non_negative

__all__ = [
    "FORMAT",
    "FORMATS_READ",
    "dataset_channels",
    "equivalent_days",
    "dataset_occupancy",
    "SPLITS",
    "DatasetInfo",
    "load_dataset",
    "case_record",
    "make_dataset",
]

FORMAT = "volumetric-dataset/2"
FORMATS_READ = ("volumetric-dataset/1", FORMAT)  # /1: the three PoCA channels, no calibration record
SPLITS = ("train", "val", "test")
REQUIRED_KEYS = (
    "name", "format", "voxel_mm", "shape", "block_size_mm", "classes", "checkpoints_days",
    "rate_hz_per_m2", "detector", "transport_method", "seed", "software", "num_cases", "splits",
    "fingerprint",
)


@dataclass
class DatasetInfo:
    """A validated dataset: its root, ``dataset.json`` content and per-case file records."""

    root: Path
    meta: dict
    cases: dict[str, dict] = field(default_factory=dict)

    @property
    def channels(self) -> tuple[str, ...]:
        """Statistics channels of the exposure files, in file order (``volumetric.schema`` names)."""
        return dataset_channels(self.meta)

    def split(self, name: str) -> list[dict]:
        """Case records of one split (``train``, ``val``, ``test``) or ``all``."""
        if name == "all":
            return list(self.cases.values())
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS + ('all',)}")
        return [self.cases[c] for c in self.meta["splits"][name]]


def dataset_channels(meta: dict) -> tuple[str, ...]:
    """Channel names a ``dataset.json`` declares (``volumetric-dataset/1`` without the key: the legacy three)."""
    return tuple(meta.get("statistics_channels") or LEGACY_CHANNEL_NAMES)


def equivalent_days(meta: dict) -> dict[float, float]:
    """``{simulated checkpoint days: full-scale-equivalent days}`` of a ``dataset.json`` (empty if not recorded)."""
    labels = meta.get("equivalent_days") or []
    days = meta.get("checkpoints_days") or []
    if labels and len(labels) != len(days):
        raise ValueError("dataset.json: 'equivalent_days' must be a list parallel to 'checkpoints_days'")
    return {float(d): float(e) for d, e in zip(days, labels)}


def dataset_occupancy(meta: dict) -> dict[str, float] | None:
    """``{days: mean PoCA points per voxel}`` measured on a dataset (``dataset.json``), or ``None``."""
    measured = meta.get("measured_occupancy") or {}
    curve = {d: float(v["poca_points_per_voxel"]) for d, v in measured.items() if v.get("poca_points_per_voxel")}
    return curve or None


# ---------------------------------------------------------------------------------------------
# Loading and validation


def _check_meta(path: Path, meta: dict) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ValueError(f"{path}: missing key {missing[0]!r}" + (f" (and {missing[1:]})" if missing[1:] else ""))
    if meta["format"] not in FORMATS_READ:
        raise ValueError(f"{path}: key 'format' is {meta['format']!r}, expected one of {FORMATS_READ}; rebuild "
                         f"it with `volumetric simulate --preset ... --out NEW_FOLDER`")
    try:
        check_channel_names(dataset_channels(meta), f"{path}: key 'statistics_channels'")
    except ValueError as err:
        raise ValueError(f"{err}; rebuild the dataset with `volumetric simulate --preset ... --out NEW_FOLDER`") from None
    voxel = meta["voxel_mm"]
    if not isinstance(voxel, (int, float)) or not math.isfinite(voxel) or voxel <= 0:
        raise ValueError(f"{path}: key 'voxel_mm' must be a positive number, got {voxel!r}")
    shape = meta["shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(s, int) and s > 0 for s in shape)):
        raise ValueError(f"{path}: key 'shape' must be three positive integers, got {shape!r}")
    days = meta["checkpoints_days"]
    if not (isinstance(days, list) and days and all(isinstance(d, (int, float)) and d > 0 for d in days)
            and sorted(set(days)) == days):
        raise ValueError(f"{path}: key 'checkpoints_days' must be strictly increasing positive days, got {days!r}")
    splits = meta["splits"]
    if not isinstance(splits, dict) or any(not isinstance(splits.get(s), list) for s in SPLITS):
        raise ValueError(f"{path}: key 'splits' must map {SPLITS} to lists of case names")


def case_record(root: Path, name: str, checkpoints_days: Sequence[float], labels: bool = True) -> dict:
    """File paths of one case: ``label``, ``target`` (highest exposure), ``exposures`` {days: path}.

    Raises:
        FileNotFoundError: naming the case and the missing file.
    """
    folder = Path(root) / "cases" / name
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: case {name!r} listed in dataset.json is missing")
    exposures = {float(d): str(folder / exposure_filename(d)) for d in checkpoints_days}
    record = {"case": name, "exposures": exposures, "target": exposures[max(exposures)]}
    if labels:
        record["label"] = str(folder / "label.nii.gz")
    for path in [*exposures.values()] + ([record["label"]] if labels else []):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: missing file of case {name!r}")
    return record


def _check_header(path: str, affine: np.ndarray, shape: Sequence[int], channels: Sequence[str] | None = None) -> None:
    """Shape and affine against ``dataset.json``; for statistics files also the channels."""
    try:
        image = nib.load(path)
    except Exception as err:  # nibabel raises many types for corrupt headers
        raise ValueError(f"{path}: not a readable NIfTI file ({type(err).__name__}: {err})") from None
    if channels is not None:
        count = image.shape[3] if len(image.shape) == 4 else 1
        if count != len(channels):
            raise ValueError(f"{path}: {count} statistics channels, dataset.json declares {len(channels)} "
                             f"({', '.join(channels)})")
        named = statistics_channels(path)
        if named is not None and tuple(named) != tuple(channels):
            raise ValueError(f"{path}: channels {named} disagree with dataset.json's {list(channels)}")
    if tuple(image.shape[:3]) != tuple(shape):
        raise ValueError(f"{path}: shape {tuple(image.shape[:3])} disagrees with dataset.json shape {tuple(shape)}")
    if not np.allclose(image.affine, affine, atol=1e-4):
        spacing = np.round(voxel_sizes(image.affine), 6).tolist()
        raise ValueError(
            f"{path}: affine disagrees with dataset.json (spacing {spacing} mm, origin "
            f"{image.affine[:3, 3].tolist()}; expected voxel_mm {affine[0, 0]:g} and the block origin)"
        )


def _check_data(path: str, is_label: bool, channels: Sequence[str] = ()) -> None:
    array, _ = load_nifti(path)
    if not np.issubdtype(array.dtype, np.integer) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ValueError(f"{path}: {bad} NaN/Inf voxel values")
    if is_label:
        values = np.unique(array)
        unknown = [v for v in values.tolist() if v not in range(len(CLASS_NAMES))]
        if unknown:
            raise ValueError(f"{path}: unknown class ids {unknown[:10]} (expected 0..{len(CLASS_NAMES) - 1})")
    else:
        positive = [i for i, name in enumerate(channels) if non_negative(name)]
        if (array[..., positive] < 0).any():
            raise ValueError(f"{path}: negative scattering statistics (counts and sums of theta^2 are >= 0)")


def load_dataset(path, check_data: bool = True) -> DatasetInfo:
    """Read and validate a dataset folder.

    Checks ``dataset.json`` (readable JSON, required keys, format), that every case in the
    splits exists with its label map and exposures, that every NIfTI header agrees with
    ``voxel_mm`` and ``shape`` (affine = voxel size, block origin at 0), and with
    ``check_data`` that volumes are readable, finite and labels within the class map.

    Raises:
        FileNotFoundError, ValueError: naming the file and the problem.
    """
    root = Path(path)
    meta_path = root / "dataset.json"
    meta = read_json_object(meta_path)
    _check_meta(meta_path, meta)
    affine = nifti_affine((float(meta["voxel_mm"]),) * 3)
    labels = bool(meta.get("has_labels", True))
    info = DatasetInfo(root, meta)
    for split in SPLITS:
        for name in meta["splits"][split]:
            record = case_record(root, name, meta["checkpoints_days"], labels)
            if labels:
                _check_header(record["label"], affine, meta["shape"])
            for file in record["exposures"].values():
                _check_header(file, affine, meta["shape"], info.channels)
            if check_data:
                for file in ([record["label"]] if labels else []) + list(record["exposures"].values()):
                    _check_data(file, labels and file == record["label"], info.channels)
            info.cases[name] = record
    return info


# ---------------------------------------------------------------------------------------------
# MONAI dataset factory


def make_dataset(
    path,
    split: str,
    patch_size: Sequence[int] | None = (64, 64, 64),
    sampling: str = "log-uniform",
    fixed_days: float | None = None,
    num_samples: int = 1,
    augment: bool | None = None,
    class_ratios: Sequence[float] | None = None,
    normalisation: dict | None = None,
    preload_exposures: bool = True,
    cache_rate: float = 1.0,
    seed: int = 0,
    check_data: bool = False,
    num_workers: int = 0,
):
    """A MONAI ``CacheDataset`` of one split with the training (or evaluation) transforms.

    Each item is a dict (a list of ``num_samples`` dicts when patches are cropped) with
    ``image`` ``(C, X, Y, Z)`` float32 (the normalised input exposure, channels
    ``info.channels``, see ``transforms.normalise``), ``target`` ``(C, X, Y, Z)`` float32 (the
    normalised highest exposure), ``label`` ``(1, X, Y, Z)`` int64 and ``exposure_days`` (float, days).

    Args:
        path: dataset folder.
        split: ``train``, ``val``, ``test`` or ``all``.
        patch_size: class-balanced patch ``(X, Y, Z)`` in voxels (volumes smaller than it are
            zero-padded); ``None`` yields whole volumes.
        sampling: input exposure choice, ``uniform``, ``log-uniform`` or ``fixed``.
        fixed_days: the exposure for ``sampling="fixed"`` (default: the shortest).
        num_samples: patches per volume per call.
        augment: XY flips and 90-degree rotations (default: on for ``train`` only).
        class_ratios: patch-centre ratios per class (default favours rare classes).
        normalisation: normalisation parameters (default: estimated from the train split); they
            must cover the dataset's channels.
        preload_exposures: keep all exposures of a case in the cache (fast; memory = all exposures).
        cache_rate: fraction of cases cached.
        seed: seed of the random transforms.
        check_data: also read every voxel when validating the dataset.
        num_workers: workers used to fill the cache.

    Returns:
        The ``CacheDataset``; its ``normalisation`` attribute holds the parameters dict (store it
        in checkpoints) and ``info`` the :class:`DatasetInfo`.
    """
    from monai.data import CacheDataset

    from transforms.pipeline import training_transforms
    from transforms.normalise import check_normalisation, estimate_normalisation

    info = load_dataset(path, check_data=check_data)
    records = info.split(split)
    if not records:
        raise ValueError(f"{Path(path) / 'dataset.json'}: split {split!r} holds no cases")
    if normalisation is None:
        train = info.split("train") or records
        normalisation = estimate_normalisation([r["target"] for r in train[:8]], info.channels)
    transform = training_transforms(
        normalisation, patch_size=patch_size, sampling=sampling, fixed_days=fixed_days,
        num_samples=num_samples, augment=(split == "train") if augment is None else augment,
        class_ratios=class_ratios, preload_exposures=preload_exposures,
        with_labels=bool(info.meta.get("has_labels", True)), channels=info.channels,
    )
    transform.set_random_state(seed=seed)
    # copy_cache=False: the random steps never modify cached tensors in place (transforms/pipeline.py),
    # and deep-copying the preloaded exposures cost more than the whole random part.
    dataset = CacheDataset([dict(r) for r in records], transform, cache_rate=cache_rate, num_workers=num_workers,
                           progress=False, copy_cache=False)
    dataset.normalisation = check_normalisation(normalisation)
    dataset.info = info
    return dataset
