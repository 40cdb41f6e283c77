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
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from volumetric.data.dataset import dataset_occupancy
from volumetric.infer.checkpoint import build_net, load_checkpoint
from volumetric.train.config import Config, load_config
from volumetric.infer.pipeline import InputPipeline
from volumetric.schema import channel_indices, legacy_channel_names
from volumetric.schema import task_spec
from volumetric.train.losses import (
    dice_ce_loss,
)

__all__ = [
    "NUM_CLASSES",
    "Distributed",
    "Batcher",
    "setup_distributed",
    "resolve_device",
    "train_from_config",
    "run_training",
]

from volumetric.schema import NUM_CLASSES  # noqa: E402  (one class table)
from volumetric.train.batches import Batcher
from volumetric.train.distributed import Distributed, _broadcast_params, resolve_device, setup_distributed
from volumetric.train.run_folder import _discard_failed_start, _log, _new_run_dir, _open_run_dir
from volumetric.train.state import _Run
from volumetric.train.steps import _train_step, _validate_and_select
from volumetric.train.checkpoints import _restore, _save


# ---------------------------------------------------------------------------------------------
# building the state of a run


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
    _check_kind(config.model.name, task_spec(task).net_kind, "model.name")
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
            "dataset_name": meta.get("name"), "occupancy_poca_per_voxel": dataset_occupancy(meta)}


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
    if task_spec(t.task).has_logits:
        run.dice_ce = dice_ce_loss(NUM_CLASSES, o.class_weights, o.lambda_dice, o.lambda_ce).to(device)
    if resume:
        _restore(run, resume)
    return run


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
