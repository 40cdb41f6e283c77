"""Training loops for the three tasks, run folders, validation, checkpoints and resume.

Tasks (``train.task``):

* ``upsample``: a ``dense`` generator maps the normalised input exposure (``data.input_channels``)
  to the normalised highest exposure (``data.target_channels``; e.g. ``[sum_theta2_rad2]`` = mean
  theta^2 only). Channels are named (``volumetric.schema``) and resolved against the dataset's.
  ``train.mode: gan`` is a conditional WGAN-GP: per generator step, ``critic.n_critic`` critic
  updates, each on a fresh batch, with loss ``mean D(x, G(x)) - mean D(x, y) + lambda_gp * GP``
  (the penalty on every critic update); then the generator minimises
  ``lambda_l1 * L1(G(x), y) - lambda_adv * mean D(x, G(x))`` on the last critic batch. The first
  ``train.adv_start_step`` steps are pure L1 (pre-training). ``mode: l1``/``l2``: no critic (ablation).
* ``segment``: a ``dense`` net gives 5-class logits; loss MONAI ``DiceCELoss`` with class weights.
  Its input is the raw input (``model.segment_input: raw``), the output of a frozen upsampler
  checkpoint (``upsampled``) or both concatenated (``both``).
* ``joint``: a ``joint`` net; loss ``lambda_l1 * L1(image) + lambda_seg * DiceCE(logits)``.

Exposure-conditioned nets (``conditioning: film|channel``) receive ``exposure_days`` ``(B,)``.

**Run folder** (``train.out_dir/train.run_name``)::

    config.yaml           the resolved config (reload it with ``load_config``)
    environment.json      versions, git commit (and whether the tree was dirty), seed, device, threads,
                          world size, whether TensorBoard events are written (tensorboard may be absent)
    metrics.jsonl         one JSON object a line: ``split: train`` (means of the losses, ``step_s`` and
                          ``data_s`` since the previous line) and ``split: val`` (``val_l1``/``val_dice``)
    checkpoints/last.pt   every ``train.checkpoint_every`` steps and at the end (``volumetric.infer.checkpoint``)
    checkpoints/best.pt   at the best validation (``validation.metric``)
    tensorboard/          events, only when tensorboard is installed

The folder is created only once the run is built (nets, datasets, settings checked), and a fresh
start that fails before its first checkpoint removes it again, so the same ``train.run_name`` can
be retried. ``--resume`` rolls ``metrics.jsonl`` back to the checkpoint's step (lines logged after
it are dropped, atomically): the resumed run logs those steps again.

A training patch (``data.patch_size``) larger than the dataset's volumes is refused.

Validation metrics are in-training checks on the validation split, never the reported result
(that comes from whole-volume evaluation of the test split).

**Determinism and resume.** The batch of draw ``k`` of step ``s`` depends only on
``(train.seed, s, k)``: case indices are drawn (with replacement) from
``numpy.random.default_rng([seed, s, k])`` and the MONAI transforms (exposure choice, crop,
flips) are re-seeded from the same generator; the gradient-penalty mixing weights use a torch
generator seeded from ``(seed, s, k)``. The global torch RNG (dropout) is saved in checkpoints.
So ``--resume`` after ``N`` steps continues exactly as an uninterrupted run (same weights
bit for bit on CPU).

**Distributed.** Under ``torchrun`` (``WORLD_SIZE > 1``) each process joins the default process
group (``nccl`` on CUDA, ``gloo`` on CPU) from the environment; the per-step draw holds
``batch_size * world_size`` cases and rank ``r`` takes its slice; gradients are averaged with
``all_reduce`` after every backward (the critic's double backward rules out the DDP wrapper's
hooks, so all nets are synchronised the same way); only rank 0 validates and writes files.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

from volumetric.infer.checkpoint import FORMAT, build_net, load_checkpoint, save_checkpoint
from volumetric.train.config import Config, config_to_dict, load_config, save_config
from volumetric.infer.pipeline import InputPipeline
from volumetric.schema import channel_indices, legacy_channel_names
from volumetric.train.losses import (
    critic_wasserstein_loss,
    dice_ce_loss,
    generator_wasserstein_loss,
    gradient_penalty,
    image_loss,
)

__all__ = [
    "NUM_CLASSES",
    "Distributed",
    "Batcher",
    "setup_distributed",
    "resolve_device",
    "validate",
    "train_from_config",
    "run_training",
]

from volumetric.schema import NUM_CLASSES  # noqa: E402  (one class table)
_SEED_MOD = 2**31 - 1


# ---------------------------------------------------------------------------------------------
# devices and processes


@dataclass(frozen=True)
class Distributed:
    """Process group facts: ``rank``, ``world_size``, ``local_rank`` (1 process: 0, 1, 0)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device_name: str) -> Distributed:
    """Join the process group described by torchrun's environment (``WORLD_SIZE`` > 1), else none.

    Backend ``nccl`` when training on CUDA, ``gloo`` otherwise.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), local)


def resolve_device(name: str, dist: Distributed) -> torch.device:
    """``auto`` -> CUDA (this process's local GPU) if available, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"train.device={name!r} but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    return device


def _sync_grads(params: Sequence[nn.Parameter], dist: Distributed) -> None:
    """Average gradients over processes (no-op for one process)."""
    if not dist.enabled:
        return
    import torch.distributed as tdist

    for p in params:
        if p.grad is not None:
            tdist.all_reduce(p.grad, op=tdist.ReduceOp.SUM)
            p.grad.div_(dist.world_size)


def _broadcast_params(module: nn.Module, dist: Distributed) -> None:
    if not dist.enabled:
        return
    import torch.distributed as tdist

    for tensor in module.state_dict().values():
        tdist.broadcast(tensor, src=0)


# ---------------------------------------------------------------------------------------------
# data


def _derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0]) % _SEED_MOD


class Batcher:
    """Deterministic batches: draw ``k`` of step ``s`` depends only on ``(seed, s, k)`` and the rank.

    Args:
        dataset: ``make_dataset`` result (items: dicts or lists of dicts).
        batch_size: cases per process per draw.
        seed: master seed.
        dist: process group facts.
        device: where batches go.
        channels_last: use ``torch.channels_last_3d`` for image tensors.
    """

    def __init__(self, dataset, batch_size: int, seed: int, dist: Distributed, device: torch.device,
                 channels_last: bool = False) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.dist = dist
        self.device = device
        self.channels_last = channels_last

    def indices(self, step: int, draw: int) -> list[int]:
        """Case indices of this process for draw ``draw`` of step ``step``."""
        rng = np.random.default_rng([self.seed, step, draw])
        everyone = rng.integers(0, len(self.dataset), size=self.batch_size * self.dist.world_size)
        start = self.dist.rank * self.batch_size
        return everyone[start:start + self.batch_size].tolist()

    def get(self, step: int, draw: int = 0) -> dict[str, torch.Tensor]:
        """Collated batch ``{"image", "target", "label", "exposure_days"}`` on the device.

        ``image``/``target`` ``(B, 3, X, Y, Z)`` float32, ``label`` ``(B, 1, X, Y, Z)`` int64,
        ``exposure_days`` ``(B,)`` float32, ``B = batch_size * num_samples``.
        """
        self.dataset.transform.set_random_state(seed=_derived_seed(self.seed, step, draw, self.dist.rank, 7))
        samples = []
        for index in self.indices(step, draw):
            item = self.dataset[index]
            samples.extend(item if isinstance(item, list) else [item])
        return self._collate(samples)

    def _collate(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        fmt = torch.channels_last_3d if self.channels_last else torch.contiguous_format
        out = {}
        for key in ("image", "target"):
            stacked = torch.stack([torch.as_tensor(s[key]).float() for s in samples])
            out[key] = stacked.to(self.device, non_blocking=True).contiguous(memory_format=fmt)
        if "label" in samples[0]:
            out["label"] = torch.stack([torch.as_tensor(s["label"]).long() for s in samples]).to(self.device)
        out["exposure_days"] = torch.tensor([float(s["exposure_days"]) for s in samples], device=self.device)
        return out


# ---------------------------------------------------------------------------------------------
# the network wrapper


# ---------------------------------------------------------------------------------------------
# building the state of a run


@dataclass
class _Run:
    """Everything a training loop touches (one object per run, passed to short functions)."""

    config: Config
    run_dir: Path
    device: torch.device
    dist: Distributed
    net: nn.Module
    pipeline: InputPipeline
    optimizer: torch.optim.Optimizer
    batcher: Batcher
    val_data: object
    normalisation: dict
    data_meta: dict
    critic: nn.Module | None = None
    critic_optimizer: torch.optim.Optimizer | None = None
    dice_ce: nn.Module | None = None
    upsampler_record: dict | None = None
    amp: bool = False
    target_index: torch.Tensor | None = None
    step: int = 0
    best: dict = field(default_factory=dict)
    writer: object = None
    timings: dict = field(default_factory=lambda: {"step_s": [], "data_s": []})


def _net_kwargs(config: Config, in_channels: int) -> dict:
    """Fill channel arguments of the trained net from the data settings."""
    kwargs = dict(config.model.kwargs)
    task = config.train.task
    kwargs.setdefault("in_channels", in_channels)
    if task == "upsample":
        kwargs.setdefault("out_channels", len(config.data.target_channels))
    elif task == "segment":
        kwargs.setdefault("out_channels", NUM_CLASSES)
    else:
        kwargs.setdefault("num_classes", NUM_CLASSES)
    return kwargs


def _check_kind(name: str, expected: str, where: str) -> None:
    import nets  # noqa: F401
    from nets.registry import net_kind

    try:
        kind = net_kind(name)
    except ValueError as err:
        raise ValueError(f"{where}={name!r}: {err}") from None
    if kind != expected:
        raise ValueError(f"{where}={name!r} is a {kind!r} net; this task needs a {expected!r} net")


def _check_patch(patch: Sequence[int], module: nn.Module, what: str) -> None:
    multiple = int(getattr(module, "size_multiple", 1))
    if any(p % multiple for p in patch):
        raise ValueError(f"data.patch_size {list(patch)} must be a multiple of {multiple} ({what}'s size_multiple)")


def _load_upsampler(config: Config, device: torch.device):
    """Frozen upsampler and its record for checkpoints, or ``(None, None)``."""
    if config.train.task != "segment" or config.model.segment_input == "raw":
        return None, None
    ckpt = load_checkpoint(config.model.upsampler)
    if ckpt.get("task") != "upsample":
        raise ValueError(f"{config.model.upsampler}: model.upsampler must be an upsample checkpoint, "
                         f"got task {ckpt.get('task')!r}")
    net = build_net(ckpt["net"], ckpt["net_state"]).to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    record = {"net": ckpt["net"], "state": ckpt["net_state"],
              "input_channels": legacy_channel_names(ckpt["data"]["input_channels"]),
              "target_channels": legacy_channel_names(ckpt["data"]["target_channels"]),
              "normalisation": ckpt["normalisation"], "fingerprint": ckpt["data"].get("fingerprint"),
              "path": str(config.model.upsampler)}
    return net, record


def _check_settings(config: Config) -> None:
    """Settings checks that need no data or weights: net kinds, the patch against the dataset's shape."""
    task = config.train.task
    _check_kind(config.model.name, "joint" if task == "joint" else "dense", "model.name")
    if task == "upsample" and config.train.mode == "gan":
        _check_kind(config.critic.name, "critic", "critic.name")
    _check_patch_fits(config.data.patch_size, config.data.path)


def _dataset_shape(path) -> list | None:
    """``shape`` of ``dataset.json`` in ``path``, or ``None`` when unreadable (``make_dataset`` names the problem)."""
    try:
        meta = json.loads((Path(path) / "dataset.json").read_text())
    except (OSError, ValueError):
        return None
    shape = meta.get("shape") if isinstance(meta, dict) else None
    return shape if isinstance(shape, list) and len(shape) == 3 else None


def _check_patch_fits(patch: Sequence[int], path) -> None:
    """Refuse a training patch larger than the dataset's volumes on any axis (it would be zero-padded)."""
    shape = _dataset_shape(path)
    if shape is not None and any(p > n for p, n in zip(patch, shape)):
        raise ValueError(f"data.patch_size {list(patch)} is larger than the dataset's volumes: shape {shape} in "
                         f"{Path(path) / 'dataset.json'}; choose a patch no larger than the shape on every axis")


def _datasets(config: Config, normalisation: dict | None):
    from volumetric.data.dataset import make_dataset

    d = config.data
    train = make_dataset(d.path, "train", patch_size=tuple(d.patch_size), sampling=d.sampling,
                         fixed_days=d.fixed_days, num_samples=d.num_samples, augment=d.augment,
                         class_ratios=d.class_ratios, normalisation=normalisation,
                         preload_exposures=d.preload_exposures, seed=config.train.seed)
    days = config.validation.days
    if days is None:
        days = float(train.info.meta["checkpoints_days"][0])
    if not train.info.split(config.validation.split):
        warnings.warn(f"{d.path}: split {config.validation.split!r} holds no cases: no validation, no best.pt",
                      UserWarning, stacklevel=3)
        return train, None, days
    val = make_dataset(d.path, config.validation.split, patch_size=None, sampling="fixed", fixed_days=days,
                       augment=False, normalisation=train.normalisation, preload_exposures=False)
    return train, val, days


def _data_meta(config: Config, train) -> dict:
    meta = train.info.meta
    checkpoints = [float(v) for v in meta["checkpoints_days"]]
    inputs = checkpoints[:-1] or checkpoints
    if config.data.sampling == "fixed":
        fixed = config.data.fixed_days if config.data.fixed_days is not None else inputs[0]
        inputs = [float(fixed)]
    return {"fingerprint": meta.get("fingerprint"), "voxel_mm": float(meta["voxel_mm"]),
            "checkpoints_days": checkpoints, "exposure_range_days": [min(inputs), max(inputs)],
            "channels": list(train.info.channels), "input_channels": list(config.data.input_channels),
            "target_channels": list(config.data.target_channels), "path": str(config.data.path),
            "dataset_name": meta.get("name")}


def _build_nets(config: Config, upsampler, record, device):
    """Trained net (and critic), seeded from ``train.seed``."""
    import nets  # noqa: F401
    from nets.registry import create_net

    task = config.train.task
    in_channels = len(config.data.input_channels)
    if upsampler is not None:
        up_out = int(getattr(upsampler, "out_channels", len(record["input_channels"])))
        in_channels = up_out + (in_channels if config.model.segment_input == "both" else 0)
    torch.manual_seed(config.train.seed)
    net = create_net(config.model.name, **_net_kwargs(config, in_channels))
    _check_patch(config.data.patch_size, net, f"model {config.model.name!r}")
    critic = None
    if task == "upsample" and config.train.mode == "gan":
        kwargs = dict(config.critic.kwargs)
        kwargs.setdefault("in_channels", len(config.data.input_channels) + len(config.data.target_channels))
        critic = create_net(config.critic.name, **kwargs)
        _check_patch(config.data.patch_size, critic, f"critic {config.critic.name!r}")
    return net, critic


def _place(module: nn.Module | None, device: torch.device, channels_last: bool) -> nn.Module | None:
    if module is None:
        return None
    module = module.to(device)
    volumetric_weights = all(p.dim() != 4 for p in module.parameters())  # slice-wise 2D nets: no channels_last_3d
    return module.to(memory_format=torch.channels_last_3d) if channels_last and volumetric_weights else module


def _adam(params, lr: float, betas, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


def _build_run(config: Config, run_dir: Path, dist: Distributed, resume: dict | None) -> _Run:
    t = config.train
    _check_settings(config)
    device = resolve_device(t.device, dist)
    cuda = device.type == "cuda"
    channels_last = cuda and t.channels_last
    upsampler, record = _load_upsampler(config, device)
    normalisation = resume["normalisation"] if resume else (record["normalisation"] if record else None)
    train, val, val_days = _datasets(config, normalisation)
    if record and record.get("fingerprint") not in (None, train.info.meta.get("fingerprint")):
        warnings.warn(f"{record['path']}: upsampler was trained on another dataset (fingerprint "
                      f"{record['fingerprint']} != {train.info.meta.get('fingerprint')})", UserWarning, stacklevel=2)
    net, critic = _build_nets(config, upsampler, record, device)
    net, critic = _place(net, device, channels_last), _place(critic, device, channels_last)
    _broadcast_params(net, dist)
    if critic is not None:
        _broadcast_params(critic, dist)
    run_net = torch.compile(net) if t.compile else net
    layout = train.info.channels
    index = lambda names, where: channel_indices(names, layout, where)  # noqa: E731
    pipeline = InputPipeline(run_net, index(config.data.input_channels, "data.input_channels"), upsampler,
                             index(record["input_channels"], f"{record['path']}: upsampler input") if record else (),
                             config.model.segment_input, in_channels=len(layout)).to(device)
    o = config.optim
    run = _Run(
        config=config, run_dir=run_dir, device=device, dist=dist, net=net, pipeline=pipeline,
        optimizer=_adam(net.parameters(), o.lr, o.betas, o.weight_decay),
        batcher=Batcher(train, t.batch_size, t.seed, dist, device, channels_last),
        val_data=(val, val_days), normalisation=dict(train.normalisation), data_meta=_data_meta(config, train),
        critic=critic, upsampler_record=record, amp=cuda and t.amp,
        target_index=torch.tensor(index(config.data.target_channels, "data.target_channels"), device=device),
    )
    if critic is not None:
        run.critic_optimizer = _adam(critic.parameters(), config.critic.lr, config.critic.betas)
    if t.task in ("segment", "joint"):
        run.dice_ce = dice_ce_loss(NUM_CLASSES, o.class_weights, o.lambda_dice, o.lambda_ce).to(device)
    if resume:
        _restore(run, resume)
    return run


# ---------------------------------------------------------------------------------------------
# checkpoints


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _payload(run: _Run) -> dict:
    c = run.config
    return {
        "format": FORMAT,
        "step": run.step,
        "task": c.train.task,
        "mode": c.train.mode,
        "net": _net_spec(run.net),
        "net_state": _cpu_state(run.net),
        "critic": _net_spec(run.critic) if run.critic is not None else None,
        "critic_state": _cpu_state(run.critic) if run.critic is not None else None,
        "upsampler": run.upsampler_record,
        "optimizer": run.optimizer.state_dict(),
        "critic_optimizer": run.critic_optimizer.state_dict() if run.critic_optimizer else None,
        "normalisation": run.normalisation,
        "data": run.data_meta,
        "rng": _rng_state(run.device),
        "best": dict(run.best),
        "config": config_to_dict(c),
    }


def _net_spec(net: nn.Module) -> dict:
    from nets.registry import net_config

    return net_config(net)


def _cpu_state(net: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


def _restore(run: _Run, ckpt: dict) -> None:
    if ckpt["net"] != _net_spec(run.net):
        raise ValueError(f"{run.run_dir}: the checkpoint's net {ckpt['net']} differs from the config's "
                         f"{_net_spec(run.net)}")
    old, new = (ckpt.get("data") or {}).get("fingerprint"), run.data_meta.get("fingerprint")
    if old != new:
        raise ValueError(f"{run.run_dir}: the run was trained on dataset fingerprint {old}, but "
                         f"data.path={run.config.data.path!r} has fingerprint {new}; resume on the same dataset")
    run.net.load_state_dict(ckpt["net_state"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    if run.critic is not None:
        if not ckpt.get("critic_state"):
            raise ValueError(f"{run.run_dir}: checkpoint holds no critic but the config trains one")
        run.critic.load_state_dict(ckpt["critic_state"])
        run.critic_optimizer.load_state_dict(ckpt["critic_optimizer"])
    run.step = int(ckpt["step"])
    run.best = dict(ckpt.get("best") or {})
    torch.set_rng_state(ckpt["rng"]["torch"])
    if "cuda" in ckpt["rng"] and run.device.type == "cuda":
        torch.cuda.set_rng_state(ckpt["rng"]["cuda"], run.device)


def _save(run: _Run, name: str) -> None:
    if run.dist.is_main:
        save_checkpoint(_payload(run), run.run_dir / "checkpoints" / name)


# ---------------------------------------------------------------------------------------------
# one step per task


def _autocast(run: _Run):
    return torch.autocast(run.device.type, dtype=torch.bfloat16) if run.amp else nullcontext()


def _backward_step(loss: torch.Tensor, params, optimizer, run: _Run, clip: float | None = None) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in params if p.requires_grad]
    _sync_grads(params, run.dist)
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()


def _critic_update(run: _Run, batch: dict, step: int, draw: int) -> dict[str, float]:
    """One critic update: Wasserstein loss + lambda_gp * gradient penalty."""
    cond = batch["image"].index_select(1, run.pipeline.input_index)
    real = batch["target"].index_select(1, run.target_index)
    with torch.no_grad(), _autocast(run):
        fake = run.pipeline(batch["image"], batch["exposure_days"]).float()
    with _autocast(run):
        w_loss = critic_wasserstein_loss(run.critic(cond, real), run.critic(cond, fake))
    gen = torch.Generator().manual_seed(_derived_seed(run.config.train.seed, step, draw, run.dist.rank, 11))
    gp, norms = gradient_penalty(run.critic, cond, real, fake, generator=gen, return_norms=True)
    loss = w_loss + run.config.critic.lambda_gp * gp
    _backward_step(loss, run.critic.parameters(), run.critic_optimizer, run)
    return {"critic": _item(loss), "wasserstein": _item(-w_loss), "gp": _item(gp), "grad_norm": _item(norms.mean())}


def _upsample_step(run: _Run, step: int) -> tuple[dict[str, float], float]:
    c = run.config
    logs, data_s = {}, 0.0
    adversarial = c.train.mode == "gan" and step > c.train.adv_start_step
    draws = c.critic.n_critic if adversarial else 1
    for draw in range(draws):
        t0 = time.perf_counter()
        batch = run.batcher.get(step, draw)
        data_s += time.perf_counter() - t0
        if adversarial:
            logs.update(_critic_update(run, batch, step, draw))
    kind = "l2" if c.train.mode == "l2" else "l1"
    with _autocast(run):
        fake = run.pipeline(batch["image"], batch["exposure_days"])
    real = batch["target"].index_select(1, run.target_index)
    rec = image_loss(fake, real, kind)
    loss = c.optim.lambda_l1 * rec
    logs[kind] = _item(rec)
    if adversarial:
        for p in run.critic.parameters():
            p.requires_grad_(False)
        cond = batch["image"].index_select(1, run.pipeline.input_index)
        with _autocast(run):
            adv = generator_wasserstein_loss(run.critic(cond, fake))
        for p in run.critic.parameters():
            p.requires_grad_(True)
        loss = loss + c.optim.lambda_adv * adv
        logs["adv"] = _item(adv)
    _backward_step(loss, run.net.parameters(), run.optimizer, run, c.optim.grad_clip)
    logs["loss"] = _item(loss)
    return logs, data_s


def _segment_step(run: _Run, step: int) -> tuple[dict[str, float], float]:
    c = run.config
    t0 = time.perf_counter()
    batch = run.batcher.get(step, 0)
    data_s = time.perf_counter() - t0
    with _autocast(run):
        out = run.pipeline(batch["image"], batch["exposure_days"])
    logs = {}
    if c.train.task == "joint":
        rec = image_loss(out["image"], batch["target"].index_select(1, run.target_index))
        seg = run.dice_ce(out["logits"].float(), batch["label"])
        loss = c.optim.lambda_l1 * rec + c.optim.lambda_seg * seg
        logs.update(l1=_item(rec), dice_ce=_item(seg))
    else:
        loss = run.dice_ce(out.float(), batch["label"])
        logs["dice_ce"] = _item(loss)
    _backward_step(loss, run.net.parameters(), run.optimizer, run, c.optim.grad_clip)
    logs["loss"] = _item(loss)
    return logs, data_s


def _item(value: torch.Tensor) -> float:
    return float(value.detach())


def _train_step(run: _Run, step: int) -> tuple[dict[str, float], float]:
    if run.config.train.task == "upsample":
        return _upsample_step(run, step)
    return _segment_step(run, step)


# ---------------------------------------------------------------------------------------------
# validation


def _val_metric(run: _Run) -> str:
    if run.config.validation.metric:
        return run.config.validation.metric
    return "l1" if run.config.train.task == "upsample" else "dice"


def validate(run: _Run) -> dict[str, float]:
    """Whole-volume sliding-window validation (``val_*`` metrics; not a reported result).

    ``val_l1``: mean absolute error of the predicted normalised target channels;
    ``val_dice``: mean Dice over the foreground classes present (nanmean).
    """
    from volumetric.infer.sliding_window import predict_volume
    from volumetric.evaluation.metrics import dice_iou_per_class, nanmean_classes

    v = run.config.validation
    dataset, days = run.val_data
    roi = tuple(v.roi_size or run.config.data.patch_size)
    count = len(dataset) if v.max_cases is None else min(v.max_cases, len(dataset))
    l1s, dices = [], []
    for index in range(count):
        item = dataset[index]
        out = predict_volume(run.pipeline, torch.as_tensor(item["image"]).float(), roi, overlap=v.overlap,
                             sw_batch_size=v.sw_batch_size, device="cpu", sw_device=run.device, amp=run.amp,
                             exposure_days=float(days))
        image = out["image"] if isinstance(out, dict) else (out if run.config.train.task == "upsample" else None)
        logits = out["logits"] if isinstance(out, dict) else (out if run.config.train.task == "segment" else None)
        if image is not None:
            target = torch.as_tensor(item["target"]).float()[run.target_index.cpu()]
            l1s.append(float((image - target).abs().mean()))
        if logits is not None:
            scores = dice_iou_per_class(logits.argmax(0), torch.as_tensor(item["label"])[0].long(), NUM_CLASSES)
            dices.append(nanmean_classes(scores["dice"]))
    metrics = {"val_days": float(days), "val_cases": count}
    if l1s:
        metrics["val_l1"] = float(np.mean(l1s))
    if dices:
        metrics["val_dice"] = float(np.nanmean(dices)) if not np.all(np.isnan(dices)) else float("nan")
    return metrics


def _is_better(run: _Run, metrics: dict) -> bool:
    name = _val_metric(run)
    value = metrics.get(f"val_{name}")
    if value is None or math.isnan(value):
        return not run.best
    if not run.best or run.best.get("value") is None or math.isnan(run.best["value"]):
        return True
    return value < run.best["value"] if name == "l1" else value > run.best["value"]


def _validate_and_select(run: _Run) -> dict:
    metrics = validate(run)
    if _is_better(run, metrics):
        name = _val_metric(run)
        run.best = {"metric": f"val_{name}", "value": metrics.get(f"val_{name}"), "step": run.step}
        _save(run, "best.pt")
    return metrics


# ---------------------------------------------------------------------------------------------
# run folder, logging


def _git(*args: str) -> str | None:
    """Output of a read-only git command in the source tree, or ``None`` (no git, not a checkout)."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _tensorboard_writer(run_dir: Path, purge_step: int | None = None):
    """A ``SummaryWriter`` under ``run_dir/tensorboard``, or ``None`` when tensorboard is not installed.

    ``purge_step``: hide the events of steps ``>= purge_step`` (those a resume logs again).
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step)


def _environment(run: _Run, tensorboard: bool) -> dict:
    import monai

    env = {
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": np.__version__,
        "git_commit": _git("rev-parse", "HEAD") or None,
        "git_dirty": None if (status := _git("status", "--porcelain", "--untracked-files=no")) is None else bool(status),
        "seed": run.config.train.seed,
        "device": str(run.device),
        "cuda_device": torch.cuda.get_device_name(run.device) if run.device.type == "cuda" else None,
        "torch_threads": torch.get_num_threads(),
        "world_size": run.dist.world_size,
        "amp_bf16": run.amp,
        "compile": run.config.train.compile,
        "tensorboard": "events in tensorboard/" if tensorboard else "not installed: no TensorBoard events written",
        "argv": sys.argv,
    }
    return env


def _new_run_dir(config: Config) -> Path:
    t = config.train
    name = t.run_name or f"{t.task}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(t.out_dir) / name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"{run_dir}: run folder exists; choose another train.run_name or --resume it")
    return run_dir


def _open_run_dir(run: _Run, resume: bool) -> None:
    """Write ``config.yaml`` and the environment, open TensorBoard; on resume roll the log back first."""
    run_dir = run.run_dir
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    save_config(run.config, run_dir / "config.yaml")
    if resume:
        _roll_back_log(run_dir / "metrics.jsonl", run.step)
    run.writer = _tensorboard_writer(run_dir, run.step + 1 if resume else None)
    env = _environment(run, run.writer is not None)
    if resume:
        env["resumed_from_step"] = run.step
    name = "environment.json" if not resume else f"environment-resume-{run.step}.json"
    (run_dir / name).write_text(json.dumps(env, indent=2))


def _logged_by(line: str, step: int) -> bool:
    """Whether a ``metrics.jsonl`` line is a record of step ``<= step`` (a line torn by a kill is not)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return False
    return isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step


def _roll_back_log(path: Path, step: int) -> None:
    """Drop the lines logged after ``step`` (the resumed checkpoint's), atomically: the resumed run logs them again."""
    from volumetric.data.io import atomic_path

    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if _logged_by(line, step)]
    if kept == lines:
        return
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in kept))


def _discard_failed_start(run_dir: Path, existed: bool) -> None:
    """Remove what a failed fresh start wrote into ``run_dir`` (absent or empty before), unless it saved a checkpoint.

    The folder would otherwise block a retry with the same ``train.run_name`` and could not be
    resumed. A folder that existed (empty) before the start is left empty.
    """
    if any((run_dir / "checkpoints").glob("*.pt")):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    if existed:
        run_dir.mkdir(parents=True, exist_ok=True)


def _log(run: _Run, record: dict) -> None:
    if not run.dist.is_main:
        return
    with open(run.run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    if run.writer is not None:
        split = record.get("split", "train")
        for key, value in record.items():
            if isinstance(value, (int, float)) and key not in ("step",):
                run.writer.add_scalar(f"{split}/{key}", value, record["step"])


# ---------------------------------------------------------------------------------------------
# the loop


def _loop(run: _Run) -> None:
    from tqdm.auto import tqdm

    t = run.config.train
    bar = tqdm(total=t.steps, initial=run.step, desc=t.task, unit="step",
               disable=not (t.progress and run.dist.is_main), dynamic_ncols=True)
    window: list[dict] = []
    started = time.perf_counter()
    while run.step < t.steps:
        step = run.step + 1
        if _budget_spent(run, started):
            t.steps = step  # this step is the last: validate and checkpoint as at a normal end
        t0 = time.perf_counter()
        logs, data_s = _train_step(run, step)
        if run.device.type == "cuda":
            torch.cuda.synchronize(run.device)
        step_s = time.perf_counter() - t0
        run.step = step
        run.timings["step_s"].append(step_s)
        run.timings["data_s"].append(data_s)
        window.append({**logs, "step_s": step_s, "data_s": data_s})
        bar.update(1)
        bar.set_postfix({k: f"{val:.4g}" for k, val in logs.items() if k in ("loss", "l1", "l2", "dice_ce", "critic",
                                                                          "gp", "adv")})
        if step % t.log_every == 0 or step == t.steps:
            mean = {k: float(np.mean([w[k] for w in window if k in w])) for k in window[-1]}
            _log(run, {"step": step, "split": "train", **mean})  # losses and times: means since the last line
            window = []
        _periodic(run, step)
    bar.close()


def _budget_spent(run: _Run, started: float) -> bool:
    """Whether ``train.max_minutes`` has run out (rank 0 decides, so all processes stop together)."""
    budget = run.config.train.max_minutes
    if budget is None:
        return False
    spent = torch.tensor(float(time.perf_counter() - started >= 60.0 * budget), device=run.device)
    if run.dist.enabled:
        import torch.distributed as tdist

        tdist.broadcast(spent, src=0)
    return bool(spent)


def _periodic(run: _Run, step: int) -> None:
    t, v = run.config.train, run.config.validation
    last = step == t.steps
    if run.val_data[0] is not None and ((v.every and step % v.every == 0) or last):
        if run.dist.is_main:
            metrics = _validate_and_select(run)
            _log(run, {"step": step, "split": "val", **metrics})
        _barrier(run)
    if step % t.checkpoint_every == 0 or last:
        _save(run, "last.pt")
        _barrier(run)


def _on_main(dist: Distributed, fn):
    """Run ``fn`` on rank 0 and give its result (or its error) to every process."""
    if not dist.enabled:
        return fn()
    import torch.distributed as tdist

    box = [None]
    if dist.is_main:
        try:
            box[0] = ("ok", fn())
        except (ValueError, FileExistsError, FileNotFoundError) as err:
            box[0] = ("error", f"{type(err).__name__}: {err}")
    tdist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise ValueError(value)
    return value


def _max_rank_difference(run: _Run) -> float:
    """Largest absolute difference between this process's weights and rank 0's (0.0 for one process)."""
    if not run.dist.enabled:
        return 0.0
    import torch.distributed as tdist

    worst = 0.0
    for module in (run.net, run.critic):
        if module is None:
            continue
        flat = torch.cat([p.detach().flatten().float() for p in module.parameters()])
        reference = flat.clone()
        tdist.broadcast(reference, src=0)
        difference = torch.tensor([float((flat - reference).abs().max())], device=flat.device)
        tdist.all_reduce(difference, op=tdist.ReduceOp.MAX)
        worst = max(worst, float(difference))
    return worst


def _barrier(run: _Run) -> None:
    if run.dist.enabled:
        import torch.distributed as tdist

        tdist.barrier()


def _summary(run: _Run) -> dict:
    steps = np.asarray(run.timings["step_s"])
    data = np.asarray(run.timings["data_s"])
    return {
        "run_dir": str(run.run_dir),
        "task": run.config.train.task,
        "steps": run.step,
        "device": str(run.device),
        "world_size": run.dist.world_size,
        "rank": run.dist.rank,
        "median_step_s": float(np.median(steps)) if steps.size else None,
        "data_share": float(data.sum() / steps.sum()) if steps.size and steps.sum() > 0 else None,
        "best": run.best,
        "max_rank_weight_difference": _max_rank_difference(run),
    }


def train_from_config(config: Config, run_dir: str | Path | None = None, resume: dict | None = None) -> dict:
    """Train one run.

    Args:
        config: the resolved configuration.
        run_dir: run folder (default ``train.out_dir/train.run_name``; refused if it exists and
            is not being resumed).
        resume: a checkpoint dict (``last.pt``) to continue from.

    Returns:
        Summary ``{"run_dir", "task", "steps", "device", "median_step_s", "data_share", "best"}``
        where ``data_share`` is the fraction of step time spent producing batches.
    """
    threads = torch.get_num_threads()
    if config.train.threads is not None:
        torch.set_num_threads(config.train.threads)
    try:
        return _train(config, run_dir, resume)
    finally:
        torch.set_num_threads(threads)  # the setting is per run, not left behind in the process
        _leave_process_group()


def _leave_process_group() -> None:
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def _train(config: Config, run_dir: str | Path | None, resume: dict | None) -> dict:
    dist = setup_distributed(config.train.device)
    if run_dir is None:
        run_dir = _on_main(dist, lambda: str(_new_run_dir(config)))
    run_dir = Path(run_dir)
    run = _build_run(config, run_dir, dist, resume)  # all that bad settings break, before any file is written
    existed = run_dir.exists()
    ours = not resume and not (existed and any(run_dir.iterdir()))  # only this start writes into it
    try:
        _open_and_loop(run, bool(resume))
    except BaseException:
        if dist.is_main and ours:
            _discard_failed_start(run_dir, existed)
        raise
    return _summary(run)


def _open_and_loop(run: _Run, resume: bool) -> None:
    """Open the run folder (rank 0) and train; the TensorBoard writer is closed however the loop ends."""
    try:
        if run.dist.is_main:
            _open_run_dir(run, resume)
        _loop(run)
    finally:
        if run.writer is not None:
            run.writer.close()


def run_training(config_path: str | Path | None = None, overrides: Sequence[str] = (),
                 resume: str | Path | None = None) -> dict:
    """Entry point of ``train.py`` and ``volumetric train``.

    Args:
        config_path: YAML config (ignored when resuming: the run's ``config.yaml`` is used).
        overrides: dotted ``key=value`` overrides (when resuming, e.g. ``train.steps=2000`` to extend).
        resume: a run folder to continue from its ``checkpoints/last.pt``.

    Returns:
        The summary of :func:`train_from_config`.
    """
    if resume is None:
        if config_path is None:
            raise ValueError("give a config file (-c configs/NAME.yaml) or --resume RUN_DIR")
        return train_from_config(load_config(config_path, overrides))
    run_dir = Path(resume)
    config = load_config(run_dir / "config.yaml", overrides)
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    if ckpt["step"] >= config.train.steps:
        raise ValueError(f"{run_dir}: already trained {ckpt['step']} of train.steps={config.train.steps}; "
                         f"extend with train.steps=N")
    return train_from_config(config, run_dir=run_dir, resume=ckpt)
