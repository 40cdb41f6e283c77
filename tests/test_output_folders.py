"""Output folders: ``--overwrite`` clears only folders that volumetric wrote (the output marker)."""

import json

import pytest

from volumetric.data.case import simulate_case
from volumetric.data.io import check_output_folder
from volumetric.physics.geometry import Block
from volumetric.data.io import OUTPUT_MARKER, has_output_marker, write_output_marker

SMALL = Block(size_mm=(200.0, 200.0, 100.0))
NOT_OURS = f"holds files not written by volumetric \\(no {OUTPUT_MARKER} marker\\); refusing to delete them"


def _simulate(out, **kwargs):
    return simulate_case(SMALL, out, 50.0, [0.0001], progress=False, chunk_muons=4096, **kwargs)


@pytest.fixture
def unrelated(tmp_path):
    """A folder holding a file that volumetric did not write."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    return folder


def test_overwrite_refuses_a_folder_without_the_marker(unrelated):
    with pytest.raises(FileExistsError, match="not empty; pass --overwrite"):
        check_output_folder(unrelated, overwrite=False)
    with pytest.raises(FileExistsError, match=NOT_OURS):
        check_output_folder(unrelated, overwrite=True)
    write_output_marker(unrelated, "test")
    check_output_folder(unrelated, overwrite=True)  # marked: ours to replace


def test_a_folder_holding_only_the_marker_counts_as_empty(tmp_path):
    write_output_marker(tmp_path / "out", "test")
    check_output_folder(tmp_path / "out", overwrite=False)
    record = json.loads((tmp_path / "out" / OUTPUT_MARKER).read_text())
    assert record["written_by"] == "test" and record["format"] == "volumetric-output/1"


def test_simulated_case_carries_the_marker_and_only_it_is_replaced(tmp_path, unrelated):
    out = tmp_path / "case"
    _simulate(out)
    assert has_output_marker(out)
    marker = (out / OUTPUT_MARKER).read_text()
    _simulate(out, overwrite=True)
    assert (out / OUTPUT_MARKER).read_text() == marker  # no time in it: same inputs, same files
    with pytest.raises(FileExistsError, match=NOT_OURS):
        _simulate(unrelated, overwrite=True)
    assert (unrelated / "notes.txt").read_text() == "keep me"


def test_a_dataset_case_replaces_a_stale_partial_folder(tmp_path):
    out = tmp_path / "cases" / "case_0000"
    stale = tmp_path / "cases" / ".case_0000.partial"
    stale.mkdir(parents=True)
    (stale / "label.nii.gz").write_text("half-written by a killed build")
    _simulate(out, overwrite=True)  # as build_dataset calls it
    assert has_output_marker(out) and (out / "simulation.json").is_file() and not stale.exists()


def test_demo_and_evaluation_refuse_a_folder_without_the_marker(tmp_path, unrelated):
    from volumetric.evaluation.evaluate import evaluate
    from volumetric.quickstart import run_quickstart

    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "manifest.json").write_text(json.dumps({"input_days": 0.1, "voxel_mm": 10.0, "models": {}}))
    with pytest.raises(FileExistsError, match=NOT_OURS):
        run_quickstart(unrelated, SMALL, overwrite=True, weights_dir=weights)
    with pytest.raises(ValueError, match="block size 205 mm is not a multiple of voxel 10 mm"):
        run_quickstart(tmp_path / "demo", Block(size_mm=(205.0, 200.0, 100.0)), weights_dir=weights)
    assert not (tmp_path / "demo").exists()
    with pytest.raises(FileExistsError, match=NOT_OURS):
        evaluate(tmp_path / "no_run", tmp_path / "no_data", unrelated, overwrite=True)
    assert sorted(p.name for p in unrelated.iterdir()) == ["notes.txt"]
