"""The state of a training run: one object that the loop, the steps and the run folder share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from volumetric.train.config import Config
from volumetric.infer.pipeline import InputPipeline
from volumetric.train.batches import Batcher
from volumetric.train.distributed import Distributed


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
