"""volumetric.evaluation.evaluate and evaluate.py: hand-computed pieces, then end-to-end on tiny runs."""

import csv
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from volumetric.evaluation import evaluate as ev
from volumetric.evaluation.metrics import ObjectInfo, ssim_3d
from volumetric.data.build import PRESETS
from volumetric.infer.predictor import normalise_input
from volumetric.schema import LEGACY_CHANNEL_NAMES

from test_predictor import case_raw, train_tiny

D0, D1, _, TARGET = PRESETS["tiny"].checkpoints_days  # tiny exposures (days)

ROOT = Path(__file__).resolve().parent.parent


def _evaluate_main():
    spec = importlib.util.spec_from_file_location("evaluate_entry", ROOT / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


# ---------------------------------------------------------------------------- hand-computed pieces


def _void_case():
    """A 6x6x6 block of concrete (label 0) with a 2x2x2 void (label 3); c1 image 1 in concrete, 0 in the void."""
    label = np.zeros((6, 6, 6), np.int64)
    label[2:4, 2:4, 2:4] = 3
    mask = label == 3
    target = np.where(mask, 0.0, 1.0)
    info = ObjectInfo("void", 0, 3, 20.0, 30.0)
    return ev._Case("c", {}, target, label, 1.0, [(info, mask)], [-1]), mask


def test_match_found_fraction_and_z_smear():
    case, mask = _void_case()
    perfect = ev._match(case, case.label, case.target_c1, 10.0, threshold=0.5)[0]
    assert perfect["found"] and perfect["fraction"] == 1.0 and perfect["true_voxels"] == 8
    assert perfect["z_smear_label_mm"] == 0.0 and perfect["z_smear_image_mm"] == 0.0
    half = case.label.copy()
    half[2:4, 2:4, 3] = 0  # the top layer of the void missed: 4 of 8 voxels
    assert ev._match(case, half, None, 10.0, threshold=0.5)[0]["fraction"] == 0.5
    assert not ev._match(case, half, None, 10.0, threshold=0.6)[0]["found"]
    smeared = case.label.copy()
    smeared[2:4, 2:4, 1:5] = 3  # one extra layer above and below: z spread grows
    assert ev._match(case, smeared, None, 10.0, 0.5)[0]["z_smear_label_mm"] > 5.0
    assert ev._match(case, None, case.target_c1, 10.0, 0.5)[0]["found"] is None  # image-only source


def test_image_metrics_of_the_target_itself_and_equivalent_days_on_a_known_curve():
    case, _ = _void_case()
    perfect = ev._image_metrics(case.target_c1, case)
    assert perfect["ssim"] == pytest.approx(1.0) and perfect["mae"] == 0.0 and math.isinf(perfect["psnr_db"])
    curve = {1.0: {"ssim": 0.6, "psnr_db": 20.0}, 100.0: {"ssim": 0.8, "psnr_db": 30.0}}
    row = {"ssim": 0.7, "psnr_db": 25.0}
    ev._equivalent(row, curve)
    assert row["ssim_equivalent_days"] == pytest.approx(10.0) and row["ssim_equivalent_status"] == "inside"
    assert row["psnr_equivalent_days"] == pytest.approx(10.0)
    row = {"ssim": 0.9, "psnr_db": math.inf}
    ev._equivalent(row, curve)
    assert row["ssim_equivalent_status"] == "above" and math.isnan(row["psnr_equivalent_days"])


def test_clean_and_exposure_choice():
    cleaned = ev._clean({1.5: [np.float32("nan"), np.int64(3), np.bool_(True), math.inf]})
    assert cleaned == {"1.5": [None, 3, True, None]}
    assert ev._exposures([0.05, 0.1, 0.5], None) == ([0.05, 0.1], [0.05, 0.1])
    assert ev._exposures([0.05, 0.1, 0.5], [0.5, 0.1]) == ([0.1, 0.5], [0.05, 0.1])
    with pytest.raises(ValueError, match="0.2 days is not a checkpoint"):
        ev._exposures([0.05, 0.1, 0.5], [0.2])
    assert ev.void_bins_mm(2.0)[:4] == [0.0, 2.0, 4.0, 6.0]


# ---------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def runs(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluation_runs")
    up = train_tiny("upsample_tiny.yaml", tiny_dataset, out, "up", "train.mode=l1")
    return {
        "upsample": up,
        "segment": train_tiny("segment_tiny.yaml", tiny_dataset, out, "seg"),
        "joint": train_tiny("joint_tiny.yaml", tiny_dataset, out, "joint"),
        "segment_upsampled": train_tiny("segment_tiny.yaml", tiny_dataset, out, "segup",
                                        "model.segment_input=upsampled", f"model.upsampler={up}"),
        "upsample2d": train_tiny("upsample2d_tiny.yaml", tiny_dataset, out, "up2d", "train.mode=l1"),
    }


CASES = {  # name: (run, segmenter, sources, sources with Dice, sources with SSIM, plots)
    "upsample": ("upsample", None, ["raw", "upsampled"], [], ["raw", "upsampled"], True),
    "segment": ("segment", None, ["raw"], ["raw"], ["raw"], False),
    "joint": ("joint", None, ["raw", "joint"], ["joint"], ["raw", "joint"], False),
    "chain": ("upsample", "segment", ["raw", "upsampled"], ["raw", "upsampled"], ["raw", "upsampled"], True),
    "segment_upsampled": ("segment_upsampled", None, ["raw", "upsampled"], ["upsampled"], ["raw", "upsampled"], False),
    "slicewise_2d": ("upsample2d", None, ["raw", "upsampled"], [], ["raw", "upsampled"], False),
}
FAST = ["--roi", "20", "20", "12", "--device", "cpu", "--no-progress"]  # one window per block


@pytest.mark.parametrize("name", list(CASES))
def test_evaluate_py_writes_summary_csv_and_plots(name, runs, tiny_dataset, tmp_path, capsys):
    run, segmenter, sources, with_dice, with_ssim, plots = CASES[name]
    argv = ["--run", str(runs[run]), "--data", str(tiny_dataset), "--out", str(tmp_path / "report"),
            "--exposures", f"{D0:g}", f"{D1:g}", *FAST]
    argv += ["--segmenter", str(runs[segmenter])] if segmenter else []
    argv += [] if plots else ["--no-plots"]
    assert _evaluate_main()(argv) == 0
    headline = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["sources"] == sources and headline["cases"] == len(summary["cases"]) == 1
    rows = summary["rows"]
    assert len(rows) == 2 * len(sources)  # 1 case x 2 exposures x sources
    with open(tmp_path / "report" / "metrics.csv") as f:
        table = list(csv.DictReader(f))
    assert [(r["source"], float(r["ssim"] or "nan")) for r in table][:1] == [(rows[0]["source"], rows[0]["ssim"])]
    assert len(table) == len(rows)
    for source in sources:
        entry = summary["per_exposure"][source][f"{D0:g}"]
        assert (entry.get("mean_dice") is not None) == (source in with_dice)
        assert (entry.get("ssim") is not None) == (source in with_ssim)
    for row in rows:
        if row["source"] != "raw" and row["source"] in with_ssim:
            assert row["ssim_equivalent_status"] in ("below", "inside", "above")
    montages = list((tmp_path / "report" / "montages").glob(f"*_{D0:g}d.png"))
    if not plots:
        assert summary["plots"] == [] and montages == []
        return
    written = {Path(p).name for p in summary["plots"]}
    assert "quality_vs_exposure.png" in written and ("dice_vs_exposure.png" in written) == bool(with_dice)
    assert all(Path(p).stat().st_size > 1000 for p in summary["plots"])
    assert len(montages) == 1 and montages[0].stat().st_size > 1000


def test_raw_numbers_are_recomputable_and_means_match_rows(runs, tiny_dataset, tmp_path):
    from volumetric.infer.predictor import WindowSettings

    summary = ev.evaluate(runs["upsample"], tiny_dataset, tmp_path, exposures=[D0, D1],
                          segmenter=runs["segment"], settings=WindowSettings(roi_size=(20, 20, 12)),
                          progress=False, plots=False)
    case = summary["cases"][0]
    norm = summary["scale"]["normalisation"]
    # the metric channel is normalised mean theta^2: the count and sum theta^2 channels (0 and 1) of the files
    target = normalise_input(case_raw(tiny_dataset, case, TARGET)[:2], norm, LEGACY_CHANNEL_NAMES[:2])[1].numpy()
    raw = normalise_input(case_raw(tiny_dataset, case, D1)[:2], norm, LEGACY_CHANNEL_NAMES[:2])[1].numpy()
    row = next(r for r in summary["rows"] if r["source"] == "raw" and r["exposure_days"] == D1)
    expected = ssim_3d(raw, target, float(target.max() - target.min()))
    assert row["ssim"] == pytest.approx(expected, rel=1e-6)
    assert summary["raw_curve"][f"{D1:g}"]["ssim"] == pytest.approx(expected, rel=1e-6)
    ups = [r for r in summary["rows"] if r["source"] == "upsampled"]
    assert summary["means"]["upsampled"]["mean_dice"] == pytest.approx(np.mean([r["mean_dice"] for r in ups]))
    objects = [o for o in summary["objects"] if o["source"] == "upsampled" and o["exposure_days"] == D0]
    voids = [o for o in objects if o["kind"] == "void"]
    assert next(r for r in ups if r["exposure_days"] == D0)["voids"] == len(voids)


def test_evaluate_refuses_existing_report_and_bad_arguments(runs, tiny_dataset, tmp_path, capsys):
    main = _evaluate_main()
    base = ["--run", str(runs["segment"]), "--data", str(tiny_dataset), "--out", str(tmp_path), "--exposures", f"{D0:g}",
            "--no-plots", *FAST]
    assert main(base) == 0
    before = (tmp_path / "summary.json").read_text()
    capsys.readouterr()
    assert main(base) == 2
    assert "summary.json exists" in capsys.readouterr().err
    assert (tmp_path / "summary.json").read_text() == before
    assert main(base + ["--overwrite"]) == 0
    for extra, message in [(["--exposures", "0.07"], "0.07 days is not a checkpoint"),
                           (["--segmenter", str(runs["segment"])], "--segmenter needs an upsample --run"),
                           (["--run", str(tmp_path / "none")], "no such run folder")]:
        capsys.readouterr()
        assert main(base + ["--overwrite"] + extra) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("run, segmenter", [("upsample", "segment"), ("joint", None)])
def test_the_target_exposure_is_evaluated_as_an_input_too(run, segmenter, runs, tiny_dataset, tmp_path):
    from volumetric.infer.predictor import WindowSettings

    summary = ev.evaluate(runs[run], tiny_dataset, tmp_path, exposures=[D0, TARGET],
                          segmenter=runs[segmenter] if segmenter else None,
                          settings=WindowSettings(roi_size=(20, 20, 12)), progress=False, plots=False)
    raw_target = next(r for r in summary["rows"] if r["source"] == "raw" and r["exposure_days"] == TARGET)
    assert raw_target["ssim"] == pytest.approx(1.0)  # the target against itself
    model = next(r for r in summary["rows"] if r["source"] != "raw" and r["exposure_days"] == TARGET)
    assert model["mean_dice"] is not None and model["ssim"] is not None
