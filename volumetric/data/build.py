"""Building a random dataset: presets calibrated by PoCA density, deterministic cases, sharded and
resumable writes (the ``volumetric-dataset/2`` contract is read by :mod:`volumetric.data.dataset`).

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
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from volumetric.data.case import simulate_case
from volumetric.data.dataset import FORMAT, SPLITS
from volumetric.data.io import exposure_filename, read_json_object
from volumetric.physics.detector import default_detector
from volumetric.physics.geometry import grid_shape, sample_block
from volumetric.schema import CHANNEL_NAMES, CLASS_NAMES, DEFAULT_THETA_THRESHOLD_RAD

__all__ = [
    "Preset",
    "PRESETS",
    "case_name",
    "case_block",
    "case_seed",
    "make_splits",
    "dataset_settings",
    "build_dataset",
]


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
    old = read_json_object(path)
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
                      theta_threshold_rad=preset.theta_threshold_rad, mean_theta2_nifti=False)
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
    from volumetric.data.io import atomic_path

    folders = [root / "cases" / case_name(j) for j in range(cases)]
    if not all(_case_complete(f) for f in folders):
        return
    per_case = [read_json_object(f / "simulation.json").get("occupancy") or {} for f in folders]
    meta = read_json_object(root / "dataset.json")
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
