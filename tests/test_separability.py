"""Separability scores (volumetric.evaluation.separability, benchmarks/separability.py) on tiny hand-made inputs."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from scipy.stats import mannwhitneyu

from volumetric.data.io import exposure_filename
from volumetric.data.io import save_nifti, save_statistics
from volumetric.schema import CHANNEL_NAMES, per_muon_name
from volumetric.evaluation.separability import (
    auc,
    cnr,
    dataset_case_folders,
    dataset_equivalent_days,
    markdown_table,
    separability_table,
    voxel_features,
)

V = 10.0  # voxel edge (mm) of the synthetic cases


# --- auc / cnr ---------------------------------------------------------------------------------


def test_auc_perfect_separation_is_one_and_reversed_is_zero():
    assert auc([3.0, 4.0, 5.0], [1.0, 2.0]) == 1.0
    assert auc([1.0, 2.0], [3.0, 4.0, 5.0]) == 0.0


def test_auc_ties_count_half():
    assert auc([1.0, 1.0], [1.0, 1.0, 1.0]) == 0.5
    # class {1, 2} vs concrete {1}: pairs (1,1) tie = 1/2, (2,1) win = 1 -> 1.5 / 2
    assert auc([1.0, 2.0], [1.0]) == 0.75


def test_auc_identical_distributions_near_half_and_equals_mann_whitney():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=4000), rng.normal(size=5000)
    assert abs(auc(a, b) - 0.5) < 0.03
    ints_a, ints_b = rng.integers(0, 5, 300), rng.integers(1, 6, 400)  # many ties
    u = mannwhitneyu(ints_a, ints_b).statistic
    assert auc(ints_a, ints_b) == pytest.approx(u / (300 * 400), abs=1e-12)


def test_auc_empty_is_nan_and_nan_input_rejected():
    assert math.isnan(auc([], [1.0]))
    with pytest.raises(ValueError, match="NaN"):
        auc([np.nan], [1.0])


def test_cnr_hand_value():
    # class mean 5; concrete {1, 3}: mean 2, population std 1 -> (5 - 2) / 1
    assert cnr([4.0, 6.0], [1.0, 3.0]) == pytest.approx(3.0)
    assert math.isnan(cnr([], [1.0, 2.0]))


# --- features ----------------------------------------------------------------------------------


def test_derived_feature_names():
    assert per_muon_name("count") == "count"
    assert per_muon_name("sum_log_theta") == "mean_log_theta"
    assert per_muon_name("sum_theta2_rad2") == "mean_theta2_rad2"
    assert per_muon_name("count_above_threshold") == "fraction_above_threshold"
    assert per_muon_name("path_sum_log_theta") == "path_mean_log_theta"
    assert per_muon_name("path_count_above_threshold") == "path_fraction_above_threshold"


def _line(counts, sums):
    """(2, 1, 1, Z) sums of channels (count, sum_log_theta) along one z line."""
    return np.array([[[counts]], [[sums]]], dtype=np.float64)


def test_voxel_features_raw_means_fill_empty_voxels_with_the_occupied_mean():
    sums = _line([2, 0, 0, 0, 4], [-6, 0, 0, 0, -20])
    f = voxel_features(sums, ["count", "sum_log_theta"], smooth=False)
    assert set(f) == {"count", "sum_log_theta", "mean_log_theta"}
    # occupied means -3 and -5; empty voxels get their average -4
    np.testing.assert_allclose(f["mean_log_theta"][0, 0], [-3, -4, -4, -4, -5])
    np.testing.assert_array_equal(f["count"][0, 0], [2, 0, 0, 0, 4])


def test_voxel_features_smoothed_means_are_pooled_ratios():
    sums = _line([2, 0, 0, 0, 4], [-6, 0, 0, 0, -20])
    f = voxel_features(sums, ["count", "sum_log_theta"], smooth=True)
    # x and y have one voxel, repeated 3x3 = 9 times; along z the border voxel repeats:
    # counts 9 * [2+2+0, 2+0+0, 0, 0+0+4, 0+4+4], sums 9 * [-12, -6, 0, -20, -40]
    np.testing.assert_allclose(f["count"][0, 0], 9 * np.array([4, 2, 0, 4, 8]))
    np.testing.assert_allclose(f["sum_log_theta"][0, 0], 9 * np.array([-12, -6, 0, -20, -40]))
    # pooled means -12/4, -6/2, (empty -> mean of the others), -20/4, -40/8
    np.testing.assert_allclose(f["mean_log_theta"][0, 0], [-3, -3, -4, -5, -5])


def test_voxel_features_pooled_not_average_of_means():
    sums = _line([2, 0, 4], [-6, 0, -20])
    f = voxel_features(sums, ["count", "sum_log_theta"], smooth=True)
    # middle voxel: (-6 - 20) / (2 + 4), not the average of the means (-3 - 4 - 5) / 3
    assert f["mean_log_theta"][0, 0, 1] == pytest.approx(-26 / 6)


def test_voxel_features_smoothing_equals_uniform_filter_and_names_every_channel():
    rng = np.random.default_rng(1)
    sums = rng.integers(0, 20, size=(len(CHANNEL_NAMES), 4, 5, 6)).astype(np.float32)
    f = voxel_features(sums, CHANNEL_NAMES, smooth=True)
    expected = ndimage.uniform_filter(sums[0].astype(np.float64), 3, mode="nearest") * 27
    np.testing.assert_allclose(f["count"], expected, rtol=1e-12)
    assert {"mean_theta2_rad2", "mean_log_theta", "fraction_above_threshold", "path_mean_log_theta",
            "path_fraction_above_threshold"} <= set(f)
    assert len(f) == len(CHANNEL_NAMES) + 7


def test_voxel_features_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        voxel_features(np.zeros((3, 2, 2, 2)), ["count", "sum_log_theta"], smooth=False)
    with pytest.raises(ValueError, match="count"):
        voxel_features(np.zeros((1, 2, 2, 2)), ["sum_log_theta"], smooth=False)


# --- table -------------------------------------------------------------------------------------

CASE_CHANNELS = ["count", "sum_log_theta", "path_count", "path_sum_log_theta"]


def _label(shape=(8, 8, 8)) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    label[:2] = 1  # rebar slab x 0..1
    label[6:, :4] = 3  # void x 6..7, y 0..3
    return label


def _write_case(folder: Path, days=(1.0,), seed=0, names=CASE_CHANNELS, with_names=True) -> np.ndarray:
    """A case whose mean ln(theta) is -2 in rebar, -4 in concrete, -6 in void (plus noise)."""
    label = _label()
    save_nifti(folder / "label.nii.gz", label, (V, V, V))
    rng = np.random.default_rng(seed)
    level = np.choose(label, [-4.0, -2.0, 0.0, -6.0, 0.0])
    for d in days:
        count = rng.poisson(40, label.shape).astype(np.float64) + 1
        mean = level + rng.normal(0, 0.3, label.shape)
        planes = {"count": count, "sum_log_theta": count * mean,
                  "path_count": 3 * count, "path_sum_log_theta": 3 * count * mean,
                  "sum_theta2_rad2": count * np.exp(2 * mean)}
        sums = np.stack([planes[n] for n in names])
        path = folder / exposure_filename(d)
        if with_names:
            save_statistics(path, sums, names, (V, V, V))
        else:
            save_nifti(path, np.moveaxis(sums, 0, -1).astype(np.float32), (V, V, V))
    (folder / "simulation.json").write_text(json.dumps({"checkpoints_days": list(days),
                                                        "statistics_channels": list(names)}))
    return label


def _row(rows, feature, smoothed, days=1.0):
    (row,) = [r for r in rows if r["feature"] == feature and r["smoothed"] == smoothed and r["days"] == days]
    return row


def test_separability_table_scores_a_synthetic_case(tmp_path):
    label = _write_case(tmp_path / "a")
    rows = separability_table([tmp_path / "a"], trim_layers=2, equivalent_days={1.0: 15.625})
    features = {"count", "sum_log_theta", "mean_log_theta", "path_count", "path_sum_log_theta",
                "path_mean_log_theta"}
    assert {r["feature"] for r in rows} == features and len(rows) == 2 * len(features)
    scored = label[:, :, 2:6]
    raw = _row(rows, "mean_log_theta", False)
    assert raw["equivalent_days"] == 15.625 and raw["source"] == "poca"
    assert raw["n_concrete"] == int((scored == 0).sum()) and raw["n_rebar"] == int((scored == 1).sum())
    assert raw["n_duct"] == 0 and math.isnan(raw["auc_duct"]) and math.isnan(raw["cnr_duct"])
    assert raw["auc_rebar"] > 0.99 and raw["cnr_rebar"] > 3
    assert raw["auc_void"] < 0.01 and raw["cnr_void"] < -3  # voids: AUC below 0.5 = separable
    assert _row(rows, "path_mean_log_theta", True)["auc_rebar"] > 0.9
    assert 0.3 < _row(rows, "count", False)["auc_rebar"] < 0.7  # counts carry no class signal here
    text = markdown_table(rows)
    assert "### 1 d (full-scale equivalent 15.625 d)" in text and "below" in text
    assert "| mean_log_theta | poca | no |" in text
    assert "| feature | source | smoothed | rebar | void |" in text  # classes without voxels left out


def test_separability_table_pools_cases_and_reads_channel_names_from_simulation_json(tmp_path):
    _write_case(tmp_path / "a", days=(0.5, 2.0))
    _write_case(tmp_path / "b", days=(0.5, 2.0), seed=1, names=["count", "sum_theta2_rad2", "sum_log_theta"],
                with_names=False)
    rows = separability_table([tmp_path / "a", tmp_path / "b"], days_list=[2.0], trim_layers=1)
    # only the features both cases have; voxels of both cases pooled
    assert {r["feature"] for r in rows} == {"count", "sum_log_theta", "mean_log_theta"}
    row = _row(rows, "mean_log_theta", True, days=2.0)
    assert row["n_rebar"] == 2 * int((_label()[:, :, 1:7] == 1).sum()) and row["equivalent_days"] is None


def test_separability_table_names_missing_files(tmp_path):
    _write_case(tmp_path / "a")
    with pytest.raises(FileNotFoundError, match=r"3d\.nii\.gz"):
        separability_table([tmp_path / "a"], days_list=[3.0])
    (tmp_path / "a" / "label.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="label.nii.gz"):
        separability_table([tmp_path / "a"])
    with pytest.raises(ValueError, match="z-layers"):
        _write_case(tmp_path / "b")
        separability_table([tmp_path / "b"], trim_layers=4)


def test_dataset_helpers(tmp_path):
    (tmp_path / "cases" / "case_0000").mkdir(parents=True)
    (tmp_path / "cases" / "case_0001").mkdir()
    meta = {"checkpoints_days": [0.064, 0.32], "equivalent_days": [1, 5],
            "splits": {"train": ["case_0000"], "val": [], "test": ["case_0001"]}}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    assert dataset_case_folders(tmp_path) == [tmp_path / "cases" / "case_0001"]
    assert len(dataset_case_folders(tmp_path, "all")) == 2
    assert dataset_equivalent_days(tmp_path) == {0.064: 1.0, 0.32: 5.0}
    with pytest.raises(ValueError, match="split"):
        dataset_case_folders(tmp_path, "nope")


# --- benchmark script --------------------------------------------------------------------------


def _benchmark():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "separability.py"
    spec = importlib.util.spec_from_file_location("separability_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_writes_markdown_and_one_json_line(tmp_path, capsys):
    _write_case(tmp_path / "a", days=(0.064,))
    out = tmp_path / "sep.md"
    bench = _benchmark()
    bench.main(["--cases", str(tmp_path / "a"), "--equivalent-scale", "15.625", "--out-md", str(out)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    (exposure,) = result["exposures"]
    assert exposure["equivalent_days"] == pytest.approx(1.0)
    assert exposure["void_auc_path_mean_log_theta_smoothed"] < 0.05
    assert exposure["rebar_mean_log_theta_raw"]["auc"] > 0.99
    assert exposure["rebar_mean_theta2_rad2_raw"] is None  # channel absent from this case
    text = out.read_text()
    assert "Command:" in text and "Scored voxels" in text and "full-scale equivalent 1 d" in text
    with pytest.raises(SystemExit):
        bench.main(["--cases", str(tmp_path / "a"), "--out-md", str(out)])  # refuses to overwrite
    bench.main(["--cases", str(tmp_path / "a"), "--out-md", str(out), "--overwrite"])


@pytest.mark.slow
def test_reference_block_targets(tmp_path, capsys):
    """The issue's targets on examples/reference_block.json at 5 mm (simulates ~80e6 muons: ~5-10 min).

    Path features find voids (smoothed path mean ln theta AUC <= 0.3 at the 1-day and <= 0.05 at the
    100-day equivalent) and PoCA mean ln theta separates rebar better than PoCA mean theta^2.
    """
    bench = _benchmark()
    bench.main(["--reference", str(tmp_path / "ref"), "--out-md", str(tmp_path / "sep.md")])
    by_days = {e["equivalent_days"]: e for e in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["exposures"]}
    assert by_days[1.0]["void_auc_path_mean_log_theta_smoothed"] <= 0.3
    assert by_days[100.0]["void_auc_path_mean_log_theta_smoothed"] <= 0.05
    for entry in by_days.values():
        for key in ("raw", "smoothed"):
            log, theta2 = entry[f"rebar_mean_log_theta_{key}"], entry[f"rebar_mean_theta2_rad2_{key}"]
            assert log["auc"] > theta2["auc"] and log["cnr"] > theta2["cnr"]
