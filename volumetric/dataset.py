"""Dataset contract: a folder of simulated (or imported) cases described by ``dataset.json``.

Layout (documented in ``docs/dataset_format.md``)::

    <root>/dataset.json            settings, class map, checkpoints, splits, fingerprint
    <root>/cases/case_0000/        one case folder as written by :func:`volumetric.case.simulate_case`
    <root>/cases/case_0001/ ...

Case ``i`` is fully determined by ``(seed, i)`` and the preset: its block comes from
``sample_block(default_rng(SeedSequence([seed, i])))`` and its muon seed from
``SeedSequence([seed, i, 1])``, so a dataset built by one process or by ``n`` shards holds the
same volumes byte for byte. A case folder appears under its final name only when complete
(``simulate_case`` builds it under a temporary name), so a killed build is resumed by running
the same command again: finished cases are skipped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from volumetric.case import exposure_filename, simulate_case
from volumetric.detector import default_detector
from volumetric.geometry import grid_shape, sample_block
from volumetric.io import load_nifti, nifti_affine, statistics_channels
from volumetric.schema import CHANNEL_NAMES, CLASS_NAMES, DEFAULT_THETA_THRESHOLD_RAD, LEGACY_CHANNEL_NAMES
from volumetric.schema import check_channel_names, non_negative

__all__ = [
    "FORMAT",
    "FORMATS_READ",
    "CLASS_NAMES",
    "dataset_channels",
    "equivalent_days",
    "SPLITS",
    "Preset",
    "PRESETS",
    "DatasetInfo",
    "case_name",
    "case_block",
    "case_seed",
    "make_splits",
    "dataset_settings",
    "build_dataset",
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


@dataclass(frozen=True)
class Preset:
    """Scale of a random dataset, calibrated by what its images hold.

    A checkpoint labelled ``D`` full-scale days holds the same mean PoCA points per voxel inside
    the block as the 1 m x 1 m x 0.2 m reference block at 2 mm after ``D`` days; it is simulated
    for ``D * sim_days_per_equivalent_day`` days. The factor is measured by
    ``benchmarks/calibrate_presets.py`` (acceptance and PoCA points outside the block depend on
    the block's footprint and thickness, so it is not the voxel-volume ratio).

    Attributes:
        name: preset name (``tiny``, ``cpu``, ``full``).
        block_size_mm: block ``(x, y, thickness)`` in mm.
        voxel_mm: voxel edge in mm.
        equivalent_days: increasing full-scale-equivalent exposures; the last is the upsampling target.
        sim_days_per_equivalent_day: simulated days per full-scale-equivalent day (measured).
        rate_hz_per_m2: sky-plane muon rate (Hz/m^2; 166.7 = 14.4e6 muons/day/m^2).
        method: transport method, ``straight`` or ``stepwise``.
        chunk_muons: muons per simulation chunk (part of the seed contract).
        theta_threshold_rad: angle threshold of the ``*_above_threshold`` channels (rad).
    """

    name: str
    block_size_mm: tuple[float, float, float]
    voxel_mm: float
    equivalent_days: tuple[float, ...]
    sim_days_per_equivalent_day: float
    rate_hz_per_m2: float = 166.7
    method: str = "straight"
    chunk_muons: int = 1 << 17
    theta_threshold_rad: float = DEFAULT_THETA_THRESHOLD_RAD

    @property
    def checkpoints_days(self) -> tuple[float, ...]:
        """Simulated days of every checkpoint (6 significant digits: they name the files)."""
        return tuple(float(f"{d * self.sim_days_per_equivalent_day:.6g}") for d in self.equivalent_days)


_FULL_DAYS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 14.0, 21.0, 31.0, 50.0, 75.0, 100.0)
# Factors measured with `python benchmarks/calibrate_presets.py --blocks 4` (reference: the 1 m block
# at 2 mm holds 0.0986 PoCA points per voxel per day): the 400 x 400 x 200 mm cpu blocks hold 0.2545x
# the reference PoCA density (per-block 0.249-0.262), the 200 x 200 x 100 mm tiny blocks 0.119x
# (0.115-0.124); random full-scale blocks 0.993x (0.987-1.002, `--presets full --blocks 3`), so the
# full preset is its own reference (factor 1).
PRESETS = {
    "tiny": Preset("tiny", (200.0, 200.0, 100.0), 10.0, (1.0, 2.0, 4.0, 8.0), 0.06705),
    "cpu": Preset("cpu", (400.0, 400.0, 200.0), 5.0, _FULL_DAYS, 0.2515),
    "full": Preset("full", (1000.0, 1000.0, 200.0), 2.0, _FULL_DAYS, 1.0),
}


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


def case_name(index: int) -> str:
    """Folder name of case ``index``: ``case_0000``."""
    return f"case_{int(index):04d}"


def case_block(preset: Preset, seed: int, index: int):
    """The random block of case ``index`` (depends only on ``seed``, ``index`` and the preset)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    return sample_block(rng, preset.block_size_mm)


def case_seed(seed: int, index: int) -> int:
    """63-bit muon seed of case ``index``."""
    state = np.random.SeedSequence([int(seed), int(index), 1]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def make_splits(num_cases: int, seed: int, fractions=(0.8, 0.1, 0.1)) -> dict[str, list[str]]:
    """Deterministic train/val/test split of case names (a seeded permutation).

    With 3 or more cases, val and test hold at least one case each.
    """
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 2])).permutation(num_cases)
    n_val = n_test = 0
    if num_cases >= 3:
        n_val = max(1, int(round(fractions[1] * num_cases)))
        n_test = max(1, int(round(fractions[2] * num_cases)))
    val, test = sorted(order[:n_val]), sorted(order[n_val:n_val + n_test])
    train = sorted(order[n_val + n_test:])
    return {k: [case_name(i) for i in v] for k, v in zip(SPLITS, (train, val, test))}


def _fingerprint(settings: dict) -> str:
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dataset_settings(preset: Preset, num_cases: int, seed: int, name: str | None = None) -> dict:
    """The ``dataset.json`` content of a random dataset.

    ``fingerprint`` hashes every setting that changes the bytes (all keys but ``name``,
    ``software`` and ``splits``, which follow from the others); ``build_dataset`` compares it
    to refuse a folder that holds another dataset.
    """
    from volumetric import __version__

    if num_cases < 1:
        raise ValueError(f"cases must be >= 1, got {num_cases}")
    voxel = float(preset.voxel_mm)
    settings = {
        "format": FORMAT,
        "preset": preset.name,
        "voxel_mm": voxel,
        "shape": list(grid_shape(case_block(preset, seed, 0), voxel)),
        "block_size_mm": list(preset.block_size_mm),
        "classes": {str(i): n for i, n in enumerate(CLASS_NAMES)},
        "checkpoints_days": [float(d) for d in preset.checkpoints_days],
        "rate_hz_per_m2": float(preset.rate_hz_per_m2),
        "detector": default_detector(preset.block_size_mm).to_dict(),
        "transport_method": preset.method,
        "chunk_muons": int(preset.chunk_muons),
        "seed": int(seed),
        "num_cases": int(num_cases),
        "equivalent_days": [float(d) for d in preset.equivalent_days],
        "sim_days_per_equivalent_day": float(preset.sim_days_per_equivalent_day),
        "statistics_channels": list(CHANNEL_NAMES),
        "theta_threshold_rad": float(preset.theta_threshold_rad),
        "exposure_files": {f"{d:g}": exposure_filename(d) for d in preset.checkpoints_days},
    }
    meta = {"name": name or f"{preset.name}-seed{seed}", **settings, "fingerprint": _fingerprint(settings)}
    meta["software"] = f"volumetric {__version__}"
    meta["splits"] = make_splits(num_cases, seed)
    return meta


def _parse_shard(shard) -> tuple[int, int]:
    index, count = (int(v) for v in shard)
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"shard must be (i, n) with 1 <= i <= n, got {shard}")
    return index, count


def _write_or_check_meta(root: Path, meta: dict) -> None:
    """Create ``dataset.json`` without ever replacing one, or check that it describes ``meta``.

    Concurrent shards race safely: the file is written under a temporary name and hard-linked
    into place, which fails if another process got there first; then the fingerprints are compared.
    """
    path = root / "dataset.json"
    if not path.exists():
        strangers = [p.name for p in root.iterdir() if p.name not in ("cases", "dataset.json")
                     and not p.name.startswith(".dataset.json.")]
        if strangers:
            raise FileExistsError(f"{root}: folder is not empty ({strangers[0]}, ...) and holds no dataset.json; "
                                  f"choose another --out")
        fd, tmp = tempfile.mkstemp(prefix=".dataset.json.", suffix=".tmp", dir=root)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(meta, indent=2))
            os.chmod(tmp, 0o644)
            os.link(tmp, path)
        except FileExistsError:
            pass  # another shard created it first: compare below
        finally:
            os.remove(tmp)
    old = _read_json(path)
    if old.get("fingerprint") != meta["fingerprint"]:
        raise FileExistsError(
            f"{path}: folder holds a different dataset (fingerprint {old.get('fingerprint')} != "
            f"{meta['fingerprint']}: preset, seed, case count or settings differ); choose another --out"
        )


def _case_complete(folder: Path) -> bool:
    return (folder / "simulation.json").is_file()


def build_dataset(
    out,
    preset: Preset | str,
    cases: int,
    seed: int = 0,
    shard=(1, 1),
    name: str | None = None,
    device="cpu",
    progress: bool = True,
    on_case: Callable[[str], None] | None = None,
) -> dict:
    """Write (or resume) the cases of one shard of a random dataset.

    Args:
        out: dataset folder; created if missing. A folder holding a different dataset is refused.
        preset: a :class:`Preset` or the name of one in ``PRESETS``.
        cases: number of cases of the whole dataset.
        seed: master seed.
        shard: ``(i, n)`` with ``1 <= i <= n``: this process writes case ``j`` iff ``j % n == i - 1``.
        name: dataset name (default ``<preset>-seed<seed>``).
        device: torch device for the simulation.
        progress: show a progress bar over the shard's cases (tqdm, stderr).
        on_case: called with each case name after it is written (tests, logging).

    Returns:
        ``{"built": [...], "skipped": [...], "dataset_json": path}``.
    """
    from tqdm.auto import tqdm

    preset = _preset(preset)
    index, count = _parse_shard(shard)
    root = Path(out)
    meta = dataset_settings(preset, cases, seed, name)
    root.mkdir(parents=True, exist_ok=True)
    _write_or_check_meta(root, meta)
    mine = [j for j in range(cases) if j % count == index - 1]
    built, skipped = [], []
    for j in tqdm(mine, desc=f"cases (shard {index}/{count})", unit="case", disable=not progress):
        folder = root / "cases" / case_name(j)
        if _case_complete(folder):
            skipped.append(folder.name)
            continue
        simulate_case(case_block(preset, seed, j), folder, preset.voxel_mm, list(preset.checkpoints_days),
                      seed=case_seed(seed, j), rate_hz_per_m2=preset.rate_hz_per_m2, method=preset.method,
                      chunk_muons=preset.chunk_muons, device=device, progress=False, overwrite=True,
                      theta_threshold_rad=preset.theta_threshold_rad)
        built.append(folder.name)
        if on_case is not None:
            on_case(folder.name)
    _record_occupancy(root, cases)
    return {"built": built, "skipped": skipped, "dataset_json": str(root / "dataset.json")}


def _record_occupancy(root: Path, cases: int) -> None:
    """Once every case exists: write the measured mean PoCA points and path tracks per voxel of
    every checkpoint (mean over cases, from their ``simulation.json``) into ``dataset.json``.

    Not part of the fingerprint (it is measured, not a setting); any shard that finds the dataset
    complete writes it, atomically, with the same content.
    """
    from volumetric.io import atomic_path

    folders = [root / "cases" / case_name(j) for j in range(cases)]
    if not all(_case_complete(f) for f in folders):
        return
    per_case = [_read_json(f / "simulation.json").get("occupancy") or {} for f in folders]
    meta = _read_json(root / "dataset.json")
    measured = {}
    for days in meta["exposure_files"]:
        rows = [c[days] for c in per_case if days in c]
        if len(rows) == len(folders):
            measured[days] = {key: round(float(np.mean([r[key] for r in rows])), 6)
                              for key in ("poca_points_per_voxel", "path_tracks_per_voxel") if key in rows[0]}
    meta["measured_occupancy"] = measured
    with atomic_path(root / "dataset.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2))


def _preset(preset: Preset | str) -> Preset:
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[preset]


# ---------------------------------------------------------------------------------------------
# Loading and validation


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: malformed JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


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
        spacing = np.round(np.linalg.norm(image.affine[:3, :3], axis=0), 6).tolist()
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
    meta = _read_json(meta_path)
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
