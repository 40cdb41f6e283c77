import csv
import json

import numpy as np
import pytest
import torch

from volumetric.data.case import simulate_case
from volumetric.cli import main
from volumetric.physics.geometry import sample_block, save_geometry
from volumetric.data.importers import fit_side, read_csv_hits, read_track_file, reconstruct_case
from volumetric.data.io import load_nifti, statistics_channels
from volumetric.schema import CHANNEL_NAMES

DAYS = [0.02, 0.05]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("sim")
    block = sample_block(np.random.default_rng(3), (200.0, 200.0, 100.0))
    save_geometry(block, root / "block.json")
    simulate_case(block, root / "case", 10.0, DAYS, seed=4, save_tracks=root / "tracks.h5", progress=False)
    return root


def test_tracks_round_trip_reproduces_the_case(simulated, tmp_path, capsys):
    out = tmp_path / "rec"
    assert main(["reconstruct", "--tracks", str(simulated / "tracks.h5"), "--geometry", str(simulated / "block.json"),
                 "--voxel-mm", "10", "--days", *map(str, DAYS), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["labels"] is True
    for name in ["label.nii.gz", "inv_x0_per_mm.nii.gz", "exposures/0.02d.nii.gz", "exposures/0.05d.nii.gz"]:
        a, affine_a = load_nifti(simulated / "case" / name)
        b, affine_b = load_nifti(out / name)
        np.testing.assert_array_equal(affine_a, affine_b)
        if name.startswith("exposures"):
            np.testing.assert_array_equal(a[..., 0], b[..., 0])  # counts per voxel: exact
            path = CHANNEL_NAMES.index("path_count")
            np.testing.assert_array_equal(a[..., path], b[..., path])  # path channels from the same lines
            assert statistics_channels(out / name) == list(CHANNEL_NAMES)
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=0)
        else:
            np.testing.assert_array_equal(a, b)


def test_without_geometry_the_case_has_no_labels(simulated, tmp_path):
    summary = reconstruct_case(simulated / "tracks.h5", tmp_path / "nolabel", 10.0, [0.05])
    assert not summary["has_labels"] and not (tmp_path / "nolabel/label.nii.gz").exists()
    assert load_nifti(tmp_path / "nolabel/exposures/0.05d.nii.gz")[0].shape == (20, 20, 10, len(CHANNEL_NAMES))


def _write_csv(path, rows, header):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _kinked_muons(n, rng):
    """Lines kinked at a known point inside a 200x200x100 block; hits at 2 planes above, 2 below."""
    kink = np.stack([rng.uniform(20, 180, n), rng.uniform(20, 180, n), rng.uniform(20, 80, n)], -1)
    t_in, t_out = rng.normal(0, 0.2, (n, 2)), rng.normal(0, 0.2, (n, 2))
    rows = []
    for i in range(n):
        hits = []
        for z in (600.0, 150.0, -50.0, -450.0):
            slope = t_in[i] if z > 100 else t_out[i]
            hits += [kink[i, 0] + slope[0] * (kink[i, 2] - z), kink[i, 1] + slope[1] * (kink[i, 2] - z), z]
        rows.append(hits + [i * 10.0])
    return kink, rows


def test_csv_hits_give_the_kink_points(tmp_path):
    kink, rows = _kinked_muons(50, np.random.default_rng(0))
    header = [f"{a}{k}" for k in range(4) for a in "XYZ"] + ["t_s"]
    _write_csv(tmp_path / "hits.csv", rows, header)
    tracks = read_csv_hits(tmp_path / "hits.csv", (200.0, 200.0, 100.0))
    assert len(tracks.in_pos_mm) == 50 and (tracks.in_dir[:, 2] < 0).all()
    summary = reconstruct_case(tmp_path / "hits.csv", tmp_path / "case", 20.0, [1.0], block_size_mm=(200, 200, 100))
    counts = load_nifti(tmp_path / "case/exposures/1d.nii.gz")[0][..., 0]
    expected = np.zeros((10, 10, 5))
    np.add.at(expected, tuple(np.floor(kink / 20.0).astype(int).T), 1)
    np.testing.assert_array_equal(counts, expected)
    assert summary["muons_per_exposure"] == {"1": 50}


def test_fit_side_skips_missed_planes():
    hits = np.array([[[0.0, 0.0, 300.0], [np.nan, np.nan, np.nan], [10.0, 0.0, 200.0]],
                     [[0.0, 0.0, 300.0], [np.nan, 1.0, 250.0], [np.nan, np.nan, np.nan]]])
    pos, direction, ok = fit_side(hits, 100.0)
    assert ok.tolist() == [True, False]
    np.testing.assert_allclose(pos[0], [20.0, 0.0, 100.0])
    assert direction[0, 2] < 0


@pytest.mark.parametrize("content,message", [
    ("A,B\n1,2\n", "needs hit columns"),
    ("X0,Y0,Z0,X1,Y1,Z1\n1,2,50,1,2,-50\n", "plane heights"),
    ("X0,Y0,Z0\nfoo,1,2\n", "non-numeric"),
])
def test_bad_csv_is_named(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_track_file(path, (200.0, 200.0, 100.0))


def test_no_times_needs_one_exposure(tmp_path):
    _, rows = _kinked_muons(5, np.random.default_rng(1))
    _write_csv(tmp_path / "h.csv", [r[:-1] for r in rows], [f"{a}{k}" for k in range(4) for a in "XYZ"])
    with pytest.raises(ValueError, match="exactly one --days"):
        reconstruct_case(tmp_path / "h.csv", tmp_path / "c", 20.0, [1.0, 2.0], block_size_mm=(200, 200, 100))
    assert not (tmp_path / "c").exists() and not (tmp_path / ".c.partial").exists()


def test_root_tree_reads_like_csv(tmp_path):
    uproot = pytest.importorskip("uproot")
    kink, rows = _kinked_muons(20, np.random.default_rng(2))
    header = [f"{a}{k}" for k in range(4) for a in "XYZ"] + ["t_s"]
    table = np.array(rows)
    with uproot.recreate(tmp_path / "hits.root") as f:
        f["muons"] = {name: table[:, i] for i, name in enumerate(header)}
    _write_csv(tmp_path / "hits.csv", rows, header)
    a = read_track_file(tmp_path / "hits.root", (200.0, 200.0, 100.0))
    b = read_track_file(tmp_path / "hits.csv", (200.0, 200.0, 100.0))
    np.testing.assert_allclose(a.in_pos_mm, b.in_pos_mm)
    np.testing.assert_allclose(a.t_s, b.t_s)


def test_root_without_uproot_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_uproot(name, *args, **kwargs):
        if name == "uproot":
            raise ImportError("No module named 'uproot'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uproot)
    (tmp_path / "t.root").write_bytes(b"")
    assert main(["reconstruct", "--tracks", str(tmp_path / "t.root"), "--block-size-mm", "200", "200", "100",
                 "--voxel-mm", "10", "--days", "1", "--out", str(tmp_path / "o")]) == 2
    assert "needs the optional package uproot" in capsys.readouterr().err


def test_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match="unknown track file type"):
        read_track_file(tmp_path / "x.txt", (1, 1, 1))
