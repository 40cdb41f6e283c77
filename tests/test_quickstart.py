"""Quickstart (``volumetric demo``) with weights from 2-step tiny runs: files, affine, objects, refusal."""

import json

import numpy as np
import pytest

from test_predictor import train_tiny
from volumetric.infer.checkpoint import export_weights
from volumetric.physics.geometry import Block, Void
from volumetric.data.io import load_nifti
from volumetric.quickstart import run_quickstart


@pytest.fixture(scope="module")
def weights(tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("quickstart")
    folder = root / "weights"
    folder.mkdir()
    for role, config in (("upsampler", "upsample_tiny.yaml"), ("segmenter", "segment_tiny.yaml")):
        run = train_tiny(config, tiny_dataset, root / "runs", role)
        export_weights(run / "checkpoints" / "last.pt", folder / f"{role}.pt")
    manifest = {"input_days": 0.1, "voxel_mm": 10.0,  # inside the tiny runs' training range
                "models": {"upsampler": {"file": "upsampler.pt"}, "segmenter": {"file": "segmenter.pt"}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_quickstart_writes_volumes_objects_and_montage(weights, tmp_path):
    block = Block(size_mm=(200.0, 200.0, 100.0), voids=[Void(centre_mm=(100.0, 100.0, 50.0), diameter_mm=40.0)])
    out = tmp_path / "demo"
    summary = run_quickstart(out, block, seed=1, progress=False, weights_dir=weights)
    raw, raw_affine = load_nifti(out / "case" / "exposures" / "0.1d.nii.gz")
    for key in ("upsampled", "label"):
        array, affine = load_nifti(summary["files"][key])
        assert array.shape == raw.shape[:3]
        np.testing.assert_allclose(affine, raw_affine)
    assert np.isfinite(load_nifti(summary["files"]["upsampled"])[0]).all()
    assert isinstance(json.loads((out / "objects.json").read_text()), list)
    assert (out / "montage.png").stat().st_size > 10_000
    assert set(summary["dice"]) == {"concrete", "rebar", "duct", "void", "unknown"}
    with pytest.raises(FileExistsError, match="not empty"):
        run_quickstart(out, block, weights_dir=weights, progress=False)
