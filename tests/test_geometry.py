"""Tests for volumetric.physics.geometry: block description, JSON, sampler and rasterisation."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

from volumetric.physics.geometry import (
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
    check_voxel_size,
    grid_shape,
    load_geometry,
    rasterise,
    sample_block,
    save_geometry,
)
from volumetric.physics.materials import MATERIALS, material_id

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SMALL_MM = (200.0, 200.0, 100.0)


def _block(**kwargs) -> Block:
    return Block(**{"size_mm": (100.0, 100.0, 100.0), **kwargs})


def _all_kinds_block() -> Block:
    return Block(
        size_mm=(300.0, 200.0, 150.0),
        description="one of everything",
        rebar_grids=[RebarGrid(z_mm=30.0, bar_diameter_mm=12.0, pitch_mm=80.0, offset_mm=40.0, direction="both")],
        ducts=[
            Duct(direction="x", transverse_mm=60.0, z_mm=90.0, diameter_mm=60.0, fill="strands", strand_count=4),
            Duct(direction="y", transverse_mm=200.0, z_mm=90.0, diameter_mm=50.0, fill="partial", fill_fraction=0.4),
        ],
        voids=[Void(centre_mm=(250.0, 150.0, 120.0), diameter_mm=20.0)],
        unknowns=[
            Unknown(shape="box", centre_mm=(120.0, 150.0, 120.0), material="lead", size_mm=(20.0, 30.0, 10.0)),
            Unknown(shape="cylinder", centre_mm=(150.0, 40.0, 60.0), material="pvc", diameter_mm=10.0,
                    length_mm=50.0, axis="z"),
            Unknown(shape="sphere", centre_mm=(40.0, 160.0, 70.0), material="water", diameter_mm=25.0),
        ],
    )  # fmt: skip


def _single_void_block(diameter_mm=10.0, centre_mm=(20.0, 20.0, 20.0), size_mm=(40.0, 40.0, 40.0)) -> Block:
    return Block(size_mm=size_mm, voids=[Void(centre_mm=centre_mm, diameter_mm=diameter_mm)])


# ----------------------------------------------------------------------------- JSON


def test_round_trip_dict_and_file(tmp_path):
    block = _all_kinds_block()
    assert Block.from_dict(block.to_dict()) == block
    path = tmp_path / "block.json"
    save_geometry(block, path)
    assert load_geometry(path) == block
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT and data["units"] == "mm"


def test_round_trip_is_bit_exact_for_awkward_floats(tmp_path):
    void = Void(centre_mm=(1 / 3, 50.0, 0.1 + 0.2 + 49), diameter_mm=0.1 + 0.2)
    block = Block(size_mm=(100.0, 100.0, 100.0), voids=[void])
    path = tmp_path / "awkward.json"
    save_geometry(block, path)
    assert load_geometry(path) == block


def test_round_trip_sampled_blocks_exact(tmp_path):
    for seed in range(10):
        block = sample_block(np.random.default_rng(seed))
        path = tmp_path / f"{seed}.json"
        save_geometry(block, path)
        assert load_geometry(path) == block


def _valid_dict() -> dict:
    return _all_kinds_block().to_dict()


def _set_path(data: dict, path: tuple, value) -> dict:
    data = copy.deepcopy(data)
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("voids", 0, "diameter_mm"), -3.0, r"voids\[0\]\.diameter_mm must be > 0, got -3\.0"),
        (("voids", 0, "diameter_mm"), 0, r"voids\[0\]\.diameter_mm must be > 0"),
        (("voids", 0, "centre_mm"), [1.0, 2.0, float("nan")], r"voids\[0\]\.centre_mm\[2\] must be finite, got nan"),
        (("voids", 0, "centre_mm"), [1.0, 2.0], r"voids\[0\]\.centre_mm must be a list of 3 numbers"),
        (("voids", 0, "centre_mm"), [295.0, 150.0, 120.0], r"voids\[0\]\.centre_mm: void \(x 285\.\.305 mm\)"),
        (("voids", 0, "material"), "kryptonite", r"voids\[0\]\.material must be a material name"),
        (("voids", 0, "diameter_mm"), "big", r"voids\[0\]\.diameter_mm must be a number"),
        (("voids", 0, "colour"), "red", r"voids\[0\]: unknown key 'colour'"),
        (("voids", 0, "diameter_mm"), _DELETE, r"voids\[0\]\.diameter_mm: missing required key"),
        (("ducts", 0, "z_mm"), 140.0, r"ducts\[0\]\.z_mm: duct \(z 110\.\.170 mm\) extends outside the block"),
        (("ducts", 0, "transverse_mm"), 10.0, r"ducts\[0\]\.transverse_mm: duct \(y -20\.\.40 mm\)"),
        (("ducts", 0, "direction"), "z", r"ducts\[0\]\.direction must be one of 'x', 'y'"),
        (("ducts", 0, "fill"), "sand", r"ducts\[0\]\.fill must be one of"),
        (("ducts", 0, "diameter_mm"), float("inf"), r"ducts\[0\]\.diameter_mm must be finite, got inf"),
        (("ducts", 0, "sheath_mm"), 40.0, r"ducts\[0\]\.sheath_mm must be >= 0 and < the radius"),
        (("ducts", 0, "sheath_material"), "gold", r"ducts\[0\]\.sheath_material must be a material name"),
        (("ducts", 0, "strand_count"), 200, r"ducts\[0\]\.strand_count: 200 strands .* do not fit"),
        (("ducts", 0, "strand_count"), None, r"ducts\[0\]\.strand_count must be an integer >= 1"),
        (("ducts", 1, "fill_fraction"), 1.5, r"ducts\[1\]\.fill_fraction must be in \(0, 1\)"),
        (("ducts", 1, "fill_fraction"), None, r"ducts\[1\]\.fill_fraction is required for fill 'partial'"),
        (("ducts", 1, "strand_count"), 3, r"ducts\[1\]\.strand_count must be null for fill 'partial'"),
        (("rebar_grids", 0, "direction"), "diagonal", r"rebar_grids\[0\]\.direction must be one of"),
        (("rebar_grids", 0, "pitch_mm"), 10.0, r"rebar_grids\[0\]\.pitch_mm must be > bar_diameter_mm"),
        (("rebar_grids", 0, "offset_mm"), 2.0, r"rebar_grids\[0\]\.offset_mm must be >= the bar radius"),
        (("rebar_grids", 0, "offset_mm"), 250.0, r"rebar_grids\[0\]\.offset_mm: first bar \(y 244\.\.256 mm\)"),
        (("rebar_grids", 0, "z_mm"), 5.0, r"rebar_grids\[0\]\.z_mm: rebar grid \(z -7\.\.17 mm\) extends outside"),
        (("rebar_grids", 0, "bar_diameter_mm"), True, r"rebar_grids\[0\]\.bar_diameter_mm must be a number"),
        (("unknowns", 0, "shape"), "torus", r"unknowns\[0\]\.shape must be one of"),
        (("unknowns", 0, "material"), "unobtainium", r"unknowns\[0\]\.material must be a material name"),
        (("unknowns", 0, "diameter_mm"), 5.0, r"unknowns\[0\]\.diameter_mm must be null for shape 'box'"),
        (("unknowns", 0, "size_mm"), [1.0, -1.0, 1.0], r"unknowns\[0\]\.size_mm\[1\] must be > 0"),
        (("unknowns", 1, "axis"), "w", r"unknowns\[1\]\.axis must be one of"),
        (("unknowns", 1, "length_mm"), None, r"unknowns\[1\]\.length_mm is required for shape 'cylinder'"),
        (("unknowns", 2, "centre_mm"), [40.0, 160.0, 145.0], r"unknowns\[2\]\.centre_mm: unknown sphere \(z"),
        (("size_mm",), [300.0, 200.0, 0.0], r"size_mm\[2\] must be > 0, got 0\.0"),
        (("matrix",), "cheese", r"matrix must be a material name"),
        (("colour",), "grey", r"unknown key 'colour'"),
        (("format",), "volumetric-geometry/0", r"format must be 'volumetric-geometry/1'"),
        (("units",), "cm", r"units must be 'mm'"),
        (("format",), _DELETE, r"format: missing required key"),
        (("size_mm",), _DELETE, r"size_mm: missing required key"),
        (("voids",), {"a": 1}, r"voids must be a list"),
    ],
)
def test_invalid_geometry_names_the_field(path, value, message):
    with pytest.raises(ValueError, match=message):
        Block.from_dict(_set_path(_valid_dict(), path, value))


def test_block_rejects_wrong_object_type():
    with pytest.raises(TypeError, match=r"voids\[0\] must be a Void"):
        Block(voids=[{"centre_mm": [1, 2, 3], "diameter_mm": 1}])


def test_load_missing_file_names_it(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_geometry(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"format": "volumetric-geometry/1",', "malformed JSON at line 1"),
        ("[1, 2]", "geometry must be a JSON object"),
        (
            '{"format": "volumetric-geometry/1", "units": "mm", "size_mm": [9, 9, 9],'
            ' "voids": [{"centre_mm": [1, 1, 1]}]}',
            r"voids\[0\]\.diameter_mm: missing required key",
        ),
    ],
)
def test_load_bad_file_names_it(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"bad.json: .*{message}"):
        load_geometry(path)


# ----------------------------------------------------------------------------- examples


def test_plain_slab_example():
    block = load_geometry(EXAMPLES / "plain_slab.json")
    assert block.size_mm == (1000.0, 1000.0, 200.0)
    assert not (block.rebar_grids or block.ducts or block.voids or block.unknowns)


def test_reference_example_matches_the_talk():
    block = load_geometry(EXAMPLES / "reference_block.json")
    thickness = block.size_mm[2]
    assert [(d.diameter_mm, thickness - d.z_mm) for d in block.ducts] == [(80.0, 53.0), (100.0, 75.0)]
    assert [(g.bar_diameter_mm, thickness - g.z_mm) for g in block.rebar_grids] == [(25.0, 107.0), (10.0, 152.0)]
    assert [v.diameter_mm for v in block.voids] == [84.0, 47.0, 26.0]
    assert "depth" in block.description


def test_reference_example_objects_do_not_overlap():
    """Each object's voxels are the same alone as in the full block (coarse grid, centres only)."""
    block = load_geometry(EXAMPLES / "reference_block.json")
    full = rasterise(block, 5.0, supersample=1).label
    pieces = [("voids", LABEL_VOID), ("ducts", LABEL_DUCT), ("rebar_grids", LABEL_REBAR)]
    for name, cls in pieces:
        alone = 0
        for obj in getattr(block, name):
            alone += int((rasterise(Block(size_mm=block.size_mm, **{name: [obj]}), 5.0, 1).label == cls).sum())
        assert int((full == cls).sum()) == alone, name


# ----------------------------------------------------------------------------- sampler


def test_sampler_is_deterministic():
    a = sample_block(np.random.default_rng(1234))
    b = sample_block(np.random.default_rng(1234))
    assert a == b
    others = [sample_block(np.random.default_rng(s)) for s in range(5)]
    assert len({o.to_dict().__repr__() for o in others}) == 5


@pytest.mark.parametrize("size_mm", [(1000.0, 1000.0, 200.0), SMALL_MM, (150.0, 300.0, 60.0)])
def test_sampler_count_ranges(size_mm):
    counts = []
    for seed in range(60):
        block = sample_block(np.random.default_rng(seed), size_mm)
        assert block.size_mm == size_mm
        counts.append((len(block.rebar_grids), len(block.ducts), len(block.voids), len(block.unknowns)))
    counts = np.array(counts)
    assert counts.min(0).tolist() == [1, 0, 0, 0]
    assert (counts.max(0) <= [4, 3, 3, 2]).all()
    assert counts.max(0)[0] == 4 and counts.max(0)[3] == 2
    assert counts.sum(0)[1:].min() > 20  # ducts, voids and unknowns do get placed


def test_sampler_draws_every_kind():
    blocks = [sample_block(np.random.default_rng(s)) for s in range(80)]
    fills = {d.fill for b in blocks for d in b.ducts}
    shapes = {u.shape for b in blocks for u in b.unknowns}
    directions = {g.direction for b in blocks for g in b.rebar_grids}
    assert fills == {"grout", "strands", "empty", "partial"}
    assert shapes == {"sphere", "box", "cylinder"}
    assert directions == {"x", "y", "both"}
    assert all(u.material != "concrete" for b in blocks for u in b.unknowns)
    bars = {g.bar_diameter_mm for b in blocks for g in b.rebar_grids}
    assert bars <= {8.0, 10.0, 12.0, 16.0, 20.0, 25.0, 32.0}


def test_sampler_scales_objects_for_small_blocks():
    for seed in range(20):
        block = sample_block(np.random.default_rng(seed), SMALL_MM)
        assert all(d.diameter_mm <= 55.0 + 1e-9 for d in block.ducts)
        assert all(g.bar_diameter_mm <= 16.0 + 1e-9 for g in block.rebar_grids)


@pytest.mark.parametrize("seed", range(8))
def test_sampler_overlap_policy(seed):
    """Voids and unknowns keep their full volume in the label map: nothing overlaps them."""
    block = sample_block(np.random.default_rng(seed), SMALL_MM)
    full = rasterise(block, 4.0, supersample=1).label
    for name, cls in (("voids", LABEL_VOID), ("unknowns", LABEL_UNKNOWN)):
        alone = sum(
            int((rasterise(Block(size_mm=SMALL_MM, **{name: [o]}), 4.0, 1).label == cls).sum())
            for o in getattr(block, name)
        )
        assert int((full == cls).sum()) == alone
    depths = sorted((g.z_mm - g.half_thickness_mm, g.z_mm + g.half_thickness_mm) for g in block.rebar_grids)
    assert all(lo_next > hi for (_, hi), (lo_next, _) in zip(depths, depths[1:]))


def test_sampler_rejects_non_generator():
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        sample_block(42)


# ----------------------------------------------------------------------------- rasterisation


def test_grid_shape_needs_a_voxel_that_divides_the_block():
    assert grid_shape(Block(), 2.0) == (500, 500, 100)
    assert grid_shape(Block(size_mm=(120.0, 96.0, 60.0)), 4.0 / 3.0) == (90, 72, 45)  # within the tolerance
    with pytest.raises(ValueError, match=r"block size 1000 mm is not a multiple of voxel 7 mm "
                                         r"\(block 1000 x 1000 x 200 mm\); try 6.25 or 8 mm"):
        grid_shape(Block(), 7.0)  # used to round up to 143 voxels: a 1001 mm grid
    with pytest.raises(ValueError, match=r"block size 10.5 mm is not a multiple of voxel 2 mm .*; try 0.5 mm"):
        grid_shape(Block(size_mm=(10.5, 4.0, 3.0)), 2.0)


def test_voxel_larger_than_the_block_refused():
    with pytest.raises(ValueError, match=r"voxel 300 mm is larger than the block's smallest dimension 200 mm"):
        check_voxel_size(REFERENCE_SIZE_MM, 300.0)
    assert check_voxel_size(REFERENCE_SIZE_MM, 200.0) == 200.0


@pytest.mark.parametrize(("voxel_mm", "supersample"), [(0.0, 3), (-1.0, 3), (float("nan"), 3), (1.0, 0), (1.0, 1.5)])
def test_rasterise_rejects_bad_arguments(voxel_mm, supersample):
    with pytest.raises(ValueError, match="voxel_mm|supersample"):
        rasterise(_single_void_block(), voxel_mm, supersample)


def test_sphere_voxel_count_matches_volume():
    # Off-lattice centre: a 5-voxel sphere centred on a voxel corner or centre is +-7 % off by symmetry.
    result = rasterise(_single_void_block(10.0, centre_mm=(20.3, 19.6, 20.2)), 1.0, supersample=3)
    volume = 4 / 3 * math.pi * 5.0**3
    assert abs(int((result.label == LABEL_VOID).sum()) - volume) < 0.03 * volume
    assert (result.material_id[result.label == LABEL_VOID] == material_id("air")).all()
    # The mixture rule: the 1/X0 deficit integrates to the sphere volume within sub-sampling error.
    inv_c, inv_air = 1 / MATERIALS["concrete"].x0_mm, 1 / MATERIALS["air"].x0_mm
    deficit_mm3 = float((inv_c - result.inv_x0_per_mm.astype(np.float64)).sum()) / (inv_c - inv_air)
    assert deficit_mm3 == pytest.approx(volume, rel=0.01)


def test_single_bar_position_and_count():
    grid = RebarGrid(z_mm=45.0, bar_diameter_mm=10.0, pitch_mm=100.0, offset_mm=20.0, direction="x")
    result = rasterise(Block(size_mm=(100.0, 40.0, 60.0), rebar_grids=[grid]), 2.0)
    rebar = result.label == LABEL_REBAR
    assert (rebar == rebar[:1]).all()  # a bar along x: every x slice identical
    _, j, k = np.nonzero(rebar)
    assert set(k) <= {20, 21, 22, 23, 24} and 22 in set(k)  # z 45 +- 5 mm -> k 20..24
    assert set(j) <= {7, 8, 9, 10, 11, 12} and {9, 10} <= set(j)  # y 20 +- 5 mm
    per_slice = rebar[0].sum()
    assert per_slice == pytest.approx(math.pi * 25.0 / 4.0, rel=0.15)
    assert (result.material_id[rebar] == material_id("steel")).all()


def test_mesh_layers_sit_one_diameter_apart():
    grid = RebarGrid(z_mm=50.0, bar_diameter_mm=10.0, pitch_mm=50.0, offset_mm=25.0, direction="both")
    label = rasterise(Block(size_mm=(100.0, 100.0, 100.0), rebar_grids=[grid]), 1.0, 1).label
    k = np.nonzero(label == LABEL_REBAR)[2]
    assert k.min() == 40 and k.max() == 59  # z 40..60 mm: x bars 50..60 on top of y bars 40..50
    # x bars (along x, at y = 25, 75) are the upper layer; between them only the lower layer remains.
    assert label[50, 50, 55] == LABEL_CONCRETE and label[50, 25, 55] == LABEL_REBAR
    assert label[25, 50, 45] == LABEL_REBAR and label[50, 50, 45] == LABEL_CONCRETE


@pytest.mark.parametrize("fill", ["grout", "strands", "empty", "partial"])
def test_duct_cross_section(fill):
    extra = {"strands": {"strand_count": 7}, "partial": {"fill_fraction": 0.25}}.get(fill, {})
    duct = Duct(direction="y", transverse_mm=50.0, z_mm=50.0, diameter_mm=80.0, sheath_mm=3.0,
                sheath_material="steel", fill=fill, **extra)  # fmt: skip
    result = rasterise(Block(size_mm=(100.0, 20.0, 100.0), ducts=[duct]), 1.0)
    label, mat = result.label[:, 10, :], result.material_id[:, 10, :]
    duct_voxels = int((label == LABEL_DUCT).sum())
    assert duct_voxels == pytest.approx(math.pi * 40.0**2, rel=0.02)
    assert label[50, 50] == LABEL_DUCT and mat[11, 50] == material_id("steel")  # x 11.5 mm: in the sheath
    centre = {"grout": "grout", "strands": "steel", "empty": "air", "partial": "air"}[fill]
    assert mat[50, 50] == material_id(centre)
    # Partial: grout up to 25 % of the 74 mm inner height, from z = 13 mm to 31.5 mm.
    below = {"partial": "grout", "empty": "air"}.get(fill, "grout")
    assert mat[50, 20] == material_id(below)
    if fill == "strands":
        steel = int((mat[25:75, 25:75] == material_id("steel")).sum())  # inside the sheath
        assert steel == pytest.approx(7 * STRAND_AREA_MM2, rel=0.1)


def test_object_near_top_face_lands_at_high_k():
    result = rasterise(_single_void_block(10.0, centre_mm=(20.0, 20.0, 33.0)), 2.0)
    k = np.nonzero(result.label == LABEL_VOID)[2]
    assert (k.min(), k.max()) == (14, 18)  # z 28..38 mm of a 40 mm block (20 layers)


def test_reference_duct_depth_to_k_index():
    block = load_geometry(EXAMPLES / "reference_block.json")
    duct1 = Block(size_mm=(1000.0, 20.0, 200.0), ducts=[block.ducts[0]])  # along y: a thin y range will do
    label = rasterise(duct1, 2.0, supersample=1).label
    k = np.nonzero(label[400 // 2] == LABEL_DUCT)[1]
    # z 107..187 mm (depth 13..93 mm): centres 2k+1 inside -> k 54..92 of 100, near the top.
    assert (k.min(), k.max()) == (54, 92)


def test_scattering_maps_pure_materials():
    block = Block(size_mm=(40.0, 40.0, 40.0), rebar_grids=[
        RebarGrid(z_mm=10.0, bar_diameter_mm=12.0, pitch_mm=30.0, offset_mm=20.0, direction="y")])  # fmt: skip
    result = rasterise(block, 1.0)
    concrete = result.label == LABEL_CONCRETE
    np.testing.assert_allclose(result.inv_x0_per_mm[concrete & (np.arange(40) > 20)], 1 / 115.52, rtol=1e-3)
    assert result.inv_x0_per_mm[20, 20, 10] == pytest.approx(1 / 17.58, rel=1e-3)
    assert result.inv_x0_per_mm[20, 20, 10] == pytest.approx(1 / MATERIALS["steel"].x0_mm, rel=1e-6)
    sp = MATERIALS["steel"].stopping_power_mev_per_mm
    assert result.stopping_power_mev_per_mm[20, 20, 10] == pytest.approx(sp, rel=1e-6)
    for name in ("inv_x0_per_mm", "stopping_power_mev_per_mm"):
        assert getattr(result, name).dtype == np.float32
    assert result.material_id.dtype == np.uint8 and result.label.dtype == np.uint8
    assert result.label.shape == (40, 40, 40) and result.voxel_mm == 1.0


def test_rasterise_refuses_a_grid_that_overhangs_the_block():
    with pytest.raises(ValueError, match="block size 10.5 mm is not a multiple of voxel 2 mm"):
        rasterise(Block(size_mm=(10.5, 4.0, 4.0)), 2.0, supersample=4)
    result = rasterise(Block(size_mm=(10.5, 4.5, 3.0)), 1.5, supersample=4)
    assert result.label.shape == (7, 3, 2) and (result.material_id == material_id("concrete")).all()


def test_priority_void_over_unknown_over_duct_over_rebar():
    duct = Duct(direction="x", transverse_mm=50.0, z_mm=50.0, diameter_mm=40.0)
    grid = RebarGrid(z_mm=50.0, bar_diameter_mm=10.0, pitch_mm=60.0, offset_mm=50.0, direction="y")
    unknown = Unknown(shape="box", centre_mm=(50.0, 50.0, 50.0), material="lead", size_mm=(20.0, 20.0, 20.0))
    void = Void(centre_mm=(50.0, 50.0, 50.0), diameter_mm=8.0)
    block = _block(rebar_grids=[grid], ducts=[duct], unknowns=[unknown], voids=[void])
    label = rasterise(block, 2.0, 1).label
    assert label[25, 25, 25] == LABEL_VOID  # centre (51, 51, 51) mm
    assert label[25, 25 + 4, 25] == LABEL_UNKNOWN
    assert label[25, 25 + 8, 25] == LABEL_DUCT
    assert label[25, 2, 25] == LABEL_REBAR  # the y bar outside the duct


def _block_reduce(a: np.ndarray, s: int) -> np.ndarray:
    x, y, z = (n // s for n in a.shape)
    return a.reshape(x, s, y, s, z, s).transpose(0, 2, 4, 1, 3, 5).reshape(x, y, z, s**3)


@pytest.mark.parametrize("seed", range(4))
def test_supersampling_equals_fine_grid_vote(seed):
    """Voxels at v with s^3 sub-points equal the documented vote over a v/s grid of centres."""
    block = sample_block(np.random.default_rng(seed), (120.0, 96.0, 60.0))
    coarse = rasterise(block, 4.0, supersample=3)
    fine = rasterise(block, 4.0 / 3.0, supersample=1)  # its centres are the coarse sub-points
    inv = _block_reduce(fine.inv_x0_per_mm.astype(np.float64), 3).mean(-1)
    np.testing.assert_allclose(coarse.inv_x0_per_mm, inv, rtol=1e-5)
    sp = _block_reduce(fine.stopping_power_mev_per_mm.astype(np.float64), 3).mean(-1)
    np.testing.assert_allclose(coarse.stopping_power_mev_per_mm, sp, rtol=1e-5)
    labels, mats = _block_reduce(fine.label, 3), _block_reduce(fine.material_id, 3)
    priority = np.array(LABEL_PRIORITY)
    counts = np.stack([(labels == c).sum(-1) for c in priority], -1)
    win = priority[np.argmax(counts, -1)]
    np.testing.assert_array_equal(coarse.label, win)
    in_win = labels == win[..., None]
    mat_counts = np.stack([((mats == m) & in_win).sum(-1) for m in range(len(MATERIALS))], -1)
    np.testing.assert_array_equal(coarse.material_id, np.argmax(mat_counts, -1))


def test_all_kinds_block_rasterises_every_class():
    label = rasterise(_all_kinds_block(), 2.0).label
    assert set(np.unique(label)) == {0, 1, 2, 3, 4}
