"""The training checkpoints of a run (``last.pt``, ``best.pt``): what they hold, saving and restoring."""

from __future__ import annotations


import torch
from torch import nn

from volumetric.infer.checkpoint import FORMAT, save_checkpoint
from volumetric.train.config import config_to_dict
from volumetric.train.state import _Run


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
