"""Whole-block prediction by sliding windows, with XY test-time augmentation.

:func:`predict_volume` runs a registered net (``dense`` or ``joint``, see :mod:`nets`) over a
whole ``(C, X, Y, Z)`` block with MONAI's
:func:`~monai.inferers.sliding_window_inference`: windows of ``roi_size`` voxels run on
``sw_device`` (where the net's weights are, e.g. the GPU) and are blended with Gaussian
weights into an output kept on ``device`` (the CPU by default, so a block larger than the
GPU memory still fits); :func:`predict_volume_tta` averages the 8 XY symmetries. Files in and out
(NIfTI with the input's affine) are :func:`volumetric.infer.predictor.infer_file`'s job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from nibabel.affines import voxel_sizes
import torch
from monai.data.utils import dense_patch_slices
from monai.inferers import sliding_window_inference
from torch import nn
from tqdm.auto import tqdm


__all__ = [
    "predict_volume",
    "resolve_roi",
    "window_count",
    "check_spacing",
    "XY_SYMMETRIES",
    "xy_symmetry",
    "predict_volume_tta",
]


def _as_volume(volume: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(C, X, Y, Z)`` float32 tensor, checked for rank and finiteness."""
    t = volume if isinstance(volume, torch.Tensor) else torch.as_tensor(np.asarray(volume))
    if t.ndim != 4:
        raise ValueError(f"expected a (C, X, Y, Z) volume, got shape {tuple(t.shape)}")
    t = t.float()
    if not bool(torch.isfinite(t).all()):
        raise ValueError("input volume contains NaN or Inf values")
    return t


def resolve_roi(roi_size: int | Sequence[int], shape: Sequence[int], multiple: int = 1) -> tuple[int, ...]:
    """Window size actually used for a volume of spatial ``shape``.

    A window dimension larger than the volume is clamped to the volume's size rounded up to
    ``multiple`` (the volume is then zero-padded to it by MONAI), so a 20-voxel-thick block
    with a 32-voxel window and a net needing multiples of 8 runs 24-voxel windows.

    Args:
        roi_size: window edge (int) or edges ``(X, Y, Z)`` in voxels.
        shape: spatial size ``(X, Y, Z)`` of the volume.
        multiple: every window edge must be a multiple of this (the net's ``size_multiple``).

    Returns:
        The window edges ``(X, Y, Z)``.

    Raises:
        ValueError: if a window edge is not a positive multiple of ``multiple``.
    """
    roi = (roi_size,) * len(shape) if isinstance(roi_size, int) else tuple(roi_size)
    if len(roi) != len(shape) or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in roi):
        raise ValueError(f"roi_size must be a positive int or {len(shape)} positive ints, got {roi_size!r}")
    bad = [r for r in roi if r % multiple]
    if bad:
        raise ValueError(
            f"roi_size {roi} must be a multiple of {multiple} (the net's size_multiple) in every dimension; "
            f"e.g. {tuple(max(multiple, round(r / multiple) * multiple) for r in roi)}"
        )
    return tuple(min(r, math.ceil(s / multiple) * multiple) for r, s in zip(roi, shape))


def _check_channels(net: nn.Module, channels: int) -> None:
    expected = getattr(net, "in_channels", None)
    if expected is not None and channels != expected:
        raise ValueError(f"the net expects {expected} input channel(s), got a volume with {channels}")


def _net_device(net: nn.Module) -> torch.device:
    param = next(iter(net.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def window_count(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Windows MONAI's ``sliding_window_inference`` runs over one ``(X, Y, Z)`` volume.

    MONAI's rule: the volume is padded up to the window, windows start every
    ``int(roi * (1 - overlap))`` voxels (at least 1; the whole edge when the window spans it) and
    the last window is flush with the far edge.
    """
    size = [max(s, r) for s, r in zip(shape, roi)]
    interval = [r if r == s else max(1, int(r * (1 - overlap))) for s, r in zip(size, roi)]
    return len(dense_patch_slices(size, roi, interval))


def _predictor(net: nn.Module, exposure_days: float | None, amp: bool, bar=None):
    """Window function: net forward with per-window exposure broadcast, float32 outputs; ticks ``bar``."""

    def run(window: torch.Tensor):
        days = None
        if exposure_days is not None:
            days = torch.full((window.shape[0],), float(exposure_days), device=window.device)
        dtype = torch.float16 if window.device.type == "cuda" else torch.bfloat16
        with torch.autocast(window.device.type, dtype=dtype, enabled=amp):
            out = net(window, exposure_days=days)
        if bar is not None:
            bar.update(window.shape[0])
        if isinstance(out, dict):
            return {k: v.float() for k, v in out.items()}
        return out.float()

    return run


def predict_volume(
    net: nn.Module,
    volume: np.ndarray | torch.Tensor,
    roi_size: int | Sequence[int],
    overlap: float = 0.25,
    sw_batch_size: int = 4,
    mode: str = "gaussian",
    device: torch.device | str | None = "cpu",
    sw_device: torch.device | str | None = None,
    amp: bool = False,
    exposure_days: float | None = None,
    progress: bool | str = False,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Run a net over a whole block by overlapping windows.

    The net is put in eval mode for the call (and restored after) and runs without gradients.
    Window batches of ``sw_batch_size`` run on ``sw_device``; outputs are blended (Gaussian
    weights by default, ``sigma_scale`` 0.125 of the window) on ``device``. Exposure-conditioned
    nets get ``exposure_days`` broadcast to every window of each batch (a closure, since the
    last batch may be smaller than ``sw_batch_size``).

    Args:
        net: a dense net (tensor output) or a joint net (``{"image", "logits"}`` output).
        volume: input ``(C, X, Y, Z)``, numpy or torch.
        roi_size: window edge(s) in voxels, multiples of ``net.size_multiple``; clamped to the
            volume (see :func:`resolve_roi`). Prefer anisotropic windows (e.g. 64x64x32) for
            thin blocks.
        overlap: window overlap fraction in ``[0, 1)``.
        sw_batch_size: windows per forward pass.
        mode: ``"gaussian"`` or ``"constant"`` blending.
        device: where the stitched output lives (``None``: the input's device).
        sw_device: where windows run (``None``: the device of the net's weights).
        amp: autocast windows (float16 on CUDA, bfloat16 on CPU); outputs are float32.
        exposure_days: exposure time in days for conditioned nets, else ``None``.
        progress: ``True`` for MONAI's (unnamed) progress bar; a name (e.g. ``"segmenter"``) for a
            bar of that name counting windows (tqdm, stderr); ``False`` for none.

    Returns:
        ``(C_out, X, Y, Z)`` float32 tensor on ``device``, or a dict of such tensors for joint nets.

    Raises:
        ValueError: for a wrong rank or channel count, NaN/Inf input, a bad window, overlap,
            exposure or progress value.
    """
    x = _as_volume(volume)
    _check_channels(net, x.shape[0])
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    if isinstance(sw_batch_size, bool) or not isinstance(sw_batch_size, int) or sw_batch_size < 1:
        raise ValueError(f"sw_batch_size must be a positive int, got {sw_batch_size!r}")
    if exposure_days is not None and not (math.isfinite(exposure_days) and exposure_days > 0):
        raise ValueError(f"exposure_days must be a positive number of days, got {exposure_days!r}")
    roi = resolve_roi(roi_size, x.shape[1:], int(getattr(net, "size_multiple", 1)))
    sw_device = _net_device(net) if sw_device is None else torch.device(sw_device)
    bar = _named_bar(progress, window_count(x.shape[1:], roi, overlap))
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            out = sliding_window_inference(
                x[None], roi, sw_batch_size, _predictor(net, exposure_days, amp, bar), overlap=overlap, mode=mode,
                sw_device=sw_device, device=device, progress=progress is True,
            )
    finally:
        net.train(was_training)
        if bar is not None:
            bar.close()
    if isinstance(out, dict):
        return {k: v[0] for k, v in out.items()}
    return out[0]


def _named_bar(progress: bool | str, total: int):
    """A tqdm bar called ``progress`` over ``total`` windows, or ``None`` unless ``progress`` is a name."""
    if isinstance(progress, bool):
        return None
    if not isinstance(progress, str) or not progress:
        raise ValueError(f"progress must be True, False or a bar name, got {progress!r}")
    return tqdm(total=total, desc=progress, unit="window")


def check_spacing(affine: np.ndarray, trained_voxel_mm: float | Sequence[float], tolerance: float = 0.01) -> None:
    """Refuse a volume whose voxel spacing differs from the one a model was trained on.

    Args:
        affine: 4x4 NIfTI affine (voxel index -> mm); spacing is the norm of each column.
        trained_voxel_mm: training voxel edge in mm, one value or ``(x, y, z)``.
        tolerance: allowed relative difference per axis.

    Raises:
        ValueError: naming both spacings when an axis differs by more than ``tolerance``.
    """
    spacing = voxel_sizes(np.asarray(affine, dtype=np.float64))
    trained = np.broadcast_to(np.asarray(trained_voxel_mm, dtype=np.float64), (3,))
    if np.any(np.abs(spacing - trained) > tolerance * trained):
        raise ValueError(
            f"volume voxel spacing {tuple(np.round(spacing, 4).tolist())} mm differs from the model's training "
            f"spacing {tuple(trained.tolist())} mm (tolerance {tolerance:.0%}); resample the volume first"
        )


def _split_outputs(out, dense_output: str | None) -> dict[str, torch.Tensor]:
    """Name a net's output ``image`` and/or ``logits``."""
    if isinstance(out, dict):
        return {k: out[k] for k in ("image", "logits") if k in out}
    kind = dense_output or ("image" if out.shape[0] == 1 else "logits")
    if kind not in ("image", "logits"):
        raise ValueError(f"dense_output must be 'image', 'logits' or None, got {dense_output!r}")
    return {kind: out}


# ---------------------------------------------------------------------------------------------
# test-time augmentation

XY_SYMMETRIES: tuple[tuple[int, bool], ...] = tuple((k, flip) for flip in (False, True) for k in range(4))
"""The 8 symmetries of the XY square as ``(k, flip)``: flip along X (if ``flip``), then rotate by
``k * 90`` degrees in the XY plane. z is never flipped nor rotated (muons come from above)."""


def xy_symmetry(x: torch.Tensor, k: int, flip: bool, inverse: bool = False) -> torch.Tensor:
    """Apply (or undo, with ``inverse``) an XY symmetry to a ``(..., X, Y, Z)`` tensor."""
    if inverse:
        x = torch.rot90(x, -k, (-3, -2)) if k % 4 else x
        return torch.flip(x, (-3,)) if flip else x
    x = torch.flip(x, (-3,)) if flip else x
    return torch.rot90(x, k, (-3, -2)) if k % 4 else x


class _Welford:
    """Running mean and (population) standard deviation; exactly 0 std for identical inputs."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, None, None

    def add(self, x: torch.Tensor) -> None:
        self.count += 1
        if self.mean is None:
            self.mean, self.m2 = x.clone(), torch.zeros_like(x)
            return
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)

    def std(self) -> torch.Tensor:
        return (self.m2.clamp_min(0) / self.count).sqrt()


def _swap_xy(roi_size: int | Sequence[int], k: int):
    if isinstance(roi_size, int) or k % 2 == 0:
        return roi_size
    roi = tuple(roi_size)
    return (roi[1], roi[0], *roi[2:])


def predict_volume_tta(
    net: nn.Module,
    volume: np.ndarray | torch.Tensor,
    roi_size: int | Sequence[int],
    dense_output: str | None = None,
    symmetries: Sequence[tuple[int, bool]] = XY_SYMMETRIES,
    **predict_kwargs,
) -> dict[str, torch.Tensor]:
    """:func:`predict_volume` averaged over XY symmetries of the input (test-time augmentation).

    Each symmetry is applied to the input, the block is predicted by sliding windows (the
    window's X and Y edges swap with odd rotations) and the output is mapped back. Images are
    averaged; class scores are averaged as softmax probabilities. The per-voxel uncertainty is
    the standard deviation over the symmetries: of each image channel (in the image's units),
    and of the probability of the final (argmax of the mean) class. A net that commutes with
    the symmetries (e.g. a constant) gives zero uncertainty (up to the float rounding of the
    window blending, ~1e-7).

    Args:
        net, volume, roi_size: as for :func:`predict_volume`.
        dense_output: ``"image"`` or ``"logits"`` to name a dense net's output (default: one
            channel is an image, more are logits).
        symmetries: ``(k, flip)`` pairs (default all 8 of :data:`XY_SYMMETRIES`).
        **predict_kwargs: passed to :func:`predict_volume`.

    Returns:
        A dict with, for an image output, ``image`` ``(C, X, Y, Z)`` (mean) and ``image_std``
        ``(C, X, Y, Z)``; for class scores, ``probabilities`` ``(K, X, Y, Z)`` (mean softmax)
        and ``label_std`` ``(X, Y, Z)``. float32, on the output device.
    """
    if not symmetries:
        raise ValueError("symmetries must hold at least one (k, flip) pair")
    x = _as_volume(volume)
    stats: dict[str, _Welford] = {}
    for k, flip in symmetries:
        out = predict_volume(net, xy_symmetry(x, k, flip), _swap_xy(roi_size, k), **predict_kwargs)
        for key, value in _split_outputs(out, dense_output).items():
            value = xy_symmetry(value, k, flip, inverse=True)
            stats.setdefault(key, _Welford()).add(torch.softmax(value, 0) if key == "logits" else value)
    result = {}
    if "image" in stats:
        result.update(image=stats["image"].mean, image_std=stats["image"].std())
    if "logits" in stats:
        probabilities = stats["logits"].mean
        label = probabilities.argmax(0, keepdim=True)
        result.update(probabilities=probabilities, label_std=stats["logits"].std().gather(0, label)[0])
    return result
