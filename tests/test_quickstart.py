"""Quickstart (``volumetric demo``) with weights from 2-step tiny runs: files, affine, objects, refusal."""

import json
import re

import numpy as np
import pytest

from test_predictor import train_tiny
from volumetric.infer.checkpoint import export_weights
from volumetric.physics.geometry import Block, Void
from volumetric.data.io import load_nifti
from volumetric import figures
from volumetric.quickstart import LOW_DICE, MIN_OBJECT_DIAMETER_MM, run_quickstart


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


BLOCK = Block(size_mm=(200.0, 200.0, 100.0), voids=[Void(centre_mm=(100.0, 100.0, 50.0), diameter_mm=40.0)])


@pytest.fixture(scope="module")
def demo(weights, tmp_path_factory):
    """One quickstart run: its output folder, summary and the panel titles of its montage."""
    titles, save = [], figures._save

    def keep_titles(fig, path, tight=True):
        if path.name == "montage.png":
            titles.extend(ax.get_title().split("\n")[0] for ax in fig.axes if ax.get_title())
        return save(fig, path, tight)

    out = tmp_path_factory.mktemp("quickstart_demo") / "demo"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(figures, "_save", keep_titles)
        summary = run_quickstart(out, BLOCK, seed=1, progress=False, weights_dir=weights)
    return out, summary, titles


def test_quickstart_writes_volumes_objects_and_montage(demo, weights):
    out, summary, _ = demo
    raw, raw_affine = load_nifti(out / "case" / "exposures" / "0.1d.nii.gz")
    for key in ("upsampled", "label", "raw_mean_theta2"):
        array, affine = load_nifti(summary["files"][key])
        assert array.shape == raw.shape[:3]
        np.testing.assert_allclose(affine, raw_affine)
    assert np.isfinite(load_nifti(summary["files"]["upsampled"])[0]).all()
    assert isinstance(json.loads((out / "objects.json").read_text()), list)
    assert (out / "montage.png").stat().st_size > 10_000
    assert set(summary["dice"]) == {"concrete", "rebar", "duct", "void", "unknown"}
    with pytest.raises(FileExistsError, match="not empty"):
        run_quickstart(out, BLOCK, weights_dir=weights, progress=False)


def test_montage_titles_say_the_exposure_and_the_models(demo):
    _, _, titles = demo
    assert set(titles) == {"raw 0.1 d", "upsampled by upsampler", "segmented by segmenter", "true classes"}


def test_objects_carry_confidence_and_truth_and_small_ones_are_dropped(demo):
    out, summary, _ = demo
    objects = json.loads((out / "objects.json").read_text())
    assert summary["min_object_diameter_mm"] == MIN_OBJECT_DIAMETER_MM == 10.0
    for o in objects:
        assert o["equivalent_diameter_mm"] >= 10.0 and 0.0 <= o["confidence"] <= 1.0
        assert o["false_positive"] is (o["true_object"] is None)
        assert o["true_object"] is None or o["true_object"]["kind"] == "void"  # the only true object


def test_summary_counts_true_objects_found_and_warns_on_low_dice(demo):
    out, summary, _ = demo
    counts = summary["object_counts"]
    assert counts["void"]["true"] == 1 and all(counts[k]["true"] == 0 for k in ("rebar", "duct", "unknown"))
    for name, text in summary["objects_found"].items():
        assert re.fullmatch(rf"found {counts[name]['found']} of {counts[name]['true']} true objects .*", text)
    objects = json.loads((out / "objects.json").read_text())
    assert summary["false_positives"] == sum(bool(o["false_positive"]) for o in objects)
    low = [name for name in ("concrete", "void") if summary["dice"][name] < LOW_DICE]  # the classes in the truth
    assert [w.split(" ")[1] for w in summary["warnings"] if w.startswith("Dice ")] == low
