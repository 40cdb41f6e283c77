import gzip
import json
import os

import nibabel as nib
import numpy as np
import pytest
import torch

from volumetric.cli import main
from volumetric.data.build import PRESETS, build_dataset, case_block, make_splits
from volumetric.data.dataset import load_dataset
from volumetric.data.io import load_nifti, nifti_affine
from volumetric.schema import CHANNEL_NAMES, LEGACY_CHANNEL_NAMES

torch.set_num_threads(1)
CASES, SEED = 3, 5
DAYS = PRESETS["tiny"].checkpoints_days  # simulated days of the tiny checkpoints (file names)
FIRST, SECOND, THIRD, TARGET = (f"{d:g}d.nii.gz" for d in DAYS)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One tiny dataset, built by one process (shared by the read-only tests)."""
    root = tmp_path_factory.mktemp("ds") / "one"
    build_dataset(root, "tiny", CASES, seed=SEED, progress=False)
    return root


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _volumes(root):
    return sorted(p.relative_to(root) for p in root.rglob("*.nii.gz"))


def test_layout_and_metadata(built):
    meta = json.loads((built / "dataset.json").read_text())
    assert meta["format"] == "volumetric-dataset/2" and meta["voxel_mm"] == 10.0 and meta["shape"] == [20, 20, 10]
    assert meta["checkpoints_days"] == list(DAYS) and meta["equivalent_days"] == [1.0, 2.0, 4.0, 8.0]
    assert meta["statistics_channels"] == list(CHANNEL_NAMES) and meta["theta_threshold_rad"] > 0
    # measured after the build: PoCA points and path tracks per voxel grow with the exposure
    occupancy = [meta["measured_occupancy"][f"{d:g}"] for d in DAYS]
    assert all(a["poca_points_per_voxel"] < b["poca_points_per_voxel"] for a, b in zip(occupancy, occupancy[1:]))
    assert all(o["path_tracks_per_voxel"] > 10 * o["poca_points_per_voxel"] for o in occupancy)
    names = sorted(sum(meta["splits"].values(), []))
    assert names == [f"case_{i:04d}" for i in range(CASES)]
    files = {str(p.relative_to(built / "cases/case_0000")) for p in (built / "cases/case_0000").rglob("*") if p.is_file()}
    assert {"geometry.json", "label.nii.gz", "simulation.json", f"exposures/{TARGET}"} <= files
    info = load_dataset(built)
    assert set(info.cases) == set(names)
    assert info.cases["case_0000"]["target"].endswith(f"exposures/{TARGET}")
    assert info.channels == CHANNEL_NAMES


def test_monai_round_trip(built):
    from monai.transforms import LoadImaged

    path = built / f"cases/case_0001/exposures/{THIRD}"
    raw = np.asarray(nib.load(str(path)).dataobj)
    sample = LoadImaged(["image", "label"], image_only=True, ensure_channel_first=True)(
        {"image": str(path), "label": str(built / "cases/case_0001/label.nii.gz")})
    np.testing.assert_array_equal(sample["image"].numpy(), np.moveaxis(raw, -1, 0))
    np.testing.assert_allclose(sample["image"].affine.numpy(), nifti_affine((10.0,) * 3))
    np.testing.assert_allclose(sample["label"].affine.numpy(), nifti_affine((10.0,) * 3))
    assert sample["label"].shape == (1, 20, 20, 10)


def test_case_depends_only_on_seed_and_index():
    a, b = case_block(PRESETS["tiny"], 5, 2), case_block(PRESETS["tiny"], 5, 2)
    assert a == b and case_block(PRESETS["tiny"], 5, 1) != a
    assert make_splits(10, 1) == make_splits(10, 1)


def test_shards_give_the_same_bytes(built, tmp_path):
    root = tmp_path / "sharded"
    assert main(["simulate", "--preset", "tiny", "--cases", str(CASES), "--seed", str(SEED), "--out", str(root),
                 "--shard", "2/2", "--no-progress", "--threads", "1"]) == 0
    assert sorted(p.name for p in (root / "cases").iterdir()) == ["case_0001"]
    assert main(["simulate", "--preset", "tiny", "--cases", str(CASES), "--seed", str(SEED), "--out", str(root),
                 "--shard", "1/2", "--no-progress", "--threads", "1"]) == 0
    assert _volumes(root) == _volumes(built)
    for rel in _volumes(built):
        with gzip.open(built / rel) as f1, gzip.open(root / rel) as f2:
            assert f1.read() == f2.read(), rel
    assert (root / "dataset.json").read_text() == (built / "dataset.json").read_text()


def test_resume_after_a_killed_run(tmp_path):
    root = tmp_path / "resume"

    def killed(name):
        raise KeyboardInterrupt(f"killed after {name}")

    with pytest.raises(KeyboardInterrupt):
        build_dataset(root, "tiny", 2, seed=SEED, progress=False, on_case=killed)
    first = root / "cases/case_0000"
    assert first.is_dir() and not (root / "cases/case_0001").exists()
    (root / "cases/.case_0001.partial").mkdir()  # a half-written case left by the kill
    (root / "cases/.case_0001.partial/label.nii.gz").write_bytes(b"junk")
    mtimes = {p: p.stat().st_mtime_ns for p in first.rglob("*")}
    result = build_dataset(root, "tiny", 2, seed=SEED, progress=False)
    assert result == {"built": ["case_0001"], "skipped": ["case_0000"], "dataset_json": str(root / "dataset.json")}
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*")} == mtimes
    assert not (root / "cases/.case_0001.partial").exists()
    assert set(load_dataset(root).cases) == {"case_0000", "case_0001"}


def test_refuses_a_different_dataset(built, tmp_path, capsys):
    root = _copy(built, tmp_path / "other")
    before = (root / "dataset.json").read_text()
    assert main(["simulate", "--preset", "tiny", "--cases", str(CASES), "--seed", "6", "--out", str(root),
                 "--no-progress"]) == 2
    assert "different dataset" in capsys.readouterr().err
    assert (root / "dataset.json").read_text() == before
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        build_dataset(stranger, "tiny", 1, progress=False)


@pytest.mark.parametrize("argv,message", [
    (["simulate", "--out", "x"], "--geometry G.json"),
    (["simulate", "--preset", "tiny", "--out", "x"], "--cases"),
    (["simulate", "--preset", "tiny", "--cases", "2", "--days", "1", "--out", "x"], "does not take --days"),
    (["simulate", "--geometry", "g.json", "--preset", "tiny", "--out", "x"], "not allowed with"),
    (["simulate", "--preset", "tiny", "--cases", "2", "--shard", "3/2", "--out", "x"], "1 <= i <= n"),
])
def test_cli_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def _rewrite_meta(root, change):
    meta = json.loads((root / "dataset.json").read_text())
    change(meta)
    (root / "dataset.json").write_text(json.dumps(meta))


def _resave(path, change_array=None, affine=None):
    array, old_affine = load_nifti(path)
    array = change_array(array.copy()) if change_array else array
    nib.save(nib.Nifti1Image(array, old_affine if affine is None else affine), str(path))


def _nan(a):
    a[0, 0, 0, 1] = np.nan
    return a


def _label(a):
    a[1, 1, 1] = 7
    return a


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD_INPUTS = {
    "malformed json": (lambda r: (r / "dataset.json").write_text("{not json"), "dataset.json: malformed JSON"),
    "missing key": (lambda r: _rewrite_meta(r, lambda m: m.pop("voxel_mm")), "dataset.json: missing key 'voxel_mm'"),
    "wrong format": (lambda r: _rewrite_meta(r, lambda m: m.update(format="x/1")), "key 'format'"),
    "missing case": (lambda r: __import__("shutil").rmtree(r / "cases/case_0002"), "case_0002"),
    "missing exposure": (lambda r: os.remove(r / f"cases/case_0000/exposures/{SECOND}"), f"{SECOND}: missing"),
    "spacing": (lambda r: _resave(r / "cases/case_0001/label.nii.gz", affine=nifti_affine((5.0,) * 3)),
                "label.nii.gz: affine disagrees"),
    "voxel_mm": (lambda r: _rewrite_meta(r, lambda m: m.update(voxel_mm=5.0)), "affine disagrees"),
    "nan": (lambda r: _resave(r / f"cases/case_0000/exposures/{THIRD}", _nan), f"{THIRD}: 1 NaN/Inf"),
    "class id": (lambda r: _resave(r / "cases/case_0001/label.nii.gz", _label), "unknown class ids [7]"),
    "truncated": (lambda r: _truncate(r / f"cases/case_0000/exposures/{TARGET}"), f"{TARGET}: not a readable"),
    "channel count": (lambda r: _resave(r / f"cases/case_0000/exposures/{FIRST}", lambda a: a[..., :3]),
                      "3 statistics channels, dataset.json declares 9"),
    "unknown channel": (lambda r: _rewrite_meta(r, lambda m: m.update(statistics_channels=["count", "mean_theta"])),
                        "unknown statistics channel(s) ['mean_theta']; known channels"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_named(built, tmp_path, name):
    corrupt, message = BAD_INPUTS[name]
    root = _copy(built, tmp_path / "bad")
    corrupt(root)
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        load_dataset(root)
    assert message in str(info.value)


def test_a_version_1_dataset_still_loads_with_its_three_channels(built, tmp_path):
    """volumetric-dataset/1 folders (PoCA count, sum theta^2, sum theta^4; no channel names) keep working."""
    from volumetric.data.dataset import make_dataset

    root = _copy(built, tmp_path / "v1")
    _rewrite_meta(root, lambda m: (m.update(format="volumetric-dataset/1"), m.pop("statistics_channels")))
    for path in (root / "cases").rglob("exposures/*.nii.gz"):
        _resave(path, lambda a: np.ascontiguousarray(a[..., :3]))  # nibabel writes no channel names
    info = load_dataset(root)
    assert info.channels == LEGACY_CHANNEL_NAMES
    ds = make_dataset(root, "train", patch_size=(8, 8, 8), seed=0)
    assert ds[0][0]["image"].shape[0] == 3
    assert list(ds.normalisation["channels"]) == list(LEGACY_CHANNEL_NAMES)
