"""Files: NIfTI volumes with their affine, HDF5 track files, atomic writes.

NIfTI convention: arrays are ``(X, Y, Z)`` (or ``(X, Y, Z, C)``), z vertical. The affine maps a
voxel index to the position of the voxel *centre* in mm in the block frame, so voxel ``i``
covering ``[origin + i v, origin + (i + 1) v)`` has centre ``origin + (i + 1/2) v``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np

__all__ = [
    "nifti_affine",
    "save_nifti_affine",
    "save_nifti",
    "load_nifti",
    "save_statistics",
    "statistics_channels",
    "load_statistics",
    "atomic_path",
    "read_json_object",
    "exposure_filename",
    "mean_theta2_filename",
    "check_output_folder",
    "output_folder",
    "OUTPUT_MARKER",
    "write_output_marker",
    "has_output_marker",
    "TRACK_DATASETS",
    "TrackWriter",
    "read_tracks",
]

TRACK_DATASETS = {
    "p_gev": ("GeV/c", "true momentum at generation"),
    "t_s": ("s", "arrival time since the start of the exposure"),
    "in_pos_mm": ("mm", "measured incoming line at the block's top face"),
    "in_dir": ("1", "measured incoming unit direction, pointing downward"),
    "out_pos_mm": ("mm", "measured outgoing line at the block's bottom face"),
    "out_dir": ("1", "measured outgoing unit direction, pointing downward"),
    "poca_mm": ("mm", "point of closest approach of the measured lines"),
    "theta_rad": ("rad", "scattering angle between the measured lines"),
}
NIFTI_COMMENT_CODE = 6  # NIfTI-1 extension code "comment"
CHANNELS_KEY = "volumetric_channels"
_VECTOR_DATASETS = {"in_pos_mm", "in_dir", "out_pos_mm", "out_dir", "poca_mm"}
#: File that marks a folder as written by volumetric: ``--overwrite`` clears only marked folders.
OUTPUT_MARKER = ".volumetric-output"


def nifti_affine(voxel_mm, origin_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 affine: voxel index -> voxel centre in mm."""
    affine = np.diag([*map(float, voxel_mm), 1.0])
    affine[:3, 3] = np.asarray(origin_mm, dtype=np.float64) + 0.5 * np.asarray(voxel_mm, dtype=np.float64)
    return affine


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes), dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the final file the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_output_marker(folder, written_by: str) -> Path:
    """Create ``folder`` if needed and mark it as an output folder of volumetric.

    The marker (:data:`OUTPUT_MARKER`, JSON ``{"format", "written_by", "software"}``) holds no
    time, so folders written twice with the same inputs stay identical.

    Args:
        folder: the output folder (write the marker only into a folder that volumetric
            created or found empty).
        written_by: the function that writes the folder, e.g. ``volumetric.data.case.simulate_case``.

    Returns:
        The marker's path.
    """
    from volumetric import __version__

    path = Path(folder) / OUTPUT_MARKER
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"format": "volumetric-output/1", "written_by": written_by, "software": f"volumetric {__version__}"}
    path.write_text(json.dumps(record) + "\n")
    return path


def has_output_marker(folder) -> bool:
    """Whether ``folder`` carries the :data:`OUTPUT_MARKER` of :func:`write_output_marker`."""
    return (Path(folder) / OUTPUT_MARKER).is_file()


def save_nifti(path, array: np.ndarray, voxel_mm, origin_mm=(0.0, 0.0, 0.0)) -> Path:
    """Write ``array`` ``(X, Y, Z[, C])`` atomically as NIfTI with units of mm."""
    return save_nifti_affine(path, array, nifti_affine(voxel_mm, origin_mm))


def save_nifti_affine(path, array: np.ndarray, affine: np.ndarray, channels=None) -> Path:
    """Write ``array`` ``(X, Y, Z[, C])`` atomically as NIfTI with a given affine (mm units).

    ``channels`` (names of the C channels) goes into a NIfTI comment extension (see
    :func:`statistics_channels`), so a statistics file says what its channels are.
    """
    array = np.asarray(array)
    if array.ndim not in (3, 4):
        raise ValueError(f"{path}: expected a (X, Y, Z) or (X, Y, Z, C) array, got shape {array.shape}")
    image = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64))
    image.header.set_xyzt_units(xyz="mm")
    if channels is not None:
        if array.ndim != 4 or array.shape[3] != len(channels):
            raise ValueError(f"{path}: {len(channels)} channel names for an array of shape {array.shape}")
        text = json.dumps({CHANNELS_KEY: list(channels)}).encode()
        image.header.extensions.append(nib.nifti1.Nifti1Extension(NIFTI_COMMENT_CODE, text))
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
    return Path(path)


def save_statistics(path, sums: np.ndarray, channels, voxel_mm, origin_mm=(0.0, 0.0, 0.0)) -> Path:
    """Write channel-first statistics ``(C, X, Y, Z)`` as float32 NIfTI ``(X, Y, Z, C)`` with channel names."""
    array = np.moveaxis(np.asarray(sums), 0, -1).astype(np.float32)
    return save_nifti_affine(path, array, nifti_affine(voxel_mm, origin_mm), channels=channels)


def statistics_channels(path) -> list[str] | None:
    """Channel names stored in a statistics NIfTI by :func:`save_statistics`, or ``None`` if absent."""
    try:
        extensions = nib.load(str(path)).header.extensions
    except Exception as err:  # nibabel raises many types for truncated/corrupt files
        raise ValueError(f"{path}: not a readable NIfTI file ({type(err).__name__}: {err})") from None
    for extension in extensions:
        if extension.get_code() != NIFTI_COMMENT_CODE:
            continue
        try:
            content = json.loads(extension.get_content())
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(content, dict) and isinstance(content.get(CHANNELS_KEY), list):
            return [str(c) for c in content[CHANNELS_KEY]]
    return None


def load_statistics(path, case_folder=None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """A statistics NIfTI as channel-first float32 ``(C, X, Y, Z)``, its affine and its channel names.

    The one way a statistics file is read. Names come from the file (:func:`save_statistics`),
    else the case folder's ``simulation.json`` / ``reconstruction.json``, else the channel count
    (3: the legacy PoCA channels, 9: the full table of ``volumetric.schema``).

    Raises:
        FileNotFoundError, ValueError: naming the file (missing, corrupt, not ``(X, Y, Z, C)``,
            unknown or miscounted channel names).
    """
    from volumetric.schema import CHANNEL_NAMES, LEGACY_CHANNEL_NAMES, check_channel_names

    array, affine = load_nifti(path)
    if array.ndim != 4:
        raise ValueError(f"{path}: expected raw statistics (X, Y, Z, C); got shape {tuple(array.shape)}")
    count, names = array.shape[-1], statistics_channels(path)
    for record in ("simulation.json", "reconstruction.json"):
        if names is None and case_folder is not None and (Path(case_folder) / record).is_file():
            names = read_json_object(Path(case_folder) / record).get("statistics_channels")
    if names is None:
        layouts = {len(LEGACY_CHANNEL_NAMES): LEGACY_CHANNEL_NAMES, len(CHANNEL_NAMES): CHANNEL_NAMES}
        if count not in layouts:
            raise ValueError(f"{path}: {count} channels and no channel names; expected raw statistics "
                             f"(X, Y, Z, {len(LEGACY_CHANNEL_NAMES)}) = {', '.join(LEGACY_CHANNEL_NAMES)} or "
                             f"(X, Y, Z, {len(CHANNEL_NAMES)}) = {', '.join(CHANNEL_NAMES)}")
        names = layouts[count]
    names = check_channel_names(names, f"{path}: channel names")
    if len(names) != count:
        raise ValueError(f"{path}: {count} channels but {len(names)} channel names ({', '.join(names)})")
    return np.moveaxis(np.asarray(array, dtype=np.float32), -1, 0).copy(), affine, names


def read_json_object(path) -> dict:
    """A JSON file that must hold an object; clear errors name a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: malformed JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def load_nifti(path) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI file: ``(array, affine)``; a clear error names a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such NIfTI file")
    try:
        image = nib.load(str(path))
        array = np.asarray(image.dataobj)
    except Exception as err:  # nibabel raises many types for truncated/corrupt files
        raise ValueError(f"{path}: not a readable NIfTI file ({type(err).__name__}: {err})") from None
    return array, image.affine


class TrackWriter:
    """Append per-muon records to an HDF5 file (datasets ``TRACK_DATASETS``), written atomically.

    Use as a context manager; the file appears at ``path`` only when the block exits cleanly.
    Refuses to overwrite an existing file.
    """

    def __init__(self, path, attributes: Mapping[str, object]):
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path}: tracks file exists; choose another path or delete it")
        self.attributes = dict(attributes)
        self._atomic = None
        self._file = None

    def __enter__(self) -> "TrackWriter":
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self._file = h5py.File(tmp, "w")
        for name, (unit, description) in TRACK_DATASETS.items():
            shape = (0, 3) if name in _VECTOR_DATASETS else (0,)
            dtype = np.float32 if name == "p_gev" else np.float64
            ds = self._file.create_dataset(name, shape=shape, maxshape=(None,) + shape[1:], dtype=dtype, chunks=True)
            ds.attrs["unit"] = unit
            ds.attrs["description"] = description
        for key, value in self.attributes.items():
            self._file.attrs[key] = value
        return self

    def append(self, records: Mapping[str, np.ndarray]) -> None:
        """Append one batch; ``records`` maps every dataset name to an array of equal length."""
        lengths = {len(records[name]) for name in TRACK_DATASETS}
        if len(lengths) != 1:
            raise ValueError(f"track records of unequal lengths: {lengths}")
        n = lengths.pop()
        if n == 0:
            return
        for name in TRACK_DATASETS:
            ds = self._file[name]
            ds.resize(ds.shape[0] + n, axis=0)
            ds[-n:] = records[name]

    def __exit__(self, exc_type, exc, tb):
        self._file.close()
        return self._atomic.__exit__(exc_type, exc, tb)


def read_tracks(path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Read a tracks file: ``(datasets, file attributes)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such tracks file")
    try:
        with h5py.File(path, "r") as f:
            missing = [name for name in TRACK_DATASETS if name not in f]
            if missing:
                raise ValueError(f"{path}: tracks file lacks datasets {missing}")
            return {name: f[name][()] for name in TRACK_DATASETS}, dict(f.attrs)
    except OSError as err:
        raise ValueError(f"{path}: not a readable HDF5 tracks file ({err})") from None


def exposure_filename(days: float) -> str:
    """``exposures/<days>d.nii.gz`` with the shortest exact decimal, e.g. ``0.25d``, ``100d``."""
    return f"exposures/{float(days):g}d.nii.gz"


def mean_theta2_filename(days: float) -> str:
    """``exposures/<days>d_mean_theta2_mrad2.nii.gz``: the viewer image beside :func:`exposure_filename`.

    Its name does not end in ``d.nii.gz``, so listings of ``exposures/*d.nii.gz`` skip it.
    """
    return f"exposures/{float(days):g}d_mean_theta2_mrad2.nii.gz"


def check_output_folder(out_dir: Path, overwrite: bool) -> None:
    """Check that ``out_dir`` may receive (or, with ``overwrite``, lose) an output folder.

    A folder holding nothing but the :data:`~volumetric.data.io.OUTPUT_MARKER` counts as empty.
    A non-empty folder is refused unless ``overwrite``, and even then unless it carries the
    marker, so that ``--overwrite`` never deletes files volumetric did not write.

    Raises:
        FileExistsError: for a file in the way, a non-empty folder without ``overwrite``, or a
            non-empty folder without the marker.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is not a folder")
    if not out_dir.is_dir() or all(p.name == OUTPUT_MARKER for p in out_dir.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"{out_dir}: folder exists and is not empty; pass --overwrite or choose another --out")
    if not has_output_marker(out_dir):
        raise FileExistsError(f"{out_dir}: holds files not written by volumetric (no {OUTPUT_MARKER} marker); "
                              f"refusing to delete them; choose another --out")


@contextmanager
def output_folder(out_dir, written_by: str):
    """Yield a marked work folder beside ``out_dir`` that replaces it only if the block succeeds.

    The work folder (``.<name>.partial``) is created empty with the output marker; on success it
    is renamed onto ``out_dir`` (an existing ``out_dir`` is removed first: check it with
    :func:`check_output_folder`), so a killed run never leaves a half-written folder under the
    final name; on failure it is removed.
    """
    out_dir = Path(out_dir)
    work = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        write_output_marker(work, written_by)
        yield work
        if out_dir.exists():
            shutil.rmtree(out_dir)
        work.rename(out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
