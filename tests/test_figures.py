"""volumetric.figures: slice montages in mm at the true aspect, with colour bars and a class legend."""

from types import SimpleNamespace

import numpy as np
import pytest

from volumetric import figures
from volumetric.schema import CLASS_NAMES

SHAPE, VOXEL = (40, 40, 8), 25.0  # a 1000 x 1000 x 200 mm block


@pytest.fixture
def drawn(monkeypatch):
    """Figures handed to ``_save`` (kept open for inspection)."""
    kept = []
    monkeypatch.setattr(figures, "_save", lambda fig, path, tight=True: kept.append(fig) or path)
    yield kept
    for fig in kept:
        figures._pyplot().close(fig)


def _legend_names(fig) -> list[list[str]]:
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + fig.legends
    return [[t.get_text() for t in legend.get_texts()] for legend in legends]


def test_xz_panels_are_wider_for_thin_blocks():
    assert figures.xz_width_ratio(SHAPE, VOXEL) == 2.5
    assert figures.xz_width_ratio((20, 20, 10), (10.0, 10.0, 10.0)) == 1.0


def test_slice_montage_has_true_aspect_colour_bars_and_a_class_legend(drawn, tmp_path):
    volume = np.random.default_rng(0).random(SHAPE) * 100
    label = np.zeros(SHAPE, np.uint8)
    label[10:20, :, 2:4] = 1
    figures.save_slice_montage(tmp_path / "m.png", {"raw 0.25 d": volume, "upsampled by up3d": volume},
                               {"segmented by joint3d": label, "true classes": label}, (VOXEL,) * 3,
                               colour_label=figures.MEAN_THETA2_LABEL)
    (fig,) = drawn
    titles = [ax.get_title() for ax in fig.axes]
    xz = [ax for ax in fig.axes if "XZ" in ax.get_title()]
    assert len(xz) == 4 and all(ax.get_aspect() == 1.0 for ax in xz)
    assert xz[0].images[0].get_extent() == [0, 1000.0, 0, 200.0]
    xy = next(ax for ax in fig.axes if "XY" in ax.get_title())
    assert xz[0].get_position().width > 2 * xy.get_position().width
    assert {t.split("\n")[0] for t in titles if t} == {"raw 0.25 d", "upsampled by up3d", "segmented by joint3d",
                                                        "true classes"}
    bars = [ax.images[0].colorbar for ax in xz]
    assert [b.ax.get_ylabel() for b in bars[:2]] == [figures.MEAN_THETA2_LABEL] * 2 and bars[2:] == [None, None]
    assert "mrad²" in figures.MEAN_THETA2_LABEL
    assert _legend_names(fig) == [list(CLASS_NAMES)] * 2


def test_case_montage_has_true_aspect_and_a_class_legend(drawn, tmp_path):
    volume = np.ones(SHAPE)
    case = SimpleNamespace(target_c1=volume, label=np.zeros(SHAPE, np.uint8), masks=[])
    figures.case_montage(tmp_path / "c.png", case, {"raw": (volume, np.zeros(SHAPE, np.uint8))}, VOXEL)
    (fig,) = drawn
    assert all(ax.get_aspect() == 1.0 for ax in fig.axes if "XZ" in ax.get_title())
    assert _legend_names(fig) == [list(CLASS_NAMES)]


def test_mean_theta2_is_picked_by_channel_name():
    sums = np.array([[[[4.0]]], [[[1.0]]], [[[8e-6]]]])  # channels: path_count, count, sum_theta2_rad2
    assert figures.mean_theta2_mrad2(sums, ["path_count", "count", "sum_theta2_rad2"]).item() == pytest.approx(8.0)
    with pytest.raises(ValueError, match="sum_theta2_rad2"):
        figures.mean_theta2_mrad2(sums, ["count", "path_count", "sum_log_theta"])
