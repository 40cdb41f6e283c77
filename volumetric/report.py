"""Pictures: slice montages of scattering volumes and label maps (PNG, matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["mean_theta2_mrad2", "save_slice_montage"]

CLASS_COLOURS = ["#d9d9d9", "#d62728", "#1f77b4", "#ffffff", "#ff7f0e"]  # concrete rebar duct void unknown


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
            dict(cmap=ListedColormap(CLASS_COLOURS), vmin=-0.5, vmax=4.5, interpolation="nearest")
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
