"""``volumetric infer``: NIfTI or case folder in, NIfTI out with the input's affine; one-line errors."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from volumetric.cli import main
from volumetric.data.build import PRESETS
from volumetric.data.io import load_nifti, save_nifti_affine

from test_predictor import train_tiny

D0, D1 = (f"{d:g}" for d in PRESETS["tiny"].checkpoints_days[:2])  # the two shortest tiny exposures (days)
AFFINE = np.array([[10.0, 0, 0, -95.0], [0, 10.0, 0, 40.0], [0, 0, 10.0, 5.0], [0, 0, 0, 1]])  # shifted origin


@pytest.fixture(scope="module")
def setup(tiny_dataset, tmp_path_factory):
    """A joint run (image + classes, exposure-conditioned) and a raw NIfTI with a shifted origin."""
    root = tmp_path_factory.mktemp("cli_infer")
    run = train_tiny("joint_tiny.yaml", tiny_dataset, root, "joint")
    case = sorted((Path(tiny_dataset) / "cases").iterdir())[0]
    array = load_nifti(case / "exposures" / f"{D1}d.nii.gz")[0]
    nib.save(nib.Nifti1Image(array, AFFINE), str(root / "block.nii.gz"))
    return {"run": run, "case": case, "nifti": root / "block.nii.gz", "array": array, "root": root}


def _infer(setup, out, *extra):
    return main(["infer", str(setup["nifti"]), "--out", str(out), "--run", str(setup["run"]), "--no-progress",
                 "--exposure-days", D1, "--device", "cpu", *extra])


def test_outputs_keep_the_input_affine(setup, tmp_path, capsys):
    assert _infer(setup, tmp_path, "--probabilities", "--roi", "16", "16", "8", "--overlap", "0.5") == 0
    files = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(files) == {"image", "label", "probabilities", "record"}
    shapes = {"image": (20, 20, 10), "label": (20, 20, 10), "probabilities": (20, 20, 10, 5)}
    for key, shape in shapes.items():
        image = nib.load(files[key])
        np.testing.assert_array_equal(image.affine, AFFINE)
        assert image.shape == shape
    label = np.asarray(nib.load(files["label"]).dataobj)
    probabilities = np.asarray(nib.load(files["probabilities"]).dataobj)
    np.testing.assert_array_equal(label, probabilities.argmax(-1))
    record = json.loads(Path(files["record"]).read_text())
    assert record["image_units"] == ["mean_theta2_rad2"] and record["exposure_days"] == float(D1)
    assert set(record["conditioning_days"]) == {"model"} and record["conditioning_days"]["model"] > 0
    assert record["settings"]["roi_size"] == [16, 16, 8]


def test_existing_outputs_are_refused_unless_overwrite(setup, tmp_path, capsys):
    assert _infer(setup, tmp_path) == 0
    before = (tmp_path / "block_label.nii.gz").stat().st_mtime_ns
    assert _infer(setup, tmp_path) == 2
    err = capsys.readouterr().err
    assert err.startswith("volumetric infer: error: outputs exist") and err.count("\n") == 1
    assert (tmp_path / "block_label.nii.gz").stat().st_mtime_ns == before
    assert _infer(setup, tmp_path, "--overwrite") == 0


def test_case_folder_and_tta_write_uncertainty(setup, tmp_path, capsys):
    code = main(["infer", str(setup["case"]), "--out", str(tmp_path), "--run", str(setup["run"]), "--tta",
                 "--no-progress", "--roi", "20", "20", "12"])
    assert code == 0
    files = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert Path(files["uncertainty"]).name == f"{setup['case'].name}_{D0}d_uncertainty.nii.gz"  # shortest exposure
    std = np.asarray(nib.load(files["label_uncertainty"]).dataobj)
    assert std.shape == (20, 20, 10) and std.min() >= 0
    np.testing.assert_array_equal(nib.load(files["image"]).affine, load_nifti(setup["case"] / "label.nii.gz")[1])


def _write(path, array, affine=AFFINE):
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda s, d: _write(d / "spacing.nii.gz", s["array"], np.diag([5.0, 5.0, 5.0, 1.0])), "spacing"),
        (lambda s, d: _write(d / "one.nii.gz", s["array"][..., 1]), "expected raw statistics (X, Y, Z, C)"),
        (lambda s, d: _write(d / "five.nii.gz", s["array"][..., :5]), "5 channels and no channel names"),
        (lambda s, d: save_nifti_affine(d / "named.nii.gz", s["array"][..., :2], AFFINE, channels=["count", "x"]),
         "unknown statistics channel(s) ['x']"),
        (lambda s, d: _write(d / "nan.nii.gz", np.where(s["array"] == s["array"].max(), np.nan, s["array"])),
         "NaN"),
        (lambda s, d: d / "missing.nii.gz", "no such NIfTI file"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(setup, tmp_path, capsys, make, message):
    path = make(setup, tmp_path)
    code = main(["infer", str(path), "--out", str(tmp_path / "out"), "--run", str(setup["run"]),
                 "--exposure-days", D1, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_nifti_without_stated_days_is_conditioned_by_its_poca_points(setup, tmp_path, capsys):
    code = main(["infer", str(setup["nifti"]), "--out", str(tmp_path), "--no-progress", "--run", str(setup["run"]),
                 "--roi", "16", "16", "8", "--device", "cpu"])
    files = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    record = json.loads(Path(files["record"]).read_text())
    assert code == 0 and record["exposure_days"] is None and record["conditioning_days"]["model"] > 0
    empty = tmp_path / "empty.nii.gz"  # no PoCA point to condition on
    nib.save(nib.Nifti1Image(np.zeros_like(setup["array"]), AFFINE), str(empty))
    code = main(["infer", str(empty), "--out", str(tmp_path / "out"), "--no-progress", "--run", str(setup["run"])])
    err = capsys.readouterr().err
    assert code == 2 and "an empty input" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--run", "{root}/nowhere"], "no such run folder"),
        (["--run", "{run}", "--segmenter", "{run}", "--exposure-days", D1], "segmenter goes after an upsample"),
        (["--checkpoint", "{root}/block.nii.gz", "--exposure-days", D1], "corrupted or unreadable checkpoint"),
    ],
)
def test_model_errors_exit_2(setup, tmp_path, capsys, extra, message):
    extra = [e.format(root=setup["root"], run=setup["run"]) for e in extra]
    code = main(["infer", str(setup["nifti"]), "--out", str(tmp_path), "--no-progress", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
