"""Deterministic training batches: step ``s``, draw ``k`` depend only on ``(seed, s, k)``."""

from __future__ import annotations


import numpy as np
import torch
from volumetric.train.distributed import Distributed



# ---------------------------------------------------------------------------------------------
# data

_SEED_MOD = 2**31 - 1  # seeds derived for numpy/torch generators stay below 2^31


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
