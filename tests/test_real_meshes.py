"""Real-world mesh files through the ShapeNet preprocessing (issue: robustness on real meshes).

Fixtures are written here by hand (OBJ / OFF text), never by the code under test; expectations
are independent: triangles listed by hand, the bounding-box-centre / unit-sphere normalisation
computed here, distances from ``trimesh.proximity`` on a mesh built here, ray hits from a
float64 Moller-Trumbore brute force over every triangle.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import trimesh

from nepa3d.data import preprocess_shapenet as sn_cli
from nepa3d.data.mesh_pipeline import (
    MeshCacheConfig,
    MeshError,
    build_mesh_cache,
    load_mesh,
    load_mesh_as_original,
    prepare_mesh,
)

TINY_ARGS = ["--pc_points", "256", "--pt_pool", "64", "--ray_pool", "32", "--n_views", "2",
             "--rays_per_view", "16", "--pc_grid", "8", "--df_grid", "8", "--dist_ref_points",
             "128", "--workers", "0"]
GLOB = ["--mesh_glob", "*/*/models/model_normalized.*"]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    logging.getLogger("trimesh").setLevel(logging.ERROR)


def put(root: Path, synset: str, model: str, body: str, ext: str = "obj") -> Path:
    """A mesh laid out as ShapeNetCore.v2: ``<synset>/<model>/models/model_normalized.<ext>``."""
    p = root / synset / model / "models" / f"model_normalized.{ext}"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(body)
    return p


def corners(v: np.ndarray, f: np.ndarray) -> set[tuple]:
    """Faces as a set of corner-coordinate triples (order of faces and of files free)."""
    return {tuple(map(tuple, np.asarray(v, float)[face].round(9))) for face in np.asarray(f)}


# ---------------------------------------------------------------------------------------
# OBJ relative (negative) indices: each names a vertex defined above the face statement

# two bodies written the way exporters do it: each body's vertices, then its faces with
# relative indices; texture coordinates, normals, groups and a material file that is missing
TWO_BODIES_RELATIVE = """\
mtllib model_normalized.mtl
o lower
v 0 0 0
v 1 0 0
v 0 1 0
vt 0 0
vt 1 0
vt 0 1
vn 0 0 1
g lower_group
usemtl paint
f -3/-3/-1 -2/-2/-1 -1/-1/-1
o upper
v 0 0 1
v 1 0 1
v 0 1 1
vt 0.5 0.5
f -3/-1 -2/-1 -1/-1
"""
LOWER = ((0, 0, 0), (1, 0, 0), (0, 1, 0))
UPPER = ((0, 0, 1), (1, 0, 1), (0, 1, 1))


@pytest.mark.parametrize("loader", [load_mesh, load_mesh_as_original])
def test_obj_relative_indices_name_the_vertices_above_the_face(loader, tmp_path):
    p = put(tmp_path, "02691156", "m0", TWO_BODIES_RELATIVE)
    v, f = loader(p)
    assert corners(v, f) == {LOWER, UPPER}


def test_obj_relative_indices_give_both_bodies_in_the_cache(tmp_path, capsys):
    root = tmp_path / "sn"
    put(root, "02691156", "m0", TWO_BODIES_RELATIVE)
    out = tmp_path / "out"
    assert sn_cli.main(["--shapenet_root", str(root), "--out_root", str(out)] + TINY_ARGS) == 0
    (npz,) = out.glob("*/02691156/m0.npz")
    pc = np.load(npz)["pc_xyz"].astype(float)
    # bbox centre (0.5, 0.5, 0.5), radius sqrt(3)/2: the two triangles at z = -+1/sqrt(3)
    z = 1 / np.sqrt(3)
    on_lower, on_upper = np.isclose(pc[:, 2], -z, atol=1e-6), np.isclose(pc[:, 2], z, atol=1e-6)
    assert (on_lower | on_upper).all()
    assert 0.3 < on_lower.mean() < 0.7  # equal areas: about half the samples on each


BAD_INDICES = {
    "zero": ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n", "OBJ line 4: face index 0"),
    "zero_texture": ("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nf 1/0 2/1 3/1\n",
                     "OBJ line 5: face index 0"),
    "before_first": ("v 0 0 0\nv 1 0 0\nf -3 -2 -1\nv 0 1 0\n",
                     "OBJ line 3: relative index -3 refers before the first vertex"),
    "malformed": ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 -x 3\n", "OBJ line 4: malformed face index"),
}


def test_obj_bad_face_indices_fail_one_line_naming_file_line_and_cause(tmp_path, capsys):
    root = tmp_path / "sn"
    paths = {name: put(root, "02691156", name, body) for name, (body, _) in BAD_INDICES.items()}
    put(root, "02691156", "good", TWO_BODIES_RELATIVE)
    for name, p in paths.items():
        for cleanup in ("clean", "none"):
            with pytest.raises(MeshError, match=BAD_INDICES[name][1]):
                prepare_mesh(p, cleanup)
    out = tmp_path / "out"
    rc = sn_cli.main(["--shapenet_root", str(root), "--out_root", str(out), "--max_failures",
                      "3"] + TINY_ARGS)
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    fails = [ln for ln in err.splitlines() if " FAIL " in ln]
    assert len(fails) == len(BAD_INDICES)
    for name, p in paths.items():
        (line,) = [ln for ln in fails if f" FAIL {p}: " in ln]
        assert BAD_INDICES[name][1] in line
        assert not list(out.glob(f"*/02691156/{name}.npz"))
    assert len(list(out.glob("*/02691156/good.npz"))) == 1


# ---------------------------------------------------------------------------------------
# hard but valid: open, flipped, multi-body, inner faces, duplicates, big and off-centre

# an open box (no top) with two sides wound inward, a separate slanted triangle far away, an
# inner face through the box, a duplicated vertex (8) and an unreferenced one (12)
HARD_V = [(0, 0, 0), (2, 0, 0), (2, 1, 0), (0, 1, 0), (0, 0, 1), (2, 0, 1), (2, 1, 1),
          (0, 1, 1), (0, 0, 0), (4, 3, 2), (5, 3, 2.5), (4, 4, 3), (9, 9, 9), (0.2, 0.2, 0.5),
          (1.8, 0.2, 0.5), (1.0, 0.8, 0.5)]
HARD_F = [(8, 3, 2, 1), (0, 1, 5, 4), (1, 2, 6, 5), (7, 6, 2, 3), (3, 0, 4, 7),  # 2 flipped
          (9, 10, 11), (13, 14, 15)]
HARD_SCALE, HARD_SHIFT = 1000.0, np.array([-3000.0, 12000.0, 500.0])


def hard_obj() -> str:
    v = np.array(HARD_V, float) * HARD_SCALE + HARD_SHIFT
    lines = ["v {!r} {!r} {!r}".format(*p) for p in v.tolist()]
    lines += ["f " + " ".join(str(i + 1) for i in face) for face in HARD_F]
    return "\n".join(lines) + "\n"


def reference_mesh() -> trimesh.Trimesh:
    """The hard mesh normalised here: bbox centre of the referenced vertices, unit sphere."""
    v = np.array(HARD_V, float) * HARD_SCALE + HARD_SHIFT
    tris = []
    for face in HARD_F:
        tris += [(face[0], face[k], face[k + 1]) for k in range(1, len(face) - 1)]
    f = np.array(tris)
    used = v[np.unique(f)]
    c = (used.max(0) + used.min(0)) / 2
    s = np.linalg.norm(used - c, axis=1).max()
    return trimesh.Trimesh((v - c) / s, f, process=False)


def first_hits(tri: np.ndarray, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float64 Moller-Trumbore over every triangle: ``(t (M,) inf for a miss, face (M,))``."""
    p0, e1, e2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    h = np.cross(d[:, None], e2[None])
    det = np.einsum("fk,mfk->mf", e1, h)
    ok = np.abs(det) > 1e-14
    inv = np.where(ok, 1 / np.where(ok, det, 1), 0)
    s = o[:, None] - p0[None]
    u = inv * np.einsum("mfk,mfk->mf", s, h)
    q = np.cross(s, e1[None])
    w = inv * np.einsum("mk,mfk->mf", d, q)
    t = inv * np.einsum("fk,mfk->mf", e2, q)
    hit = ok & (u >= 0) & (w >= 0) & (u + w <= 1) & (t > 1e-9)
    t = np.where(hit, t, np.inf)
    return t.min(1), t.argmin(1)


def test_hard_valid_mesh_cache_matches_brute_force(tmp_path):
    p = put(tmp_path, "02691156", "hard", hard_obj())
    ref = reference_mesh()
    cfg = MeshCacheConfig(pc_points=400, pt_pool=300, ray_pool=400, n_views=8,
                          rays_per_view=50, pc_grid=16, df_grid=16, dist_ref_points=512,
                          pt_dist_mode="mesh")
    a = build_mesh_cache(p, cfg, seed=3)
    pc = a["pc_xyz"].astype(float)
    # normalisation: every sample in the unit ball; the farthest corner from the bbox centre
    # (2.5, 2, 1.5) is vertex 0, at radius 1
    assert np.linalg.norm(pc, axis=1).max() <= 1 + 1e-6
    assert np.isclose(np.linalg.norm(ref.vertices[0]), 1.0)
    # surface samples on the surface; normals of the sampled face as stored (either winding)
    _, dist, face = trimesh.proximity.closest_point(ref, pc)
    assert dist.max() < 1e-6
    assert np.allclose(np.abs((ref.face_normals[face] * a["pc_n"]).sum(1)), 1, atol=1e-5)
    # every body is sampled: the far triangle and the inner face too
    assert {int(i) for i in face} >= {10, 11}
    # exact mesh distance
    pool = a["pt_xyz_pool"].astype(float)
    _, exact, _ = trimesh.proximity.closest_point(ref, pool)
    assert np.allclose(a["pt_dist_pool"], exact, atol=1e-6)
    # rays: hit flag, distance and hit-face normal against the brute force
    t, k = first_hits(ref.vertices[ref.faces], a["ray_o_pool"].astype(float),
                      a["ray_d_pool"].astype(float))
    hit = np.isfinite(t)
    assert 0 < hit.sum() < len(hit)
    np.testing.assert_array_equal(a["ray_hit_pool"], hit.astype(np.float32))
    assert np.allclose(a["ray_t_pool"][hit], t[hit], atol=1e-5)
    assert np.all(a["ray_t_pool"][~hit] == 0)
    assert np.allclose(np.abs((ref.face_normals[k[hit]] * a["ray_n_pool"][hit]).sum(1)), 1,
                       atol=1e-5)
    # kdtree mode: distances to surface samples are upper bounds of the exact distance
    b = build_mesh_cache(p, MeshCacheConfig(**{**cfg.as_dict(), "pt_dist_mode": "kdtree"}), 3)
    _, exact_b, _ = trimesh.proximity.closest_point(ref, b["pt_xyz_pool"].astype(float))
    assert np.all(b["pt_dist_pool"] >= exact_b - 1e-6)
    for name, arr in {**a, **b}.items():
        assert np.all(np.isfinite(arr.astype(float))), name


# ---------------------------------------------------------------------------------------
# truncated text files and face indices outside the vertex list

TETRA = "0 0 0\n1 0 0\n0 1 0\n0 0 1\n"
TETRA_FACES = "3 0 2 1\n3 0 1 3\n3 0 3 2\n3 1 2 3\n"
PLY_HEAD = ("ply\nformat ascii 1.0\nelement vertex {}\nproperty float x\nproperty float y\n"
            "property float z\nelement face {}\nproperty list uchar int vertex_indices\n"
            "end_header\n")
BROKEN = {
    # a file cut inside its face list: the first two faces alone would load
    "off_cut_faces": ("off", "OFF\n4 4 0\n" + TETRA + "3 0 2 1\n3 0 1 3\n",
                      "truncated OFF: the header declares 4 vertices and 4 faces"),
    # one vertex line missing: the first face line would become the last vertex
    "off_cut_vertex": ("off", "OFF\n# comment\n5 4 0\n" + TETRA + TETRA_FACES,
                       "truncated OFF: the header declares 5 vertices and 4 faces"),
    "off_glued_cut": ("off", "OFF4 4 0\n" + TETRA + "3 0 2 1\n",
                      "truncated OFF: the header declares 4 vertices and 4 faces"),
    "ply_cut_faces": ("ply", PLY_HEAD.format(4, 4) + TETRA + "3 0 2 1\n3 0 1 3\n",
                      "PLY body ends inside element 'face'"),
    "ply_index_past_end": ("ply", PLY_HEAD.format(4, 1) + TETRA + "3 0 1 7\n",
                           "face indices out of range [0, 4)"),
}
VALID = {  # the same layouts complete, comments and blank lines between the rows
    "off_full": ("off", "OFF\n4 4 0\n\n" + TETRA + "# faces\n" + TETRA_FACES),
    "off_glued_full": ("off", "OFF4 4 0\n" + TETRA + TETRA_FACES),
    "ply_full": ("ply", PLY_HEAD.format(4, 4) + TETRA + TETRA_FACES),
}


def test_truncated_or_out_of_range_files_fail_instead_of_a_partial_mesh(tmp_path, capsys):
    root = tmp_path / "sn"
    bad = {name: put(root, "02933112", name, body, ext)
           for name, (ext, body, _) in BROKEN.items()}
    good = {name: put(root, "02933112", name, body, ext) for name, (ext, body) in VALID.items()}
    tetra = {((0, 0, 0), (0, 1, 0), (1, 0, 0)), ((0, 0, 0), (1, 0, 0), (0, 0, 1)),
             ((0, 0, 0), (0, 0, 1), (0, 1, 0)), ((1, 0, 0), (0, 1, 0), (0, 0, 1))}
    for name, p in good.items():
        for loader in (load_mesh, load_mesh_as_original):
            assert corners(*loader(p)) == tetra, (name, loader.__name__)
    for cleanup in ("clean", "none"):
        for name, p in bad.items():
            with pytest.raises(MeshError, match=re.escape(BROKEN[name][2])):
                prepare_mesh(p, cleanup)
        out = tmp_path / f"out_{cleanup}"
        rc = sn_cli.main(["--shapenet_root", str(root), "--out_root", str(out), "--mesh_cleanup",
                          cleanup, "--max_failures", str(len(BROKEN) - 1)] + GLOB + TINY_ARGS)
        err = capsys.readouterr().err
        assert rc == 1 and "Traceback" not in err
        for name, p in bad.items():
            (line,) = [ln for ln in err.splitlines() if f" FAIL {p}: " in ln]
            assert BROKEN[name][2] in line
        written = sorted(q.stem for q in out.glob("*/02933112/*.npz"))
        assert written == sorted(VALID)


# ---------------------------------------------------------------------------------------
# multi-geometry scenes (.glb): every body with its node transform; point clouds alone fail


def test_glb_scene_bodies_keep_their_transforms_and_point_clouds_alone_fail(tmp_path, capsys):
    tri = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]], process=False)
    scene = trimesh.Scene()
    scene.add_geometry(tri, geom_name="a", transform=np.diag([2.0, 2.0, 2.0, 1.0]))
    moved = np.eye(4)
    moved[:3, 3] = (10, 0, 5)
    scene.add_geometry(tri, geom_name="b", transform=moved)  # the same body, instanced
    scene.add_geometry(trimesh.PointCloud(np.ones((5, 3))), geom_name="pts")
    root = tmp_path / "sn"
    p = root / "04379243" / "scene" / "models" / "model_normalized.glb"
    p.parent.mkdir(parents=True)
    p.write_bytes(scene.export(file_type="glb"))
    only_points = root / "04379243" / "points" / "models" / "model_normalized.glb"
    only_points.parent.mkdir(parents=True)
    only_points.write_bytes(trimesh.Scene([trimesh.PointCloud(np.eye(3))]).export(file_type="glb"))
    expected = {((0, 0, 0), (2, 0, 0), (0, 2, 0)), ((10, 0, 5), (11, 0, 5), (10, 1, 5))}
    for loader in (load_mesh, load_mesh_as_original):
        assert corners(*loader(p)) == expected
    out = tmp_path / "out"
    rc = sn_cli.main(["--shapenet_root", str(root), "--out_root", str(out), "--max_failures",
                      "1"] + GLOB + TINY_ARGS)
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if " FAIL " in ln]
    assert f" FAIL {only_points}: " in line and "only PointCloud geometry" in line
    assert [q.stem for q in out.glob("*/04379243/*.npz")] == ["scene"]
    failures = (out / "_meta" / "preprocess_failures.txt").read_text()  # the skip is recorded
    assert failures.startswith(f"{only_points}\t") and failures.count("\n") == 1
