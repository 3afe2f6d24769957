"""Geometry kernels against independent references (brute force, analytic, hand-computed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import trimesh

from nepa3d.geometry.distance import (
    TriangleDistanceIndex,
    closest_point_on_triangles,
    mesh_distance_exact,
    mesh_distance_trimesh,
    nearest_neighbors,
    point_triangle_distance,
    sanitize_distances,
)
from nepa3d.geometry.normalize import normalize_bbox_unit_sphere, normalize_centroid_unit_sphere
from nepa3d.geometry.pools import (
    face_normals,
    point_query_pool,
    sample_surface,
    split_counts,
    triangle_areas,
)
from nepa3d.geometry.rays import (
    camera_frames,
    cast_rays_mesh,
    dda_occupancy,
    effective_rays_per_view,
    pinhole_rays,
    pointcloud_rays,
    ray_box_interval,
    spiral_cameras,
)
from nepa3d.geometry.udf import (
    occupancy_from_points,
    trilinear_sample,
    udf_from_occupancy,
    voxel_centers,
    voxel_index,
)

# ---------------------------------------------------------------------------------------
# independent references


def brute_mesh_distance(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """float64, every point x every triangle: plane projection if it falls inside the
    triangle (same-side tests), else the nearest of the three clamped edge projections."""
    tri = np.asarray(vertices, np.float64)[np.asarray(faces)]
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    n = np.cross(b - a, c - a)
    nn = np.linalg.norm(n, axis=1)
    ok = nn > 0
    n_unit = np.where(ok[:, None], n / np.where(ok, nn, 1.0)[:, None], 0.0)

    def seg(p, s, e):
        se = e - s
        den = (se * se).sum(-1)
        t = np.where(den > 0, ((p - s) * se).sum(-1) / np.where(den > 0, den, 1.0), 0.0)
        t = np.clip(t, 0.0, 1.0)
        return np.linalg.norm(p - (s + t[..., None] * se), axis=-1)

    out = np.empty(len(points))
    for i, p in enumerate(np.asarray(points, np.float64)):
        h = ((p - a) * n_unit).sum(1)
        proj = p - h[:, None] * n_unit
        s1 = (np.cross(b - a, proj - a) * n).sum(1)
        s2 = (np.cross(c - b, proj - b) * n).sum(1)
        s3 = (np.cross(a - c, proj - c) * n).sum(1)
        inside = ok & (s1 >= 0) & (s2 >= 0) & (s3 >= 0)
        edge = np.minimum(np.minimum(seg(p, a, b), seg(p, b, c)), seg(p, c, a))
        out[i] = np.where(inside, np.abs(h), edge).min()
    return out


def tiny_meshes():
    rng = np.random.default_rng(7)
    soup_v = rng.uniform(-1, 1, size=(30, 3))
    soup_f = rng.integers(0, 30, size=(25, 3))
    soup_f = soup_f[(soup_f[:, 0] != soup_f[:, 1]) & (soup_f[:, 1] != soup_f[:, 2])
                    & (soup_f[:, 0] != soup_f[:, 2])]
    sliver_v = np.array([[-1, 0, 0], [1, 0, 0], [0, 1e-3, 0], [0, 0.5, 0.5]], float)
    sliver_f = np.array([[0, 1, 2], [0, 1, 3]])
    cyl = trimesh.creation.cylinder(0.3, 1.4, sections=8)
    return [
        ("icosphere", trimesh.creation.icosphere(1).vertices, trimesh.creation.icosphere(1).faces),
        ("box", trimesh.creation.box((1.0, 0.6, 0.3)).vertices, trimesh.creation.box((1.0, 0.6, 0.3)).faces),
        ("cylinder", cyl.vertices, cyl.faces),
        ("soup", soup_v, soup_f),
        ("sliver", sliver_v, sliver_f),
        # zero-area faces (collinear, repeated vertex) next to a proper one
        ("degenerate", np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 1, 0], [0.5, 0.5, 1]], float),
         np.array([[0, 1, 2], [3, 3, 4], [0, 3, 4]])),
    ]


def query_points(vertices, rng, n=300):
    v = np.asarray(vertices, float)
    far = rng.uniform(-1.6, 1.6, size=(n, 3))
    near = v[rng.integers(0, len(v), n)] + rng.normal(0, 0.03, size=(n, 3))
    return np.concatenate([far, near, v[:5]])  # including points exactly on vertices


# ---------------------------------------------------------------------------------------
# distances


@pytest.mark.parametrize("name,vertices,faces", tiny_meshes(), ids=[m[0] for m in tiny_meshes()])
def test_exact_distance_matches_brute_force(name, vertices, faces):
    rng = np.random.default_rng(0)
    pts = query_points(vertices, rng)
    ref = brute_mesh_distance(pts, vertices, faces)
    got = mesh_distance_exact(pts, vertices, faces)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    # the closest face returned by the index really attains the distance
    d, face = TriangleDistanceIndex(vertices, faces).query(pts)
    tri = np.asarray(vertices, float)[np.asarray(faces)[face]]
    np.testing.assert_allclose(point_triangle_distance(pts, tri[:, 0], tri[:, 1], tri[:, 2]), d,
                               atol=1e-12)


def test_exact_distance_small_leaf_batches_and_trimesh_reference():
    m = trimesh.creation.icosphere(2)
    rng = np.random.default_rng(1)
    pts = query_points(m.vertices, rng, 200)
    ref = brute_mesh_distance(pts, m.vertices, m.faces)
    idx = TriangleDistanceIndex(m.vertices, m.faces, leaf_size=1)
    np.testing.assert_allclose(idx.query(pts)[0], ref, atol=1e-12)
    # trimesh's closest_point is kept as a reference; it agrees to its own precision
    np.testing.assert_allclose(mesh_distance_trimesh(pts, m.vertices, m.faces, chunk=64), ref,
                               atol=1e-5)


def test_closest_point_regions_and_degenerate():
    a, b, c = np.array([0.0, 0, 0]), np.array([1.0, 0, 0]), np.array([0.0, 1, 0])
    cases = {  # point -> hand-computed closest point
        (0.2, 0.2, 0.5): (0.2, 0.2, 0.0),    # face interior
        (-1.0, -1.0, 0.0): (0.0, 0.0, 0.0),  # vertex A
        (2.0, -0.5, 0.0): (1.0, 0.0, 0.0),   # vertex B
        (-0.5, 2.0, 1.0): (0.0, 1.0, 0.0),   # vertex C
        (0.5, -1.0, 0.0): (0.5, 0.0, 0.0),   # edge AB
        (-1.0, 0.5, 0.0): (0.0, 0.5, 0.0),   # edge AC
        (1.0, 1.0, 0.0): (0.5, 0.5, 0.0),    # edge BC
    }
    p = np.array(list(cases), float)
    want = np.array(list(cases.values()), float)
    k = len(p)
    got = closest_point_on_triangles(p, np.tile(a, (k, 1)), np.tile(b, (k, 1)), np.tile(c, (k, 1)))
    np.testing.assert_allclose(got, want, atol=1e-15)
    # collinear (zero-area) triangle: distance to the segment it spans
    d = point_triangle_distance(np.array([[0.5, 1.0, 0.0], [3.0, 0.0, 0.0]]),
                                np.zeros((2, 3)), np.tile([1.0, 0, 0], (2, 1)),
                                np.tile([2.0, 0, 0], (2, 1)))
    np.testing.assert_allclose(d, [1.0, 1.0], atol=1e-15)


def test_nearest_neighbors_and_sanitize():
    rng = np.random.default_rng(2)
    ref, q = rng.normal(size=(300, 3)), rng.normal(size=(200, 3))
    brute = np.linalg.norm(q[:, None] - ref[None], axis=2)
    d, i = nearest_neighbors(q, ref, chunk=37)
    np.testing.assert_allclose(d, brute.min(1), atol=1e-12)
    np.testing.assert_array_equal(i, brute.argmin(1))
    s = sanitize_distances(np.array([0.5, np.nan, np.inf, -np.inf, 2.0]))
    assert s.dtype == np.float32
    np.testing.assert_array_equal(s, [0.5, 2.0, 2.0, 0.0, 2.0])
    np.testing.assert_array_equal(sanitize_distances(np.array([np.nan, np.inf])), [1.0, 1.0])


# ---------------------------------------------------------------------------------------
# normalisation, sampling, pool


def test_normalisation_conventions():
    v = np.array([[0, 0, 0], [4, 0, 0], [0, 2, 0], [0, 0, 1], [1, 1, 1]], float)
    n, center, scale = normalize_bbox_unit_sphere(v)
    np.testing.assert_allclose(center, [2.0, 1.0, 0.5])            # bbox centre, not centroid
    np.testing.assert_allclose(np.linalg.norm(n, axis=1).max(), 1.0)
    np.testing.assert_allclose(n * scale + center, v)
    p, c2, _ = normalize_centroid_unit_sphere(v)
    np.testing.assert_allclose(c2, v.mean(0))
    np.testing.assert_allclose(np.linalg.norm(p, axis=1).max(), 1.0)
    same = normalize_bbox_unit_sphere(np.ones((3, 3)))  # zero extent: scale falls back to 1
    assert same[2] == 1.0 and np.all(same[0] == 0)


def test_split_counts_python_round():
    assert split_counts(20000, 0.5) == (10000, 10000)
    assert split_counts(5, 0.5) == (2, 3)   # round(2.5) = 2 (half to even)
    assert split_counts(7, 0.5) == (4, 3)   # round(3.5) = 4
    assert split_counts(10, 1.0) == (0, 10)
    assert split_counts(10, 0.0) == (10, 0)


def test_surface_sampling_is_area_weighted_and_on_surface():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [3, 0, 1], [0, 2, 1]], float)
    f = np.array([[0, 1, 2], [3, 4, 5]])
    np.testing.assert_allclose(triangle_areas(v, f), [0.5, 3.0])
    pts, fi = sample_surface(v, f, 20000, np.random.default_rng(0))
    assert abs((fi == 1).mean() - 3.0 / 3.5) < 0.01
    np.testing.assert_allclose(brute_mesh_distance(pts[:200], v, f), 0.0, atol=1e-12)
    np.testing.assert_allclose(face_normals(v, f), [[0, 0, 1], [0, 0, 1]])
    np.testing.assert_allclose(face_normals(v, f[:, ::-1]), [[0, 0, -1], [0, 0, -1]])


@pytest.mark.parametrize("rng_kind", ["generator", "randomstate"])
def test_point_query_pool_blocks(rng_kind):
    make = (np.random.default_rng if rng_kind == "generator" else np.random.RandomState)
    base = np.random.default_rng(3).uniform(-0.5, 0.5, size=(64, 3))
    pool = point_query_pool(base, 1001, 0.5, 0.01, make(5))
    n_uni, n_surf = split_counts(1001, 0.5)
    assert pool.shape == (1001, 3) and np.all(np.abs(pool) <= 1.0)
    surf_d = np.linalg.norm(pool[n_uni:, None] - base[None], axis=2).min(1)
    assert surf_d.max() < 0.01 * 6          # jittered copies of base points
    uni_d = np.linalg.norm(pool[:n_uni, None] - base[None], axis=2).min(1)
    assert np.median(uni_d) > 0.1            # uniform block is not near the base points
    np.testing.assert_array_equal(pool, point_query_pool(base, 1001, 0.5, 0.01, make(5)))
    clipped = point_query_pool(np.full((4, 3), 0.999), 100, 1.0, 0.5, make(1))
    assert clipped.max() == 1.0


# ---------------------------------------------------------------------------------------
# UDF grid


def test_occupancy_and_6_connected_dilation():
    occ = occupancy_from_points(np.array([[0.01, 0.01, 0.01]]), 8, dilate=0)
    assert occ.sum() == 1 and occ[4, 4, 4]
    np.testing.assert_array_equal(voxel_index(np.array([[-1.0, 1.0, 0.0], [-5, 5, -0.25]]), 8),
                                  [[0, 7, 4], [0, 7, 3]])
    d1 = occupancy_from_points(np.array([[0.01, 0.01, 0.01]]), 8, dilate=1)
    assert d1.sum() == 7 and d1[3, 4, 4] and not d1[3, 3, 4]     # cross, not cube
    d2 = occupancy_from_points(np.array([[0.01, 0.01, 0.01]]), 8, dilate=2)
    assert d2.sum() == 25                                          # octahedron of radius 2


def test_udf_edt_matches_brute_force():
    rng = np.random.default_rng(4)
    g = 9
    occ = rng.random((g, g, g)) < 0.03
    occ[0, 0, 0] = True
    udf = udf_from_occupancy(occ)
    vox = 2.0 / g
    c = voxel_centers(g)
    centres = np.stack(np.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3)
    occupied = centres[occ.reshape(-1)]
    brute = np.linalg.norm(centres[:, None] - occupied[None], axis=2).min(1).reshape(g, g, g)
    assert udf.dtype == np.float32
    np.testing.assert_allclose(udf, brute, atol=1e-6)
    assert np.all(udf[occ] == 0)
    # spot check in hand-derived units: a neighbour of an isolated voxel is one voxel away
    lone = np.zeros((g, g, g), bool)
    lone[4, 4, 4] = True
    assert udf_from_occupancy(lone)[4, 5, 4] == pytest.approx(vox)
    assert udf_from_occupancy(lone)[5, 5, 5] == pytest.approx(vox * math.sqrt(3))
    with pytest.raises(ValueError):
        udf_from_occupancy(np.zeros((4, 4, 4), bool))


def test_trilinear_hand_values_and_edge_clamp():
    g = 4  # voxel 0.5, centres at -0.75, -0.25, 0.25, 0.75
    grid = np.zeros((g, g, g))
    grid[1, 1, 1], grid[2, 1, 1] = 1.0, 3.0
    # x halfway between centres 1 and 2 (x = 0), y, z on centre 1 (-0.25): (1 + 3) / 2
    assert trilinear_sample(grid, np.array([[0.0, -0.25, -0.25]]))[0] == pytest.approx(2.0)
    # x = -0.125 (s = 1.25 -> w = .25), y = 0 (w = .5 between 1 and 2), z centre 1:
    # (0.75 * 1 + 0.25 * 3) * 0.5 (the y=2 row is zero) = 0.75
    assert trilinear_sample(grid, np.array([[-0.125, 0.0, -0.25]]))[0] == pytest.approx(0.75)
    # linear field is reproduced exactly between the outer centres
    c = voxel_centers(g)
    X, Y, Z = np.meshgrid(c, c, c, indexing="ij")
    lin = 2 * X - Y + 0.5 * Z + 0.1
    p = np.random.default_rng(5).uniform(-0.75, 0.75, size=(50, 3))
    np.testing.assert_allclose(trilinear_sample(lin, p), 2 * p[:, 0] - p[:, 1] + 0.5 * p[:, 2] + 0.1,
                               atol=1e-12)
    # beyond the outer centres the value is clamped (constant extrapolation)
    edge = trilinear_sample(lin, np.array([[1.0, 0.75, 0.75], [-1.0, -0.9, -0.8]]))
    np.testing.assert_allclose(edge, [lin[-1, -1, -1], lin[0, 0, 0]], atol=1e-12)


# ---------------------------------------------------------------------------------------
# cameras and mesh rays


def test_spiral_cameras_and_frames():
    cams = spiral_cameras(20)
    np.testing.assert_allclose(np.linalg.norm(cams, axis=1), 2.2)
    el = np.arcsin(cams[:, 2] / 2.2)
    np.testing.assert_allclose(el, np.linspace(-0.35 * np.pi, 0.35 * np.pi, 20), atol=1e-12)
    az = np.arctan2(cams[:, 1], cams[:, 0]) % (2 * np.pi)
    np.testing.assert_allclose(az, np.linspace(0, 2 * np.pi, 20, endpoint=False), atol=1e-12)
    fwd, right, up = camera_frames(np.vstack([cams, [[0, 0, 3.0]]]))  # + a pole camera
    for a, b in ((fwd, right), (fwd, up), (right, up)):
        np.testing.assert_allclose((a * b).sum(1), 0, atol=1e-12)
    np.testing.assert_allclose(fwd[-1], [0, 0, -1])
    assert effective_rays_per_view(8000, 20, 400) == 400
    assert effective_rays_per_view(1000, 3, 10) == 334


def test_pinhole_rays_shape_order_and_fov():
    o, d = pinhole_rays(4, 10, 35, np.random.default_rng(0))
    assert o.shape == d.shape == (35, 3)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0)
    cams = spiral_cameras(4)
    np.testing.assert_array_equal(o[:10], np.repeat(cams[:1], 10, 0))      # view-major
    np.testing.assert_array_equal(o[30:], np.repeat(cams[3:4], 5, 0))      # truncated
    fwd = -o / np.linalg.norm(o, axis=1, keepdims=True)
    half_diag = math.atan(math.sqrt(2) * math.tan(math.radians(30)))
    assert np.all(np.arccos(np.clip((d * fwd).sum(1), -1, 1)) <= half_diag + 1e-9)


def _rays_towards(target_points, origins):
    d = target_points - origins
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def test_mesh_rays_against_analytic_box():
    half = np.array([0.6, 0.4, 0.3])
    box = trimesh.creation.box(2 * half)
    rng = np.random.default_rng(1)
    o = spiral_cameras(20)[rng.integers(0, 20, 400)]
    d = _rays_towards(rng.uniform(-0.9, 0.9, size=(400, 3)), o)
    hit, t, n = cast_rays_mesh(box.vertices, box.faces, o, d, chunk=64)

    def slab(scale):  # analytic slab test against the box scaled by `scale`
        return ray_box_interval(o / (half * scale), d / (half * scale))

    inside, t_in, _, _ = slab(1.0)
    clear_hit = slab(0.999)[0]            # still hit when the box shrinks
    clear_miss = ~slab(1.001)[0]          # still missed when the box grows
    assert clear_hit.sum() > 100 and clear_miss.sum() > 20
    assert np.all(hit[clear_hit] == 1) and np.all(hit[clear_miss] == 0)
    h = (hit > 0) & inside
    np.testing.assert_allclose(t[h], t_in[h], rtol=0, atol=2e-6)
    hit_point = o[h] + t[h, None] * d[h]
    axis = np.argmax(np.abs(hit_point) / half, axis=1)
    rows = np.arange(len(axis))
    want_n = np.zeros_like(hit_point)
    want_n[rows, axis] = np.sign(hit_point[rows, axis])
    np.testing.assert_allclose(n[h], want_n, atol=1e-6)          # outward face normals
    assert np.all(t[hit == 0] == 0) and np.all(n[hit == 0] == 0)


def test_mesh_rays_against_analytic_sphere():
    sphere = trimesh.creation.icosphere(4)  # radius 1 circumscribed
    v, f = sphere.vertices, sphere.faces
    tri = v[f]
    fn = face_normals(v, f)
    r_in = float((fn * tri[:, 0]).sum(1).min())       # inscribed radius of the tessellation
    o = spiral_cameras(20)[np.arange(600) % 20]
    rng = np.random.default_rng(2)
    d = _rays_towards(rng.uniform(-1.3, 1.3, size=(600, 3)), o)
    hit, t, n = cast_rays_mesh(v, f, o, d)
    b = (o * d).sum(1)
    impact = np.sqrt(np.maximum((o * o).sum(1) - b * b, 0))   # distance of the line to 0
    sure_hit = impact < r_in - 1e-3
    sure_miss = impact > 1.0 + 1e-3
    assert sure_hit.sum() > 50 and sure_miss.sum() > 50
    assert np.all(hit[sure_hit] == 1) and np.all(hit[sure_miss] == 0)
    t_outer = -b - np.sqrt(np.maximum(1.0 - impact ** 2, 0))      # analytic, radius 1
    t_inner = -b - np.sqrt(np.maximum(r_in ** 2 - impact ** 2, 0))  # analytic, inscribed
    s = sure_hit
    assert np.all(t[s] >= t_outer[s] - 1e-5) and np.all(t[s] <= t_inner[s] + 1e-5)
    # normals are the outward face normals of the hit triangle
    hp = o[s] + t[s, None] * d[s]
    assert np.all((n[s] * hp).sum(1) > 0.99)


def test_cast_rays_empty_inputs():
    box = trimesh.creation.box()
    hit, t, n = cast_rays_mesh(box.vertices, box.faces, np.zeros((0, 3)), np.zeros((0, 3)))
    assert hit.shape == (0,) and n.shape == (0, 3)


# ---------------------------------------------------------------------------------------
# occupancy DDA


def _fine_march(occ, o, d, dt=2e-4, t_max=5.0):
    g = occ.shape[0]
    ts = np.arange(0.0, t_max, dt)
    p = o + ts[:, None] * d
    inb = np.all(np.abs(p) <= 1.0, axis=1)
    idx = np.clip(np.floor((p + 1.0) / (2.0 / g)).astype(int), 0, g - 1)
    hits = np.flatnonzero(inb & occ[idx[:, 0], idx[:, 1], idx[:, 2]])
    return (True, ts[hits[0]]) if len(hits) else (False, 0.0)


def test_dda_matches_fine_ray_march():
    rng = np.random.default_rng(3)
    g = 6
    occ = rng.random((g, g, g)) < 0.06
    o = rng.normal(size=(150, 3))
    o = 2.2 * o / np.linalg.norm(o, axis=1, keepdims=True)
    o[:10] = rng.uniform(-0.9, 0.9, size=(10, 3))          # some origins inside the grid
    d = _rays_towards(rng.uniform(-1.2, 1.2, size=(150, 3)), o)
    d[10:15] = [[1, 0, 0], [0, -1, 0], [0, 0, 1], [0.6, 0.8, 0], [0, 0.6, -0.8]]
    hit, t = dda_occupancy(occ, o, d)
    mismatches = 0
    for i in range(len(o)):
        bh, bt = _fine_march(occ, o[i], d[i])
        if bh != hit[i] or (bh and not (0 <= bt - t[i] <= 2.5e-4)):
            mismatches += 1
    assert hit.sum() > 20
    assert mismatches == 0
    assert np.all(t[~hit] == 0)


def test_dda_tie_goes_to_z_and_step_budget():
    occ = np.zeros((4, 4, 4), bool)
    occ[0, 0, 1] = True   # reachable from the corner voxel only by a z step first
    o = np.array([[-2.0, -2.0, -2.0]])
    d = np.ones((1, 3)) / math.sqrt(3.0)
    hit, t = dda_occupancy(occ, o, d)
    assert hit[0] and t[0] == pytest.approx(1.5 * math.sqrt(3.0))
    occ2 = np.zeros((4, 4, 4), bool)
    occ2[1, 0, 0] = True  # an x-first tie rule would enter it; z then y go first
    assert not dda_occupancy(occ2, o, d)[0][0]
    # a straight ray along +x through row (y=0, z=0) hits voxel 3 after 3 steps
    occ3 = np.zeros((4, 4, 4), bool)
    occ3[3, 0, 0] = True
    ox, dx = np.array([[-3.0, -0.75, -0.75]]), np.array([[1.0, 0.0, 0.0]])
    assert dda_occupancy(occ3, ox, dx)[0][0]
    assert dda_occupancy(occ3, ox, dx)[1][0] == pytest.approx(3.5)
    assert not dda_occupancy(occ3, ox, dx, max_steps=3)[0][0]   # only voxels 0..2 tested
    assert dda_occupancy(occ3, ox, dx, max_steps=4)[0][0]
    miss = dda_occupancy(occ3, np.array([[-3.0, 5.0, 0.0]]), dx)  # misses the box
    assert not miss[0][0] and miss[1][0] == 0


def test_pointcloud_rays_normals_from_nearest_point():
    pc = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    pc_n = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    occ = occupancy_from_points(pc, 8, 0)
    o = np.array([[-2.0, 0.1, 0.1], [-2.0, 0.6, 0.6], [-2.0, -0.9, 0.9]])
    d = np.array([[1.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0]])
    hit, t, n = pointcloud_rays(occ, pc, pc_n, o, d)
    np.testing.assert_array_equal(hit, [1, 1, 0])
    np.testing.assert_allclose(t, [2.0, 2.5, 0.0])
    np.testing.assert_allclose(n, [[0, 0, 1], [1, 0, 0], [0, 0, 0]])
    assert hit.dtype == t.dtype == n.dtype == np.float32
