import json

import h5py
import numpy as np
import pytest

from volumetric.cli import main
from volumetric.data.io import load_nifti, nifti_affine, statistics_channels
from volumetric.schema import CHANNEL_NAMES

GEOMETRY = {
    "format": "volumetric-geometry/1",
    "units": "mm",
    "size_mm": [200.0, 200.0, 100.0],
    "matrix": "concrete",
    "rebar_grids": [{"z_mm": 50.0, "bar_diameter_mm": 20.0, "pitch_mm": 100.0, "offset_mm": 50.0, "direction": "y", "material": "steel"}],
    "ducts": [],
    "voids": [],
    "unknowns": [],
}


@pytest.fixture
def geometry(tmp_path):
    path = tmp_path / "block.json"
    path.write_text(json.dumps(GEOMETRY))
    return path


def _simulate(geometry, out, *extra):
    return main(["simulate", "--geometry", str(geometry), "--days", "0.02", "0.01", "--voxel-mm", "20",
                 "--out", str(out), "--no-progress", "--threads", "1", *extra])


def test_simulate_writes_a_complete_case(tmp_path, geometry, capsys):
    out, tracks = tmp_path / "case", tmp_path / "tracks.h5"
    assert _simulate(geometry, out, "--save-tracks", str(tracks)) == 0
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert names == [".volumetric-output", "exposures/0.01d.nii.gz", "exposures/0.01d_mean_theta2_mrad2.nii.gz",
                     "exposures/0.02d.nii.gz", "exposures/0.02d_mean_theta2_mrad2.nii.gz", "geometry.json",
                     "inv_x0_per_mm.nii.gz", "label.nii.gz", "preview.png", "simulation.json"]
    vol, affine = load_nifti(out / "exposures/0.02d.nii.gz")
    early, _ = load_nifti(out / "exposures/0.01d.nii.gz")
    label, label_affine = load_nifti(out / "label.nii.gz")
    assert vol.shape == (10, 10, 5, len(CHANNEL_NAMES)) and label.shape == (10, 10, 5)
    assert statistics_channels(out / "exposures/0.02d.nii.gz") == list(CHANNEL_NAMES)
    np.testing.assert_allclose(affine, nifti_affine((20.0,) * 3))
    np.testing.assert_allclose(label_affine, affine)
    assert (vol[..., 0] >= early[..., 0]).all() and vol[..., 0].sum() > early[..., 0].sum() > 0
    assert set(np.unique(label)) == {0, 1}
    with h5py.File(tracks) as f:
        n = f["theta_rad"].shape[0]
        assert f["poca_mm"].shape == (n, 3) and n > 0
        assert (f["in_dir"][:, 2] < 0).all() and np.allclose(np.linalg.norm(f["out_dir"][:], axis=1), 1.0)
        assert f.attrs["seed"] == 0 and json.loads(f.attrs["detector"])["above"]
        assert f["t_s"][:].max() <= 0.02 * 86400
    summary = json.loads((out / "simulation.json").read_text())
    assert summary["counts"]["accepted"] == n
    assert summary["statistics_channels"] == list(CHANNEL_NAMES)
    assert summary["occupancy"]["0.02"]["muons"] == n  # measured per exposure
    assert summary["occupancy"]["0.02"]["poca_points_per_voxel"] * 500 == vol[..., 0].sum()
    assert json.loads(capsys.readouterr().out)["accepted"] == n


def test_same_seed_same_bytes(tmp_path, geometry):
    assert _simulate(geometry, tmp_path / "a") == 0
    assert _simulate(geometry, tmp_path / "b") == 0
    a, _ = load_nifti(tmp_path / "a/exposures/0.02d.nii.gz")
    b, _ = load_nifti(tmp_path / "b/exposures/0.02d.nii.gz")
    assert np.array_equal(a, b)


def test_the_kernel_is_chosen_and_recorded(tmp_path, geometry):
    """--kernel torch runs the reference; it agrees with the default (numba) kernel to rounding."""
    assert _simulate(geometry, tmp_path / "auto") == 0
    assert _simulate(geometry, tmp_path / "torch", "--kernel", "torch") == 0
    hosts = {k: json.loads((tmp_path / k / "simulation.json").read_text())["host"] for k in ("auto", "torch")}
    assert hosts["auto"]["kernel"] == "numba" and hosts["torch"]["kernel"] == "torch"
    assert hosts["torch"]["threads"] == 1
    a, _ = load_nifti(tmp_path / "auto/exposures/0.02d.nii.gz")
    b, _ = load_nifti(tmp_path / "torch/exposures/0.02d.nii.gz")
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_refuses_to_overwrite(tmp_path, geometry, capsys):
    out = tmp_path / "case"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert _simulate(geometry, out) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda g: g["rebar_grids"][0].update(z_mm=500.0), "rebar_grids[0]"),
        (lambda g: g["rebar_grids"][0].update(material="unobtainium"), "material"),
        (lambda g: g.update(size_mm=[200.0, float("nan"), 100.0]), "size_mm"),
    ],
)
def test_bad_geometry_is_one_clear_line(tmp_path, capsys, change, message):
    bad = json.loads(json.dumps(GEOMETRY))
    change(bad)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    assert _simulate(path, tmp_path / "case") == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "case").exists()


def test_missing_and_malformed_geometry(tmp_path, capsys):
    assert _simulate(tmp_path / "nope.json", tmp_path / "case") == 2
    assert "nope.json" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert _simulate(broken, tmp_path / "case") == 2
    assert "broken.json" in capsys.readouterr().err


def test_bad_days_rejected_by_the_parser(geometry, tmp_path):
    with pytest.raises(SystemExit):
        main(["simulate", "--geometry", str(geometry), "--days", "-1", "--voxel-mm", "20", "--out", str(tmp_path / "x")])


def test_custom_detector_is_used_and_recorded(tmp_path, geometry):
    from volumetric.physics.detector import default_detector

    det = default_detector((200.0, 200.0, 100.0), gap_mm=30.0, lever_arm_mm=300.0, efficiency=0.9)
    path = tmp_path / "det.json"
    path.write_text(json.dumps(det.to_dict()))
    assert _simulate(geometry, tmp_path / "case", "--detector", str(path)) == 0
    summary = json.loads((tmp_path / "case" / "simulation.json").read_text())
    assert summary["detector"] == json.loads(json.dumps(det.to_dict()))
    path.write_text(json.dumps({"above": []}))
    assert _simulate(geometry, tmp_path / "case2", "--detector", str(path)) == 2
