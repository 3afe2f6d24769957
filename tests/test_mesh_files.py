"""Real mesh files (issue 14 item 5) and ``--mesh_cleanup`` (item 3a).

Every fixture is written here by hand (text, or ``struct``-packed binary), never by trimesh's
exporter, and checked against hand-computed expectations: areas from the geometry, outward
normals from the cube's centre, triangle orders from the file's polygons, sampling shares
from areas.
"""

from __future__ import annotations

import logging
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import trimesh

from nepa3d.data import preprocess_shapenet as sn_cli
from nepa3d.data.cache import profile_digest, read_records
from nepa3d.data.mesh_files import fan_triangles, read_ply, strip_triangles
from nepa3d.data.mesh_pipeline import (
    MeshCacheConfig,
    MeshError,
    build_mesh_cache,
    clean_and_normalize,
    clean_mesh,
    compute_mesh_arrays,
    load_mesh,
    load_mesh_as_original,
    make_rng,
    prepare_mesh,
    preprocess_mesh,
)

SMALL = dict(pc_points=256, pt_pool=300, ray_pool=64, n_views=2, rays_per_view=32, pc_grid=8,
             df_grid=8, dist_ref_points=256)
TINY_ARGS = ["--pc_points", "64", "--pt_pool", "64", "--ray_pool", "32", "--n_views", "2",
             "--rays_per_view", "16", "--pc_grid", "8", "--df_grid", "8", "--dist_ref_points",
             "128", "--workers", "0"]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    logging.getLogger("trimesh").setLevel(logging.ERROR)


# ---------------------------------------------------------------------------------------
# hand-written files

CUBE_V = [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)]
CUBE_QUADS = [(0, 3, 2, 1), (4, 5, 6, 7), (0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7)]
# a quad (a, b, c, d) is split into (a, b, c) and (c, d, a); trimesh lists all first halves,
# then all second halves
CUBE_TRIS = ([(a, b, c) for a, b, c, d in CUBE_QUADS] + [(c, d, a) for a, b, c, d in CUBE_QUADS])
# the four sides as one strip, then the top, then the bottom
CUBE_STRIPS = [(4, 0, 5, 1, 6, 2, 7, 3, 4, 0), (4, 5, 7, 6), (0, 3, 1, 2)]

TETRA_V = [(0.1, 0.2, 0.3), (1.3, 0.1, 0.2), (0.2, 1.1, 0.4), (0.3, 0.2, 1.5)]
TETRA_F = [(0, 2, 1), (0, 1, 3), (0, 3, 2), (1, 2, 3)]


def obj_text(v, faces, objects: int = 1) -> str:
    """OBJ with 1-based faces; ``objects > 1`` splits the faces into ``o`` blocks."""
    lines = ["v {!r} {!r} {!r}".format(*map(float, p)) for p in v]
    per = math.ceil(len(faces) / objects)
    for i, face in enumerate(faces):
        if objects > 1 and i % per == 0:
            lines.append(f"o body{i // per}")
        lines.append("f " + " ".join(str(j + 1) for j in face))
    return "\n".join(lines) + "\n"


def off_text(v, faces) -> str:
    return (f"OFF\n# a comment\n{len(v)} {len(faces)} 0\n"
            + "".join("{!r} {!r} {!r}\n".format(*map(float, p)) for p in v)
            + "".join(f"{len(f)} " + " ".join(map(str, f)) + "\n" for f in faces))


def _ply_header(fmt: str, n_v: int, faces, strips) -> bytes:
    h = (f"ply\nformat {fmt} 1.0\ncomment hand-written\nelement vertex {n_v}\n"
         "property float x\nproperty float y\nproperty float z\n")
    if faces is not None:
        h += f"element face {len(faces)}\nproperty list uchar int vertex_indices\n"
    if strips is not None:
        h += f"element tristrips {len(strips)}\nproperty list int int vertex_indices\n"
    return (h + "end_header\n").encode()


def ply_ascii(v, faces=None, strips=None) -> bytes:
    body = "".join(f"{x} {y} {z}\n" for x, y, z in v)
    for rows in (faces, strips):
        body += "".join(f"{len(r)} " + " ".join(map(str, r)) + "\n" for r in rows or ())
    return _ply_header("ascii", len(v), faces, strips) + body.encode()


def ply_binary(v, faces=None, strips=None, order: str = "<") -> bytes:
    fmt = "binary_little_endian" if order == "<" else "binary_big_endian"
    body = b"".join(struct.pack(order + "3f", *p) for p in v)
    body += b"".join(struct.pack(f"{order}B{len(r)}i", len(r), *r) for r in faces or ())
    body += b"".join(struct.pack(f"{order}i{len(r)}i", len(r), *r) for r in strips or ())
    return _ply_header(fmt, len(v), faces, strips) + body


def stl_ascii(v, faces, solids: int = 1) -> str:
    per = math.ceil(len(faces) / solids)
    out = ""
    for s in range(solids):
        out += f"solid part{s}\n"
        for face in faces[s * per:(s + 1) * per]:
            out += " facet normal 0 0 0\n  outer loop\n"
            out += "".join("   vertex {} {} {}\n".format(*v[j]) for j in face)
            out += "  endloop\n endfacet\n"
        out += f"endsolid part{s}\n"
    return out


def stl_binary(v, faces, header: bytes = b"binary stl written by hand") -> bytes:
    body = b"".join(struct.pack("<12fH", 0, 0, 0, *v[a], *v[b], *v[c], 0) for a, b, c in faces)
    return header.ljust(80, b" ") + struct.pack("<I", len(faces)) + body


def write(tmp_path: Path, name: str, body: str | bytes) -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(body if isinstance(body, bytes) else body.encode())
    return p


def tri_areas(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    v = np.asarray(v, float)
    return 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]),
                                axis=1)


def face_coords(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """``(F, 9)``: the corners of every face, in face order."""
    return np.asarray(v, float)[np.asarray(f)].reshape(len(f), 9)


# ---------------------------------------------------------------------------------------
# polygons and strips


def test_fan_and_strip_triangulation_by_hand():
    assert fan_triangles([[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]]).tolist() == [
        [0, 1, 2], [0, 2, 3], [0, 3, 4], [7, 8, 9]]
    # odd triangles swap their first two corners (same winding); -1 restarts; short runs vanish
    assert strip_triangles([[0, 1, 2, 3, 4, -1, 5, 6, 7, -1, 8], [9, 10]]).tolist() == [
        [0, 1, 2], [2, 1, 3], [2, 3, 4], [5, 6, 7]]
    assert strip_triangles([]).shape == (0, 3) and fan_triangles([]).shape == (0, 3)


CUBE_FILES = {
    "tris.obj": lambda: obj_text(CUBE_V, CUBE_TRIS),
    "quads.obj": lambda: obj_text(CUBE_V, CUBE_QUADS),
    "two_objects.obj": lambda: obj_text(CUBE_V, CUBE_TRIS, objects=2),
    "quads.off": lambda: off_text(CUBE_V, CUBE_QUADS),
    "quads_ascii.ply": lambda: ply_ascii(CUBE_V, faces=CUBE_QUADS),
    "quads_le.ply": lambda: ply_binary(CUBE_V, faces=CUBE_QUADS),
    "quads_be.ply": lambda: ply_binary(CUBE_V, faces=CUBE_QUADS, order=">"),
    "strips_ascii.ply": lambda: ply_ascii(CUBE_V, strips=[CUBE_STRIPS[0],
                                                          CUBE_STRIPS[1] + (-1,) + CUBE_STRIPS[2]]),
    "strips_le.ply": lambda: ply_binary(CUBE_V, strips=CUBE_STRIPS),   # lists of 10, 4, 4
    "strips_be.ply": lambda: ply_binary(CUBE_V, strips=CUBE_STRIPS, order=">"),
    "two_solids.stl": lambda: stl_ascii(CUBE_V, CUBE_TRIS, solids=2),
    "binary.stl": lambda: stl_binary(CUBE_V, CUBE_TRIS),
    "solid_header.stl": lambda: stl_binary(CUBE_V, CUBE_TRIS, header=b"solid but binary"),
}


@pytest.mark.parametrize("name", sorted(CUBE_FILES))
def test_unit_cube_in_every_format_is_the_closed_outward_cube(name, tmp_path):
    v, f = clean_mesh(*load_mesh(write(tmp_path, name, CUBE_FILES[name]())))
    assert len(v) == 8 and len(f) == 12                        # every body kept, welded
    assert sorted(map(tuple, v.tolist())) == sorted(map(tuple, np.array(CUBE_V, float).tolist()))
    np.testing.assert_allclose(tri_areas(v, f), 0.5)           # total area 6
    normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    outward = v[f].mean(axis=1) - 0.5
    assert np.all(np.einsum("ij,ij->i", normals, outward) > 0)  # strips keep their winding
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    assert np.all(np.unique(edges, axis=0, return_counts=True)[1] == 2)   # closed


def test_cube_as_triangles_quads_and_strips_gives_the_same_cache(tmp_path):
    files = {"tris.obj": obj_text(CUBE_V, CUBE_TRIS), "quads.obj": obj_text(CUBE_V, CUBE_QUADS),
             "quads.off": off_text(CUBE_V, CUBE_QUADS),
             "quads.ply": ply_binary(CUBE_V, faces=CUBE_QUADS),
             "strips.ply": ply_ascii(CUBE_V, strips=CUBE_TRIS),    # one strip a triangle
             "binary.stl": stl_binary(CUBE_V, CUBE_TRIS)}
    want = np.array(CUBE_V, float)[np.array(CUBE_TRIS)].reshape(12, 9)
    cfg = MeshCacheConfig(**SMALL)
    caches = {}
    for name, body in files.items():
        p = write(tmp_path, name, body)
        v, f = clean_mesh(*load_mesh(p))
        np.testing.assert_array_equal(face_coords(v, f), want, err_msg=name)  # same order
        caches[name] = build_mesh_cache(p, cfg, seed=3)
    ref = caches.pop("tris.obj")
    for name, arrays in caches.items():
        for k in ref:
            np.testing.assert_array_equal(arrays[k], ref[k], err_msg=f"{name}:{k}")
    # normalised: bbox centre at 0, farthest corner at distance 1 (corners at +-1/sqrt(3))
    np.testing.assert_allclose(np.abs(ref["pc_xyz"]).max(), 1 / math.sqrt(3), rtol=1e-6)


def test_polygons_and_mixed_binary_lists(tmp_path):
    pent = [(math.cos(2 * math.pi * k / 5), math.sin(2 * math.pi * k / 5), 0.0) for k in range(5)]
    area = 2.5 * math.sin(2 * math.pi / 5)                     # regular pentagon, radius 1
    for name, body in (("p.obj", obj_text(pent, [(0, 1, 2, 3, 4)])),
                       ("p.off", off_text(pent, [(0, 1, 2, 3, 4)])),
                       ("p.ply", ply_ascii(pent, faces=[(0, 1, 2, 3, 4)])),
                       # a pentagon and a triangle: lists of varying length, which trimesh's
                       # binary PLY reader refuses ("unexpected length")
                       ("mixed.ply", ply_binary(pent + [(1, 0, 1)], faces=[(0, 1, 2, 3, 4),
                                                                          (0, 1, 5)]))):
        v, f = load_mesh(write(tmp_path, name, body))
        # the triangle (p0, p1, p0 + z) has a right angle at p0: |p0 p1| / 2 = sin(36 deg)
        extra = math.sin(math.pi / 5) if name == "mixed.ply" else 0.0
        assert tri_areas(v, f).sum() == pytest.approx(area + extra, rel=1e-6), name
    with pytest.raises(ValueError):   # the reason our reader exists
        trimesh.load(tmp_path / "mixed.ply", force="mesh", process=False)


def test_several_bodies_are_all_kept(tmp_path):
    a = np.array(TETRA_V)
    b = a + [5.0, 0.0, 0.0]
    v = np.concatenate([a, b])
    f = TETRA_F + [tuple(j + 4 for j in t) for t in TETRA_F]
    want = 2 * tri_areas(a, np.array(TETRA_F)).sum()
    grouped = obj_text(v, f).replace("f 5 7 6", "g second\nusemtl missing\nf 5 7 6")
    for name, body in (("o.obj", obj_text(v, f, objects=2)),
                       ("g.obj", "mtllib gone.mtl\n" + grouped),
                       ("s.stl", stl_ascii(v, f, solids=2))):
        for load in (load_mesh, load_mesh_as_original):
            lv, lf = load(write(tmp_path, name, body))
            assert len(lf) == 8 and tri_areas(lv, lf).sum() == pytest.approx(want), (name, load)
            assert lv[:, 0].max() == pytest.approx(6.3, rel=1e-6)


# ---------------------------------------------------------------------------------------
# files without triangles: one line naming the file and the cause

POINTS_120 = [(i * 0.01, (i * 7 % 11) * 0.1, (i * 3 % 5) * 0.2) for i in range(120)]
NO_TRIANGLES = {
    "empty.obj": ("", "the file is empty (0 bytes)"),
    "empty.off": ("", "the file is empty (0 bytes)"),
    "empty.ply": ("", "the file is empty (0 bytes)"),
    "empty.stl": ("", "the file is empty (0 bytes)"),
    "header_only.ply": (ply_ascii([], faces=[]), "header declares 0 vertices"),
    "header_only_binary.ply": (ply_binary([], faces=[]), "header declares 0 vertices"),
    "header_only.off": ("OFF\n0 0 0\n", "header declares 0 vertices"),
    "no_facets.stl": ("solid empty\nendsolid empty\n", "ASCII STL with no facets"),
    "zero_triangles.stl": (stl_binary([], []), "binary STL declares 0 triangles"),
    "truncated.stl": (stl_binary(CUBE_V, CUBE_TRIS)[:84 + 50 * 5],
                      "binary STL declares 12 triangles (684 bytes) but the file has 334 bytes"),
    "points.ply": (ply_ascii(POINTS_120), "no triangle faces: 120 vertices only (a point cloud)"),
    "points_binary.ply": (ply_binary(POINTS_120),
                          "no triangle faces: 120 vertices only (a point cloud)"),
    "points.obj": ("".join("v {} {} {}\n".format(*p) for p in POINTS_120),
                   "no triangle faces: 120 vertices only (a point cloud)"),
    "points.off": (off_text(POINTS_120, []), "no triangle faces: 120 vertices only"),
    "lines.obj": ("v 0 0 0\nv 1 0 0\nv 0 1 0\nl 1 2\nl 2 3\n",
                  "3 vertices and only other elements (2 'l')"),
    "short_strips.ply": (ply_binary(CUBE_V, strips=[(0, 1), (2,)]),
                         "the 2 'tristrips' give no triangle"),
    "truncated.ply": (ply_binary(CUBE_V, faces=CUBE_QUADS)[:-7],
                      "PLY body ends inside element 'face' (truncated)"),
}


def test_files_without_triangles_fail_with_one_line_naming_file_and_cause(tmp_path, capsys):
    root = tmp_path / "root"
    paths = {}
    for i, (name, (body, _)) in enumerate(sorted(NO_TRIANGLES.items())):
        stem, ext = name.rsplit(".", 1)
        paths[name] = write(root, f"0999999{i % 3}/{stem}_{ext}/models/model_normalized.{ext}",
                            body)
    for name, p in paths.items():   # both loaders name the same cause
        for cleanup in ("clean", "none"):
            if cleanup == "none" and name in ("short_strips.ply", "truncated.ply"):
                continue            # trimesh's own words there ("PLY is unexpected length!")
            with pytest.raises(MeshError) as e:
                prepare_mesh(p, cleanup)
            assert NO_TRIANGLES[name][1] in str(e.value), (name, cleanup, str(e.value))
    rc = sn_cli.main(["--shapenet_root", str(root), "--out_root", str(tmp_path / "out"),
                      "--mesh_glob", "*/*/models/model_normalized.*",
                      "--max_failures", "100"] + TINY_ARGS)
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    fails = [ln for ln in err.splitlines() if " FAIL " in ln]
    assert len(fails) == len(NO_TRIANGLES)
    for name, p in paths.items():
        (line,) = [ln for ln in fails if f" FAIL {p}: " in ln]
        assert NO_TRIANGLES[name][1] in line, line


# ---------------------------------------------------------------------------------------
# scale: merge tolerance relative to the mesh below extent 0.01, range limits


def _tetra_cache(scale: float) -> dict[str, np.ndarray]:
    v, f = clean_and_normalize(np.array(TETRA_V) * scale, np.array(TETRA_F))
    return compute_mesh_arrays(v, f, MeshCacheConfig(**SMALL), make_rng(5))


def test_tiny_and_huge_meshes_normalise_to_the_unit_one(tmp_path):
    unit = _tetra_cache(1.0)
    for scale in (2.0 ** -23, 2.0 ** -200, 2.0 ** 100):      # powers of two: exact, bit for bit
        got = _tetra_cache(scale)
        for k in unit:
            np.testing.assert_array_equal(got[k], unit[k], err_msg=f"{scale}:{k}")
    for scale in (1e-7, 3.3e-12, 1e30):
        got = _tetra_cache(scale)
        for k in ("pc_xyz", "pt_dist_pool", "ray_t_pool"):
            np.testing.assert_allclose(got[k], unit[k], atol=1e-6, err_msg=f"{scale}:{k}")
    # a 1e-7 tetrahedron keeps its exact corners (1e-8 rounding would move them by up to 5%)
    small = np.array(TETRA_V) * 1e-7
    v, f = clean_mesh(small, np.array(TETRA_F))
    assert sorted(map(tuple, v.tolist())) == sorted(map(tuple, small.tolist()))
    # through a file too
    p = write(tmp_path, "tiny.obj", obj_text(small, TETRA_F))
    got = build_mesh_cache(p, MeshCacheConfig(**SMALL), seed=1)
    ref = build_mesh_cache(write(tmp_path, "unit.obj", obj_text(TETRA_V, TETRA_F)),
                           MeshCacheConfig(**SMALL), seed=1)
    np.testing.assert_allclose(got["pc_xyz"], ref["pc_xyz"], atol=1e-6)


def test_merge_tolerance_is_relative_only_below_extent_001():
    f = np.array(TETRA_F + [(4, 2, 1)])          # face 4 = face 0 on a copy of vertex 0
    for scale, offset, merged in ((1.0, 3e-9, True),     # 1e-8 absolute, as before
                                  (1.0, 3e-8, False),
                                  (0.05, 3e-9, True),    # still absolute above extent 0.01
                                  (0.05, 3e-8, False),
                                  (1e-7, 3e-17, True),   # relative: 6e-7 of the extent 1.3e-7
                                  (1e-7, 3e-13, False)):
        v = np.array(TETRA_V) * scale
        v = np.concatenate([v, v[:1] + [offset, 0.0, 0.0]])
        cv, cf = clean_mesh(v, f)
        assert (len(cv), len(cf)) == ((4, 4) if merged else (5, 5)), (scale, offset)
    # same grouping as rounding to 8 decimals at unit size (the historical rule)
    v = np.array([[0.123456784, 0, 0], [0.1234567849, 0, 0], [0.123456785001, 0, 0],
                  [0, 1, 0], [0, 0, 1]])
    cv, _ = clean_mesh(v, np.array([[0, 3, 4], [1, 4, 3], [2, 3, 4]]))
    groups = np.unique(np.round(v[:3, 0], 8))
    assert len(groups) == 2 and len(cv) == 2 + len(groups)     # two of three merged


def test_out_of_range_coordinates_fail_with_the_reason(tmp_path):
    huge = np.array(TETRA_V) * 1e200
    for cleanup in ("clean", "none"):
        with pytest.raises(MeshError, match="coordinates too large"):
            prepare_mesh(write(tmp_path, "huge.obj", obj_text(huge, TETRA_F)), cleanup)
    with pytest.raises(MeshError, match="mesh too small"):
        clean_mesh(np.array(TETRA_V) * 1e-160, np.array(TETRA_F))


# ---------------------------------------------------------------------------------------
# --mesh_cleanup none: what the original code built with a current trimesh

LEFT_TETRA = [(-2, 0, 0), (-1, 0, 0), (-2, 1, 0), (-2, 0, 1)]      # x < 0 after centring
LEFT_F = [(0, 2, 1), (0, 1, 3), (0, 3, 2), (1, 2, 3)]
SHEET = [(1, 0, 0.5), (2, 0, 0.5), (2, 1, 0.5), (1, 1, 0.5)]       # x > 0, area 1
SHEET_F = [(4, 5, 6), (4, 6, 7)]


def test_none_keeps_double_sided_faces_at_twice_the_weight(tmp_path):
    double = SHEET_F + [(a, c, b) for a, b, c in SHEET_F]           # the back side
    p = write(tmp_path, "double.obj", obj_text(LEFT_TETRA + SHEET, LEFT_F + double))
    tetra_area = 1.5 + math.sqrt(3) / 2                              # 3 right triangles + 1
    for cleanup, n_faces, sheet_area in (("clean", 6, 1.0), ("none", 8, 2.0)):
        v, f = prepare_mesh(p, cleanup)
        assert len(f) == n_faces
        scale2 = np.linalg.norm(np.array(LEFT_TETRA[0]) - [0, 0.5, 0.5]) ** 2   # unit sphere
        assert tri_areas(v, f).sum() * scale2 == pytest.approx(tetra_area + sheet_area)
        share = sheet_area / (tetra_area + sheet_area)               # sampling weight
        arrays = compute_mesh_arrays(v, f, MeshCacheConfig(**{**SMALL, "pc_points": 2048}),
                                     make_rng(0))
        on_sheet = arrays["pc_xyz"][:, 0] > 0
        assert abs(on_sheet.mean() - share) < 0.05, (cleanup, on_sheet.mean(), share)
        up = arrays["pc_n"][on_sheet, 2] > 0
        if cleanup == "none":   # half the sheet's normals flipped
            assert abs(up.mean() - 0.5) < 0.08
        else:
            assert up.all() or not up.any()


def test_none_keeps_degenerate_faces_without_nan(tmp_path):
    # a zero-area (collinear) face and a face with a repeated vertex on the tetrahedron
    v = LEFT_TETRA + [(-1.5, 0, 0)]
    f = LEFT_F + [(0, 1, 4), (0, 0, 2)]
    p = write(tmp_path, "degenerate.obj", obj_text(v, f))
    lv, lf = prepare_mesh(p, "none")
    assert len(lf) == 6 and (tri_areas(lv, lf) == 0).sum() == 2
    assert len(prepare_mesh(p, "clean")[1]) == 4
    cfg = MeshCacheConfig(**SMALL, mesh_cleanup="none")
    arrays = build_mesh_cache(p, cfg, seed=0)
    for k, a in arrays.items():
        assert np.all(np.isfinite(a)), k
    np.testing.assert_allclose(np.linalg.norm(arrays["pc_n"], axis=1), 1.0, rtol=1e-6)
    hit = arrays["ray_hit_pool"] > 0
    np.testing.assert_allclose(np.linalg.norm(arrays["ray_n_pool"][hit], axis=1), 1.0,
                               rtol=1e-6)
    cfg_mesh = MeshCacheConfig(**SMALL, mesh_cleanup="none", pt_dist_mode="mesh")
    assert np.all(np.isfinite(build_mesh_cache(p, cfg_mesh, seed=0)["pt_dist_pool"]))


def test_none_loads_exactly_as_trimesh_load_force_mesh(tmp_path):
    near = CUBE_V + [(1 + 3e-9, 1, 1)]                 # trimesh merges at 1e-8 absolute
    near_tris = [CUBE_TRIS[0], (4, 5, 8)] + CUBE_TRIS[2:]  # (4, 5, 6) on the near copy of 6
    files = {"near.obj": obj_text(near, near_tris),
             "two.obj": obj_text(CUBE_V, CUBE_TRIS, objects=2),
             "quads.ply": ply_ascii(CUBE_V, faces=CUBE_QUADS),
             "solids.stl": stl_ascii(CUBE_V, CUBE_TRIS, solids=2),
             "binary.stl": stl_binary(CUBE_V, CUBE_TRIS),
             "double.obj": obj_text(LEFT_TETRA + SHEET, LEFT_F + SHEET_F + [(4, 6, 5)])}
    for name, body in files.items():
        p = write(tmp_path, name, body)
        ref = trimesh.load(p, force="mesh")
        v, f = load_mesh_as_original(p)
        np.testing.assert_array_equal(v, ref.vertices, err_msg=name)
        np.testing.assert_array_equal(f, ref.faces, err_msg=name)
    # the sheet stays double; the near-duplicate corner merged; tiny meshes collapse (1e-8)
    assert len(load_mesh_as_original(tmp_path / "double.obj")[1]) == 7
    assert len(load_mesh_as_original(tmp_path / "near.obj")[0]) == 8
    tiny = write(tmp_path, "tiny.obj", obj_text(np.array(TETRA_V) * 1e-9, TETRA_F))
    with pytest.raises(MeshError, match="zero total surface area"):
        prepare_mesh(tiny, "none")
    assert len(prepare_mesh(tiny, "clean")[1]) == 4


def test_none_fails_on_non_finite_vertices(tmp_path):
    p = write(tmp_path, "nan.obj", "v 0 0 0\nv 1 0 0\nv nan 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\n")
    status, reason = preprocess_mesh(p, tmp_path / "o.npz",
                                     MeshCacheConfig(**SMALL, mesh_cleanup="none"), 0)
    assert status == "fail" and "1 of 4 vertices have non-finite coordinates" in reason
    assert len(trimesh.load(p, force="mesh").faces) == 1   # what the original silently kept
    with pytest.raises(ValueError, match="mesh_cleanup"):
        MeshCacheConfig(mesh_cleanup="some").validate()


def test_mesh_cleanup_profile_digest_and_rebuilds(tmp_path, capsys):
    # the default profile's digest is the one v1 had (computed by the code before the field)
    assert "mesh_cleanup" not in sn_cli.profile_settings(MeshCacheConfig())
    assert profile_digest(sn_cli.profile_settings(MeshCacheConfig())) == "c32c05d3b39fb961"
    none = sn_cli.profile_settings(MeshCacheConfig(mesh_cleanup="none"))
    assert none["mesh_cleanup"] == "none"
    root, out = tmp_path / "root", tmp_path / "out"
    write(root, "02691156/a/models/model_normalized.obj", obj_text(CUBE_V, CUBE_QUADS))
    write(root, "02691156/b/models/model_normalized.obj",
          obj_text(LEFT_TETRA + SHEET, LEFT_F + SHEET_F + [(4, 6, 5)]))
    base = ["--shapenet_root", str(root), "--out_root", str(out)] + TINY_ARGS

    def run(*extra):
        assert sn_cli.main(base + list(extra)) == 0
        text = capsys.readouterr().out
        recs = read_records(out)
        files = {r: (out / r).read_bytes() for r in recs}
        return text, {r.profile for r in recs.values()}, files

    _, (p_clean,), first = run()
    assert p_clean == "e828b4700915a3e8"      # TINY profile digest of the code before the field
    assert "mesh_cleanup" not in (out / "_meta" / "preprocess_shapenet_args.json").read_text(
        ).split('"profile_settings"')[1]
    text, (p_none,), files = run("--mesh_cleanup", "none")
    assert p_none != p_clean and "removed 2 existing file(s)" in text and "ok=2" in text
    assert files.keys() == first.keys()
    sheet = "train/02691156/b.npz"             # the double-sided sheet: another file
    assert files[sheet] != first[sheet]
    settings = (out / "_meta" / "preprocess_shapenet_args.json").read_text()
    assert '"mesh_cleanup": "none"' in settings.split('"profile_settings"')[1]
    assert "ok=0 skip=2" in run("--mesh_cleanup", "none")[0]
    text, (p_back,), back = run()
    assert p_back == p_clean and "ok=2" in text and back == first   # rebuilt, byte-identical


def test_read_ply_counts_and_reports_other_elements(tmp_path):
    body = ply_ascii(CUBE_V, faces=CUBE_QUADS).replace(
        b"end_header", b"element edge 1\nproperty int vertex1\nproperty int vertex2\nend_header")
    body += b"0 1\n"
    ply = read_ply(write(tmp_path, "edge.ply", body))
    assert ply.counts == {"vertex": 8, "face": 6, "edge": 1} and ply.faces.shape == (12, 3)
