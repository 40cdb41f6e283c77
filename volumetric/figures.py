"""Pictures (PNG, matplotlib Agg): slice montages of scattering volumes and label maps (case
previews, the demo), and the plots of an evaluation report: quality and Dice against exposure,
void detection against diameter, and XY + XZ slice montages of a case.

The report functions take the summary written by :func:`volumetric.evaluation.evaluate.evaluate`
(or a case's volumes), write one PNG and return its path; a plot with nothing to show is not
written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from volumetric.schema import CLASS_COLOURS

__all__ = ["mean_theta2_mrad2", "save_slice_montage", "quality_vs_exposure", "dice_vs_exposure", "void_detection",
           "case_montage", "summary_plots"]

_FOREGROUND = ("rebar", "duct", "void", "unknown")
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
        voxel_mm: voxel edge in mm (axis extents).
    """
    from matplotlib.colors import ListedColormap

    images = [("input (raw)", outputs["raw"][0])]
    images += [(f"{s} image", outputs[s][0]) for s in ("upsampled", "joint")
               if s in outputs and outputs[s][0] is not None]
    images.append(("target", case.target_c1))
    labels = [(f"segmentation ({s})", outputs[s][1]) for s in ("upsampled", "joint", "raw")
              if s in outputs and outputs[s][1] is not None][:1]
    labels += [("truth", case.label)] if case.label is not None else []
    z, y = _slice_indices(case)
    lo, hi = np.percentile(case.target_c1, (0.5, 99.5))
    plt = _pyplot()
    entries = images + labels
    fig, axes = plt.subplots(len(entries), 2, figsize=(7, 2.6 * len(entries)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.4]})
    shape = case.target_c1.shape
    extents = ([0, shape[0] * voxel_mm, 0, shape[1] * voxel_mm], [0, shape[0] * voxel_mm, 0, shape[2] * voxel_mm])
    for r, (title, volume) in enumerate(entries):
        is_label = r >= len(images)
        style = (dict(cmap=ListedColormap(list(CLASS_COLOURS)), vmin=-0.5, vmax=4.5, interpolation="nearest") if is_label
                 else dict(cmap="magma", vmin=lo, vmax=hi if hi > lo else lo + 1))
        axes[r, 0].imshow(volume[:, :, z].T, origin="lower", extent=extents[0], **style)
        axes[r, 0].set_title(f"{title}: XY, z={(z + 0.5) * voxel_mm:.0f} mm", fontsize=8)
        axes[r, 1].imshow(volume[:, y, :].T, origin="lower", extent=extents[1], aspect="auto", **style)
        axes[r, 1].set_title(f"{title}: XZ, y={(y + 0.5) * voxel_mm:.0f} mm", fontsize=8)
    for ax in axes.flat:
        ax.tick_params(labelsize=6)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.04, top=0.96, hspace=0.45, wspace=0.25)
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


def mean_theta2_mrad2(sums: np.ndarray) -> np.ndarray:
    """Mean theta^2 per voxel in mrad^2 from ``(3, X, Y, Z)`` sums; 0 where no muon stopped."""
    count, sum_theta2 = sums[0], sums[1]
    return np.where(count > 0, sum_theta2 / np.maximum(count, 1), 0.0) * 1e6


def _xy_and_xz(volume: np.ndarray, z_index: int, y_index: int):
    return volume[:, :, z_index].T, volume[:, y_index, :].T  # rows: y (or z), columns: x


def save_slice_montage(path, rows: dict[str, np.ndarray], label: np.ndarray | None, voxel_mm, n_depths: int = 3):
    """Save XY slices at ``n_depths`` heights and one XZ slice for each named volume.

    Args:
        path: PNG to write.
        rows: title -> ``(X, Y, Z)`` volume (e.g. mean theta^2 at several exposures).
        label: optional ``(X, Y, Z)`` class map drawn as the last row, or title -> class map
            for several (e.g. predicted and true classes).
        voxel_mm: voxel size, for the axis extents in mm.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    volumes = dict(rows)
    labels = label if isinstance(label, dict) else ({"label": label} if label is not None else {})
    shape = next(iter(volumes.values())).shape
    z_indices = np.linspace(0, shape[2] - 1, n_depths + 2)[1:-1].round().astype(int)
    y_index = shape[1] // 2
    n_rows = len(volumes) + len(labels)
    fig, axes = plt.subplots(n_rows, n_depths + 1, figsize=(3.2 * (n_depths + 1), 3.0 * n_rows), squeeze=False)
    ext_xy = [0, shape[0] * voxel_mm[0], 0, shape[1] * voxel_mm[1]]
    ext_xz = [0, shape[0] * voxel_mm[0], 0, shape[2] * voxel_mm[2]]
    entries = [(t, v, False) for t, v in volumes.items()] + [(t, v, True) for t, v in labels.items()]
    for r, (title, volume, is_label) in enumerate(entries):
        kwargs = (
            dict(cmap=ListedColormap(list(CLASS_COLOURS)), vmin=-0.5, vmax=4.5, interpolation="nearest")
            if is_label
            else dict(cmap="magma", vmin=0.0, vmax=float(np.percentile(volume, 99.5)) or 1.0)
        )
        for c, k in enumerate(z_indices):
            xy, _ = _xy_and_xz(volume, k, y_index)
            axes[r, c].imshow(xy, origin="lower", extent=ext_xy, **kwargs)
            axes[r, c].set_title(f"{title}\nXY, z={(k + 0.5) * voxel_mm[2]:.0f} mm", fontsize=8)
        _, xz = _xy_and_xz(volume, 0, y_index)
        axes[r, -1].imshow(xz, origin="lower", extent=ext_xz, aspect="auto", **kwargs)
        axes[r, -1].set_title(f"{title}\nXZ, y={(y_index + 0.5) * voxel_mm[1]:.0f} mm", fontsize=8)
    for ax in axes.flat:
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
