"""One optimisation step per task (cWGAN-GP upsampling, Dice+CE segmentation, joint), and validation."""

from __future__ import annotations

import math
import time
from contextlib import nullcontext

import numpy as np
import torch

from volumetric.train.losses import (
    critic_wasserstein_loss,
    generator_wasserstein_loss,
    gradient_penalty,
    image_loss,
)
from volumetric.schema import NUM_CLASSES
from volumetric.schema import task_spec
from volumetric.train.batches import _derived_seed
from volumetric.train.distributed import _sync_grads
from volumetric.train.checkpoints import _save
from volumetric.train.state import _Run


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
    return task_spec(run.config.train.task).val_metric


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
        outputs = out if isinstance(out, dict) else {task_spec(run.config.train.task).dense_output: out}
        image, logits = outputs.get("image"), outputs.get("logits")
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
