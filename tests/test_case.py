"""volumetric.data.case: the mean theta^2 viewer image beside the statistics, and the named progress bar."""

import numpy as np

from volumetric.data.case import simulate_case, write_exposure
from volumetric.data.io import (
    exposure_filename,
    load_nifti,
    mean_theta2_filename,
    nifti_affine,
)
from volumetric.evaluation.separability import case_days
from volumetric.infer.files import read_input
from volumetric.physics.geometry import Block, Void
from volumetric.schema import CHANNEL_NAMES

BLOCK = Block(size_mm=(200.0, 200.0, 100.0), voids=[Void(centre_mm=(100.0, 100.0, 50.0), diameter_mm=40.0)])


def test_a_single_case_writes_the_mean_theta2_image_beside_each_statistics_file(tmp_path, capsys):
    out = tmp_path / "slab"
    simulate_case(BLOCK, out, 20.0, [0.005, 0.01], chunk_muons=4096)
    assert "simulate slab: 100%" in capsys.readouterr().err
    for days in (0.005, 0.01):
        sums, affine = load_nifti(out / exposure_filename(days))
        image, image_affine = load_nifti(out / mean_theta2_filename(days))
        count, sum_theta2 = sums[..., CHANNEL_NAMES.index("count")], sums[..., CHANNEL_NAMES.index("sum_theta2_rad2")]
        expected = np.where(count > 0, sum_theta2 / np.maximum(count, 1), 0.0) * 1e6
        assert image.dtype == np.float32 and image.shape == count.shape and (count > 0).any()
        np.testing.assert_allclose(image, expected, rtol=1e-5)
        np.testing.assert_allclose(image_affine, affine)
    # loaders that list exposures/ still see only the statistics files
    raw = read_input(out)
    assert raw.exposure_days == 0.005 and raw.raw.shape[0] == len(CHANNEL_NAMES)
    assert read_input(out, 0.01).channels == CHANNEL_NAMES
    (out / "simulation.json").unlink()
    assert case_days(out) == [0.005, 0.01]


def test_write_exposure_writes_the_image_only_when_asked(tmp_path):
    sums = np.zeros((len(CHANNEL_NAMES), 2, 2, 2), np.float32)
    sums[0, 0, 0, 0], sums[1, 0, 0, 0] = 4.0, 8e-6  # 4 PoCA, mean theta^2 2e-6 rad^2 = 2 mrad^2
    write_exposure(tmp_path / "a", 1.5, sums, CHANNEL_NAMES, (5.0,) * 3)
    assert sorted(p.name for p in (tmp_path / "a" / "exposures").iterdir()) == ["1.5d.nii.gz"]
    write_exposure(tmp_path / "b", 1.5, sums, CHANNEL_NAMES, (5.0,) * 3, mean_theta2_nifti=True)
    image, affine = load_nifti(tmp_path / "b" / "exposures" / "1.5d_mean_theta2_mrad2.nii.gz")
    assert image[0, 0, 0] == np.float32(2.0) and image.sum() == np.float32(2.0)
    np.testing.assert_allclose(affine, nifti_affine((5.0,) * 3))


def test_dataset_cases_skip_the_image(tiny_dataset):
    assert not list((tiny_dataset / "cases").rglob("*mean_theta2*"))
