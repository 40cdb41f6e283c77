"""Reference weights shipped inside the package (``volumetric/weights/``), from the CPU-scale study.

``weights/manifest.json`` names the models by role (``upsampler``, ``segmenter``), the file of
each (an inference-only float16 checkpoint written by
:func:`volumetric.checkpoint.export_weights`), the exposure and voxel size they were trained
for, and the Dice the study measured on one held-out block (checked by the tests).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

__all__ = ["WEIGHTS_DIR", "manifest", "pretrained_path", "load_pretrained"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def manifest(weights_dir: str | Path = WEIGHTS_DIR) -> dict:
    """The shipped models' manifest.

    Raises:
        FileNotFoundError: when no weights are shipped in ``weights_dir``.
    """
    path = Path(weights_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no reference weights shipped (run benchmarks/ship_weights.py)")
    return json.loads(path.read_text())


def pretrained_path(role: str, weights_dir: str | Path = WEIGHTS_DIR) -> Path:
    """Checkpoint file of the shipped model with ``role`` (``upsampler`` or ``segmenter``)."""
    models = manifest(weights_dir)["models"]
    if role not in models:
        raise ValueError(f"no shipped model for role {role!r}; shipped: {sorted(models)}")
    return Path(weights_dir) / models[role]["file"]


def load_pretrained(role: str, device: str | torch.device = "cpu", weights_dir: str | Path = WEIGHTS_DIR):
    """Load a shipped model as a :class:`volumetric.predictor.LoadedModel`."""
    from volumetric.predictor import load_model

    return load_model(pretrained_path(role, weights_dir), device)
