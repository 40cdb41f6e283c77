"""The run folder: config, environment, metrics log (rolled back on resume), TensorBoard, failed starts."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from volumetric.train.config import Config, save_config
from volumetric.train.state import _Run


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
