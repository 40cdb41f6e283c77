"""Per-voxel additive statistics of measured muons: the channels of ``volumetric.schema``.

One :class:`ChannelAccumulator` keeps running float64 sums on a regular grid and takes muons
chunk by chunk (their measured incoming and outgoing lines, PoCA and scattering angle), so an
exposure series is a sequence of prefixes of one simulation and disjoint exposures add exactly.

Two sources (``Channel.source``):

* ``poca``: each muon adds to the voxel holding its PoCA (integer floor of
  ``(point - origin) / voxel``); PoCA points outside the grid are counted in ``poca_outside``.
  O(N) scatter-add, never an N x voxels matrix.
* ``path``: each muon adds to one voxel per z layer, the voxel where its measured line crosses
  the layer's mid-plane: the incoming line in layers whose centre lies at or above the PoCA
  depth, the outgoing line below (the PoCA depth is clamped to the block, so a PoCA above the
  block gives an outgoing-only path). Layers where the line is outside the grid's footprint (a
  track leaving or entering through a side face) get nothing. This is the nearest-neighbour form
  of the slice-driven line sampling of CT projectors (Joseph, IEEE TMI 1 (1982) 192): a track
  at up to 45 deg from vertical with cubic voxels visits one voxel per layer where an exact
  traversal (Amanatides-Woo) would also count the voxels it clips at corners. It vectorises as
  one slab-wise scatter-add over the layers (``benchmarks/simulate.py`` measures its cost).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from volumetric.physics import kernels
from volumetric.schema import CHANNEL_NAMES, DEFAULT_THETA_THRESHOLD_RAD, check_channel_names, channels_of_source
from volumetric.schema import muon_weights

__all__ = ["ChannelAccumulator"]


class ChannelAccumulator:
    """Running per-voxel sums of the statistics channels ``channels`` (float64, on ``device``).

    Args:
        shape: grid ``(X, Y, Z)`` in voxels.
        voxel_mm: voxel size ``(vx, vy, vz)`` in mm.
        origin_mm: the grid's low corner in mm (block frame, z up).
        channels: channel names (``volumetric.schema``), in the order of :meth:`volumes`.
        theta_threshold_rad: angle threshold of the ``*_above_threshold`` channels (rad).
        device: where the sums live (the CPU by default).
        kernel: how path tracks are added: ``"torch"`` (reference, any device), ``"numba"``
            (fused CPU kernel, threads own layers: the same sums whatever the thread count) or
            ``"auto"`` (numba on the CPU when it imports).
        path_batch_tracks: path tracks are held back until this many have been added (or the
            sums are read), then added in one pass over the layers: each pass streams the whole
            path volume through memory, so few large passes beat many small ones (2x at 2 mm,
            ``benchmarks/simulate.py``). Part of the byte-reproducibility contract, like the chunk size.
    """

    def __init__(self, shape: Sequence[int], voxel_mm, origin_mm=(0.0, 0.0, 0.0),
                 channels: Sequence[str] = CHANNEL_NAMES, theta_threshold_rad: float = DEFAULT_THETA_THRESHOLD_RAD,
                 device="cpu", kernel: str = "auto", path_batch_tracks: int = 1 << 18):
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"shape must be three positive voxel counts, got {tuple(shape)}")
        self.voxel_mm = tuple(float(v) for v in voxel_mm)
        self.origin_mm = tuple(float(o) for o in origin_mm)
        self.channels = check_channel_names(channels, "statistics channels")
        self.theta_threshold_rad = float(theta_threshold_rad)
        self.device = torch.device(device)
        self.kernel = kernels.kernel_for(self.device, kernel)
        self._poca_rows = channels_of_source("poca", self.channels)
        self._path_rows = channels_of_source("path", self.channels)
        n_voxels = self.shape[0] * self.shape[1] * self.shape[2]
        kw = {"dtype": torch.float64, "device": self.device}
        self._poca = torch.zeros((n_voxels, len(self._poca_rows)), **kw)
        # path sums are layer-major slabs padded by one voxel around the footprint, channels innermost (one
        # cache line per track and layer): (Z * (X+2) * (Y+2), C)
        padded = self.shape[2] * (self.shape[0] + 2) * (self.shape[1] + 2)
        self._path = torch.zeros((padded, len(self._path_rows)), **kw)
        self.muons = 0
        self.poca_outside = 0
        self.path_batch_tracks = int(path_batch_tracks)
        self._pending_path: list[tuple[torch.Tensor, ...]] = []

    @property
    def top_z_mm(self) -> float:
        return self.origin_mm[2] + self.shape[2] * self.voxel_mm[2]

    def add(self, in_pos_mm, in_dir, out_pos_mm, out_dir, poca_mm, theta_rad) -> None:
        """Accumulate N muons.

        Args:
            in_pos_mm, in_dir: a point on and the direction of each measured incoming line ``(N, 3)``.
            out_pos_mm, out_dir: the same for the outgoing lines (directions point downward, dz < 0).
            poca_mm: PoCA points ``(N, 3)`` mm.
            theta_rad: measured scattering angles ``(N,)`` rad.
        """
        if len(theta_rad) == 0:
            return
        as64 = lambda t: torch.as_tensor(t).to(device=self.device, dtype=torch.float64)  # noqa: E731
        theta = as64(theta_rad)
        self.muons += len(theta)
        if self._poca_rows:
            self._add_poca(as64(poca_mm), muon_weights(self._poca_rows, theta, self.theta_threshold_rad))
        if self._path_rows:
            split_z = as64(poca_mm)[:, 2].clamp(self.origin_mm[2], self.top_z_mm)
            self._pending_path.append((as64(in_pos_mm), as64(in_dir), as64(out_pos_mm), as64(out_dir), split_z,
                                       muon_weights(self._path_rows, theta, self.theta_threshold_rad)))
            if sum(len(t[4]) for t in self._pending_path) >= self.path_batch_tracks:
                self.flush()

    def flush(self) -> None:
        """Add the held-back path tracks now (one pass over the layers); reading the sums does it too."""
        if self._pending_path:
            tracks = [torch.cat(parts) for parts in zip(*self._pending_path)]
            self._pending_path = []
            self._add_path(*tracks)

    def _add_poca(self, point: torch.Tensor, weights: torch.Tensor) -> None:
        origin = torch.tensor(self.origin_mm, dtype=torch.float64, device=self.device)
        voxel = torch.tensor(self.voxel_mm, dtype=torch.float64, device=self.device)
        ijk = torch.floor((point - origin) / voxel).long()
        inside = ((ijk >= 0) & (ijk < torch.tensor(self.shape, device=self.device))).all(-1)
        self.poca_outside += int((~inside).sum())
        ijk = ijk[inside]
        flat = (ijk[:, 0] * self.shape[1] + ijk[:, 1]) * self.shape[2] + ijk[:, 2]
        self._poca.index_add_(0, flat, weights[inside])

    def _add_path(self, in_pos, in_dir, out_pos, out_dir, split_z, weights) -> None:
        """Add each track to one cell per z layer (``kernel`` torch: :meth:`_add_path_layers`).

        Cells outside the footprint are clamped into a one-voxel border of the padded slab, which
        :meth:`volumes` drops.
        """
        nx, ny, nz = self.shape
        voxel = torch.tensor(self.voxel_mm[:2], dtype=torch.float64, device=self.device)[:, None]
        origin = torch.tensor(self.origin_mm[:2], dtype=torch.float64, device=self.device)[:, None]
        # each line's (x, y) at height z in voxel units, shifted by the border: a + b z, as (2, N)
        b_in, b_out = (d[:, :2].T / d[:, 2] / voxel for d in (in_dir, out_dir))
        a_in = (in_pos[:, :2].T - origin) / voxel - b_in * in_pos[:, 2] + 1
        a_out = (out_pos[:, :2].T - origin) / voxel - b_out * out_pos[:, 2] + 1
        # float32 from here: cell coordinates below ~1e4 voxels are exact to ~1e-3 voxel
        lines = [t.float().contiguous() for t in (a_in, b_in, a_out, b_out)]
        z_centre = self.origin_mm[2] + (torch.arange(nz, dtype=torch.float64) + 0.5) * self.voxel_mm[2]
        if self.kernel == "numba":
            kernels.add_path_sums(self._path, *lines, weights, split_z, z_centre, nx, ny)
        else:
            self._add_path_layers(*lines, weights, split_z, z_centre)

    def _add_path_layers(self, a_in, b_in, a_out, b_out, weights, split_z, z_centre) -> None:
        """The torch reference: one pass per layer, a scatter-add into that layer's slab.

        Tracks are sorted by PoCA depth once, so in layer ``k`` the first ``m_k`` use their
        incoming line and the rest their outgoing line (two contiguous slices, no masks).
        """
        nx, ny, nz = self.shape
        order = torch.argsort(split_z)
        a_in, b_in, a_out, b_out = (t[:, order] for t in (a_in, b_in, a_out, b_out))
        columns, split_z = weights[order], split_z[order]
        first_out = torch.searchsorted(split_z, z_centre.to(split_z.device), right=True).tolist()
        u = torch.empty_like(a_in)
        slab = (nx + 2) * (ny + 2)
        for k in range(nz):
            z, m = float(z_centre[k]), first_out[k]  # tracks [0, m) have split_z <= z: incoming line
            torch.add(a_in[:, :m], b_in[:, :m], alpha=z, out=u[:, :m])
            torch.add(a_out[:, m:], b_out[:, m:], alpha=z, out=u[:, m:])
            u.floor_()
            u[0].clamp_(0, nx + 1)
            u[1].clamp_(0, ny + 1)
            cell = torch.add(u[1], u[0], alpha=ny + 2).long()
            self._path[k * slab:(k + 1) * slab].index_add_(0, cell, columns)

    def volumes(self) -> torch.Tensor:
        """A copy of the sums as ``(C, X, Y, Z)`` float64 on the CPU, channels in :attr:`channels` order."""
        self.flush()
        columns = {r.name: self._poca[:, i].reshape(self.shape) for i, r in enumerate(self._poca_rows)}
        columns.update({r.name: self._path_volume(i) for i, r in enumerate(self._path_rows)})
        return torch.stack([columns[n] for n in self.channels]).cpu().contiguous()

    def _path_volume(self, i: int) -> torch.Tensor:
        """Path channel ``i`` as an ``(X, Y, Z)`` view (the padded ring dropped)."""
        nx, ny, nz = self.shape
        return self._path[:, i].reshape(nz, nx + 2, ny + 2)[:, 1:-1, 1:-1].permute(1, 2, 0)

    def occupancy(self) -> dict:
        """Mean PoCA points and path tracks per voxel over the grid (the block), and PoCA outside it."""
        self.flush()
        n_voxels = self._poca.shape[0]
        out = {"muons": int(self.muons), "poca_outside_grid": int(self.poca_outside)}
        names = [r.name for r in self._poca_rows], [r.name for r in self._path_rows]
        if "count" in names[0]:
            out["poca_points_per_voxel"] = float(self._poca[:, names[0].index("count")].sum()) / n_voxels
        if "path_count" in names[1]:
            out["path_tracks_per_voxel"] = float(self._path_volume(names[1].index("path_count")).sum()) / n_voxels
        return out
