"""Typed training configuration: small dataclasses loaded from YAML with dotted overrides.

A config file has up to six sections, each a dataclass below (every key optional, every
unknown key an error naming its path, e.g. ``optim.lr_critic``)::

    data:       dataset folder, patch size, exposure sampling, channels
    model:      the trained net (registry name + kwargs) and the segmenter's input
    critic:     the WGAN-GP critic (upsample task, ``train.mode: gan``)
    optim:      Adam settings and loss weights
    train:      task, steps, batch, seed, device, run folder
    validation: whole-volume sliding-window validation every N steps

Command-line overrides are ``section.key=value`` (or deeper, into ``model.kwargs``); the value
is parsed with ``yaml.safe_load`` so ``optim.lr=1e-3``, ``data.patch_size=[16,16,8]`` and
``model.kwargs.conditioning=null`` all work. :func:`save_config` writes the resolved config.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from volumetric.schema import CHANNEL_NAMES
from volumetric.schema import TASKS as TASK_SPECS

__all__ = [
    "DataConfig",
    "ModelConfig",
    "CriticConfig",
    "OptimConfig",
    "TrainConfig",
    "ValidationConfig",
    "Config",
    "TASKS",
    "MODES",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "apply_overrides",
    "parse_override",
    "save_config",
]

TASKS = tuple(TASK_SPECS)
DEFAULT_TARGET_CHANNELS = ("sum_theta2_rad2", "sum_log_theta", "path_sum_log_theta")  # per-muon mean images
MODES = ("gan", "l1", "l2")
SEGMENT_INPUTS = ("raw", "upsampled", "both")


@dataclass
class DataConfig:
    """Data pipeline (see ``volumetric.data.dataset.make_dataset``).

    Attributes:
        path: dataset folder (``dataset.json``); relative paths are taken from the working folder.
        patch_size: training patch ``(X, Y, Z)`` in voxels; multiples of the nets' ``size_multiple``.
        sampling: input exposure choice per sample per call: ``uniform``, ``log-uniform``, ``fixed``.
        fixed_days: exposure (days) for ``sampling: fixed``.
        num_samples: patches per case per draw (a step sees ``batch_size * num_samples`` patches).
        augment: XY flips and 90-degree rotations.
        class_ratios: patch-centre ratios per class (5 values) or null for the default.
        preload_exposures: keep every exposure of a case in memory.
        input_channels: statistics channels fed to the net, by name (``volumetric.schema.CHANNEL_NAMES``).
        target_channels: channels of the highest exposure the generator predicts, by name (e.g.
            ``[sum_theta2_rad2]`` = normalised mean theta^2 only).
    """

    path: str = "data/tiny"
    patch_size: list[int] = field(default_factory=lambda: [64, 64, 32])
    sampling: str = "log-uniform"
    fixed_days: float | None = None
    num_samples: int = 1
    augment: bool = True
    class_ratios: list[float] | None = None
    preload_exposures: bool = True
    input_channels: list[str] = field(default_factory=lambda: list(CHANNEL_NAMES))
    target_channels: list[str] = field(default_factory=lambda: list(DEFAULT_TARGET_CHANNELS))


@dataclass
class ModelConfig:
    """The trained network.

    Attributes:
        name: registry name (``nets.list_nets()``): a ``dense`` net for ``upsample``/``segment``,
            a ``joint`` net for ``joint``.
        kwargs: constructor arguments; ``in_channels``, ``out_channels`` (``num_classes``,
            ``image_channels`` for joint nets) are filled from the data settings when absent.
        segment_input: ``segment`` task only: ``raw`` input, ``upsampled`` (output of the frozen
            ``upsampler``) or ``both`` (concatenated on channels).
        upsampler: checkpoint (``best.pt``/``last.pt`` of an upsample run) for ``upsampled``/``both``.
    """

    name: str = "resunet"
    kwargs: dict[str, Any] = field(default_factory=dict)
    segment_input: str = "raw"
    upsampler: str | None = None


@dataclass
class CriticConfig:
    """WGAN-GP critic (``train.task: upsample`` with ``train.mode: gan``).

    Attributes:
        name: registry name of a ``critic`` net.
        kwargs: constructor arguments; ``in_channels`` (condition + candidate) is filled in.
        n_critic: critic updates per generator update (each on a fresh batch).
        lambda_gp: weight of the gradient penalty, applied on every critic update.
        lr: critic learning rate.
        betas: critic Adam betas.
    """

    name: str = "patch_critic"
    kwargs: dict[str, Any] = field(default_factory=dict)
    n_critic: int = 5
    lambda_gp: float = 10.0
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.0, 0.9])


@dataclass
class OptimConfig:
    """Optimiser and loss weights.

    Attributes:
        lr: generator/segmenter Adam learning rate (constant).
        betas: Adam betas.
        weight_decay: Adam weight decay.
        lambda_l1: weight of the L1 (or L2, ``train.mode: l2``) image loss.
        lambda_adv: weight of the adversarial (Wasserstein) generator loss.
        lambda_seg: weight of Dice+CE in the ``joint`` task.
        class_weights: cross-entropy weight per class (5 values) or null.
        lambda_dice: weight of the Dice part of ``DiceCELoss``.
        lambda_ce: weight of the cross-entropy part of ``DiceCELoss``.
        grad_clip: max gradient norm of the trained net, or null.
    """

    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    weight_decay: float = 0.0
    lambda_l1: float = 100.0
    lambda_adv: float = 1.0
    lambda_seg: float = 1.0
    class_weights: list[float] | None = None
    lambda_dice: float = 1.0
    lambda_ce: float = 1.0
    grad_clip: float | None = None


@dataclass
class TrainConfig:
    """Loop, devices and run folder.

    Attributes:
        task: ``upsample``, ``segment`` or ``joint``.
        mode: ``upsample`` only: ``gan`` (conditional WGAN-GP), ``l1`` or ``l2`` (no critic, ablation).
        adv_start_step: ``gan`` mode: steps of pure L1 pre-training before the critic joins.
        steps: total generator steps.
        max_minutes: wall-clock budget of this process's training loop in minutes (null: none); when
            spent, training stops after the current step, validates, writes ``last.pt`` and records
            the steps actually run as ``train.steps`` (equal-budget comparisons, e.g. 3D vs 2D).
        batch_size: cases drawn per step (each gives ``data.num_samples`` patches) per process.
        seed: master seed (weights, data order, augmentations).
        device: ``auto`` (CUDA if present), ``cpu``, ``cuda``, ``cuda:1``...
        amp: bf16 autocast on CUDA (ignored on CPU).
        channels_last: channels-last-3d memory format on CUDA.
        compile: ``torch.compile`` the generator/segmenter (never the critic: no double backward).
        threads: torch CPU threads, or null for torch's choice.
        out_dir: parent folder of run folders.
        run_name: run folder name (default ``<task>-<UTC time>``); an existing folder is refused.
        log_every: steps between ``metrics.jsonl`` training lines.
        checkpoint_every: steps between ``last.pt`` writes (also written at the end).
        progress: tqdm progress bar.
    """

    task: str = "upsample"
    mode: str = "gan"
    adv_start_step: int = 0
    steps: int = 1000
    max_minutes: float | None = None
    batch_size: int = 2
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    threads: int | None = None
    out_dir: str = "runs"
    run_name: str | None = None
    log_every: int = 10
    checkpoint_every: int = 100
    progress: bool = True


@dataclass
class ValidationConfig:
    """Whole-volume validation by sliding windows (labelled ``val``: not a reported result).

    Attributes:
        every: steps between validations (0: only at the end).
        split: dataset split used.
        days: input exposure in days (null: the shortest checkpoint).
        roi_size: window ``(X, Y, Z)`` (null: ``data.patch_size``).
        overlap: window overlap fraction.
        sw_batch_size: windows per forward pass.
        max_cases: validate on at most this many cases (null: all).
        metric: what selects ``best.pt``: ``l1`` (lower is better) or ``dice`` (higher); null:
            ``l1`` for upsample, ``dice`` for segment and joint.
    """

    every: int = 100
    split: str = "val"
    days: float | None = None
    roi_size: list[int] | None = None
    overlap: float = 0.25
    sw_batch_size: int = 4
    max_cases: int | None = None
    metric: str | None = None


@dataclass
class Config:
    """The whole training configuration (one field per YAML section)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _coerce(value, hint, where: str):
    """Check ``value`` against the type ``hint``; int -> float and tuple -> list are allowed."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return _from_dict(hint, value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint) or (Any,)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported config type {_type_name(hint)}")


def _from_dict(cls, data, where: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        key = f"{where}.{unknown[0]}" if where else str(unknown[0])
        raise ValueError(f"unknown config key {key!r}; {where or 'the config'} accepts: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict | None) -> Config:
    """Build a :class:`Config` from nested plain data, checking every key and type.

    Raises:
        ValueError: for an unknown key or a wrong type, naming the key path (``optim.lr``).
    """
    config = _from_dict(Config, data, "")
    _check(config)
    return config


def _check(config: Config) -> None:
    """Value checks that need more than the type."""
    t, d = config.train, config.data
    if t.task not in TASKS:
        raise ValueError(f"train.task must be one of {TASKS}, got {t.task!r}")
    if t.mode not in MODES:
        raise ValueError(f"train.mode must be one of {MODES}, got {t.mode!r}")
    if config.model.segment_input not in SEGMENT_INPUTS:
        raise ValueError(f"model.segment_input must be one of {SEGMENT_INPUTS}, got {config.model.segment_input!r}")
    if config.model.segment_input != "raw" and not config.model.upsampler:
        raise ValueError(f"model.segment_input={config.model.segment_input!r} needs model.upsampler (a checkpoint)")
    for name, value in (("train.steps", t.steps), ("train.batch_size", t.batch_size),
                        ("train.log_every", t.log_every), ("train.checkpoint_every", t.checkpoint_every),
                        ("data.num_samples", d.num_samples), ("critic.n_critic", config.critic.n_critic),
                        ("validation.sw_batch_size", config.validation.sw_batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if len(d.patch_size) != 3 or any(p < 1 for p in d.patch_size):
        raise ValueError(f"data.patch_size must be three positive ints, got {d.patch_size}")
    for name, channels in (("data.input_channels", d.input_channels), ("data.target_channels", d.target_channels)):
        if not channels or len(set(channels)) != len(channels) or any(c not in CHANNEL_NAMES for c in channels):
            raise ValueError(f"{name} must be distinct channel names among {', '.join(CHANNEL_NAMES)}; got {channels}")
    if config.validation.metric not in (None, "l1", "dice"):
        raise ValueError(f"validation.metric must be null, 'l1' or 'dice', got {config.validation.metric!r}")
    if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", str(t.device)):
        raise ValueError(f"train.device must be auto, cpu, cuda or cuda:N, got {t.device!r}")
    if t.threads is not None and t.threads < 1:
        raise ValueError(f"train.threads must be a positive integer or null, got {t.threads}")
    if t.max_minutes is not None and not t.max_minutes > 0:
        raise ValueError(f"train.max_minutes must be a positive number of minutes or null, got {t.max_minutes}")
    if config.validation.every < 0:
        raise ValueError(f"validation.every must be >= 0, got {config.validation.every}")


def config_to_dict(config: Config) -> dict:
    """Plain nested dict of ``config`` (lists, no tuples), as written to ``config.yaml``."""
    return dataclasses.asdict(config)


# ---------------------------------------------------------------------------------------------
# YAML and overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into ``(["a", "b", "c"], yaml.safe_load(value))``.

    Raises:
        ValueError: without ``=`` or with an empty key.
    """
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ValueError(f"override {text!r}: expected dotted.key=value, e.g. optim.lr=1e-3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ValueError(f"override {text!r}: value is not valid YAML ({err})") from None
    return parts, value


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Return a copy of the nested dict ``data`` with dotted overrides applied.

    Missing intermediate mappings are created; unknown keys are caught later by
    :func:`config_from_dict`, naming the full path.
    """
    import copy

    out = copy.deepcopy(data) if data else {}
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ValueError(f"override {text!r}: {'.'.join(parts[:i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (or start from the defaults) and apply dotted overrides.

    Args:
        path: YAML file, or ``None`` for the defaults.
        overrides: ``["optim.lr=1e-3", "train.steps=10"]``.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: for malformed YAML, an unknown key or a bad value, naming the file and key.
    """
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such config file")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: malformed YAML ({err})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    try:
        return config_from_dict(apply_overrides(data, list(overrides)))
    except ValueError as err:
        raise ValueError(f"{path}: {err}" if path is not None else str(err)) from None


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (readable by :func:`load_config`)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
