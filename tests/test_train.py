"""``train.py`` / ``volumetric train``: argument handling, JSON summary, errors, resume, DDP (slow)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from volumetric.cli import main

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


def _args(dataset, out, name, *extra):
    return [f"data.path={dataset}", f"train.out_dir={out}", f"train.run_name={name}", "train.progress=false",
            "train.threads=1", *extra]


def test_cli_trains_and_prints_summary(tiny_dataset, tmp_path, capsys):
    code = main(["train", "-c", str(CONFIGS / "joint_tiny.yaml"),
                 *_args(tiny_dataset, tmp_path, "run", "train.steps=2", "validation.every=0")])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["task"] == "joint" and summary["median_step_s"] > 0
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    # resume through the CLI, extending the run
    assert main(["train", "--resume", str(tmp_path / "run"), "train.steps=3"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train"], "give a config file"),
        (["train", "-c", "missing.yaml"], "missing.yaml: no such config file"),
        (["train", "-c", str(CONFIGS / "segment_tiny.yaml"), "optim.learning_rate=1"],
         "unknown config key 'optim.learning_rate'"),
        (["train", "-c", str(CONFIGS / "segment_tiny.yaml"), "optim.lr"], "expected dotted.key=value"),
    ],
)
def test_cli_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("volumetric train: error:")


def test_resume_refuses_corrupted_checkpoint(tiny_dataset, tmp_path, capsys):
    assert main(["train", "-c", str(CONFIGS / "segment_tiny.yaml"),
                 *_args(tiny_dataset, tmp_path, "run", "train.steps=1", "validation.every=0")]) == 0
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    assert main(["train", "--resume", str(tmp_path / "run"), "train.steps=2"]) == 2
    assert f"{last}: corrupted or unreadable checkpoint" in capsys.readouterr().err


def test_train_py_is_a_thin_entry_point():
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "--resume" in out.stdout and "KEY=VALUE" in out.stdout


@pytest.mark.slow
def test_ddp_two_cpu_processes_with_gloo(tiny_dataset, tmp_path):
    """torchrun, 2 processes, gloo: rank 0 writes one run folder; weights stay identical on both ranks."""
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(ROOT / "train.py"),
           "-c", str(CONFIGS / "upsample_tiny.yaml"),
           *_args(tiny_dataset, tmp_path, "ddp", "train.steps=3", "validation.every=2", "train.log_every=1")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
    assert len(lines) == 1 and lines[0]["world_size"] == 2
    assert lines[0]["max_rank_weight_difference"] == 0.0
    metrics = [json.loads(l) for l in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m["split"] == "train"] == [1, 2, 3]  # written once, by rank 0
    env = json.loads((tmp_path / "ddp" / "environment.json").read_text())
    assert env["world_size"] == 2


@pytest.mark.parametrize("config", ["upsample2d_tiny.yaml", "segment2d_tiny.yaml"])
def test_slicewise_2d_baselines_train_from_shipped_configs(config, tiny_dataset, tmp_path, capsys):
    code = main(["train", "-c", str(CONFIGS / config),
                 *_args(tiny_dataset, tmp_path, "run2d", "train.steps=2", "validation.every=2",
                        "train.adv_start_step=0")])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2
    assert (tmp_path / "run2d" / "checkpoints" / "best.pt").is_file()


def test_wall_clock_budget_stops_early_and_records_the_steps(tiny_dataset, tmp_path, capsys):
    code = main(["train", "-c", str(CONFIGS / "segment_tiny.yaml"),
                 *_args(tiny_dataset, tmp_path, "budget", "train.steps=1000", "train.max_minutes=0.0001",
                        "validation.every=0")])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 1 <= summary["steps"] < 1000
    assert (tmp_path / "budget" / "checkpoints" / "last.pt").is_file()
    assert main(["train", "-c", str(CONFIGS / "segment_tiny.yaml"), "train.max_minutes=0"]) == 2
