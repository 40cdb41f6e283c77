"""Block geometry: typed description, JSON files, random sampler and rasterisation.

Coordinates (block frame, mm): origin at the block's bottom corner; ``x, y`` horizontal in
``[0, size_x] x [0, size_y]``; ``z`` vertical, pointing UP, in ``[0, thickness]`` (``z = 0`` is
the bottom face, ``z = thickness`` the top face; muons travel towards ``-z``). A *depth* is
measured down from the top face: ``z = thickness - depth``.

Objects (all frozen dataclasses, validated on construction):
    * :class:`RebarGrid`: a layer of parallel bars (``direction`` ``"x"``: bars run along x and
      are spaced in y; ``"y"``: the other way) or a mesh (``"both"``). In a mesh the bars along
      x lie on top of the bars along y, touching them: x bars centred at ``z_mm + d/2``, y bars at
      ``z_mm - d/2``, so the mesh occupies ``z_mm - d .. z_mm + d``. A single layer occupies
      ``z_mm - d/2 .. z_mm + d/2``. Bars sit at ``offset_mm + n * pitch_mm`` (n = 0, 1, ...) as
      long as they fit in the block, and run its whole length.
    * :class:`Duct`: a tendon duct along x or y running the whole block length: an outer sheath
      (``sheath_mm`` thick) around a fill: ``"grout"``; ``"strands"`` (grout plus
      ``strand_count`` 15.2 mm, 140 mm^2 strands, modelled as one central steel cylinder of the
      same total steel area); ``"empty"`` (air); ``"partial"`` (grout up to ``fill_fraction`` of
      the inner height, air above).
    * :class:`Void`: a sphere of air (or another material).
    * :class:`Unknown`: a sphere, axis-aligned box or cylinder (axis x, y or z) of any material.

Overlaps are allowed in a :class:`Block` and resolved by painting in priority order: matrix,
then rebar, ducts, unknowns, voids (later in that list wins; within a kind, later objects in
the list win). The label follows the painted object: ``0 concrete, 1 rebar, 2 duct, 3 void,
4 unknown`` (a duct's sheath, fill and strands are all labelled duct).

Files (:func:`save_geometry`, :func:`load_geometry`): JSON with ``"format":
"volumetric-geometry/1"``, ``"units": "mm"``, a free-text ``"description"`` and the fields of
:class:`Block`; unknown keys are errors and every error names the field path.

Rasterisation (:func:`rasterise`): the voxel must divide every block dimension (relative
tolerance ``VOXEL_RTOL``, else ``ValueError`` naming voxels that do); the grid has
``size / voxel_mm`` voxels per axis,
voxel ``(i, j, k)`` covering ``[i v, (i+1) v) x [j v, (j+1) v) x [k v, (k+1) v)``, index
``k = 0`` at the bottom. Each voxel is evaluated at ``s^3`` sub-points (the centres of an
``s x s x s`` sub-grid; a point on a surface counts as inside). The voxel's label is the class
found at the most sub-points (ties go to the higher-priority class: void > unknown > duct >
rebar > concrete); its material id is the most common material among the sub-points of that
class (ties: lowest id); the scattering maps are sub-point means of ``1/X0`` and of the
stopping power (the volume-fraction mixture rule).
Where the grid overhangs the block (by float rounding, within the tolerance) the overhang is air
with label 0. Only voxels that a surface can cross are sub-sampled; all others take the value at
their centre, which gives exactly the full ``s^3`` evaluation at a fraction of its cost.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from volumetric.schema import CLASS_NAMES  # the one class table
from volumetric.physics.materials import (
    MATERIAL_NAMES,
    inverse_radiation_length_table_per_mm,
    material_id,
    stopping_power_table_mev_per_mm,
)

__all__ = [
    "FORMAT",
    "CLASS_NAMES",
    "LABEL_CONCRETE",
    "LABEL_REBAR",
    "LABEL_DUCT",
    "LABEL_VOID",
    "LABEL_UNKNOWN",
    "LABEL_PRIORITY",
    "STRAND_AREA_MM2",
    "REFERENCE_SIZE_MM",
    "RebarGrid",
    "Duct",
    "Void",
    "Unknown",
    "Block",
    "save_geometry",
    "load_geometry",
    "sample_block",
    "RasterisedBlock",
    "VOXEL_RTOL",
    "check_voxel_size",
    "grid_shape",
    "rasterise",
]

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


def save_geometry(block: Block, path: str | Path) -> None:
    """Write ``block`` as indented JSON (format ``volumetric-geometry/1``) to ``path``."""
    text = json.dumps(block.to_dict(), indent=2, allow_nan=False)
    text = _NUMBER_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    Path(path).write_text(text + "\n", encoding="utf-8")


# A JSON list holding only numbers, which ``save_geometry`` writes on one line.
_NUMBER_LIST = re.compile(r"\[\s*((?:-?[0-9.eE+-]+,\s*)*-?[0-9.eE+-]+)\s*\]")


def load_geometry(path: str | Path) -> Block:
    """Read and validate a geometry JSON file.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for malformed JSON or an invalid geometry; the message starts with the path.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"geometry file not found: {path}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    try:
        return Block.from_dict(data)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


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
