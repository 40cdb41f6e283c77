import gzip

import numpy as np
import pytest

from volumetric.data.io import TRACK_DATASETS, TrackWriter, load_nifti, nifti_affine, read_tracks, save_nifti


def test_nifti_round_trip_through_monai_keeps_values_and_affine(tmp_path):
    from monai.transforms import LoadImage

    array = np.random.default_rng(0).random((6, 5, 4, 3)).astype(np.float32)
    path = save_nifti(tmp_path / "v.nii.gz", array, (2.0, 2.0, 4.0), origin_mm=(10.0, 0.0, -5.0))
    loaded = LoadImage(image_only=True)(str(path))
    assert tuple(loaded.shape) == (6, 5, 4, 3)
    np.testing.assert_array_equal(np.asarray(loaded), array)
    np.testing.assert_allclose(np.asarray(loaded.affine), nifti_affine((2.0, 2.0, 4.0), (10.0, 0.0, -5.0)))
    assert nifti_affine((2.0, 2.0, 4.0), (10.0, 0.0, -5.0))[:3, 3].tolist() == [11.0, 1.0, -3.0]  # voxel centres
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_bad_nifti_inputs_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        load_nifti(tmp_path / "missing.nii.gz")
    path = save_nifti(tmp_path / "v.nii.gz", np.zeros((4, 4, 4), np.float32), (1.0, 1.0, 1.0))
    raw = gzip.decompress(path.read_bytes())
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(ValueError, match="truncated.nii.gz"):
        load_nifti(truncated)
    with pytest.raises(ValueError, match="shape"):
        save_nifti(tmp_path / "bad.nii.gz", np.zeros((4, 4)), (1.0, 1.0, 1.0))


def _records(n, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for name in TRACK_DATASETS:
        out[name] = rng.random((n, 3)) if name.endswith("_mm") or name.endswith("_dir") else rng.random(n)
    return out


def test_track_writer_appends_and_refuses_to_overwrite(tmp_path):
    path = tmp_path / "tracks.h5"
    with TrackWriter(path, {"seed": 3, "rate_hz_per_m2": 166.7}) as writer:
        writer.append(_records(5, 0))
        writer.append(_records(0, 1))
        writer.append(_records(7, 2))
    data, attrs = read_tracks(path)
    assert set(data) == set(TRACK_DATASETS)
    assert data["poca_mm"].shape == (12, 3) and data["theta_rad"].shape == (12,)
    np.testing.assert_allclose(data["theta_rad"][5:], _records(7, 2)["theta_rad"])
    assert attrs["seed"] == 3
    with pytest.raises(FileExistsError, match="tracks.h5"):
        TrackWriter(path, {})


def test_failed_track_writing_leaves_no_file(tmp_path):
    path = tmp_path / "tracks.h5"
    with pytest.raises(RuntimeError):
        with TrackWriter(path, {}) as writer:
            writer.append(_records(3))
            raise RuntimeError("killed")
    assert not path.exists() and not list(tmp_path.iterdir())


def test_unreadable_tracks_file(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="bad.h5"):
        read_tracks(bad)
