"""How well each per-voxel statistic separates each class from concrete: CNR and ROC AUC.

For every exposure of a set of case folders, every **feature** of a voxel is scored against the
label map, pooled over all cases: the voxels of rebar, duct, void and unknown against the
concrete voxels. Features (:func:`voxel_features`):

* every statistics channel as stored (its sum; unit of the channel, e.g. ``count`` in muons,
  ``sum_log_theta`` in ln(rad));
* for every channel averaged over a count channel (``per`` in :data:`volumetric.schema.CHANNELS`),
  the **mean per muon** (``per`` = ``count``) or **per track** (``per`` = ``path_count``),
  named by :func:`volumetric.schema.per_muon_name`: ``sum_X`` -> ``mean_X``, ``count_X`` -> ``fraction_X``,
  the ``path_`` prefix kept. Today's table gives ``mean_theta2_rad2`` (rad^2),
  ``mean_theta4_rad4`` (rad^4), ``mean_log_theta`` (ln(rad)), ``mean_log_theta_sq``
  (ln(rad)^2), ``fraction_above_threshold`` (1), ``path_mean_log_theta`` (ln(rad)) and
  ``path_fraction_above_threshold`` (1).

Each feature comes **raw** (one voxel) and **smoothed**: every channel summed over the 3x3x3
neighbourhood first (edges repeat the border voxel), and the means taken as ratios of those
pooled sums, i.e. the mean over all muons of the 27 voxels (not an average of 27 means).

Scores (:func:`cnr`, :func:`auc`):

* CNR = (mean of the class - mean of concrete) / std of concrete (feature units cancel);
* AUC = the probability that a random class voxel has a higher feature value than a random
  concrete voxel (ties count 1/2): 0.5 is no separation, 1 is perfect separation upwards and
  0 perfect separation downwards. Voids scatter less than concrete, so for voids an AUC
  **below** 0.5 means separable (0.01 is near perfect).

Only voxels away from the top and bottom faces are scored (``trim_layers`` z-layers are dropped
at each face), where the PoCA statistics are dominated by the faces rather than the material.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from volumetric.data.io import exposure_filename
from volumetric.data.io import load_nifti, load_statistics, read_json_object
from volumetric.schema import CHANNEL_NAMES, CLASS_NAMES, channel, check_channel_names
from volumetric.schema import per_muon_name

__all__ = [
    "SCORED_CLASSES",
    "auc",
    "cnr",
    "feature_source",
    "voxel_features",
    "case_days",
    "dataset_case_folders",
    "dataset_equivalent_days",
    "separability_table",
    "markdown_table",
]

SCORED_CLASSES: tuple[str, ...] = CLASS_NAMES[1:]
"""Classes scored against concrete (label 0): rebar, duct, void, unknown."""
_SMOOTH_SIZE = 3  # neighbourhood edge (voxels) of the smoothed features


# ---------------------------------------------------------------------------------------------
# Scores


def _finite_1d(values, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(array).all():
        raise ValueError(f"{what}: {int((~np.isfinite(array)).sum())} NaN/Inf values")
    return array


def _auc_sorted(feature_class: np.ndarray, concrete_sorted: np.ndarray) -> float:
    """Mann-Whitney U / (n1 n2) of ``feature_class`` against an already sorted concrete array."""
    if feature_class.size == 0 or concrete_sorted.size == 0:
        return math.nan
    below = np.searchsorted(concrete_sorted, feature_class, side="left")  # concrete < x
    below_or_equal = np.searchsorted(concrete_sorted, feature_class, side="right")  # concrete <= x
    u = below.sum(dtype=np.float64) + 0.5 * (below_or_equal - below).sum(dtype=np.float64)
    return float(u / (feature_class.size * concrete_sorted.size))


def auc(feature_class, feature_concrete) -> float:
    """ROC area of a class against concrete for one feature.

    The probability that a random class voxel has a higher value than a random concrete voxel,
    ties counting 1/2: the Mann-Whitney U statistic of the class divided by ``n1 n2``, computed
    from the ranks of the class values among the concrete values (one sort, O(n log n)).

    Args:
        feature_class: feature values (any unit, any shape) of the class voxels.
        feature_concrete: values of the same feature (same unit) of the concrete voxels.

    Returns:
        The AUC in [0, 1] (0.5 = not separable, 1 = class always higher, 0 = always lower),
        NaN if either set is empty.

    Raises:
        ValueError: if a value is NaN or infinite.
    """
    values = _finite_1d(feature_class, "auc: feature_class")
    concrete = _finite_1d(feature_concrete, "auc: feature_concrete")
    return _auc_sorted(values, np.sort(concrete))


def cnr(feature_class, feature_concrete) -> float:
    """Contrast-to-noise ratio of a class against concrete for one feature.

    Args:
        feature_class: feature values (any unit, any shape) of the class voxels.
        feature_concrete: values of the same feature (same unit) of the concrete voxels.

    Returns:
        ``(mean_class - mean_concrete) / std_concrete`` (dimensionless; population std,
        ddof 0); NaN if either set is empty or if both the std and the difference are 0,
        +-inf if only the std is 0.

    Raises:
        ValueError: if a value is NaN or infinite.
    """
    values = _finite_1d(feature_class, "cnr: feature_class")
    concrete = _finite_1d(feature_concrete, "cnr: feature_concrete")
    if values.size == 0 or concrete.size == 0:
        return math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(values.mean() - concrete.mean()) / np.float64(concrete.std()))


# ---------------------------------------------------------------------------------------------
# Features


def feature_source(feature: str) -> str:
    """``poca`` or ``path``: where the muons of a feature (channel or derived mean) add."""
    return "path" if feature.startswith("path_") else "poca"


def _neighbourhood_sum(volume: np.ndarray) -> np.ndarray:
    """Sum over the 3x3x3 neighbourhood of every voxel, the border voxel repeating at the faces.

    Equal to ``scipy.ndimage.uniform_filter(volume, 3, mode="nearest") * 27`` but computed as
    sums of shifted copies, so integer counts stay exact (an empty neighbourhood sums to exactly 0).
    """
    total = np.asarray(volume, dtype=np.float64)
    for axis in range(total.ndim):
        padded = np.pad(total, [(1, 1) if a == axis else (0, 0) for a in range(total.ndim)], mode="edge")
        n = total.shape[axis]
        total = sum(np.take(padded, np.arange(k, k + n), axis=axis) for k in range(_SMOOTH_SIZE))
    return total


def _pooled_mean(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    """``total / count``; voxels with ``count == 0`` get the mean over the occupied voxels (0 if none)."""
    occupied = count > 0
    mean = np.zeros_like(total)
    np.divide(total, count, out=mean, where=occupied)
    mean[~occupied] = mean[occupied].mean() if occupied.any() else 0.0
    return mean


def voxel_features(sums: np.ndarray, channels: Sequence[str], smooth: bool) -> dict[str, np.ndarray]:
    """Every feature of every voxel: the channels as stored plus the means derived from them.

    Args:
        sums: ``(C, X, Y, Z)`` additive per-voxel sums, channel ``c`` named ``channels[c]``
            (units of :data:`volumetric.schema.CHANNELS`: counts in muons or tracks, sums in
            rad^2, rad^4, ln(rad), ...).
        channels: the C channel names (known to :mod:`volumetric.schema`, each sum with its
            count channel).
        smooth: if true, every channel is first summed over the 3x3x3 neighbourhood of each
            voxel (``uniform_filter(mode="nearest") * 27``, computed exactly: at the faces the
            border voxel repeats), and the derived means are ratios of those pooled sums.

    Returns:
        ``{feature name: (X, Y, Z) float64}``: each channel under its own name (its sum, in its
        unit) and, for each channel with a count channel ``per``, its mean per muon/track
        under :func:`volumetric.schema.per_muon_name` (``sum / count``, in the channel's unit; a
        fraction in [0, 1] for ``count_*`` channels). Where the count is 0 the mean is
        undefined; those voxels get the mean of that feature over the voxels whose count is
        positive (an uninformative value; 0 if no voxel has a count).

    Raises:
        ValueError: if the shape and the names disagree or a name is unknown.
    """
    sums = np.asarray(sums)
    names = check_channel_names(channels, "voxel_features: channels")
    if sums.ndim != 4 or sums.shape[0] != len(names):
        raise ValueError(f"voxel_features: expected sums of shape (C={len(names)}, X, Y, Z), got {sums.shape}")
    planes = {name: sums[i].astype(np.float64) for i, name in enumerate(names)}
    if smooth:
        planes = {name: _neighbourhood_sum(plane) for name, plane in planes.items()}
    features = dict(planes)
    for name in names:
        per = channel(name).per
        if per is not None:
            features[per_muon_name(name)] = _pooled_mean(planes[name], planes[per])
    return features


# ---------------------------------------------------------------------------------------------
# Case folders


def _simulation(folder: Path) -> dict:
    path = folder / "simulation.json"
    return read_json_object(path) if path.is_file() else {}


def case_days(folder) -> list[float]:
    """Exposures (days) of a case folder: ``simulation.json`` ``checkpoints_days``, else the files found.

    Raises:
        FileNotFoundError: if the folder holds neither.
    """
    folder = Path(folder)
    days = _simulation(folder).get("checkpoints_days")
    if days:
        return [float(d) for d in days]
    found = sorted(float(p.name[: -len("d.nii.gz")]) for p in (folder / "exposures").glob("*d.nii.gz"))
    if not found:
        raise FileNotFoundError(f"{folder}: no simulation.json checkpoints_days and no exposures/<days>d.nii.gz")
    return found


def dataset_case_folders(root, split: str = "test") -> list[Path]:
    """Case folders of one split (``train``, ``val``, ``test``) or ``all`` of a dataset folder.

    Raises:
        FileNotFoundError: if ``dataset.json`` or a listed case folder is missing.
        ValueError: if the split is unknown or ``dataset.json`` lacks ``splits``.
    """
    root = Path(root)
    meta = read_json_object(root / "dataset.json")
    splits = meta.get("splits")
    if not isinstance(splits, dict):
        raise ValueError(f"{root / 'dataset.json'}: no 'splits' mapping")
    if split == "all":
        names = [name for names in splits.values() for name in names]
    elif split in splits:
        names = list(splits[split])
    else:
        raise ValueError(f"{root / 'dataset.json'}: unknown split {split!r}; expected one of {[*splits, 'all']}")
    folders = [root / "cases" / name for name in names]
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: case listed in {root / 'dataset.json'} is missing")
    return folders


def dataset_equivalent_days(root) -> dict[float, float] | None:
    """``{checkpoint days: full-scale-equivalent days}`` from ``dataset.json``, or None if not recorded.

    Raises:
        ValueError: if ``equivalent_days`` is not parallel to ``checkpoints_days``.
    """
    from volumetric.data.dataset import equivalent_days

    return equivalent_days(read_json_object(Path(root) / "dataset.json")) or None


def _scored_labels(folder: Path, trim_layers: int) -> np.ndarray:
    path = folder / "label.nii.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing label map of case {folder}")
    label, _ = load_nifti(path)
    if label.ndim != 3:
        raise ValueError(f"{path}: expected a (X, Y, Z) label map, got shape {label.shape}")
    if label.shape[2] <= 2 * trim_layers:
        raise ValueError(f"{path}: {label.shape[2]} z-layers leave none after trimming {trim_layers} at each face")
    return label


def _load_sums(folder: Path, days: float, shape: tuple[int, ...]) -> tuple[np.ndarray, list[str]]:
    path = folder / exposure_filename(days)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing exposure of {days:g} days in case {folder}")
    sums, _, names = load_statistics(path, folder)
    if sums.shape[1:] != shape:
        raise ValueError(f"{path}: shape {sums.shape[1:]} does not match the label map {shape}")
    return sums, list(names)


def _pool_exposure(folders, labels, days: float, smooth: bool, trim_layers: int) -> tuple[dict, np.ndarray]:
    """``({feature: float32 values of the scored voxels of all cases}, their labels)``."""
    pooled: dict[str, list[np.ndarray]] = {}
    for folder, label in zip(folders, labels):
        sums, names = _load_sums(folder, days, label.shape)
        z = slice(trim_layers, label.shape[2] - trim_layers)
        for name, volume in voxel_features(sums, names, smooth).items():
            pooled.setdefault(name, []).append(volume[:, :, z].astype(np.float32).ravel())
    common = [name for name, parts in pooled.items() if len(parts) == len(folders)]
    scored_labels = np.concatenate([label[:, :, trim_layers:label.shape[2] - trim_layers].ravel() for label in labels])
    return {name: np.concatenate(pooled[name]) for name in common}, scored_labels


def _score_rows(values: dict, scored_labels: np.ndarray, base: dict) -> list[dict]:
    masks = {name: scored_labels == k for k, name in enumerate(CLASS_NAMES)}
    counts = {f"n_{name}": int(mask.sum()) for name, mask in masks.items()}
    rows = []
    for feature, array in values.items():
        concrete = array[masks["concrete"]].astype(np.float64)
        concrete_sorted = np.sort(concrete)
        row = {**base, "feature": feature, "source": feature_source(feature)}
        for name in SCORED_CLASSES:
            cls = array[masks[name]].astype(np.float64)
            row[f"cnr_{name}"] = cnr(cls, concrete)
            row[f"auc_{name}"] = _auc_sorted(cls, concrete_sorted)
        rows.append({**row, **counts})
    return rows


def separability_table(
    case_folders: Iterable,
    days_list: Sequence[float] | None = None,
    trim_layers: int = 2,
    equivalent_days: Mapping[float, float] | None = None,
    progress: bool = False,
) -> list[dict]:
    """CNR and AUC of every class against concrete for every exposure and feature, pooled over cases.

    Args:
        case_folders: case folders (``label.nii.gz``, ``exposures/<days>d.nii.gz``,
            optionally ``simulation.json``), all of one voxel grid per case.
        days_list: exposures (days) to score; default: the ``checkpoints_days`` of the first
            case (every case must hold every exposure).
        trim_layers: z-layers dropped at the top and at the bottom face (voxels); the rest
            are scored.
        equivalent_days: optional ``{days: full-scale-equivalent days}`` to label the rows.
        progress: show a progress bar over exposures.

    Returns:
        One dict per (exposure, feature, smoothing): ``days``, ``equivalent_days`` (None if
        unknown), ``feature``, ``source`` (poca/path), ``smoothed`` (bool), for each of rebar,
        duct, void, unknown ``cnr_<class>`` and ``auc_<class>`` (NaN when the class has no
        scored voxel), and ``n_<class>`` scored voxels of every class including concrete.
        Features missing from some case (older files) are left out.

    Raises:
        FileNotFoundError: naming a missing label map or exposure file.
        ValueError: naming a file whose shape or channels do not fit, or for no cases.
    """
    folders = [Path(f) for f in case_folders]
    if not folders:
        raise ValueError("separability_table: no case folders given")
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such case folder")
    if trim_layers < 0:
        raise ValueError(f"separability_table: trim_layers must be >= 0, got {trim_layers}")
    days_list = [float(d) for d in (days_list if days_list is not None else case_days(folders[0]))]
    labels = [_scored_labels(folder, trim_layers) for folder in folders]
    equivalent = {float(k): float(v) for k, v in (equivalent_days or {}).items()}
    iterator = days_list
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(days_list, desc="exposures", unit="exposure")
    rows = []
    for days in iterator:
        for smooth in (False, True):
            values, scored_labels = _pool_exposure(folders, labels, days, smooth, trim_layers)
            base = {"days": days, "equivalent_days": _lookup(equivalent, days), "smoothed": smooth}
            rows.extend(_score_rows(values, scored_labels, base))
    rows.sort(key=lambda r: (r["days"], _feature_order(r["feature"]), r["smoothed"]))
    return rows


def _lookup(table: Mapping[float, float], days: float) -> float | None:
    for key, value in table.items():
        if math.isclose(key, days, rel_tol=1e-9, abs_tol=1e-12):
            return value
    return None


def _feature_order(feature: str) -> tuple[bool, bool, int, str]:
    """Sort key: PoCA before path, channels before derived means, then in channel-table order."""
    bases = {per_muon_name(name): name for name in CHANNEL_NAMES if channel(name).per is not None}
    base = bases.get(feature, feature)
    position = CHANNEL_NAMES.index(base) if base in CHANNEL_NAMES else len(CHANNEL_NAMES)
    return (feature_source(feature) == "path", feature in bases, position, feature)


# ---------------------------------------------------------------------------------------------
# Markdown


def _fmt(value: float) -> str:
    """``0.54`` -> ``.54``, ``-0.5`` -> ``-.50``, NaN -> ``n/a``."""
    if value is None or not math.isfinite(value):
        return "n/a" if value is None or math.isnan(value) else ("inf" if value > 0 else "-inf")
    text = f"{value:.2f}"
    if text == "-0.00":
        text = "0.00"
    return text.replace("0.", ".", 1) if text.lstrip("-").startswith("0.") else text


def _days_title(row: dict) -> str:
    title = f"{row['days']:g} d"
    if row.get("equivalent_days") is not None:
        title += f" (full-scale equivalent {row['equivalent_days']:g} d)"
    return title


def markdown_table(rows: Sequence[dict], classes: Sequence[str] = SCORED_CLASSES) -> str:
    """Markdown tables of :func:`separability_table` rows: one section per exposure.

    Each cell is ``CNR/AUC`` of a class against concrete (e.g. ``.54/.66``); the cell furthest
    from no separation (AUC 0.5) per class and exposure is bold. Classes without scored
    voxels are left out.

    Args:
        rows: rows of :func:`separability_table`.
        classes: classes to show (columns), of :data:`SCORED_CLASSES`.

    Returns:
        Markdown text ending in a newline.
    """
    if not rows:
        return "_No rows._\n"
    shown = [c for c in classes if any(r.get(f"n_{c}", 0) > 0 for r in rows)]
    lines = [
        "Cells: CNR/AUC of the class against concrete. CNR = (mean class - mean concrete) / std concrete; "
        "AUC = P(class voxel > concrete voxel), 0.5 = not separable. For voids an AUC **below** 0.5 means "
        "separable (voids scatter less; 0.01 is near perfect). Bold: the feature furthest from AUC 0.5 per "
        "class and exposure. Smoothed: 3x3x3 neighbourhood sums, means pooled over the 27 voxels.",
        "",
    ]
    for days in sorted({r["days"] for r in rows}):
        section = [r for r in rows if r["days"] == days]
        best = {c: max(section, key=lambda r: _separation(r[f"auc_{c}"])) for c in shown}
        counts = ", ".join(f"{c} {section[0].get(f'n_{c}', 0)}" for c in ("concrete", *shown))
        lines += [f"### {_days_title(section[0])}", "", f"Scored voxels: {counts}.", ""]
        lines.append("| feature | source | smoothed | " + " | ".join(shown) + " |")
        lines.append("|---|---|---|" + "---|" * len(shown))
        for r in section:
            cells = []
            for c in shown:
                cell = f"{_fmt(r[f'cnr_{c}'])}/{_fmt(r[f'auc_{c}'])}"
                cells.append(f"**{cell}**" if r is best[c] else cell)
            lines.append(f"| {r['feature']} | {r['source']} | {'3x3x3' if r['smoothed'] else 'no'} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _separation(value: float) -> float:
    return abs(value - 0.5) if value is not None and math.isfinite(value) else -1.0
