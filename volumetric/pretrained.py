"""Reference weights shipped inside the package (``volumetric/weights/``), from the CPU-scale study.

``weights/manifest.json`` names the models by role (``upsampler``, ``segmenter``), the file of
each (an inference-only float16 checkpoint written by
:func:`volumetric.infer.checkpoint.export_weights`) with its ``sha256`` (checked before the file is
used), the exposure and voxel size they were trained for, and the Dice the study measured on
one held-out block (checked by the tests).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

__all__ = ["WEIGHTS_DIR", "manifest", "pretrained_path", "load_pretrained", "file_sha256"]

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


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks of ``chunk_bytes``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, expected: str | None) -> None:
    """Refuse a shipped file whose sha256 differs from the manifest's (``None``: an older manifest, unchecked)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: shipped weights file missing (reinstall the package)")
    if expected is not None and file_sha256(path) != expected:
        raise ValueError(f"{path}: sha256 differs from {path.parent / 'manifest.json'}: the file is corrupted "
                         f"(reinstall the package)")


def pretrained_path(role: str, weights_dir: str | Path = WEIGHTS_DIR) -> Path:
    """Checkpoint file of the shipped model with ``role`` (``upsampler`` or ``segmenter``), verified.

    Raises:
        ValueError: for an unknown role, or a file whose sha256 differs from the manifest's.
        FileNotFoundError: when the manifest or the file is missing.
    """
    models = manifest(weights_dir)["models"]
    if role not in models:
        raise ValueError(f"no shipped model for role {role!r}; shipped: {sorted(models)}")
    path = Path(weights_dir) / models[role]["file"]
    _verify(path, models[role].get("sha256"))
    return path


def load_pretrained(role: str, device: str | torch.device = "cpu", weights_dir: str | Path = WEIGHTS_DIR):
    """Load a shipped model, checked against the manifest's sha256, as a :class:`volumetric.infer.predictor.LoadedModel`."""
    from volumetric.infer.predictor import load_model

    return load_model(pretrained_path(role, weights_dir), device)
