"""Rasterisation of a block onto a voxel grid: class labels and scattering maps (sub-point majority vote)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from volumetric.physics.geometry.objects import (
    LABEL_CONCRETE,
    LABEL_DUCT,
    LABEL_PRIORITY,
    LABEL_REBAR,
    LABEL_UNKNOWN,
    LABEL_VOID,
    VOXEL_RTOL,
    _AXES,
    _TOL_MM,
    Block,
    Duct,
    RebarGrid,
    Unknown,
    Void,
    _grid_layers,
    _positive,
)
from volumetric.physics.materials import (
    MATERIAL_NAMES,
    inverse_radiation_length_table_per_mm,
    material_id,
    stopping_power_table_mev_per_mm,
)
from volumetric.schema import CLASS_NAMES


# --------------------------------------------------------------------------- painters
# A painter paints one object onto per-point material/label arrays. Coordinates may be any
# broadcastable arrays (1D grid axes shaped for broadcasting, or flat sub-point lists).
# ``signed_mm`` is negative inside the object's envelope and, outside, a lower bound on the
# distance to it; ``surface_mm`` is a lower bound on the distance to any surface across which
# the painted output changes. Both are conservative, which is all the rasteriser needs.


def _slab(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.maximum(lo - a, a - hi)


@dataclass(frozen=True)
class _Painter:
    lo_mm: tuple[float, float, float]
    hi_mm: tuple[float, float, float]
    material_id: int
    label: int

    def signed_mm(self, x, y, z) -> np.ndarray:
        raise NotImplementedError

    def surface_mm(self, x, y, z) -> np.ndarray:
        return np.abs(self.signed_mm(x, y, z))

    def paint(self, x, y, z, material: np.ndarray, label: np.ndarray) -> None:
        inside = self.signed_mm(x, y, z) <= 0
        np.copyto(material, self.material_id, where=inside)
        np.copyto(label, self.label, where=inside)


@dataclass(frozen=True)
class _Sphere(_Painter):
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)
    radius: float = 0.0

    def signed_mm(self, x, y, z):
        cx, cy, cz = self.centre
        return np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) - self.radius


@dataclass(frozen=True)
class _Box(_Painter):
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)
    half: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def signed_mm(self, x, y, z):
        (cx, cy, cz), (hx, hy, hz) = self.centre, self.half
        return np.maximum(np.maximum(np.abs(x - cx) - hx, np.abs(y - cy) - hy), np.abs(z - cz) - hz)


@dataclass(frozen=True)
class _Cylinder(_Painter):
    axis: int = 2
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)
    radius: float = 0.0
    half_length: float = 0.0

    def signed_mm(self, x, y, z):
        p = (x, y, z)
        u, w = (p[a] - self.centre[a] for a in range(3) if a != self.axis)
        axial = np.abs(p[self.axis] - self.centre[self.axis]) - self.half_length
        return np.maximum(np.hypot(u, w) - self.radius, axial)


@dataclass(frozen=True)
class _BarLayer(_Painter):
    """Parallel bars along ``axis`` (0: x, 1: y) at ``offset + n * pitch`` across it."""

    axis: int = 0
    z_centre: float = 0.0
    radius: float = 0.0
    offset: float = 0.0
    pitch: float = 1.0
    n_bars: int = 1
    length: float = 0.0

    def signed_mm(self, x, y, z):
        t, a = (y, x) if self.axis == 0 else (x, y)
        n = np.clip(np.rint((t - self.offset) / self.pitch), 0, self.n_bars - 1)
        radial = np.hypot(t - self.offset - n * self.pitch, z - self.z_centre) - self.radius
        return np.maximum(radial, _slab(a, 0.0, self.length))


@dataclass(frozen=True)
class _DuctPainter(_Painter):
    """Sheath, fill and strand core of a duct; everything labelled duct."""

    axis: int = 0
    transverse: float = 0.0
    z_centre: float = 0.0
    radius: float = 0.0
    inner_radius: float = 0.0
    core_radius: float = 0.0
    length: float = 0.0
    fill: str = "grout"
    fill_level: float = 0.0

    def _rho_axial(self, x, y, z):
        t, a = (y, x) if self.axis == 0 else (x, y)
        return np.hypot(t - self.transverse, z - self.z_centre), _slab(a, 0.0, self.length)

    def signed_mm(self, x, y, z):
        rho, axial = self._rho_axial(x, y, z)
        return np.maximum(rho - self.radius, axial)

    def surface_mm(self, x, y, z):
        rho, axial = self._rho_axial(x, y, z)
        dist = np.minimum(np.abs(np.maximum(rho - self.radius, axial)), np.abs(rho - self.inner_radius))
        if self.core_radius > 0:
            dist = np.minimum(dist, np.abs(rho - self.core_radius))
        if self.fill == "partial":
            dist = np.minimum(dist, np.abs(z - self.fill_level))
        return dist

    def paint(self, x, y, z, material, label):
        rho, axial = self._rho_axial(x, y, z)
        inside = np.maximum(rho - self.radius, axial) <= 0
        np.copyto(material, self.material_id, where=inside)
        np.copyto(label, self.label, where=inside)
        core = inside & (rho <= self.inner_radius)
        if self.fill == "empty" or self.fill == "partial":
            np.copyto(material, _AIR, where=core)
        if self.fill != "empty":
            grouted = core & (z <= self.fill_level) if self.fill == "partial" else core
            np.copyto(material, _GROUT, where=grouted)
        if self.core_radius > 0:
            np.copyto(material, _STEEL, where=inside & (rho <= self.core_radius))


_AIR, _GROUT, _STEEL = material_id("air"), material_id("grout"), material_id("steel")


@dataclass(frozen=True)
class _Outside(_Painter):
    """The part of the grid beyond the block's top/far faces: air, label 0."""

    size: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def signed_mm(self, x, y, z):
        lx, ly, lz = self.size
        return np.maximum(np.maximum(x - lx, y - ly), z - lz)

    def paint(self, x, y, z, material, label):
        outside = self.signed_mm(x, y, z) > 0
        np.copyto(material, self.material_id, where=outside)
        np.copyto(label, self.label, where=outside)


def _grid_painters(grid: RebarGrid, size: Sequence[float]) -> list[_Painter]:
    r, o, p = grid.bar_diameter_mm / 2, grid.offset_mm, grid.pitch_mm
    out = []
    for axis, zc in _grid_layers(grid):
        t_axis = 1 - axis
        n_bars = max(1, int(math.floor((size[t_axis] - r - o) / p + 1e-9)) + 1)
        lo, hi = [0.0, 0.0, zc - r], [size[0], size[1], zc + r]
        lo[t_axis], hi[t_axis] = o - r, o + (n_bars - 1) * p + r
        mid = material_id(grid.material)
        out.append(_BarLayer(tuple(lo), tuple(hi), mid, LABEL_REBAR, axis, zc, r, o, p, n_bars, size[axis]))
    return out


def _duct_painter(duct: Duct, size: Sequence[float]) -> _Painter:
    axis = 0 if duct.direction == "x" else 1
    r, ri = duct.diameter_mm / 2, duct.inner_radius_mm
    lo, hi = [0.0, 0.0, duct.z_mm - r], [size[0], size[1], duct.z_mm + r]
    lo[1 - axis], hi[1 - axis] = duct.transverse_mm - r, duct.transverse_mm + r
    level = duct.z_mm - ri + 2 * ri * duct.fill_fraction if duct.fill == "partial" else 0.0
    return _DuctPainter(
        tuple(lo), tuple(hi), material_id(duct.sheath_material), LABEL_DUCT,
        axis, duct.transverse_mm, duct.z_mm, r, ri, duct.strand_radius_mm, size[axis], duct.fill, level,
    )  # fmt: skip


def _bounds(centre, half) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return tuple(c - h for c, h in zip(centre, half)), tuple(c + h for c, h in zip(centre, half))


def _void_painter(void: Void) -> _Painter:
    r = void.diameter_mm / 2
    lo, hi = _bounds(void.centre_mm, (r, r, r))
    return _Sphere(lo, hi, material_id(void.material), LABEL_VOID, void.centre_mm, r)


def _unknown_painter(obj: Unknown) -> _Painter:
    lo, hi = _bounds(obj.centre_mm, obj.half_extent_mm)
    mid = material_id(obj.material)
    if obj.shape == "sphere":
        return _Sphere(lo, hi, mid, LABEL_UNKNOWN, obj.centre_mm, obj.diameter_mm / 2)
    if obj.shape == "box":
        return _Box(lo, hi, mid, LABEL_UNKNOWN, obj.centre_mm, obj.half_extent_mm)
    axis = _AXES.index(obj.axis)
    return _Cylinder(lo, hi, mid, LABEL_UNKNOWN, axis, obj.centre_mm, obj.diameter_mm / 2, obj.length_mm / 2)


def _painters(block: Block) -> list[_Painter]:
    """Painters in paint order: rebar, ducts, unknowns, voids (later wins)."""
    out: list[_Painter] = []
    for grid in block.rebar_grids:
        out.extend(_grid_painters(grid, block.size_mm))
    out.extend(_duct_painter(d, block.size_mm) for d in block.ducts)
    out.extend(_unknown_painter(u) for u in block.unknowns)
    out.extend(_void_painter(v) for v in block.voids)
    return out


# --------------------------------------------------------------------------- rasterisation


@dataclass(frozen=True, eq=False)
class RasterisedBlock:
    """Voxel maps of a block, all ``(X, Y, Z)`` arrays with ``k = 0`` at the bottom face.

    Attributes:
        material_id: uint8 material ids (index in ``materials.MATERIAL_NAMES``).
        label: uint8 classes ``0 concrete, 1 rebar, 2 duct, 3 void, 4 unknown``.
        inv_x0_per_mm: float32 volume-averaged ``1/X0`` in 1/mm.
        stopping_power_mev_per_mm: float32 volume-averaged energy loss in MeV/mm.
        voxel_mm: cubic voxel edge in mm.
    """

    material_id: np.ndarray
    label: np.ndarray
    inv_x0_per_mm: np.ndarray
    stopping_power_mev_per_mm: np.ndarray
    voxel_mm: float


_CHUNK_SUBPOINTS = 1 << 18  # sub-points per refinement chunk: small temporaries stay in cache


def _divisors(n: int) -> list[int]:
    """All positive divisors of ``n >= 1``, ascending."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _dividing_voxels(size_mm: Sequence[float], voxel_mm: float) -> list[float]:
    """The voxels nearest ``voxel_mm`` (one below, one above) that divide every block dimension.

    Candidates are the divisors of the sizes' greatest common divisor on a micrometre grid;
    round ones (at most two decimals in mm) are preferred. Empty when the sizes are not on
    that grid.
    """
    microns = [round(s * 1000) for s in size_mm]
    if any(abs(m - s * 1000) > VOXEL_RTOL * s * 1000 for m, s in zip(microns, size_mm)):
        return []
    divisors = _divisors(math.gcd(*microns))
    pool = [d for d in divisors if d % 10 == 0] or divisors
    target = voxel_mm * 1000
    below, above = [d for d in pool if d < target], [d for d in pool if d > target]
    return [d / 1000 for d in ([max(below)] if below else []) + ([min(above)] if above else [])]


def _size_text(size_mm: Sequence[float]) -> str:
    return " x ".join(f"{s:g}" for s in size_mm)


def check_voxel_size(size_mm: Sequence[float], voxel_mm: float) -> float:
    """Check that a cubic voxel tiles the block exactly; return it as a float.

    Args:
        size_mm: block ``(x, y, thickness)`` in mm.
        voxel_mm: voxel edge in mm.

    Raises:
        ValueError: for a non-positive voxel, a voxel larger than the block's smallest
            dimension, or one that does not divide every dimension (relative tolerance
            ``VOXEL_RTOL``); the message names the block, the voxel and voxels that fit.
    """
    v = _positive(voxel_mm, "voxel_mm")
    block = f"block {_size_text(size_mm)} mm"
    if v > min(size_mm) * (1 + VOXEL_RTOL):
        raise ValueError(f"voxel {v:g} mm is larger than the block's smallest dimension {min(size_mm):g} mm "
                         f"({block}){_suggestion(size_mm, v)}")
    for s in size_mm:
        if abs(s - round(s / v) * v) > VOXEL_RTOL * s:
            raise ValueError(f"block size {s:g} mm is not a multiple of voxel {v:g} mm ({block})"
                             f"{_suggestion(size_mm, v)}")
    return v


def _suggestion(size_mm: Sequence[float], voxel_mm: float) -> str:
    fits = _dividing_voxels(size_mm, voxel_mm)
    return f"; try {' or '.join(f'{d:g}' for d in fits)} mm" if fits else ""


def grid_shape(block: Block, voxel_mm: float) -> tuple[int, int, int]:
    """Voxel grid shape ``size_mm / voxel_mm``: the voxel must tile the block (:func:`check_voxel_size`)."""
    v = check_voxel_size(block.size_mm, voxel_mm)
    return tuple(max(1, round(s / v)) for s in block.size_mm)  # type: ignore[return-value]


def _index_range(lo_mm: float, hi_mm: float, voxel_mm: float, n: int) -> slice:
    """Voxels whose extent can meet ``[lo_mm, hi_mm]``."""
    start = max(0, math.floor(lo_mm / voxel_mm))
    return slice(start, max(start, min(n, math.floor(hi_mm / voxel_mm) + 1)))


def _painter_slices(painter: _Painter, voxel_mm: float, shape: Sequence[int]) -> tuple[slice, slice, slice]:
    """Voxel index ranges that can meet the painter's bounding box."""
    return tuple(_index_range(lo, hi, voxel_mm, n) for lo, hi, n in zip(painter.lo_mm, painter.hi_mm, shape))


def _centres(sl: slice, voxel_mm: float, axis: int) -> np.ndarray:
    shape = [1, 1, 1]
    shape[axis] = sl.stop - sl.start
    return ((np.arange(sl.start, sl.stop) + 0.5) * voxel_mm).reshape(shape)


def _paint_centres(painter, slices, voxel_mm, material, label, mixed, reach_mm) -> None:
    """Paint voxel centres inside ``slices``; flag voxels a surface may cross as mixed."""
    if any(s.stop <= s.start for s in slices):
        return
    x, y, z = (_centres(s, voxel_mm, a) for a, s in enumerate(slices))
    painter.paint(x, y, z, material[slices], label[slices])
    mixed[slices] |= painter.surface_mm(x, y, z) <= reach_mm


def _outside_slices(size, shape, voxel_mm) -> list[tuple[slice, slice, slice]]:
    """Last voxel layer along each axis where the grid overhangs the block."""
    out = []
    for a in range(3):
        if shape[a] * voxel_mm > size[a] * (1 + 1e-12) + _TOL_MM:
            sl = [slice(0, n) for n in shape]
            sl[a] = slice(shape[a] - 1, shape[a])
            out.append(tuple(sl))
    return out


def _subpoint_offsets(voxel_mm: float, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    offsets = (np.arange(s) + 0.5) / s * voxel_mm
    return tuple(g.ravel() for g in np.meshgrid(offsets, offsets, offsets, indexing="ij"))  # type: ignore


def _paint_subpoints(painters, ranges, ijk, xyz, voxel_mm, reach_mm, material, label) -> None:
    """Apply painters to per-voxel sub-point rows (one row per voxel with voxel indices ``ijk``).

    A painter is skipped when its index ranges miss the chunk, and applied only to the rows
    whose voxel centre lies within ``reach_mm`` of it (no sub-point of the others can be inside).
    """
    extent = [(int(idx.min()), int(idx.max())) for idx in ijk]
    centres = tuple((idx + 0.5) * voxel_mm for idx in ijk)
    for painter, ranges_p in zip(painters, ranges):
        if any(r.stop <= lo or r.start > hi for r, (lo, hi) in zip(ranges_p, extent)):
            continue
        near = painter.signed_mm(*centres) <= reach_mm
        if near.all():
            painter.paint(*xyz, material, label)
        elif near.any():
            m, lab = material[near], label[near]
            painter.paint(*(c[near] for c in xyz), m, lab)
            material[near], label[near] = m, lab


def _vote(material: np.ndarray, label: np.ndarray, tables: np.ndarray):
    """Per-row label (plurality, priority ties), material (plurality within label) and means."""
    n_mat = len(MATERIAL_NAMES)
    code = label.astype(np.uint16) * np.uint16(n_mat) + material
    present = np.flatnonzero(np.bincount(code.ravel(), minlength=len(CLASS_NAMES) * n_mat))
    counts = np.stack([(code == c).sum(axis=1, dtype=np.int32) for c in present], axis=1)
    code_label, code_mat = np.divmod(present, n_mat)
    priority = np.asarray(LABEL_PRIORITY)
    per_label = counts @ (code_label[:, None] == priority[None, :]).astype(np.int32)
    win = priority[np.argmax(per_label, axis=1)]
    in_win = np.where(code_label[None, :] == win[:, None], counts, -1)
    mat = code_mat[np.argmax(in_win, axis=1)]  # ``present`` is sorted: ties go to the lowest id
    means = counts.astype(np.float64) @ tables[:, code_mat].T / material.shape[1]
    return win.astype(np.uint8), mat.astype(np.uint8), means


def _refine(block, painters, shape, voxel_mm, s, reach_mm, mixed, out) -> None:
    """Re-evaluate mixed voxels at ``s^3`` sub-points and overwrite ``out`` there.

    Mixed voxels are processed in chunks ordered by ``k`` (thin z-slabs), so painters thin in z
    (rebar layers) are skipped for most chunks.
    """
    material, label, inv_x0, stopping = out
    tables = np.stack([inverse_radiation_length_table_per_mm(), stopping_power_table_mev_per_mm()])
    ranges = [_painter_slices(p, voxel_mm, shape) for p in painters]
    outside = _Outside((0.0,) * 3, (0.0,) * 3, _AIR, LABEL_CONCRETE, block.size_mm)
    offsets = _subpoint_offsets(voxel_mm, s)
    k_all, i_all, j_all = np.nonzero(mixed.transpose(2, 0, 1))
    per_chunk = max(1, _CHUNK_SUBPOINTS // s**3)
    matrix = material_id(block.matrix)
    for start in range(0, k_all.size, per_chunk):
        ijk = tuple(a[start : start + per_chunk] for a in (i_all, j_all, k_all))
        xyz = tuple((idx * voxel_mm)[:, None] + o for idx, o in zip(ijk, offsets))
        sub_mat = np.full(xyz[0].shape, matrix, np.uint8)
        sub_lab = np.zeros(xyz[0].shape, np.uint8)
        _paint_subpoints(painters, ranges, ijk, xyz, voxel_mm, reach_mm, sub_mat, sub_lab)
        outside.paint(*xyz, sub_mat, sub_lab)
        lab, mat, means = _vote(sub_mat, sub_lab, tables)
        material[ijk], label[ijk], inv_x0[ijk], stopping[ijk] = mat, lab, means[:, 0], means[:, 1]


def _lookup(table: np.ndarray, material: np.ndarray) -> np.ndarray:
    """``table[material]`` as float32, gathered one x-slice at a time (bounded index temporaries)."""
    table32 = np.asarray(table, np.float32)
    out = np.empty(material.shape, np.float32)
    for i in range(material.shape[0]):
        out[i] = table32[material[i]]
    return out


def rasterise(block: Block, voxel_mm: float, supersample: int = 3) -> RasterisedBlock:
    """Voxelise a block into material, label and scattering maps.

    Args:
        block: the geometry.
        voxel_mm: cubic voxel edge in mm; it must divide every block dimension (the grid is
            :func:`grid_shape`).
        supersample: sub-points per voxel edge ``s`` (``s^3`` per voxel); 1 samples centres only.

    Returns:
        :class:`RasterisedBlock` with ``(X, Y, Z)`` arrays, ``k = 0`` at the bottom face.

    Raises:
        ValueError: for a non-positive voxel size or supersample, or a voxel that does not
            divide the block (:func:`check_voxel_size`).
    """
    v = _positive(voxel_mm, "voxel_mm")
    if isinstance(supersample, bool) or not isinstance(supersample, numbers.Integral) or supersample < 1:
        raise ValueError(f"supersample must be an integer >= 1, got {supersample!r}")
    s = int(supersample)
    shape = grid_shape(block, v)
    material = np.full(shape, material_id(block.matrix), np.uint8)
    label = np.zeros(shape, np.uint8)
    mixed = np.zeros(shape, bool)
    # Largest distance from a voxel centre to one of its sub-points, plus float slack.
    reach_mm = v * (s - 1) / (2 * s) * math.sqrt(3) * (1 + 1e-6) + 1e-9 * max(1.0, v)
    painters = _painters(block)
    for p in painters:
        _paint_centres(p, _painter_slices(p, v, shape), v, material, label, mixed, reach_mm)
    outside = _Outside((0.0,) * 3, (0.0,) * 3, _AIR, LABEL_CONCRETE, block.size_mm)
    for slices in _outside_slices(block.size_mm, shape, v):
        _paint_centres(outside, slices, v, material, label, mixed, reach_mm)
    inv_x0 = _lookup(inverse_radiation_length_table_per_mm(), material)
    stopping = _lookup(stopping_power_table_mev_per_mm(), material)
    if s > 1:
        _refine(block, painters, shape, v, s, reach_mm, mixed, (material, label, inv_x0, stopping))
    return RasterisedBlock(material, label, inv_x0, stopping, v)


