"""Import measured or externally simulated muon tracks into a dataset case folder.

Sources (chosen by file suffix):

* ``.h5`` / ``.hdf5``: our tracks file (``volumetric.data.io.read_tracks``, written by
  ``volumetric simulate --save-tracks``): the fitted lines at the block faces and ``t_s``.
* ``.csv``: one row per muon, per-plane hits in mm in the block frame (origin at the block's
  bottom corner, z up): columns ``X0,Y0,Z0,X1,Y1,Z1,...`` (plane ``k`` = ``Xk,Yk,Zk``), the planes
  above the block first, then those below (a plane is assigned to a side by its height: above
  the block's top face or below its bottom face). An empty cell or ``nan`` is a missed hit; a
  side needs two hits. An optional ``t_s`` column holds arrival times in seconds.
* ``.root``: a TTree (or RNTuple) with the CSV's column names as branches, read with ``uproot`` (optional extra).

Each side's hits are fitted with a straight line by unweighted least squares (as
``volumetric.physics.detector`` does), PoCA and the scattering angle follow
(``volumetric.physics.reconstruction.poca``), and the per-voxel statistics are written as
``exposures/<days>d.nii.gz``. With arrival times, exposure ``d`` holds the muons with
``t_s <= d * 86400``; without them all muons form one exposure labelled with the single ``days``
given. With a geometry the case also gets ``geometry.json``, ``label.nii.gz`` and
``inv_x0_per_mm.nii.gz``; without one it has volumes only (usable for inference).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from volumetric.data.case import write_exposure, write_truth
from volumetric.data.io import check_output_folder
from volumetric.physics.geometry import Block, check_voxel_size, grid_shape
from volumetric.data.io import read_tracks, output_folder
from volumetric.physics.muons import SECONDS_PER_DAY
from volumetric.physics.reconstruction import poca
from volumetric.schema import CHANNEL_NAMES, DEFAULT_THETA_THRESHOLD_RAD
from volumetric.physics.statistics import ChannelAccumulator

__all__ = ["Tracks", "read_track_file", "read_csv_hits", "read_root_hits", "fit_side", "reconstruct_case"]

_HIT_COLUMN = re.compile(r"^([XYZ])(\d+)$")


@dataclass
class Tracks:
    """Measured lines of N muons: incoming at the top face, outgoing at the bottom face.

    ``in_pos_mm``/``out_pos_mm`` ``(N, 3)`` mm, ``in_dir``/``out_dir`` ``(N, 3)`` unit vectors
    pointing down, ``t_s`` ``(N,)`` s or ``None``, float64 numpy arrays.
    """

    in_pos_mm: np.ndarray
    in_dir: np.ndarray
    out_pos_mm: np.ndarray
    out_dir: np.ndarray
    t_s: np.ndarray | None = None


def fit_side(hits_mm: np.ndarray, z_ref_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares straight lines through hits ``(N, P, 3)`` (NaN = missed plane).

    Returns:
        ``(position at z_ref_mm (N, 3), unit direction pointing down (N, 3), ok (N,))``; ``ok``
        is False where fewer than two planes (at distinct heights) were hit.
    """
    x, y, z = (hits_mm[..., i].astype(np.float64) for i in range(3))
    w = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    d = np.where(w, z_ref_mm - z, 0.0)  # downward distance from the reference height
    x, y = np.where(w, x, 0.0), np.where(w, y, 0.0)
    sw, sd, sdd = w.sum(1), d.sum(1), (d * d).sum(1)
    det = sw * sdd - sd * sd
    ok = (sw >= 2) & (det > 1e-9)
    safe = np.where(ok, det, 1.0)

    def fit(v):
        slope = (sw * (d * v).sum(1) - sd * v.sum(1)) / safe
        return (v.sum(1) - slope * sd) / np.maximum(sw, 1), slope

    x0, tx = fit(x)
    y0, ty = fit(y)
    pos = np.stack([x0, y0, np.full_like(x0, z_ref_mm)], -1)
    direction = np.stack([tx, ty, -np.ones_like(tx)], -1)
    return pos, direction / np.linalg.norm(direction, axis=1, keepdims=True), ok


def _hits_from_columns(path: Path, columns: dict[str, np.ndarray], block_size_mm) -> Tracks:
    planes = sorted({int(m.group(2)) for c in columns if (m := _HIT_COLUMN.match(c))})
    missing = [f"{a}{k}" for k in planes for a in "XYZ" if f"{a}{k}" not in columns]
    if not planes or missing:
        raise ValueError(f"{path}: needs hit columns X0,Y0,Z0,X1,... (mm); missing {missing or ['X0', 'Y0', 'Z0']}")
    hits = np.stack([np.stack([columns[f"{a}{k}"] for a in "XYZ"], -1) for k in planes], 1)  # (N, P, 3)
    top, bottom = float(block_size_mm[2]), 0.0
    plane_z = np.nanmedian(hits[..., 2], axis=0)
    above, below = plane_z > top, plane_z < bottom
    if (~(above | below)).any() or above.sum() < 2 or below.sum() < 2:
        raise ValueError(f"{path}: plane heights {plane_z.tolist()} mm must give two or more planes above the block "
                         f"(z > {top:g}) and two or more below (z < 0), none inside")
    in_pos, in_dir, ok_in = fit_side(hits[:, above], top)
    out_pos, out_dir, ok_out = fit_side(hits[:, below], bottom)
    keep = ok_in & ok_out
    t_s = columns.get("t_s")
    return Tracks(in_pos[keep], in_dir[keep], out_pos[keep], out_dir[keep], None if t_s is None else t_s[keep])


def read_csv_hits(path, block_size_mm) -> Tracks:
    """Tracks from a CSV of per-plane hits (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such CSV file")
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        rows = list(reader)
    try:
        table = np.array([[float(v) if v.strip() else np.nan for v in row] for row in rows], dtype=np.float64)
    except ValueError as err:
        raise ValueError(f"{path}: non-numeric cell ({err})") from None
    if table.ndim != 2 or table.shape[1] != len(header):
        raise ValueError(f"{path}: rows must have {len(header)} cells like the header")
    return _hits_from_columns(path, {name: table[:, i] for i, name in enumerate(header)}, block_size_mm)


def read_root_hits(path, block_size_mm, tree: str | None = None) -> Tracks:
    """Tracks from a ROOT TTree (or RNTuple) with fields ``X0,Y0,Z0,...`` (optional ``t_s``), via uproot.

    ``tree`` names the tree; default: the first TTree or RNTuple in the file.
    """
    try:
        import uproot
    except ImportError:
        raise ImportError(f"{path}: reading ROOT files needs the optional package uproot (pip install uproot)") from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ROOT file")
    with uproot.open(path) as f:
        names = [tree] if tree else [k.split(";")[0] for k, c in f.classnames().items()
                                     if c.startswith("TTree") or c.endswith("RNTuple")]
        if not names:
            raise ValueError(f"{path}: no TTree or RNTuple found")
        branches = f[names[0]].arrays(library="np")
    columns = {k: np.asarray(v, dtype=np.float64) for k, v in branches.items()}
    return _hits_from_columns(path, columns, block_size_mm)


def read_track_file(path, block_size_mm=None) -> Tracks:
    """Read tracks from ``.h5``/``.hdf5``, ``.csv`` or ``.root`` (``block_size_mm`` needed for hits)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        data, _ = read_tracks(path)
        return Tracks(*(data[k].astype(np.float64) for k in ("in_pos_mm", "in_dir", "out_pos_mm", "out_dir", "t_s")))
    if block_size_mm is None:
        raise ValueError(f"{path}: hit files need the block size (give a geometry or --block-size-mm)")
    if suffix == ".csv":
        return read_csv_hits(path, block_size_mm)
    if suffix == ".root":
        return read_root_hits(path, block_size_mm)
    raise ValueError(f"{path}: unknown track file type {suffix!r}; expected .h5, .hdf5, .csv or .root")


def _exposure_masks(tracks: Tracks, days) -> list[tuple[float, np.ndarray]]:
    days = [float(d) for d in days]
    if not days or sorted(set(days)) != days or days[0] <= 0:
        raise ValueError(f"days must be strictly increasing positive numbers, got {days}")
    if tracks.t_s is None:
        if len(days) != 1:
            raise ValueError("the tracks have no arrival times (t_s): give exactly one --days (the acquisition time)")
        return [(days[0], np.ones(len(tracks.in_pos_mm), dtype=bool))]
    return [(d, tracks.t_s <= d * SECONDS_PER_DAY) for d in days]


def _statistics(tracks: Tracks, mask: np.ndarray, shape, voxel_mm: float, top_mm: float,
                theta_threshold_rad: float) -> tuple[np.ndarray, dict]:
    """Sums of every channel (``(C, X, Y, Z)``) of the masked tracks and the measured occupancy."""
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a[mask]))  # noqa: E731
    lines = t(tracks.in_pos_mm), t(tracks.in_dir), t(tracks.out_pos_mm), t(tracks.out_dir)
    result = poca(*lines, fallback_z_mm=0.5 * top_mm)
    stats = ChannelAccumulator(shape, (voxel_mm,) * 3, theta_threshold_rad=theta_threshold_rad)
    stats.add(*lines, result.point_mm, result.theta_rad)
    return stats.volumes().numpy(), stats.occupancy()


def reconstruct_case(
    track_file,
    out_dir,
    voxel_mm: float,
    days,
    geometry: Block | None = None,
    block_size_mm=None,
    overwrite: bool = False,
    theta_threshold_rad: float = DEFAULT_THETA_THRESHOLD_RAD,
) -> dict:
    """Write a case folder (volumes, and labels when ``geometry`` is given) from a track file.

    Args:
        track_file: ``.h5``, ``.csv`` or ``.root`` tracks (see the module docstring).
        out_dir: case folder to create (refused if non-empty unless ``overwrite``).
        voxel_mm: voxel edge (mm).
        days: exposure checkpoints (days); one value when the tracks carry no times.
        geometry: the block, for labels and its size; else ``block_size_mm`` (or the tracks
            file's ``block_size_mm`` attribute) sets the grid.
        overwrite: replace an existing non-empty ``out_dir``.
        theta_threshold_rad: angle threshold of the ``*_above_threshold`` channels (rad).

    Returns:
        The ``reconstruction.json`` content.
    """
    out_dir = Path(out_dir)
    check_output_folder(out_dir, overwrite)
    size = _block_size(track_file, geometry, block_size_mm)
    check_voxel_size(size, voxel_mm)
    tracks = read_track_file(track_file, size)
    masks = _exposure_masks(tracks, days)
    shape = grid_shape(geometry, voxel_mm) if geometry is not None else tuple(round(s / voxel_mm) for s in size)
    with output_folder(out_dir, "volumetric.data.importers.reconstruct_case") as work:
        return _write(work, tracks, masks, shape, float(voxel_mm), size, geometry, track_file,
                      float(theta_threshold_rad))


def _block_size(track_file, geometry, block_size_mm):
    if geometry is not None:
        return tuple(float(s) for s in geometry.size_mm)
    if block_size_mm is not None:
        return tuple(float(s) for s in block_size_mm)
    if Path(track_file).suffix.lower() in (".h5", ".hdf5"):
        _, attrs = read_tracks(track_file)
        if "block_size_mm" in attrs:
            return tuple(float(s) for s in json.loads(attrs["block_size_mm"]))
    raise ValueError(f"{track_file}: block size unknown; give --geometry or --block-size-mm")


def _write(work: Path, tracks, masks, shape, voxel_mm, size, geometry, track_file, theta_threshold_rad) -> dict:
    v3 = (voxel_mm,) * 3
    if geometry is not None:
        write_truth(work, geometry, voxel_mm)
    counts, occupancy = {}, {}
    for d, mask in masks:
        sums, occupancy[f"{d:g}"] = _statistics(tracks, mask, shape, voxel_mm, size[2], theta_threshold_rad)
        write_exposure(work, d, sums, CHANNEL_NAMES, v3)
        counts[f"{d:g}"] = int(mask.sum())
    summary = {"source": str(track_file), "voxel_mm": voxel_mm, "block_size_mm": list(size), "shape": list(shape),
               "checkpoints_days": [d for d, _ in masks], "muons_per_exposure": counts, "occupancy": occupancy,
               "has_labels": geometry is not None, "statistics_channels": list(CHANNEL_NAMES),
               "theta_threshold_rad": theta_threshold_rad}
    (work / "reconstruction.json").write_text(json.dumps(summary, indent=2))
    return summary
