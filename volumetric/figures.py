"""Pictures (PNG, matplotlib Agg): slice montages of scattering volumes and label maps (case
previews, the demo), and the plots of an evaluation report: quality and Dice against exposure,
void detection against diameter, and XY + XZ slice montages of a case.

The report functions take the summary written by :func:`volumetric.evaluation.evaluate.evaluate`
(or a case's volumes), write one PNG and return its path; a plot with nothing to show is not
written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from volumetric.schema import (
    CLASS_COLOURS,
    CLASS_NAMES,
    LEGACY_CHANNEL_NAMES,
    channel_indices,
)

__all__ = [
    "MEAN_THETA2_LABEL",
    "case_montage",
    "class_legend_handles",
    "dice_vs_exposure",
    "mean_theta2_mrad2",
    "quality_vs_exposure",
    "save_slice_montage",
    "summary_plots",
    "void_detection",
    "xz_width_ratio",
]

_FOREGROUND = ("rebar", "duct", "void", "unknown")
MEAN_THETA2_LABEL = "mean θ² (mrad²)"
"""Colour-bar label of mean theta^2 images (the unit of :func:`mean_theta2_mrad2`)."""
_STYLE = {"raw": ("tab:gray", "o"), "upsampled": ("tab:blue", "s"), "joint": ("tab:green", "^")}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, tight: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=90)
    _pyplot().close(fig)
    return path


def _series(per_source: dict, key: str) -> tuple[list[float], list[float]]:
    pairs = sorted((float(d), e.get(key)) for d, e in per_source.items())
    pairs = [(d, v) for d, v in pairs if v is not None]
    return [d for d, _ in pairs], [v for _, v in pairs]


def quality_vs_exposure(summary: dict, path) -> Path | None:
    """SSIM and PSNR (normalised mean theta^2) against exposure: the raw curve and each model source."""
    curve = summary["raw_curve"]
    models = [s for s in summary["sources"] if s != "raw"
              and any(e.get("ssim") is not None for e in summary["per_exposure"][s].values())]
    if not curve:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key, title in zip(axes, ("ssim", "psnr_db"), ("SSIM (3D)", "PSNR (dB)")):
        days = sorted(curve, key=float)
        values = [curve[d][key] for d in days]
        ax.plot([float(d) for d in days], [np.nan if v is None else v for v in values], "o-", color="tab:gray",
                label="raw (all input exposures)")
        for source in models:
            x, y = _series(summary["per_exposure"][source], key)
            colour, marker = _STYLE[source]
            ax.plot(x, y, marker + "-", color=colour, label=source)
        ax.set(xscale="log", xlabel="input exposure (days)", title=title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def dice_vs_exposure(summary: dict, path) -> Path | None:
    """Dice per foreground class (and the mean) against exposure, one line per source with classes."""
    sources = [s for s in summary["sources"]
               if any(e.get("mean_dice") is not None for e in summary["per_exposure"][s].values())]
    if not sources:
        return None
    plt = _pyplot()
    keys = [f"dice_{c}" for c in _FOREGROUND] + ["mean_dice"]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.0 * len(keys), 3.2), sharey=True)
    for ax, key in zip(axes, keys):
        for source in sources:
            x, y = _series(summary["per_exposure"][source], key)
            colour, marker = _STYLE[source]
            ax.plot(x, y, marker + "-", color=colour, label=f"from {source}")
        ax.set(xscale="log", xlabel="input exposure (days)", title=key.replace("_", " "), ylim=(0, 1))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Dice")
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def void_detection(summary: dict, path) -> Path | None:
    """Void detection rate against diameter, per source and exposure (bins with voids only)."""
    lines = []
    for source, per_days in summary["per_exposure"].items():
        for days, entry in per_days.items():
            rows = [r for r in entry.get("void_detection_by_diameter", []) if r["count"]]
            if rows:
                lines.append((source, days, rows))
    if not lines:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for source, days, rows in lines:
        colour, marker = _STYLE[source]
        centres = [0.5 * (r["lo_mm"] + r["hi_mm"]) for r in rows]
        alpha = 0.4 + 0.6 * (sorted(summary["per_exposure"][source], key=float).index(days) + 1) / len(
            summary["per_exposure"][source])
        ax.plot(centres, [r["rate"] for r in rows], marker + "-", color=colour, alpha=alpha,
                label=f"{source}, {days} d")
    ax.set(xlabel="void diameter (mm, bin centre)", ylabel="fraction of voids found", ylim=(-0.05, 1.05))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _slice_indices(case) -> tuple[int, int]:
    """``(z, y)`` through the centroid of the case's largest void, else the block centre."""
    voids = [m for info, m in case.masks if info.kind == "void" and m.any()]
    if not voids:
        shape = case.target_c1.shape
        return shape[2] // 2, shape[1] // 2
    biggest = max(voids, key=lambda m: int(m.sum()))
    _, y, z = (int(round(c)) for c in np.argwhere(biggest).mean(axis=0))
    return z, y


def case_montage(path, case, outputs: dict, voxel_mm: float) -> Path:
    """XY and XZ slices of input, upsampled, target (normalised mean theta^2), segmentation and truth.

    Args:
        path: PNG to write.
        case: the evaluation's case (``target_c1``, ``label``, ``masks``).
        outputs: ``{source: (c1 image or None, label map or None)}`` of one exposure.
        voxel_mm: voxel edge in mm (axis extents; XZ at the true aspect, with a class legend).
    """
    images = [("input (raw)", outputs["raw"][0])]
    images += [(f"{s} image", outputs[s][0]) for s in ("upsampled", "joint")
               if s in outputs and outputs[s][0] is not None]
    images.append(("target", case.target_c1))
    labels = [(f"segmentation ({s})", outputs[s][1]) for s in ("upsampled", "joint", "raw")
              if s in outputs and outputs[s][1] is not None][:1]
    labels += [("truth", case.label)] if case.label is not None else []
    z, y = _slice_indices(case)
    lo, hi = np.percentile(case.target_c1, (0.5, 99.5))
    entries = images + labels
    shape = case.target_c1.shape
    fig, axes = _pyplot().subplots(len(entries), 2, figsize=(7, 2.6 * len(entries) + 0.4), squeeze=False,
                                   gridspec_kw={"width_ratios": [1, xz_width_ratio(shape, voxel_mm)]})
    extents = ([0, shape[0] * voxel_mm, 0, shape[1] * voxel_mm], [0, shape[0] * voxel_mm, 0, shape[2] * voxel_mm])
    for r, (title, volume) in enumerate(entries):
        style = _label_style() if r >= len(images) else {"cmap": "magma", "vmin": lo, "vmax": hi if hi > lo else lo + 1}
        axes[r, 0].imshow(volume[:, :, z].T, origin="lower", extent=extents[0], **style)
        axes[r, 0].set_title(f"{title}: XY, z={(z + 0.5) * voxel_mm:.0f} mm", fontsize=8)
        axes[r, 1].imshow(volume[:, y, :].T, origin="lower", extent=extents[1], aspect="equal", **style)
        axes[r, 1].set_title(f"{title}: XZ, y={(y + 0.5) * voxel_mm:.0f} mm", fontsize=8)
    for ax in axes.flat:
        ax.tick_params(labelsize=6)
    if labels:
        fig.legend(handles=class_legend_handles(), loc="lower center", ncol=len(CLASS_NAMES), frameon=False, fontsize=7)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.4 / (2.6 * len(entries) + 0.4) + 0.03, top=0.96,
                        hspace=0.45, wspace=0.25)
    return _save(fig, path, tight=False)  # tight_layout costs seconds on a montage


def summary_plots(out_dir, summary: dict) -> list[Path]:
    """Write the summary plots into ``out_dir``; returns the files written."""
    out = Path(out_dir)
    made = [quality_vs_exposure(summary, out / "quality_vs_exposure.png"),
            dice_vs_exposure(summary, out / "dice_vs_exposure.png"),
            void_detection(summary, out / "void_detection.png")]
    return [p for p in made if p is not None]


# ---------------------------------------------------------------------------------------------
# slice montages of volumes (case previews, the demo)


def mean_theta2_mrad2(sums: np.ndarray, channels: Sequence[str] = LEGACY_CHANNEL_NAMES) -> np.ndarray:
    """Mean theta^2 per voxel in mrad^2 from ``(C, X, Y, Z)`` sums; 0 where no PoCA lies.

    Args:
        sums: statistics sums, channel first.
        channels: their names (default: ``count``, ``sum_theta2_rad2`` first, as in every
            statistics file).

    Raises:
        ValueError: when ``count`` or ``sum_theta2_rad2`` is missing.
    """
    count, sum_theta2 = (sums[i] for i in channel_indices(["count", "sum_theta2_rad2"], list(channels), "mean theta^2"))
    return np.where(count > 0, sum_theta2 / np.maximum(count, 1), 0.0) * 1e6


def _xy_and_xz(volume: np.ndarray, z_index: int, y_index: int):
    return volume[:, :, z_index].T, volume[:, y_index, :].T  # rows: y (or z), columns: x


def class_legend_handles() -> list:
    """One colour patch per class (``CLASS_COLOURS``, named by ``CLASS_NAMES``) for a legend of label maps."""
    from matplotlib.patches import Patch

    return [Patch(facecolor=c, edgecolor="black", linewidth=0.5, label=n) for n, c in zip(CLASS_NAMES, CLASS_COLOURS)]


def _label_style() -> dict:
    from matplotlib.colors import ListedColormap

    return {"cmap": ListedColormap(list(CLASS_COLOURS)), "vmin": -0.5, "vmax": len(CLASS_COLOURS) - 0.5,
            "interpolation": "nearest"}


def xz_width_ratio(shape, voxel_mm) -> float:
    """Width of an XZ panel relative to an XY panel in a montage row, both drawn at the true aspect.

    Wide enough that the XZ slice (height z/x of its width) is at least half as tall as the XY
    slice (height y/x), within ``[1, 2.5]``: a 1000 x 1000 x 200 mm block gets 2.5.
    """
    _, y, z = (n * v for n, v in zip(shape, np.broadcast_to(np.asarray(voxel_mm, float), (3,))))
    return float(np.clip(0.5 * y / z, 1.0, 2.5))


def _montage_grid(n_rows: int, n_xy: int, shape, voxel_mm, unit_in: float = 2.2):
    """Figure with per row ``n_xy`` XY panels ``unit_in`` wide, one wider XZ panel and a key column (returned apart)."""
    ratios = [1.0] * n_xy + [xz_width_ratio(shape, voxel_mm), 0.5]
    panel_in = unit_in * min(shape[1] * voxel_mm[1] / (shape[0] * voxel_mm[0]), 1.5)  # XY panel height
    gap_in, margin_in = 0.65, (0.45, 0.45)  # between columns (y ticks, labels); top, bottom
    width, height = unit_in * sum(ratios) + gap_in * (len(ratios) + 1), n_rows * (panel_in + 0.6) + sum(margin_in)
    fig, axes = _pyplot().subplots(n_rows, len(ratios), figsize=(width, height), squeeze=False,
                                   gridspec_kw={"width_ratios": ratios})
    for key in axes[:, -1]:
        key.axis("off")
    fig.subplots_adjust(left=gap_in / width, right=1 - gap_in / width, bottom=margin_in[1] / height,
                        top=1 - margin_in[0] / height, wspace=gap_in * len(ratios) / (unit_in * sum(ratios)),
                        hspace=0.6 / panel_in)
    return fig, axes[:, :-1], axes[:, -1]


def _colour_bar(fig, image, key, label: str | None) -> None:
    bar = fig.colorbar(image, cax=key.inset_axes([0.0, 0.05, 0.12, 0.9]), extend="max")
    bar.ax.tick_params(labelsize=6)
    if label:
        bar.set_label(label, fontsize=7)


def _draw_row(axes, volume, title: str, style: dict, z_indices, y_index: int, voxel_mm):
    """XY slices at ``z_indices`` and the XZ slice at ``y_index``, in mm at the true aspect; returns the last image."""
    shape = volume.shape
    ext_xy = [0, shape[0] * voxel_mm[0], 0, shape[1] * voxel_mm[1]]
    ext_xz = [0, shape[0] * voxel_mm[0], 0, shape[2] * voxel_mm[2]]
    for ax, k in zip(axes[:-1], z_indices):
        ax.imshow(_xy_and_xz(volume, k, y_index)[0], origin="lower", extent=ext_xy, aspect="equal", **style)
        ax.set_title(f"{title}\nXY, z={(k + 0.5) * voxel_mm[2]:.0f} mm", fontsize=8)
    image = axes[-1].imshow(_xy_and_xz(volume, 0, y_index)[1], origin="lower", extent=ext_xz, aspect="equal", **style)
    axes[-1].set_title(f"{title}\nXZ, y={(y_index + 0.5) * voxel_mm[1]:.0f} mm", fontsize=8)
    axes[0].set_ylabel("y (mm)", fontsize=7)
    axes[-1].set_ylabel("z (mm)", fontsize=7)
    for ax in axes:
        ax.tick_params(labelsize=6)
    return image


def save_slice_montage(path, rows: dict[str, np.ndarray], label: np.ndarray | dict | None, voxel_mm,
                       n_depths: int = 3, colour_label: str | None = None) -> Path:
    """Save XY slices at ``n_depths`` heights and one XZ slice (through the middle in y) for each named volume.

    Panels are in mm at the true aspect (the XZ column is made wider for thin blocks, see
    :func:`xz_width_ratio`); each image row gets a colour bar (0 to its 99.5th percentile) and
    the label rows a class legend (``CLASS_NAMES`` in ``CLASS_COLOURS``).

    Args:
        path: PNG to write.
        rows: title -> ``(X, Y, Z)`` volume (e.g. mean theta^2 at several exposures).
        label: optional ``(X, Y, Z)`` class map drawn as the last row, or title -> class map
            for several (e.g. predicted and true classes).
        voxel_mm: voxel edge in mm, one value or ``(x, y, z)``, for the axis extents.
        n_depths: XY slices per row, evenly spaced in z.
        colour_label: what the image rows show, with units, for their colour bars (e.g.
            :data:`MEAN_THETA2_LABEL`).
    """
    volumes = dict(rows)
    labels = label if isinstance(label, dict) else ({"label": label} if label is not None else {})
    voxel = tuple(float(v) for v in np.broadcast_to(np.asarray(voxel_mm, float), (3,)))
    shape = next(iter(volumes.values())).shape
    z_indices = np.linspace(0, shape[2] - 1, n_depths + 2)[1:-1].round().astype(int)
    entries = [(t, v, False) for t, v in volumes.items()] + [(t, v, True) for t, v in labels.items()]
    fig, axes, keys = _montage_grid(len(entries), n_depths, shape, voxel)
    for r, (title, volume, is_label) in enumerate(entries):
        style = _label_style() if is_label else {"cmap": "magma", "vmin": 0.0,
                                                 "vmax": float(np.percentile(volume, 99.5)) or 1.0}
        image = _draw_row(axes[r], volume, title, style, z_indices, shape[1] // 2, voxel)
        if is_label:
            keys[r].legend(handles=class_legend_handles(), loc="center left", frameon=False, fontsize=7)
        else:
            _colour_bar(fig, image, keys[r], colour_label)
    for ax in axes[-1]:
        ax.set_xlabel("x (mm)", fontsize=7)
    return _save(fig, path, tight=False)  # the grid sets its own margins
