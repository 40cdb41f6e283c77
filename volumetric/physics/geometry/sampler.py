"""The random block sampler: the reference work's distribution of rebar grids, ducts, voids and unknowns."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from volumetric.physics.geometry.objects import (
    _AXES,
    _DUCT_DIRECTIONS,
    _FILLS,
    _GRID_DIRECTIONS,
    _SHAPES,
    REFERENCE_SIZE_MM,
    STRAND_AREA_MM2,
    Block,
    Duct,
    RebarGrid,
    Unknown,
    Void,
    _check_inside,
    _triple,
)
from volumetric.physics.geometry.rasterise import _duct_painter, _grid_painters, _Painter, _unknown_painter, _void_painter
from volumetric.physics.materials import MATERIAL_NAMES


# --------------------------------------------------------------------------- sampler
# The distribution and the overlap policy are described in ``sample_block``'s docstring.

_BAR_DIAMETERS_MM = (8.0, 10.0, 12.0, 16.0, 20.0, 25.0, 32.0)
_MAX_TRIES = 100


@dataclass(frozen=True)
class _Scale:
    size: tuple[float, float, float]
    scale: float
    pitch_scale: float

    @property
    def cover(self) -> float:
        return 10.0 * self.scale

    @property
    def gap(self) -> float:
        return 5.0 * self.scale


def _r1(value: float) -> float:
    """Round a sampled length to 0.1 mm (readable JSON)."""
    return round(float(value), 1)


def _centre_in(rng: np.random.Generator, sc: _Scale, axis: int, half: float) -> float:
    return _r1(rng.uniform(sc.cover + half, sc.size[axis] - sc.cover - half))


def _place(rng, draw: Callable, accept: Callable, size) -> Any:
    """First of up to ``_MAX_TRIES`` draws that is valid, inside the block and accepted."""
    for _ in range(_MAX_TRIES):
        try:
            candidate = draw(rng)
            _check_inside(candidate, size, "candidate")
        except ValueError:
            continue
        if accept(candidate):
            return candidate
    return None


def _draw_grid(rng: np.random.Generator, sc: _Scale) -> RebarGrid:
    d = _r1(rng.choice(_BAR_DIAMETERS_MM) * sc.scale)
    direction = str(rng.choice(_GRID_DIRECTIONS, p=(0.25, 0.25, 0.5)))
    pitch = _r1(max(rng.uniform(100.0, 300.0) * sc.pitch_scale, 2.5 * d))
    offset = _r1(d / 2 + rng.uniform(0.0, pitch))
    e = d if direction == "both" else d / 2
    z = _r1(rng.uniform(sc.cover + e, sc.size[2] - sc.cover - e))
    return RebarGrid(z_mm=z, bar_diameter_mm=d, pitch_mm=pitch, offset_mm=offset, direction=direction)


def _draw_duct(rng: np.random.Generator, sc: _Scale) -> Duct:
    direction = str(rng.choice(_DUCT_DIRECTIONS))
    d = _r1(rng.uniform(40.0, 110.0) * sc.scale)
    sheath = _r1(rng.uniform(2.0, 3.0) * sc.scale)
    fill = str(rng.choice(_FILLS, p=(0.4, 0.3, 0.15, 0.15)))
    fraction = round(float(rng.uniform(0.2, 0.8)), 2) if fill == "partial" else None
    inner_area = math.pi * (d / 2 - sheath) ** 2
    strands = max(1, int(rng.uniform(0.2, 0.4) * inner_area / STRAND_AREA_MM2)) if fill == "strands" else None
    t_axis = 1 if direction == "x" else 0
    return Duct(
        direction=direction,
        transverse_mm=_centre_in(rng, sc, t_axis, d / 2),
        z_mm=_centre_in(rng, sc, 2, d / 2),
        diameter_mm=d,
        sheath_mm=sheath,
        sheath_material=str(rng.choice(("steel", "hdpe"))),
        fill=fill,
        fill_fraction=fraction,
        strand_count=strands,
    )


def _draw_void(rng: np.random.Generator, sc: _Scale) -> Void:
    d = _r1(rng.uniform(10.0, 100.0) * sc.scale)
    return Void(centre_mm=tuple(_centre_in(rng, sc, a, d / 2) for a in range(3)), diameter_mm=d)


def _draw_unknown(rng: np.random.Generator, sc: _Scale, matrix: str) -> Unknown:
    shape = str(rng.choice(_SHAPES))
    material = str(rng.choice([m for m in MATERIAL_NAMES if m != matrix]))

    def length() -> float:
        return _r1(rng.uniform(20.0, 150.0) * sc.scale)

    if shape == "sphere":
        kwargs: dict[str, Any] = {"diameter_mm": length()}
    elif shape == "box":
        kwargs = {"size_mm": (length(), length(), length())}
    else:
        kwargs = {"axis": str(rng.choice(_AXES)), "diameter_mm": length(), "length_mm": length()}
    probe = Unknown(shape=shape, centre_mm=(0.0, 0.0, 0.0), material=material, **kwargs)
    centre = tuple(_centre_in(rng, sc, a, h) for a, h in enumerate(probe.half_extent_mm))
    return Unknown(shape=shape, centre_mm=centre, material=material, **kwargs)


def _covering_spheres(obj: Unknown) -> tuple[np.ndarray, np.ndarray]:
    """Sphere centres ``(n, 3)`` and radii ``(n,)`` whose union contains the object."""
    c = np.asarray(obj.centre_mm)
    if obj.shape == "sphere":
        return c[None, :], np.array([obj.diameter_mm / 2])
    half = np.asarray(obj.half_extent_mm)
    if obj.shape == "cylinder":
        cell = np.full(3, 2 * half.max())
        cell[_AXES.index(obj.axis)] = obj.diameter_mm / 2
    else:
        cell = np.full(3, 2 * half.min())
    n = np.maximum(1, np.ceil(2 * half / cell - 1e-9)).astype(int)
    step = 2 * half / n
    axes = [c[a] - half[a] + (np.arange(n[a]) + 0.5) * step[a] for a in range(3)]
    centres = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)
    if obj.shape == "cylinder":
        a = _AXES.index(obj.axis)
        radius = math.hypot(obj.diameter_mm / 2, step[a] / 2)
    else:
        radius = 0.5 * float(np.linalg.norm(step))
    return centres, np.full(len(centres), radius)


def _clear_of(painters: Sequence[_Painter], centres: np.ndarray, radii: np.ndarray, gap: float) -> bool:
    """True if every sphere keeps ``gap`` clear of every painter's envelope."""
    for p in painters:
        if np.any(p.signed_mm(centres[:, 0], centres[:, 1], centres[:, 2]) < radii + gap):
            return False
    return True


def _grids_apart(grid: RebarGrid, others: Sequence[RebarGrid], gap: float) -> bool:
    e = grid.half_thickness_mm
    return all(abs(grid.z_mm - o.z_mm) >= e + o.half_thickness_mm + gap for o in others)


def _ducts_apart(duct: Duct, others: Sequence[Duct], gap: float) -> bool:
    for o in others:
        reach = (duct.diameter_mm + o.diameter_mm) / 2 + gap
        dz = duct.z_mm - o.z_mm
        dt = duct.transverse_mm - o.transverse_mm if duct.direction == o.direction else 0.0
        if math.hypot(dt, dz) < reach:
            return False
    return True


def _sample_grids(rng, sc: _Scale, count: int) -> list[RebarGrid]:
    grids: list[RebarGrid] = []
    for _ in range(count):
        grid = _place(rng, lambda g: _draw_grid(g, sc), lambda c: _grids_apart(c, grids, sc.gap), sc.size)
        if grid is not None:
            grids.append(grid)
    return grids


def _sample_ducts(rng, sc: _Scale, count: int) -> list[Duct]:
    ducts: list[Duct] = []
    for _ in range(count):
        duct = _place(rng, lambda g: _draw_duct(g, sc), lambda c: _ducts_apart(c, ducts, sc.gap), sc.size)
        if duct is not None:
            ducts.append(duct)
    return ducts


def _sample_solids(rng, sc: _Scale, count: int, draw: Callable, to_painter: Callable, placed: list) -> list:
    """Place voids or unknowns clear of the painters in ``placed`` (extended in place)."""
    out = []

    def accept(candidate) -> bool:
        if isinstance(candidate, Void):
            centres, radii = np.asarray([candidate.centre_mm]), np.array([candidate.diameter_mm / 2])
        else:
            centres, radii = _covering_spheres(candidate)
        return _clear_of(placed, centres, radii, sc.gap)

    for _ in range(count):
        obj = _place(rng, draw, accept, sc.size)
        if obj is not None:
            out.append(obj)
            placed.append(to_painter(obj))
    return out


def sample_block(rng: np.random.Generator, size_mm: Sequence[float] = REFERENCE_SIZE_MM) -> Block:
    """Draw a random block from the reference distribution.

    Counts are uniform: 1-4 rebar grids, 0-3 ducts, 0-3 voids, 0-2 unknowns. For the reference
    1000 x 1000 x 200 mm block: bars of 8, 10, 12, 16, 20, 25 or 32 mm, direction x / y / mesh
    with probability 1/4, 1/4, 1/2, pitch U(100, 300) mm; ducts along x or y, diameter
    U(40, 110) mm, sheath U(2, 3) mm of steel or HDPE, fill grout / strands / empty / partial
    with probability 0.4 / 0.3 / 0.15 / 0.15 (strands fill 20-40 % of the inner area; partial
    fill fraction U(0.2, 0.8)); air voids of diameter U(10, 100) mm; unknowns (sphere, box or
    cylinder along x, y or z) with each size U(20, 150) mm, of any table material but concrete.
    Positions are uniform with 10 mm cover to the faces; lengths are rounded to 0.1 mm.

    Smaller blocks: every size, the cover and the clearance are multiplied by
    ``scale = min(1, thickness / 200 mm, min(size_x, size_y) / 400 mm)`` and pitches by
    ``min(1, min(size_x, size_y) / 1000 mm)`` (never below 2.5 bar diameters), so every object
    fits (a 200 x 200 x 100 mm block gets half-size objects).

    Overlap policy, by rejection sampling (up to 100 draws per object, then the object is
    dropped, so a crowded block may hold fewer objects than drawn): rebar grids at distinct
    depths (vertical extents at least a clearance of 5 mm apart); ducts clear of each other
    (parallel ones by distance in the cross-section, crossing ones by height); voids clear of
    rebar bars, ducts and other voids; unknowns clear of everything, tested on a set of spheres
    that covers the shape. Ducts may cross rebar layers (the duct wins in the maps, as if the
    bars were bent round it).

    Args:
        rng: numpy random generator; the same generator state gives the same block.
        size_mm: block ``(x, y, thickness)`` in mm.

    Returns:
        A validated :class:`Block`.

    Raises:
        TypeError: if ``rng`` is not a ``numpy.random.Generator``.
        ValueError: for a bad ``size_mm``.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    size = _triple(size_mm, "size_mm", positive=True)
    lateral = min(size[0], size[1])
    sc = _Scale(size, min(1.0, size[2] / 200.0, lateral / 400.0), min(1.0, lateral / 1000.0))
    n_grids, n_ducts, n_voids, n_unknowns = (int(n) for n in rng.integers((1, 0, 0, 0), (5, 4, 4, 3)))
    grids = _sample_grids(rng, sc, n_grids)
    ducts = _sample_ducts(rng, sc, n_ducts)
    placed = [p for g in grids for p in _grid_painters(g, size)] + [_duct_painter(d, size) for d in ducts]
    voids = _sample_solids(rng, sc, n_voids, lambda g: _draw_void(g, sc), _void_painter, placed)
    unknowns = _sample_solids(
        rng, sc, n_unknowns, lambda g: _draw_unknown(g, sc, "concrete"), _unknown_painter, placed
    )
    return Block(size_mm=size, rebar_grids=grids, ducts=ducts, voids=voids, unknowns=unknowns)
