"""Processes and devices: the torchrun process group, device choice, gradient averaging."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn



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
