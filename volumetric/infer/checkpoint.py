"""Training checkpoints: atomic writes, safe loading, rebuilding nets, compatibility checks.

A checkpoint (``checkpoints/last.pt`` or ``best.pt`` of a run folder) is a dict of tensors and
plain Python values only, so it loads with ``torch.load(weights_only=True)``:

==================  ===========================================================================
``format``          ``volumetric-checkpoint/1``
``step``            generator steps done
``task``, ``mode``  ``upsample``/``segment``/``joint``; ``gan``/``l1``/``l2``
``net``             ``{"name", "kwargs"}`` (``nets.net_config``) and ``net_state`` its weights
``critic``          same for the critic (``None`` without one), ``critic_state``
``upsampler``       frozen upsampler of a segmenter (``{"net", "state", "input_channels", "target_channels"}``) or None
``optimizer``...    optimiser states (``optimizer``, ``critic_optimizer``)
``normalisation``   the ``log-moments/1`` parameters the inputs were normalised with
``data``            ``fingerprint``, ``voxel_mm``, ``checkpoints_days``, ``exposure_range_days``
                    (``[min, max]`` input exposures seen in training), ``input_channels``,
                    ``target_channels``, ``path``, ``occupancy_poca_per_voxel`` (``{days: mean
                    PoCA points per voxel}`` measured on the training dataset; absent before it)
``rng``             torch CPU (and CUDA) generator states
``best``            ``{"metric", "value", "step"}`` of the best validation so far
``config``          the resolved config (plain dict)
``weights_sha256``  ``{part: hex}``: :func:`weights_digest` of ``net_state``, ``critic_state`` and
                    ``upsampler`` (its ``state``) as written; checked on load (absent in
                    checkpoints written before it existed, which load unchecked)
==================  ===========================================================================
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "FORMAT",
    "save_checkpoint",
    "load_checkpoint",
    "build_net",
    "check_compatible",
    "export_weights",
    "occupancy_curve",
    "matched_exposure_days",
    "weights_digest",
    "verify_weights",
]

FORMAT = "volumetric-checkpoint/1"


def weights_digest(state: dict) -> str:
    """Canonical sha256 of a state dict, independent of device and memory layout.

    Hashes, for each key in sorted order, the key, the tensor's dtype and shape and its raw
    bytes in logical (row-major) order; non-tensor entries hash their ``repr``.

    Args:
        state: a ``{name: tensor}`` mapping (``nn.Module.state_dict()``).

    Returns:
        The hex digest (64 characters).
    """
    digest = hashlib.sha256()
    for key in sorted(state, key=str):
        value = state[key]
        digest.update(f"{key}\0".encode())
        if isinstance(value, torch.Tensor):
            flat = value.detach().to("cpu").reshape(-1).contiguous()
            digest.update(f"{flat.dtype}\0{tuple(value.shape)}\0".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
        else:
            digest.update(f"{value!r}\0".encode())
    return digest.hexdigest()


def _weight_parts(payload: dict) -> dict:
    """The state dicts of a checkpoint payload whose digest is stored: ``{part: state}``."""
    parts = {name: payload.get(name) for name in ("net_state", "critic_state")}
    upsampler = payload.get("upsampler")
    parts["upsampler"] = upsampler.get("state") if isinstance(upsampler, dict) else None
    return {name: state for name, state in parts.items() if isinstance(state, dict)}


def verify_weights(payload: dict, path: str | Path) -> None:
    """Check the weights of a loaded checkpoint against its stored ``weights_sha256``.

    Checkpoints without ``weights_sha256`` (written before it existed) pass unchecked.

    Raises:
        ValueError: naming ``path`` and the part, when a digest differs or a stored part is missing.
    """
    stored = payload.get("weights_sha256")
    if stored is None:
        return
    parts = _weight_parts(payload)
    if not isinstance(stored, dict) or any(name not in parts for name in stored):
        raise ValueError(f"{path}: weights digest mismatch: the file is corrupted (damaged weights_sha256 entry)")
    for name, expected in stored.items():
        if weights_digest(parts[name]) != expected:
            raise ValueError(f"{path}: weights digest mismatch: the file is corrupted ({name} differs from "
                             f"the weights saved)")


def save_checkpoint(payload: dict, path: str | Path) -> Path:
    """Write ``payload`` to ``path`` atomically (temporary file in the same folder, then ``os.replace``).

    A crash during the write leaves the previous file intact. The file also holds
    ``weights_sha256``, the :func:`weights_digest` of each state dict (``net_state``,
    ``critic_state``, ``upsampler``), which :func:`load_checkpoint` verifies; ``payload`` itself
    is not modified.

    Returns:
        The path written.
    """
    parts = _weight_parts(payload)
    if parts:
        payload = {**payload, "weights_sha256": {name: weights_digest(state) for name, state in parts.items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # not io.atomic_path: stricter, it fsyncs before the rename so a crash cannot leave an empty last.pt
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``, check its format and its weights digest.

    Args:
        path: a ``.pt`` file, or a run folder (its ``checkpoints/best.pt``, else ``last.pt``).
        map_location: where tensors are loaded.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: for an empty, truncated or corrupted file (including weights that differ from
            the stored ``weights_sha256``) or one that is not a volumetric checkpoint, naming the file.
    """
    path = Path(path)
    if path.is_dir():
        candidates = [path / "checkpoints" / name for name in ("best.pt", "last.pt")]
        found = [p for p in candidates if p.is_file()]
        if not found:
            raise FileNotFoundError(f"{path}: run folder holds no checkpoints/best.pt or checkpoints/last.pt")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (0 bytes): corrupted or incompletely copied checkpoint")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise ValueError(f"{path}: corrupted or unreadable checkpoint ({_first_line(err)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: not a {FORMAT} checkpoint (format {found!r})")
    for key in ("net", "net_state", "step"):
        if key not in payload:
            raise ValueError(f"{path}: checkpoint lacks key {key!r} (corrupted?)")
    verify_weights(payload, path)
    return payload


def _first_line(err: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` (at most ``limit`` characters), for one-line errors."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:limit]}" if lines else type(err).__name__


def build_net(spec: dict, state: dict | None = None) -> nn.Module:
    """Rebuild a registered net from ``{"name", "kwargs"}`` and optionally load its weights.

    Raises:
        ValueError: for an unknown net or weights that do not fit the architecture.
    """
    import nets  # noqa: F401  (registers every net)
    from nets.registry import create_net

    net = create_net(spec["name"], **spec["kwargs"])
    if state is not None:
        try:
            net.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"weights do not fit net {spec['name']!r}: {str(err).splitlines()[0]}") from None
    return net


def check_compatible(
    meta: dict,
    voxel_mm: float | None = None,
    exposure_days: float | None = None,
    tolerance: float = 0.01,
    strict_exposure: bool = False,
    exposure_tolerance: float = 0.0,
) -> list[str]:
    """Check that inference data lie inside what a model was trained on.

    A different voxel size changes what a voxel's scattering statistics mean (muons per voxel
    scale with volume): it is refused. An exposure outside the trained input range is an
    extrapolation: a warning (``UserWarning``), or an error with ``strict_exposure``.

    Args:
        meta: a checkpoint dict (or its ``data`` entry) with ``voxel_mm`` and ``exposure_range_days``.
        voxel_mm: voxel edge (mm) of the data, or ``None`` to skip.
        exposure_days: exposure (days) of the data, or ``None`` to skip.
        tolerance: relative tolerance on the voxel size.
        strict_exposure: raise instead of warning for an exposure outside the range.
        exposure_tolerance: relative margin around the trained range (for exposures matched by
            occupancy: one block's PoCA points per voxel scatter by a few % around the mean the
            training days were matched to).

    Returns:
        The warning messages issued (empty when compatible).

    Raises:
        ValueError: for a voxel size differing by more than ``tolerance`` (or, with
            ``strict_exposure``, an exposure outside the trained range).
    """
    data = meta.get("data", meta)
    issued = []
    trained_voxel = data.get("voxel_mm")
    if voxel_mm is not None and trained_voxel is not None:
        if not math.isclose(float(voxel_mm), float(trained_voxel), rel_tol=tolerance):
            raise ValueError(
                f"data voxel size {float(voxel_mm):g} mm differs from the model's training voxel size "
                f"{float(trained_voxel):g} mm; resample the data or use a model trained at {float(voxel_mm):g} mm"
            )
    low_high = data.get("exposure_range_days")
    if exposure_days is not None and low_high is not None:
        low, high = (float(v) for v in low_high)
        days = float(exposure_days)
        margin = 1e-6 + exposure_tolerance
        if not low * (1 - margin) <= days <= high * (1 + margin):
            message = (f"exposure {days:g} days is outside the model's training range [{low:g}, {high:g}] days: "
                       f"the prediction is an extrapolation")
            if strict_exposure:
                raise ValueError(message)
            warnings.warn(message, UserWarning, stacklevel=2)
            issued.append(message)
    return issued


def occupancy_curve(meta: dict) -> dict[float, float] | None:
    """``{training days: mean PoCA points per voxel}`` recorded with a model, or ``None``.

    Args:
        meta: a checkpoint dict or its ``data`` entry.
    """
    data = meta.get("data", meta)
    curve = data.get("occupancy_poca_per_voxel")
    if not curve:
        return None
    pairs = {float(d): float(v) for d, v in curve.items()}
    return pairs if all(d > 0 and v > 0 for d, v in pairs.items()) else None


def matched_exposure_days(poca_points_per_voxel: float, curve: dict[float, float]) -> float:
    """The training exposure (days) whose images hold ``poca_points_per_voxel`` PoCA points per voxel.

    Calibration by what the image holds: a block of another size, detector or voxel size holds a
    different number of muons per voxel after the same days, and the muons per voxel, not the days,
    are what a model saw. Inside the curve: log-log interpolation; beyond it, proportional to the
    nearest end (PoCA points grow linearly with exposure).

    Raises:
        ValueError: for a non-positive or non-finite occupancy, or an empty curve.
    """
    value = float(poca_points_per_voxel)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"PoCA points per voxel must be positive, got {poca_points_per_voxel!r}: an empty input")
    if not curve:
        raise ValueError("empty occupancy curve")
    points = sorted(curve.items(), key=lambda dv: dv[1])
    (d_lo, v_lo), (d_hi, v_hi) = points[0], points[-1]
    if value <= v_lo or value >= v_hi:
        days, occupancy = (d_lo, v_lo) if value <= v_lo else (d_hi, v_hi)
        return days * value / occupancy
    for (d0, v0), (d1, v1) in zip(points, points[1:]):
        if v0 <= value <= v1:
            t = (math.log(value) - math.log(v0)) / (math.log(v1) - math.log(v0)) if v1 > v0 else 0.0
            return math.exp(math.log(d0) + t * (math.log(d1) - math.log(d0)))
    raise AssertionError("unreachable: value inside the curve's range")


_TRAINING_ONLY = ("optimizer", "critic", "critic_state", "critic_optimizer", "rng")


def _half(state: dict) -> dict:
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def export_weights(checkpoint: str | Path, out: str | Path, half: bool = True, data_updates: dict | None = None) -> Path:
    """Write an inference-only copy of a checkpoint (no optimiser, critic or RNG state).

    The source's weights digest is verified on reading, and the copy gets the digest of its own
    (possibly float16) weights.

    The copy keeps the format, net spec, normalisation and dataset metadata, so
    :func:`load_checkpoint` and :func:`build_net` read it like any checkpoint; with ``half`` the
    floating-point weights are stored as float16 (half the size; :func:`build_net` loads them
    into float32 parameters). Used to ship reference weights inside the package.

    Args:
        checkpoint: a ``.pt`` checkpoint or a run folder.
        out: the file to write (refused if it exists).
        half: store floating-point weights as float16.
        data_updates: entries added to the copy's ``data`` record (e.g. the training dataset's
            ``occupancy_poca_per_voxel`` for a run trained before checkpoints recorded it).

    Returns:
        The path written.
    """
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it first")
    payload = {k: v for k, v in load_checkpoint(checkpoint).items() if k not in _TRAINING_ONLY}
    if half:
        payload["net_state"] = _half(payload["net_state"])
        if payload.get("upsampler"):
            payload["upsampler"] = {**payload["upsampler"], "state": _half(payload["upsampler"]["state"])}
    if data_updates:
        payload["data"] = {**payload["data"], **data_updates}
    payload["exported_from"] = {"path": str(checkpoint), "step": payload["step"], "half": half}
    return save_checkpoint(payload, out)
