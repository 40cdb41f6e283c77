"""Trained models for whole-block inference: load a run, feed it raw statistics, get volumes back.

:func:`load_model` rebuilds what a training run learned from its checkpoint alone: the net,
the input channel layout and selection (channel names, ``volumetric.schema``), the frozen
upsampler of a segment run (``segment_input`` ``upsampled``/``both``) and the normalisation
(``transforms.normalise``). :func:`predict` takes a raw case volume as stored in a dataset
(``(C, X, Y, Z)`` statistics sums with their channel names, un-normalised), picks the channels
the model was trained on by name, checks it against the model (:func:`~volumetric.infer.checkpoint.check_compatible`:
a different voxel size is refused, an exposure outside the trained range warns), normalises it,
predicts by sliding windows (optionally with XY test-time augmentation) and returns a
:class:`Prediction`.

Output scales (one convention everywhere):

* ``Prediction.image`` is the **normalised** image (the channels the model was trained to
  predict, ``image_channels``, by name): what metrics compare against the normalised target
  (``volumetric.evaluation.evaluate``).
* ``Prediction.image_physical`` is the same image **per channel in per-muon units**
  (``volumetric.schema.per_muon_name``): a count stays a count, ``sum_theta2_rad2`` becomes the
  mean theta^2 (rad^2), ``sum_log_theta`` the mean ln(theta), ``count_above_threshold`` the
  fraction above the threshold. Not the sums of the exposure files, because a model may predict
  the mean theta^2 alone (a mean cannot be turned into a sum without a count).

Upsample -> segment with two runs (``segmenter=``): a segmenter trained on raw inputs gets the
raw input with the channels the upsampler predicts replaced by the upsampled ones (converted
to the segmenter's normalisation); a segmenter trained with its own frozen upsampler
(``segment_input`` ``upsampled``/``both``) is self-contained and gets the raw input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transforms.normalise import ScatteringNormalise, check_normalisation, normalised_to_per_muon
from transforms.normalise import per_muon_to_normalised
from volumetric.schema import LEGACY_CHANNEL_NAMES, channel_indices
from volumetric.schema import TASKS, task_spec
from volumetric.schema import legacy_channel_names, non_negative
from volumetric.infer.pipeline import InputPipeline, is_conditioned
from volumetric.infer.checkpoint import (build_net, check_compatible, load_checkpoint, matched_exposure_days,
                                         occupancy_curve)

__all__ = [
    "LoadedModel",
    "WindowSettings",
    "Prediction",
    "resolve_device",
    "checkpoint_file",
    "load_model",
    "frozen_upsampler",
    "normalise_input",
    "physical_channels",
    "normalised_channels",
    "compose_input",
    "run_model",
    "conditioning_days",
    "predict",
]



@dataclass
class LoadedModel:
    """A trained pipeline rebuilt from a checkpoint (see :func:`load_model`).

    Attributes:
        pipeline: :class:`~volumetric.train.engine.InputPipeline` in eval mode: normalised
            ``(B, C, X, Y, Z)`` (channels ``channels``) -> the net's output (a tensor, or
            ``{"image", "logits"}``).
        task: ``upsample``, ``segment`` or ``joint``.
        normalisation: the normalisation parameters the model was trained with (``channels/1``).
        meta: the checkpoint's ``data`` entry (``voxel_mm``, ``exposure_range_days``, channels...).
        image_channels: statistics channel names of the image output; ``None`` for a segmenter
            (or an upsampler whose channels are unknown).
        segment_input: ``raw``, ``upsampled`` or ``both`` for a segment run, else ``None``.
        roi_size: default window ``(X, Y, Z)`` in voxels (the run's validation window, else its patch).
        conditioned: whether the model needs ``exposure_days``.
        source: the checkpoint file.
        step: training steps of the checkpoint.
        upsampler_record: the frozen upsampler of a segment run (checkpoint record) or ``None``.
    """

    pipeline: nn.Module
    task: str
    normalisation: dict
    meta: dict
    image_channels: list[str] | None
    segment_input: str | None
    roi_size: tuple[int, ...]
    conditioned: bool
    source: Path
    step: int
    upsampler_record: dict | None = None
    channels: tuple[str, ...] = LEGACY_CHANNEL_NAMES

    @property
    def has_image(self) -> bool:
        return task_spec(self.task).has_image

    @property
    def has_logits(self) -> bool:
        return task_spec(self.task).has_logits

    @property
    def voxel_mm(self) -> float | None:
        return self.meta.get("voxel_mm")


@dataclass
class WindowSettings:
    """Sliding-window settings of :func:`predict` (see :func:`volumetric.infer.sliding_window.predict_volume`).

    Attributes:
        roi_size: window edge(s) in voxels; ``None``: each model's own :attr:`LoadedModel.roi_size`.
        overlap: window overlap fraction in ``[0, 1)``.
        sw_batch_size: windows per forward pass.
        device: where the stitched outputs live (the CPU: whole blocks fit in host memory).
        amp: autocast windows (float16 on CUDA, bfloat16 on CPU).
        tta: average over the 8 XY symmetries and return uncertainty maps.
        progress: a progress bar per block (tqdm, stderr) counting windows: a name for the bar
            (e.g. ``"segmenter"``), ``True`` to name it after the model's task, ``False`` for none.
    """

    roi_size: int | tuple[int, ...] | None = None
    overlap: float = 0.25
    sw_batch_size: int = 4
    device: str = "cpu"
    amp: bool = False
    tta: bool = False
    progress: bool | str = False


@dataclass
class Prediction:
    """Outputs of :func:`predict` for one block; float32 CPU tensors, spatial ``(X, Y, Z)``.

    Attributes:
        image: normalised image ``(C, X, Y, Z)`` (channels ``image_channels``) or ``None``.
        image_physical: the image per channel in per-muon units (see the module docstring).
        image_channels: statistics channel names of ``image``.
        probabilities: class probabilities ``(K, X, Y, Z)`` (softmax; mean over TTA) or ``None``.
        label: class map ``(X, Y, Z)`` int64 (argmax of ``probabilities``) or ``None``.
        image_std: with TTA, standard deviation of ``image`` over the symmetries (normalised units).
        label_std: with TTA, standard deviation over the symmetries of the probability of the
            class in ``label`` (0 where every symmetry agrees).
        warnings: compatibility warnings issued (e.g. an exposure outside the trained range).
        conditioning_days: the exposure (days) each conditioned model was given, by role
            (``model``, ``segmenter``): the training days whose images held the input's PoCA
            points per voxel when the model records its training occupancy, else the stated days.
    """

    image: torch.Tensor | None = None
    image_physical: torch.Tensor | None = None
    image_channels: list[str] | None = None
    probabilities: torch.Tensor | None = None
    label: torch.Tensor | None = None
    image_std: torch.Tensor | None = None
    label_std: torch.Tensor | None = None
    warnings: list[str] = field(default_factory=list)
    conditioning_days: dict[str, float | None] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# loading


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` -> CUDA if available else CPU; ``cuda`` without CUDA is a ``ValueError``."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(name)!r} requested but CUDA is not available; use --device cpu")
    return device


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint a path names: a ``.pt`` file, or a run folder's ``checkpoints/best.pt`` (else ``last.pt``).

    Raises:
        FileNotFoundError: for a missing path or a run folder without checkpoints.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run folder or checkpoint file")
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
        raise FileNotFoundError(f"{path}: run folder holds no checkpoints/best.pt or checkpoints/last.pt")
    return path


def _frozen(net: nn.Module) -> nn.Module:
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def _default_roi(config: dict) -> tuple[int, ...]:
    roi = (config.get("validation") or {}).get("roi_size") or (config.get("data") or {}).get("patch_size")
    return tuple(int(r) for r in roi) if roi else (64, 64, 32)


def _check_payload(path: Path, ckpt: dict) -> None:
    if ckpt.get("task") not in TASKS:
        raise ValueError(f"{path}: checkpoint task {ckpt.get('task')!r} is not upsample, segment or joint")
    for key in ("normalisation", "data"):
        if not ckpt.get(key):
            raise ValueError(f"{path}: checkpoint lacks {key!r}; it was not written by volumetric training")
    if "input_channels" not in ckpt["data"]:
        raise ValueError(f"{path}: checkpoint data lacks 'input_channels'")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a trained pipeline from a run folder or checkpoint file (``weights_only`` loading).

    Args:
        path: a run folder (its ``checkpoints/best.pt``, else ``last.pt``) or a ``.pt`` file.
        device: where the weights go (windows run there): ``cpu``, ``cuda``, ``auto``.

    Raises:
        FileNotFoundError: for a missing run folder or checkpoint.
        ValueError: for a corrupted or foreign checkpoint, or weights that do not fit the net.
    """
    source = checkpoint_file(path)
    ckpt = load_checkpoint(source, map_location="cpu")
    _check_payload(source, ckpt)
    task, data, config = ckpt["task"], ckpt["data"], ckpt.get("config") or {}
    net = _frozen(build_net(ckpt["net"], ckpt["net_state"]))
    segment_input = (config.get("model") or {}).get("segment_input", "raw") if task == "segment" else None
    record = ckpt.get("upsampler") if task == "segment" and segment_input != "raw" else None
    upsampler = _frozen(build_net(record["net"], record["state"])) if record else None
    layout = tuple(data.get("channels") or LEGACY_CHANNEL_NAMES)  # checkpoints before channel names: 3 PoCA
    index = lambda names, what: channel_indices(legacy_channel_names(names), layout, f"{source}: {what}")  # noqa: E731
    pipeline = InputPipeline(net, index(data["input_channels"], "input channels"), upsampler,
                             index(record["input_channels"], "upsampler input channels") if record else (),
                             segment_input or "raw", in_channels=len(layout))
    image_channels = legacy_channel_names(data.get("target_channels") or LEGACY_CHANNEL_NAMES) \
        if task != "segment" else None
    conditioned = is_conditioned(net) or (upsampler is not None and is_conditioned(upsampler))
    return LoadedModel(pipeline.to(resolve_device(device)).eval(), task, check_normalisation(ckpt["normalisation"]),
                       dict(data), image_channels, segment_input, _default_roi(config), conditioned, source,
                       int(ckpt["step"]), record, layout)


def _record_channels(record: dict, out_channels: int) -> list[str] | None:
    """Statistics channel names predicted by a frozen upsampler (its checkpoint's ``target_channels``)."""
    if "target_channels" in record:
        return legacy_channel_names(record["target_channels"])
    if out_channels == 3:
        return list(LEGACY_CHANNEL_NAMES)
    try:
        channels = load_checkpoint(record["path"])["data"]["target_channels"]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    return legacy_channel_names(channels) if len(channels) == out_channels else None


def frozen_upsampler(model: LoadedModel) -> LoadedModel | None:
    """The frozen upsampler inside a segment run, as a model of its own (``None`` without one).

    Its ``image_channels`` come from the upsampler's checkpoint (``None`` if they cannot be
    known: a one-channel upsampler whose checkpoint file is gone).
    """
    record = model.upsampler_record
    if record is None:
        return None
    up = model.pipeline.upsampler
    out_channels = int(getattr(up, "out_channels", 0) or 0)
    index = channel_indices(legacy_channel_names(record["input_channels"]), model.channels, "upsampler input")
    pipeline = InputPipeline(up, index, in_channels=len(model.channels)).to(model.pipeline.input_index.device).eval()
    return LoadedModel(pipeline, "upsample", check_normalisation(record["normalisation"]), dict(model.meta),
                       _record_channels(record, out_channels), None, model.roi_size, is_conditioned(up),
                       Path(str(record.get("path", model.source))), model.step, None, model.channels)


# ---------------------------------------------------------------------------------------------
# scales


def select_channels(raw: torch.Tensor, channels: Sequence[str], wanted: Sequence[str]) -> torch.Tensor:
    """The channels ``wanted`` of a raw ``(C, X, Y, Z)`` volume whose channels are ``channels``, in that order.

    Raises:
        ValueError: for a channel count that disagrees with the names, or a wanted channel missing.
    """
    if raw.ndim != 4 or raw.shape[0] != len(channels):
        raise ValueError(f"expected raw statistics ({len(channels)}, X, Y, Z) = {', '.join(channels)}; "
                         f"got shape {tuple(raw.shape)}")
    index = channel_indices(list(wanted), list(channels), "the model's input channels")
    return raw if index == list(range(len(channels))) else raw[index]


def normalise_input(raw: np.ndarray | torch.Tensor, normalisation: dict,
                    channels: Sequence[str] = LEGACY_CHANNEL_NAMES) -> torch.Tensor:
    """Check a raw ``(C, X, Y, Z)`` statistics volume (channel names ``channels``) and normalise it.

    Raises:
        ValueError: for a wrong rank or channel count, NaN/Inf or negative counts.
    """
    x = raw if isinstance(raw, torch.Tensor) else torch.as_tensor(np.asarray(raw))
    if x.ndim != 4 or x.shape[0] != len(channels):
        raise ValueError(f"expected raw statistics ({len(channels)}, X, Y, Z) = {', '.join(channels)}; "
                         f"got shape {tuple(x.shape)}")
    x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"input volume holds {int((~torch.isfinite(x)).sum())} NaN/Inf values")
    positive = [i for i, name in enumerate(channels) if non_negative(name)]
    if bool((x[positive] < 0).any()):
        raise ValueError("input volume holds negative values in channels that are never negative (counts, "
                         "sums of theta^2, theta^4, ln(theta)^2)")
    return ScatteringNormalise(normalisation, channels)(x)


def physical_channels(image: torch.Tensor, channels: Sequence[str], normalisation: dict) -> torch.Tensor:
    """Normalised image channels -> per-muon values (counts, means, fractions; module docstring).

    Quantities that cannot be negative (counts, means of theta^2 and theta^4, fractions) are clipped at 0.
    """
    normalisation, out = check_normalisation(normalisation), []
    for i, name in enumerate(channels):
        value = normalised_to_per_muon(image[i].double(), name, normalisation)
        out.append(value.clamp_min(0) if non_negative(name) else value)
    return torch.stack(out).float()


def normalised_channels(physical: torch.Tensor, channels: Sequence[str], normalisation: dict) -> torch.Tensor:
    """Inverse of :func:`physical_channels` (per-muon values -> normalised channels)."""
    normalisation = check_normalisation(normalisation)
    return torch.stack([per_muon_to_normalised(physical[i].double(), name, normalisation)
                        for i, name in enumerate(channels)]).float()


def compose_input(raw_normalised: torch.Tensor, image: torch.Tensor, image_channels: Sequence[str],
                  image_normalisation: dict, normalisation: dict,
                  channels: Sequence[str] = LEGACY_CHANNEL_NAMES) -> torch.Tensor:
    """A raw-input segmenter's input from an upsampled image.

    The channels the upsampler predicts replace the raw ones; the image is converted from the
    upsampler's normalisation to the segmenter's (identity when they are equal).

    Args:
        raw_normalised: the raw input ``(C, X, Y, Z)`` in the segmenter's normalisation.
        image: the upsampled image ``(K, X, Y, Z)``, normalised with ``image_normalisation``.
        image_channels: statistics channel names of ``image``.
        image_normalisation, normalisation: the upsampler's and the segmenter's parameters.
        channels: channel names of ``raw_normalised``.
    """
    out = raw_normalised.clone()
    names = list(image_channels)
    index = channel_indices(names, list(channels), "the segmenter's input")
    if check_normalisation(image_normalisation) == check_normalisation(normalisation):
        out[index] = image.to(out.dtype)
    else:
        out[index] = normalised_channels(physical_channels(image, names, image_normalisation), names, normalisation)
    return out


# ---------------------------------------------------------------------------------------------
# prediction


def _dense_output(model: LoadedModel) -> str | None:
    return task_spec(model.task).dense_output


def _check_exposure(model: LoadedModel, exposure_days: float | None) -> None:
    if exposure_days is None and model.conditioned:
        raise ValueError(f"{model.source}: the model is exposure-conditioned; give the input's exposure in days")
    if exposure_days is not None and not (math.isfinite(exposure_days) and exposure_days > 0):
        raise ValueError(f"exposure_days must be a positive number of days, got {exposure_days!r}")


def run_model(model: LoadedModel, x: torch.Tensor, exposure_days: float | None,
              settings: WindowSettings) -> Prediction:
    """Predict a normalised ``(C, X, Y, Z)`` block with one model (no checks of scale or compatibility)."""
    from volumetric.infer.sliding_window import _split_outputs, predict_volume, predict_volume_tta

    _check_exposure(model, exposure_days)
    roi = settings.roi_size if settings.roi_size is not None else model.roi_size
    kwargs = dict(overlap=settings.overlap, sw_batch_size=settings.sw_batch_size, device=settings.device,
                  amp=settings.amp, exposure_days=exposure_days,
                  progress=model.task if settings.progress is True else settings.progress)
    if settings.tta:
        out = predict_volume_tta(model.pipeline, x, roi, dense_output=_dense_output(model), **kwargs)
    else:
        raw = _split_outputs(predict_volume(model.pipeline, x, roi, **kwargs), _dense_output(model))
        out = {"image": raw.get("image")}
        if "logits" in raw:
            out["probabilities"] = torch.softmax(raw["logits"], 0)
    pred = Prediction(image=out.get("image"), probabilities=out.get("probabilities"),
                      image_std=out.get("image_std"), label_std=out.get("label_std"))
    if pred.image is not None and model.image_channels is not None:
        pred.image_channels = list(model.image_channels)
        pred.image_physical = physical_channels(pred.image, model.image_channels, model.normalisation)
    if pred.probabilities is not None:
        pred.label = pred.probabilities.argmax(0)
    return pred


MATCHED_EXPOSURE_TOLERANCE = 0.1
"""Relative margin of the trained exposure range for occupancy-matched days (a block's PoCA points per
voxel scatter by a few % around the dataset mean its training days were matched to)."""


def _compatible(model: LoadedModel, voxel_mm: float | None, exposure_days: float | None, matched: bool) -> list[str]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # returned and re-issued by predict
        return check_compatible(model.meta, voxel_mm=voxel_mm, exposure_days=exposure_days,
                                exposure_tolerance=MATCHED_EXPOSURE_TOLERANCE if matched else 0.0)


def _segmenter_input(segmenter: LoadedModel, raw: torch.Tensor, channels: Sequence[str], first: Prediction,
                     model: LoadedModel) -> torch.Tensor:
    x = normalise_input(select_channels(raw, channels, segmenter.channels), segmenter.normalisation,
                        segmenter.channels)
    if segmenter.segment_input != "raw":
        return x  # self-contained: its own frozen upsampler runs inside its pipeline
    if first.image is None or model.image_channels is None:
        raise ValueError(f"{model.source}: gives no image with known channels to segment")
    return compose_input(x, first.image, model.image_channels, model.normalisation, segmenter.normalisation,
                         segmenter.channels)


def conditioning_days(model: LoadedModel, raw: torch.Tensor, channels: Sequence[str],
                      exposure_days: float | None) -> float | None:
    """The exposure (days) a model is conditioned on for ``raw``: calibrated by what the image holds.

    A model saw its training blocks' PoCA points per voxel at each training exposure; a block of
    another size, detector or rate holds a different number after the same days. When the
    checkpoint records its training dataset's occupancy curve and ``raw`` has the ``count``
    channel, the exposure is the training days with the input's mean PoCA points per voxel
    (:func:`~volumetric.infer.checkpoint.matched_exposure_days`); otherwise ``exposure_days``.

    Raises:
        ValueError: for an input without PoCA points (all-zero ``count``).
    """
    if not _matches_occupancy(model, channels):
        return exposure_days
    count = float(raw[list(channels).index("count")].double().mean())
    return matched_exposure_days(count, occupancy_curve(model.meta))


def _matches_occupancy(model: LoadedModel, channels: Sequence[str]) -> bool:
    """Whether :func:`conditioning_days` matches ``model``'s exposure by the input's PoCA points."""
    return model.conditioned and "count" in channels and occupancy_curve(model.meta) is not None


def predict(model: LoadedModel, raw: np.ndarray | torch.Tensor, exposure_days: float | None = None,
            voxel_mm: float | None = None, segmenter: LoadedModel | None = None,
            settings: WindowSettings | None = None, channels: Sequence[str] | None = None) -> Prediction:
    """Predict a raw block: upsampled image and/or class map (upsample -> segment with ``segmenter``).

    Args:
        model: an upsample, segment or joint model (:func:`load_model`).
        raw: raw statistics ``(C, X, Y, Z)`` as in the dataset's exposure files (channel first,
            not normalised); the model's channels are picked from it by name.
        exposure_days: the input's exposure (days); required by exposure-conditioned models that
            do not record their training occupancy (others are conditioned by
            :func:`conditioning_days`, see ``Prediction.conditioning_days``).
        voxel_mm: the input's voxel edge (mm); checked against the training voxel when given.
        segmenter: a segment model applied after an upsampler (see the module docstring).
        settings: window settings (default :class:`WindowSettings`).
        channels: names of ``raw``'s channels (default: the model's own layout).

    Returns:
        A :class:`Prediction` (image from ``model``, classes from ``model`` or ``segmenter``).

    Raises:
        ValueError: for a voxel size the model was not trained on, a bad input volume, a
            missing exposure for a conditioned model, or a segmenter after a non-upsampler.
    """
    import warnings

    settings = settings or WindowSettings()
    if segmenter is not None and (model.task != "upsample" or segmenter.task != "segment"):
        raise ValueError(f"a segmenter goes after an upsample run: got {model.task!r} then {segmenter.task!r}")
    raw = raw if isinstance(raw, torch.Tensor) else torch.as_tensor(np.asarray(raw))
    channels = tuple(channels) if channels is not None else model.channels
    x = normalise_input(select_channels(raw, channels, model.channels), model.normalisation, model.channels)
    roles = {"model": model, **({"segmenter": segmenter} if segmenter is not None else {})}
    days = {role: conditioning_days(m, raw, channels, exposure_days) for role, m in roles.items()}
    issued = [w for role, m in roles.items()
              for w in _compatible(m, voxel_mm, days[role], matched=_matches_occupancy(m, channels))]
    for message in dict.fromkeys(issued):
        warnings.warn(message, UserWarning, stacklevel=2)
    first = run_model(model, x, days["model"], settings)
    first.warnings, first.conditioning_days = list(dict.fromkeys(issued)), days
    if segmenter is None:
        return first
    second = run_model(segmenter, _segmenter_input(segmenter, raw, channels, first, model), days["segmenter"],
                       settings)
    first.probabilities, first.label, first.label_std = second.probabilities, second.label, second.label_std
    return first
