"""Bad input a new user may give ends in one clear error line and exit status 2, never a traceback.

Defects covered: an empty checkpoint file; an unknown ``--device``/``train.device`` or a
non-positive ``--threads``; checkpoint or shipped weights whose bytes were damaged.
"""

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

from volumetric.infer.checkpoint import FORMAT, export_weights, load_checkpoint, save_checkpoint
from volumetric.cli import main
from volumetric.pretrained import WEIGHTS_DIR, file_sha256, manifest, pretrained_path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = ROOT / "examples" / "reference_block.json"
TINY_CONFIG = ROOT / "configs" / "upsample_tiny.yaml"


def _flip_middle(path: Path, count: int = 20) -> None:
    """Invert ``count`` bytes in the middle of ``path`` (bit rot, a bad copy)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + count] = bytes(b ^ 0xFF for b in data[middle:middle + count])
    path.write_bytes(bytes(data))


def _one_error_line(err: str, prefix: str) -> str:
    """The single stderr line, checked to start with ``prefix`` (no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    return lines[0]


def _infer(tmp_path: Path, checkpoint: Path) -> int:
    return main(["infer", str(tmp_path / "block.nii.gz"), "--out", str(tmp_path / "out"), "--checkpoint",
                 str(checkpoint), "--device", "cpu", "--no-progress"])


# ---------------------------------------------------------------------------- 1. empty checkpoint


def test_empty_checkpoint_is_reported_as_empty(tmp_path, capsys):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.pt: empty file"):
        load_checkpoint(empty)
    assert _infer(tmp_path, empty) == 2
    line = _one_error_line(capsys.readouterr().err, "volumetric infer: error: ")
    assert "empty" in line and "corrupted" in line


# ---------------------------------------------------------------------------- 2. device and threads

SIMULATE = ["simulate", "--geometry", str(BLOCK), "--days", "0.01", "--voxel-mm", "10", "--no-progress"]
BAD_FLAGS = {
    "simulate-device": (SIMULATE + ["--device", "tpu"], "argument --device: expected auto, cpu, cuda or cuda:N"),
    "simulate-threads-0": (SIMULATE + ["--threads", "0"], "argument --threads: expected a positive integer"),
    "simulate-threads-neg": (SIMULATE + ["--threads", "-2"], "argument --threads: expected a positive integer"),
    "demo-device": (["demo", "--device", "tpu"], "argument --device"),
    "demo-threads": (["demo", "--threads", "0"], "argument --threads"),
    "infer-device": (["infer", "x.nii.gz", "--checkpoint", "x.pt", "--device", "cuda:x"], "argument --device"),
    "infer-sw-batch-0": (["infer", "x.nii.gz", "--checkpoint", "x.pt", "--sw-batch-size", "0"],
                         "argument --sw-batch-size: expected a positive integer"),
    "infer-overlap-1": (["infer", "x.nii.gz", "--checkpoint", "x.pt", "--overlap", "1"],
                        "argument --overlap: expected a fraction in [0, 1)"),
}


@pytest.mark.parametrize("name", sorted(BAD_FLAGS))
def test_bad_device_or_threads_flag_is_an_argparse_error(name, tmp_path, capsys):
    argv, message = BAD_FLAGS[name]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"volumetric {argv[0]}: error: {message}"), last
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag, message", [
    (["--device", "tpu"], "argument --device: expected auto, cpu, cuda or cuda:N"),
    (["--sw-batch-size", "0"], "argument --sw-batch-size: expected a positive integer"),
    (["--overlap", "-0.1"], "argument --overlap: expected a fraction in [0, 1)"),
    (["--max-cases", "0"], "argument --max-cases: expected a positive integer"),
])
def test_evaluate_py_refuses_bad_flags(flag, message, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("evaluate_entry", ROOT / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exit_:
        module.main(["--run", "r", "--data", "d", "--out", str(tmp_path / "out"), *flag])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("train.device=tpu", "train.device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    ("train.threads=0", "train.threads must be a positive integer or null, got 0"),
])
def test_bad_train_device_or_threads_leaves_no_run_folder(override, message, tmp_path, capsys):
    argv = ["train", "-c", str(TINY_CONFIG), override, f"train.out_dir={tmp_path}", "train.run_name=run",
            f"data.path={tmp_path / 'no_data'}"]
    assert main(argv) == 2
    assert _one_error_line(capsys.readouterr().err, "volumetric train: error: ").endswith(message)
    assert not (tmp_path / "run").exists()  # a corrected rerun may reuse the name


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_one_line(tmp_path, capsys):
    assert main([*SIMULATE, "--device", "cuda", "--out", str(tmp_path / "out")]) == 2
    assert "CUDA is not available" in _one_error_line(capsys.readouterr().err, "volumetric simulate: error: ")


# ---------------------------------------------------------------------------- 3. damaged weights


def test_flipped_bytes_in_checkpoint_weights_are_refused(tmp_path, capsys):
    good = export_weights(WEIGHTS_DIR / "up3d.pt", tmp_path / "model.pt")  # a copy with a digest
    damaged = Path(shutil.copyfile(good, tmp_path / "damaged.pt"))
    _flip_middle(damaged)  # lands in a weight tensor: torch.load alone does not notice
    with pytest.raises(ValueError, match="damaged.pt: weights digest mismatch: the file is corrupted"):
        load_checkpoint(damaged)
    assert _infer(tmp_path, damaged) == 2
    assert "weights digest mismatch" in _one_error_line(capsys.readouterr().err, "volumetric infer: error: ")
    assert set(load_checkpoint(good)["weights_sha256"]) == {"net_state"}  # the intact copy loads


def test_save_checkpoint_digests_every_state_dict(tmp_path):
    payload = {"format": FORMAT, "step": 1, "net": {"name": "n", "kwargs": {}},
               "net_state": {"w": torch.arange(6.0).reshape(2, 3).t()}, "critic_state": {"b": torch.ones(2)}}
    path = save_checkpoint(payload, tmp_path / "last.pt")
    assert "weights_sha256" not in payload  # the caller's dict is not modified
    stored = load_checkpoint(path)
    assert set(stored["weights_sha256"]) == {"net_state", "critic_state"}
    stored["critic_state"]["b"][0] = 2.0  # rewritten behind save_checkpoint's back: digest kept
    torch.save(stored, path)
    with pytest.raises(ValueError, match="weights digest mismatch"):
        load_checkpoint(path)


def test_flipped_bytes_in_shipped_weights_are_refused(tmp_path):
    copy = Path(shutil.copytree(WEIGHTS_DIR, tmp_path / "weights"))
    _flip_middle(copy / manifest()["models"]["upsampler"]["file"])
    with pytest.raises(ValueError, match="up3d.pt: sha256 differs from .*manifest.json: the file is corrupted"):
        pretrained_path("upsampler", copy)
    assert file_sha256(pretrained_path("segmenter", copy)) == manifest()["models"]["segmenter"]["sha256"]
