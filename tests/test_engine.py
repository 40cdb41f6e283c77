"""Training engine on the tiny preset (CPU): run folders, overfitting, exact resume, checkpoints."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from volumetric.infer.checkpoint import (build_net, check_compatible, load_checkpoint, matched_exposure_days,
                                         occupancy_curve, save_checkpoint)
from volumetric.train.config import load_config
from volumetric.schema import CHANNEL_NAMES
from volumetric.infer.pipeline import InputPipeline
from volumetric.train.engine import Batcher, Distributed, run_training

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TASKS = ("upsample", "segment", "joint")


def _overrides(dataset, out, name, *extra):
    # one thread: as fast as two at these sizes, and not slowed 10x+ when another process is busy
    return [f"data.path={dataset}", f"train.out_dir={out}", f"train.run_name={name}", "train.progress=false",
            "train.threads=1", *extra]


def _train(task, dataset, out, name, *extra):
    return run_training(CONFIGS / f"{task}_tiny.yaml", _overrides(dataset, out, name, *extra))


def _metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("task", TASKS)
def test_each_task_writes_a_complete_run_folder(task, tiny_dataset, tmp_path):
    summary = _train(task, tiny_dataset, tmp_path, task, "train.steps=4", "validation.every=2",
                     "train.log_every=2", "train.checkpoint_every=2")
    run = Path(summary["run_dir"])
    assert summary["steps"] == 4 and 0 < summary["data_share"] < 1
    assert load_config(run / "config.yaml").train.steps == 4
    env = json.loads((run / "environment.json").read_text())
    assert {"torch", "monai", "git_commit", "seed", "device", "tensorboard"} <= set(env)
    lines = _metrics(run)
    assert [m["step"] for m in lines if m["split"] == "train"] == [2, 4]
    val = [m for m in lines if m["split"] == "val"]
    assert [m["step"] for m in val] == [2, 4]
    key = "val_l1" if task == "upsample" else "val_dice"
    assert all(key in m for m in val)
    for name in ("last.pt", "best.pt"):
        ckpt = load_checkpoint(run / "checkpoints" / name)
        assert ckpt["task"] == task and ckpt["normalisation"]["name"] == "channels/1"
        assert ckpt["data"]["channels"] == list(CHANNEL_NAMES)
        assert ckpt["data"]["voxel_mm"] == 10.0 and ckpt["data"]["fingerprint"]
        assert ckpt["data"]["exposure_range_days"][0] > 0
        curve = occupancy_curve(ckpt)  # the dataset's measured PoCA points per voxel, per training day
        assert curve is not None and sorted(curve) == ckpt["data"]["checkpoints_days"]
        values = [curve[d] for d in sorted(curve)]
        assert values == sorted(values) and values[0] > 0
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["step"] == 4 and (last["critic"] is not None) == (task == "upsample")
    net = build_net(last["net"], last["net_state"])  # rebuilt from the file alone
    out = net(torch.zeros(1, len(CHANNEL_NAMES), 16, 16, 8), torch.ones(1))
    assert (out["logits"] if task == "joint" else out).shape[2:] == (16, 16, 8)


# loss factors measured (seed 0, 200 steps): upsample L1 2.4x, segment Dice+CE 3.1x, joint 2.65x
OVERFIT = {"upsample": ("l1", "3e-3", 2.0), "segment": ("loss", "1e-2", 2.5), "joint": ("loss", "1e-2", 2.2)}


@pytest.mark.parametrize("task", TASKS)
def test_overfits_one_case(task, tiny_dataset, tmp_path):
    """One training case, fixed input exposure, no augmentation, whole-XY patches: the loss
    (mean of the first 10 steps vs the last 10 of 200) falls by the stated factor. In the
    upsample task (WGAN-GP, 1 critic update per step) the L1 term is the one measured."""
    key, lr, factor = OVERFIT[task]
    summary = _train(task, tiny_dataset, tmp_path, "overfit", "train.steps=200", "train.log_every=10",
                     "validation.every=0", "train.checkpoint_every=1000", "data.sampling=fixed",
                     "data.augment=false", "data.patch_size=[20,20,8]", "data.num_samples=1",
                     f"optim.lr={lr}", "optim.betas=[0.9,0.999]", "critic.n_critic=1")
    train = [m[key] for m in _metrics(summary["run_dir"]) if m["split"] == "train"]
    assert train[0] / train[-1] >= factor, train


def _state(run_dir, which="net_state"):
    return load_checkpoint(Path(run_dir) / "checkpoints" / "last.pt")[which]


def test_resume_equals_uninterrupted(tiny_dataset, tmp_path):
    """WGAN-GP (critic, GP, dropout-free nets, augmentation, random exposures): 3 + 3 steps == 6 steps."""
    common = ["validation.every=2", "train.checkpoint_every=3"]
    full = _train("upsample", tiny_dataset, tmp_path, "full", "train.steps=6", *common)
    half = _train("upsample", tiny_dataset, tmp_path, "half", "train.steps=3", *common)
    resumed = run_training(None, ["train.steps=6"], resume=half["run_dir"])  # threads=1 is in config.yaml
    assert resumed["steps"] == 6
    for which in ("net_state", "critic_state"):
        a, b = _state(full["run_dir"], which), _state(resumed["run_dir"], which)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), which
    val = [m["step"] for m in _metrics(resumed["run_dir"]) if m["split"] == "val"]
    assert val == [2, 3, 4, 6]  # every 2 steps, plus the end of the first part
    with pytest.raises(ValueError, match="already trained 6"):
        run_training(None, [], resume=resumed["run_dir"])


def test_resume_on_another_dataset_refused(tiny_dataset, tmp_path):
    import shutil

    half = _train("segment", tiny_dataset, tmp_path, "half", "train.steps=1", "validation.every=0")
    other = tmp_path / "other_dataset"
    shutil.copytree(tiny_dataset, other)
    meta = json.loads((other / "dataset.json").read_text())
    meta["fingerprint"] = "0" * 16
    (other / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="resume on the same dataset"):
        run_training(None, ["train.steps=2", f"data.path={other}"], resume=half["run_dir"])


def test_empty_validation_split_skips_validation(tiny_dataset, tmp_path):
    import shutil

    data = tmp_path / "no_val"
    shutil.copytree(tiny_dataset, data)
    meta = json.loads((data / "dataset.json").read_text())
    meta["splits"]["val"] = []
    (data / "dataset.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="split 'val' holds no cases"):
        summary = _train("segment", data, tmp_path, "run", "train.steps=2")
    assert summary["best"] == {}
    assert not (Path(summary["run_dir"]) / "checkpoints" / "best.pt").exists()
    assert all(m["split"] == "train" for m in _metrics(summary["run_dir"]))


def test_existing_run_folder_refused(tiny_dataset, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    with pytest.raises(FileExistsError, match="run folder exists"):
        _train("segment", tiny_dataset, tmp_path, "taken", "train.steps=1")


def test_failed_start_leaves_no_run_folder_and_can_be_retried(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match="model.name='nope': unknown net 'nope'"):
        _train("segment", tiny_dataset, tmp_path, "retry", "model.name=nope")
    with pytest.raises(FileNotFoundError, match="nonexistent/dataset.json: no such file"):
        _train("segment", tiny_dataset, tmp_path, "retry", f"data.path={tmp_path / 'nonexistent'}")
    assert not (tmp_path / "retry").exists()
    summary = _train("segment", tiny_dataset, tmp_path, "retry", "train.steps=1", "validation.every=0")
    assert summary["steps"] == 1 and (tmp_path / "retry" / "checkpoints" / "last.pt").is_file()


def test_failure_before_the_first_checkpoint_removes_the_run_folder(tiny_dataset, tmp_path, monkeypatch):
    import volumetric.train.engine as engine

    def crash(run):
        engine._log(run, {"step": 1, "split": "train", "loss": 1.0})
        raise RuntimeError("out of memory")

    monkeypatch.setattr(engine, "_loop", crash)
    with pytest.raises(RuntimeError, match="out of memory"):
        _train("segment", tiny_dataset, tmp_path, "crash")
    assert not (tmp_path / "crash").exists()
    (tmp_path / "empty").mkdir()  # a folder given empty is left empty
    with pytest.raises(RuntimeError):
        _train("segment", tiny_dataset, tmp_path, "empty")
    assert list((tmp_path / "empty").iterdir()) == []


def test_resume_rolls_the_log_back_to_the_checkpoint(tiny_dataset, tmp_path):
    run = Path(_train("segment", tiny_dataset, tmp_path, "cut", "train.steps=2", "train.log_every=1",
                      "validation.every=1", "train.checkpoint_every=2")["run_dir"])
    with open(run / "metrics.jsonl", "a") as f:  # a run killed after logging step 3, before its checkpoint
        f.write(json.dumps({"step": 3, "split": "train", "dice_ce": 99.0}) + "\n")
        f.write(json.dumps({"step": 3, "split": "val", "val_dice": 0.99}) + "\n")
        f.write('{"step": 4, "spl')  # a line torn by the kill
    run_training(None, ["train.steps=3"], resume=run)
    lines = _metrics(run)
    for split in ("train", "val"):
        assert [m["step"] for m in lines if m["split"] == split] == [1, 2, 3]
    assert all(m.get("dice_ce") != 99.0 and m.get("val_dice") != 0.99 for m in lines)


def test_patch_larger_than_the_volumes_refused(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match=r"data.patch_size \[64, 64, 8\] is larger than the dataset's volumes: "
                                         r"shape \[20, 20, 10\]"):
        _train("segment", tiny_dataset, tmp_path, "big", "data.patch_size=[64,64,8]")
    assert not (tmp_path / "big").exists()


def test_segment_on_upsampled_input(tiny_dataset, tmp_path):
    up = _train("upsample", tiny_dataset, tmp_path, "up", "train.steps=2", "train.mode=l1",
                "data.target_channels=[sum_theta2_rad2]", "validation.every=0")
    seg = _train("segment", tiny_dataset, tmp_path, "seg", "train.steps=2", "model.segment_input=both",
                 f"model.upsampler={up['run_dir']}/checkpoints/last.pt", "validation.every=0")
    ckpt = load_checkpoint(Path(seg["run_dir"]) / "checkpoints" / "last.pt")
    assert ckpt["net"]["kwargs"]["in_channels"] == len(CHANNEL_NAMES) + 1  # raw + upsampled mean theta^2
    assert ckpt["upsampler"]["net"]["kwargs"]["out_channels"] == 1
    assert ckpt["normalisation"] == load_checkpoint(Path(up["run_dir"]) / "checkpoints" / "last.pt")["normalisation"]


def test_wrong_net_kind_and_patch_refused(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match="needs a 'joint' net"):
        _train("joint", tiny_dataset, tmp_path, "a", "model.name=resunet", "model.kwargs={}")
    with pytest.raises(ValueError, match=r"data.patch_size \[18, 16, 8\] must be a multiple of 4"):
        _train("segment", tiny_dataset, tmp_path, "b", "data.patch_size=[18,16,8]")


def test_batches_depend_only_on_seed_and_step(tiny_dataset):
    from volumetric.data.dataset import make_dataset

    dataset = make_dataset(tiny_dataset, "all", patch_size=(16, 16, 8), num_samples=2)
    batcher = Batcher(dataset, 2, seed=3, dist=Distributed(), device=torch.device("cpu"))
    first = batcher.get(5, 1)
    batcher.get(6, 0)
    again = batcher.get(5, 1)
    assert first["image"].shape == (4, len(CHANNEL_NAMES), 16, 16, 8) and first["label"].dtype == torch.int64
    assert all(torch.equal(first[k], again[k]) for k in first)
    # two ranks split one draw of batch_size * world_size cases
    ranks = [Batcher(dataset, 2, 3, Distributed(r, 2, r), torch.device("cpu")).indices(5, 1) for r in (0, 1)]
    rng = np.random.default_rng([3, 5, 1])
    assert ranks[0] + ranks[1] == rng.integers(0, len(dataset), size=4).tolist()


def test_input_pipeline_selects_channels_and_passes_exposure():
    import nets  # noqa: F401
    from nets.registry import create_net

    net = create_net("resunet", in_channels=1, out_channels=1, channels=[4], num_res_blocks=0, conditioning="film")
    pipeline = InputPipeline(net, [1])
    x = torch.randn(2, 3, 8, 8, 4)
    out = pipeline(x, torch.tensor([0.1, 0.5]))
    assert out.shape == (2, 1, 8, 8, 4)
    assert torch.equal(out, net(x[:, 1:2], torch.tensor([0.1, 0.5])))
    plain = InputPipeline(create_net("resunet", in_channels=3, out_channels=1, channels=[4], num_res_blocks=0), [0, 1, 2])
    assert plain(x, torch.ones(2)).shape == (2, 1, 8, 8, 4)  # unconditioned nets never see the exposure


def test_corrupted_checkpoint_refused(tmp_path):
    good = save_checkpoint({"format": "volumetric-checkpoint/1", "net": {}, "net_state": {}, "step": 0},
                           tmp_path / "good.pt")
    assert load_checkpoint(good)["step"] == 0
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temporary file
    truncated = tmp_path / "last.pt"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"last.pt: corrupted or unreadable checkpoint"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match=r"foreign.pt: not a volumetric-checkpoint/1 checkpoint"):
        load_checkpoint(foreign)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": "volumetric-checkpoint/1", "obj": Path("x")}, unsafe)  # not weights_only-safe
    with pytest.raises(ValueError, match="unsafe.pt: corrupted or unreadable"):
        load_checkpoint(unsafe)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_check_compatible():
    meta = {"data": {"voxel_mm": 10.0, "exposure_range_days": [0.05, 0.25]}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_compatible(meta, voxel_mm=10.0, exposure_days=0.1) == []
    with pytest.raises(ValueError, match="voxel size 2 mm differs from the model's training voxel size 10 mm"):
        check_compatible(meta, voxel_mm=2.0)
    with pytest.warns(UserWarning, match=r"outside the model's training range \[0.05, 0.25\]"):
        check_compatible(meta, voxel_mm=10.0, exposure_days=1.0)
    with pytest.raises(ValueError, match="extrapolation"):
        check_compatible(meta, exposure_days=0.01, strict_exposure=True)


def test_matched_exposure_days_interpolates_the_occupancy_curve():
    curve = {0.1: 0.5, 0.2: 1.0, 0.8: 4.0}  # days: PoCA points per voxel
    assert matched_exposure_days(1.0, curve) == pytest.approx(0.2)
    assert matched_exposure_days(2.0, curve) == pytest.approx(0.4)  # log-log between 0.2 d and 0.8 d
    assert matched_exposure_days(8.0, curve) == pytest.approx(1.6)  # beyond the end: proportional
    assert matched_exposure_days(0.05, curve) == pytest.approx(0.01)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="PoCA points per voxel must be positive"):
            matched_exposure_days(bad, curve)
    assert occupancy_curve({"data": {"occupancy_poca_per_voxel": {"0.1": 0.5}}}) == {0.1: 0.5}
    assert occupancy_curve({"data": {}}) is None and occupancy_curve({"occupancy_poca_per_voxel": {"1": 0.0}}) is None


def test_exported_weights_are_smaller_and_predict_the_same(tiny_dataset, tmp_path):
    from volumetric.infer.checkpoint import export_weights

    _train("segment", tiny_dataset, tmp_path, "exp", "train.steps=2", "validation.every=0")
    last = tmp_path / "exp" / "checkpoints" / "last.pt"
    out = export_weights(last, tmp_path / "w.pt")
    assert out.stat().st_size < 0.6 * last.stat().st_size
    full, small = load_checkpoint(last), load_checkpoint(out)
    assert "optimizer" not in small and small["normalisation"] == full["normalisation"]
    x = torch.randn(1, len(CHANNEL_NAMES), 16, 16, 8)
    with torch.no_grad():
        a = build_net(full["net"], full["net_state"]).eval()(x, torch.tensor([0.1]))
        b = build_net(small["net"], small["net_state"]).eval()(x, torch.tensor([0.1]))
    assert torch.allclose(a, b, atol=2e-2 * a.abs().max().item())
    with pytest.raises(FileExistsError):
        export_weights(last, out)
    updated = load_checkpoint(export_weights(last, tmp_path / "w2.pt", data_updates={"note": "added"}))
    assert updated["data"]["note"] == "added" and updated["data"]["voxel_mm"] == full["data"]["voxel_mm"]
