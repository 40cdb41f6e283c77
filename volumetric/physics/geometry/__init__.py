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


from volumetric.physics.geometry.files import load_geometry, save_geometry
from volumetric.physics.geometry.objects import (
    FORMAT,
    LABEL_CONCRETE,
    LABEL_DUCT,
    LABEL_PRIORITY,
    LABEL_REBAR,
    LABEL_UNKNOWN,
    LABEL_VOID,
    REFERENCE_SIZE_MM,
    STRAND_AREA_MM2,
    Block,
    Duct,
    RebarGrid,
    Unknown,
    Void,
)
from volumetric.physics.geometry.rasterise import VOXEL_RTOL, RasterisedBlock, check_voxel_size, grid_shape, rasterise
from volumetric.physics.geometry.sampler import sample_block
from volumetric.schema import CLASS_NAMES

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
