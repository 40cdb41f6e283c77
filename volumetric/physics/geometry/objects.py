"""Block descriptions: the objects (rebar grids, ducts, voids, unknowns), the block, and their checks.

See the package docstring (:mod:`volumetric.physics.geometry`) for the conventions.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any

import numpy as np

from volumetric.physics.materials import MATERIAL_NAMES

FORMAT = "volumetric-geometry/1"
UNITS = "mm"
LABEL_CONCRETE, LABEL_REBAR, LABEL_DUCT, LABEL_VOID, LABEL_UNKNOWN = range(5)
#: Classes from highest to lowest priority (painting order reversed; tie-break of the label vote).
LABEL_PRIORITY: tuple[int, ...] = (LABEL_VOID, LABEL_UNKNOWN, LABEL_DUCT, LABEL_REBAR, LABEL_CONCRETE)
#: Steel area of one 15.2 mm (0.6") seven-wire prestressing strand, mm^2.
STRAND_AREA_MM2 = 140.0
#: The reference block (x, y, thickness) in mm.
REFERENCE_SIZE_MM: tuple[float, float, float] = (1000.0, 1000.0, 200.0)

_AXES = ("x", "y", "z")
_GRID_DIRECTIONS = ("x", "y", "both")
_DUCT_DIRECTIONS = ("x", "y")
_FILLS = ("grout", "strands", "empty", "partial")
_SHAPES = ("sphere", "box", "cylinder")
_TOL_MM = 1e-9
#: Relative tolerance of "the voxel divides the block size" (:func:`check_voxel_size`).
VOXEL_RTOL = 1e-6


# --------------------------------------------------------------------------- field checks


def _number(value: Any, name: str) -> float:
    """Return ``value`` as a finite float, or raise ``ValueError`` naming the field."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {result!r}")
    return result


def _positive(value: Any, name: str) -> float:
    result = _number(value, name)
    if result <= 0:
        raise ValueError(f"{name} must be > 0, got {result!r}")
    return result


def _triple(value: Any, name: str, positive: bool = False) -> tuple[float, float, float]:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ValueError(f"{name} must be a list of 3 numbers, got {value!r}")
    check = _positive if positive else _number
    return tuple(check(v, f"{name}[{i}]") for i, v in enumerate(value))  # type: ignore[return-value]


def _choice(value: Any, name: str, options: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return value


def _material(value: Any, name: str) -> str:
    if not isinstance(value, str) or value not in MATERIAL_NAMES:
        raise ValueError(f"{name} must be a material name ({', '.join(MATERIAL_NAMES)}), got {value!r}")
    return value


def _require_none(value: Any, name: str, reason: str) -> None:
    if value is not None:
        raise ValueError(f"{name} must be null {reason}, got {value!r}")


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


# --------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class RebarGrid:
    """A layer (or mesh) of steel bars in a horizontal plane.

    Attributes:
        z_mm: height of the grid centre above the bottom face.
        bar_diameter_mm: bar diameter ``d``.
        pitch_mm: centre-to-centre bar spacing; must exceed ``d``.
        offset_mm: transverse position of the first bar's centre (y for bars along x, x for
            bars along y); must be at least ``d/2``.
        direction: ``"x"`` (bars along x), ``"y"`` (bars along y) or ``"both"`` (a mesh: x bars
            centred at ``z_mm + d/2`` on top of y bars at ``z_mm - d/2``).
        material: bar material name.
    """

    z_mm: float
    bar_diameter_mm: float
    pitch_mm: float
    offset_mm: float
    direction: str = "both"
    material: str = "steel"

    def __post_init__(self) -> None:
        _set(self, "z_mm", _number(self.z_mm, "z_mm"))
        _set(self, "bar_diameter_mm", _positive(self.bar_diameter_mm, "bar_diameter_mm"))
        _set(self, "pitch_mm", _positive(self.pitch_mm, "pitch_mm"))
        _set(self, "offset_mm", _number(self.offset_mm, "offset_mm"))
        _choice(self.direction, "direction", _GRID_DIRECTIONS)
        _material(self.material, "material")
        if self.pitch_mm <= self.bar_diameter_mm:
            raise ValueError(
                f"pitch_mm must be > bar_diameter_mm ({self.bar_diameter_mm!r}) so bars do not touch, "
                f"got {self.pitch_mm!r}"
            )
        if self.offset_mm < self.bar_diameter_mm / 2:
            raise ValueError(
                f"offset_mm must be >= the bar radius ({self.bar_diameter_mm / 2!r}) so the first bar "
                f"lies inside the block, got {self.offset_mm!r}"
            )

    @property
    def half_thickness_mm(self) -> float:
        """Half the vertical extent: ``d`` for a mesh, ``d/2`` for a single layer."""
        d = self.bar_diameter_mm
        return d if self.direction == "both" else d / 2


@dataclass(frozen=True)
class Duct:
    """A tendon duct running the whole block length along x or y.

    Attributes:
        direction: ``"x"`` or ``"y"``, the duct axis.
        transverse_mm: centre coordinate across the axis (y for a duct along x, x for one along y).
        z_mm: centre height above the bottom face.
        diameter_mm: outer diameter, sheath included.
        sheath_mm: sheath wall thickness (0 for no sheath); less than the radius.
        sheath_material: sheath material name (``"steel"`` or ``"hdpe"`` in practice).
        fill: ``"grout"``, ``"strands"``, ``"empty"`` or ``"partial"``.
        fill_fraction: for ``"partial"`` only (null otherwise): grouted fraction of the inner
            height, from the bottom, in ``(0, 1)``.
        strand_count: for ``"strands"`` only (null otherwise): number of 140 mm^2 strands,
            modelled as one central steel cylinder of area ``strand_count * 140 mm^2``.
    """

    direction: str
    transverse_mm: float
    z_mm: float
    diameter_mm: float
    sheath_mm: float = 2.5
    sheath_material: str = "hdpe"
    fill: str = "grout"
    fill_fraction: float | None = None
    strand_count: int | None = None

    def __post_init__(self) -> None:
        _choice(self.direction, "direction", _DUCT_DIRECTIONS)
        _set(self, "transverse_mm", _number(self.transverse_mm, "transverse_mm"))
        _set(self, "z_mm", _number(self.z_mm, "z_mm"))
        _set(self, "diameter_mm", _positive(self.diameter_mm, "diameter_mm"))
        _set(self, "sheath_mm", _number(self.sheath_mm, "sheath_mm"))
        if not 0 <= self.sheath_mm < self.diameter_mm / 2:
            raise ValueError(
                f"sheath_mm must be >= 0 and < the radius ({self.diameter_mm / 2!r}), got {self.sheath_mm!r}"
            )
        _material(self.sheath_material, "sheath_material")
        _choice(self.fill, "fill", _FILLS)
        self._check_fill_fraction()
        self._check_strands()

    def _check_fill_fraction(self) -> None:
        if self.fill != "partial":
            _require_none(self.fill_fraction, "fill_fraction", f"for fill {self.fill!r}")
            return
        if self.fill_fraction is None:
            raise ValueError("fill_fraction is required for fill 'partial'")
        fraction = _number(self.fill_fraction, "fill_fraction")
        if not 0 < fraction < 1:
            raise ValueError(f"fill_fraction must be in (0, 1), got {fraction!r}")
        _set(self, "fill_fraction", fraction)

    def _check_strands(self) -> None:
        if self.fill != "strands":
            _require_none(self.strand_count, "strand_count", f"for fill {self.fill!r}")
            return
        count = self.strand_count
        if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 1:
            raise ValueError(f"strand_count must be an integer >= 1 for fill 'strands', got {count!r}")
        _set(self, "strand_count", int(count))
        if self.strand_radius_mm >= self.inner_radius_mm:
            raise ValueError(
                f"strand_count: {count} strands (bundle diameter {2 * self.strand_radius_mm:.1f} mm) do not "
                f"fit inside the duct (inner diameter {2 * self.inner_radius_mm:g} mm)"
            )

    @property
    def inner_radius_mm(self) -> float:
        """Radius inside the sheath."""
        return self.diameter_mm / 2 - self.sheath_mm

    @property
    def strand_radius_mm(self) -> float:
        """Radius of the equivalent steel core (0 unless the fill is ``"strands"``)."""
        if self.fill != "strands":
            return 0.0
        return math.sqrt(self.strand_count * STRAND_AREA_MM2 / math.pi)


@dataclass(frozen=True)
class Void:
    """A spherical void.

    Attributes:
        centre_mm: ``(x, y, z)`` centre.
        diameter_mm: sphere diameter.
        material: fill material name (air by default).
    """

    centre_mm: tuple[float, float, float]
    diameter_mm: float
    material: str = "air"

    def __post_init__(self) -> None:
        _set(self, "centre_mm", _triple(self.centre_mm, "centre_mm"))
        _set(self, "diameter_mm", _positive(self.diameter_mm, "diameter_mm"))
        _material(self.material, "material")


@dataclass(frozen=True)
class Unknown:
    """A foreign object of random shape and material.

    Attributes:
        shape: ``"sphere"`` (needs ``diameter_mm``), ``"box"`` (axis aligned, needs ``size_mm``)
            or ``"cylinder"`` (needs ``axis``, ``diameter_mm`` and ``length_mm``). Fields a shape
            does not use must be null.
        centre_mm: ``(x, y, z)`` centre.
        material: material name.
        diameter_mm: sphere or cylinder diameter.
        size_mm: box edge lengths ``(x, y, z)``.
        length_mm: cylinder length along its axis.
        axis: cylinder axis, ``"x"``, ``"y"`` or ``"z"``.
    """

    shape: str
    centre_mm: tuple[float, float, float]
    material: str
    diameter_mm: float | None = None
    size_mm: tuple[float, float, float] | None = None
    length_mm: float | None = None
    axis: str | None = None

    def __post_init__(self) -> None:
        _choice(self.shape, "shape", _SHAPES)
        _set(self, "centre_mm", _triple(self.centre_mm, "centre_mm"))
        _material(self.material, "material")
        uses = {"sphere": {"diameter_mm"}, "box": {"size_mm"}, "cylinder": {"diameter_mm", "length_mm", "axis"}}
        used = uses[self.shape]
        for name in ("diameter_mm", "size_mm", "length_mm", "axis"):
            value = getattr(self, name)
            if name not in used:
                _require_none(value, name, f"for shape {self.shape!r}")
            elif value is None:
                raise ValueError(f"{name} is required for shape {self.shape!r}")
        if "diameter_mm" in used:
            _set(self, "diameter_mm", _positive(self.diameter_mm, "diameter_mm"))
        if "length_mm" in used:
            _set(self, "length_mm", _positive(self.length_mm, "length_mm"))
            _choice(self.axis, "axis", _AXES)
        if self.size_mm is not None:
            _set(self, "size_mm", _triple(self.size_mm, "size_mm", positive=True))

    @property
    def half_extent_mm(self) -> tuple[float, float, float]:
        """Half the bounding-box size along x, y, z."""
        if self.shape == "box":
            return tuple(s / 2 for s in self.size_mm)  # type: ignore[return-value]
        r = self.diameter_mm / 2
        if self.shape == "sphere":
            return (r, r, r)
        return tuple(self.length_mm / 2 if a == self.axis else r for a in _AXES)  # type: ignore[return-value]


# --------------------------------------------------------------------------- block


def _check_span(path: str, what: str, axis: str, lo: float, hi: float, size: float) -> None:
    tol = _TOL_MM * max(1.0, size)
    if lo < -tol or hi > size + tol:
        raise ValueError(f"{path}: {what} ({axis} {lo:g}..{hi:g} mm) extends outside the block (0..{size:g} mm)")


def _grid_layers(grid: RebarGrid) -> list[tuple[int, float]]:
    """``(axis, z_centre_mm)`` of each bar layer of a grid (axis 0: bars along x)."""
    d = grid.bar_diameter_mm
    if grid.direction == "x":
        return [(0, grid.z_mm)]
    if grid.direction == "y":
        return [(1, grid.z_mm)]
    return [(0, grid.z_mm + d / 2), (1, grid.z_mm - d / 2)]


def _check_grid_inside(grid: RebarGrid, size: Sequence[float], path: str) -> None:
    e, r = grid.half_thickness_mm, grid.bar_diameter_mm / 2
    _check_span(f"{path}.z_mm", "rebar grid", "z", grid.z_mm - e, grid.z_mm + e, size[2])
    for axis, _ in _grid_layers(grid):
        t_axis = 1 - axis
        o = grid.offset_mm
        _check_span(f"{path}.offset_mm", "first bar", _AXES[t_axis], o - r, o + r, size[t_axis])


def _check_duct_inside(duct: Duct, size: Sequence[float], path: str) -> None:
    r = duct.diameter_mm / 2
    t_axis = 1 if duct.direction == "x" else 0
    t = duct.transverse_mm
    _check_span(f"{path}.transverse_mm", "duct", _AXES[t_axis], t - r, t + r, size[t_axis])
    _check_span(f"{path}.z_mm", "duct", "z", duct.z_mm - r, duct.z_mm + r, size[2])


def _check_box_inside(centre, half, size, path: str, what: str) -> None:
    for a in range(3):
        _check_span(path, what, _AXES[a], centre[a] - half[a], centre[a] + half[a], size[a])


def _check_inside(obj: object, size: Sequence[float], path: str) -> None:
    """Raise ``ValueError`` (message starting with ``path``) if ``obj`` pokes out of the block."""
    if isinstance(obj, RebarGrid):
        _check_grid_inside(obj, size, path)
    elif isinstance(obj, Duct):
        _check_duct_inside(obj, size, path)
    elif isinstance(obj, Void):
        r = obj.diameter_mm / 2
        _check_box_inside(obj.centre_mm, (r, r, r), size, f"{path}.centre_mm", "void")
    else:
        _check_box_inside(obj.centre_mm, obj.half_extent_mm, size, f"{path}.centre_mm", f"unknown {obj.shape}")


_LIST_TYPES: dict[str, type] = {"rebar_grids": RebarGrid, "ducts": Duct, "voids": Void, "unknowns": Unknown}


@dataclass(frozen=True)
class Block:
    """A concrete block and everything inside it (see the module docstring for conventions).

    Attributes:
        size_mm: ``(x, y, thickness)`` in mm.
        matrix: bulk material name.
        rebar_grids: rebar layers / meshes.
        ducts: tendon ducts.
        voids: spherical voids.
        unknowns: foreign objects.
        description: free text, kept in the JSON file and otherwise ignored.
    """

    size_mm: tuple[float, float, float] = REFERENCE_SIZE_MM
    matrix: str = "concrete"
    rebar_grids: tuple[RebarGrid, ...] = ()
    ducts: tuple[Duct, ...] = ()
    voids: tuple[Void, ...] = ()
    unknowns: tuple[Unknown, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        _set(self, "size_mm", _triple(self.size_mm, "size_mm", positive=True))
        _material(self.matrix, "matrix")
        if not isinstance(self.description, str):
            raise ValueError(f"description must be a string, got {self.description!r}")
        for name, kind in _LIST_TYPES.items():
            items = tuple(getattr(self, name))
            for i, item in enumerate(items):
                if not isinstance(item, kind):
                    raise TypeError(f"{name}[{i}] must be a {kind.__name__}, got {type(item).__name__}")
                _check_inside(item, self.size_mm, f"{name}[{i}]")
            _set(self, name, items)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (``format``, ``units`` and every field; tuples become lists)."""
        out: dict[str, Any] = {"format": FORMAT, "units": UNITS, "description": self.description}
        out["size_mm"] = list(self.size_mm)
        out["matrix"] = self.matrix
        for name in _LIST_TYPES:
            out[name] = [_object_to_dict(item) for item in getattr(self, name)]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Block:
        """Build and validate a block from :meth:`to_dict` output (or hand-written JSON).

        ``format``, ``units`` and ``size_mm`` are required; other fields take their defaults.

        Raises:
            ValueError: naming the offending field path (``voids[1].diameter_mm ...``), for
                unknown or missing keys, a wrong ``format``/``units``, or invalid values.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"geometry must be a JSON object, got {type(data).__name__}")
        for key, expected in (("format", FORMAT), ("units", UNITS)):
            if key not in data:
                raise ValueError(f"{key}: missing required key (expected {expected!r})")
            if data[key] != expected:
                raise ValueError(f"{key} must be {expected!r}, got {data[key]!r}")
        _check_keys(data, {"format", "units"} | {f.name for f in fields(cls)}, {"size_mm"}, "")
        kwargs = {k: v for k, v in data.items() if k not in ("format", "units") and k not in _LIST_TYPES}
        for name, kind in _LIST_TYPES.items():
            items = data.get(name, [])
            if not isinstance(items, list):
                raise ValueError(f"{name} must be a list, got {type(items).__name__}")
            kwargs[name] = tuple(_object_from_dict(kind, item, f"{name}[{i}]") for i, item in enumerate(items))
        return cls(**kwargs)


def _object_to_dict(obj: object) -> dict[str, Any]:
    out = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _check_keys(data: Mapping[str, Any], allowed: set[str], required: set[str], path: str) -> None:
    where = f"{path}: " if path else ""
    for key in data:
        if key not in allowed:
            raise ValueError(f"{where}unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(data))
    if missing:
        raise ValueError(f"{path + '.' if path else ''}{missing[0]}: missing required key")


def _object_from_dict(kind: type, data: Any, path: str) -> Any:
    if not isinstance(data, Mapping):
        raise ValueError(f"{path} must be a JSON object, got {type(data).__name__}")
    allowed = {f.name for f in fields(kind)}
    required = {f.name for f in fields(kind) if f.default is MISSING}
    _check_keys(data, allowed, required, path)
    try:
        return kind(**data)
    except ValueError as err:
        raise ValueError(f"{path}.{err}") from None
