"""The voxel backend: point-cloud-only answers against brute-force references."""

import argparse

import numpy as np
import pytest

from nepa3d.backends import BACKENDS, VoxelConfig, get_pools
from nepa3d.data.cache import CacheError
from nepa3d.data.mixed_pretrain import build_corpus, load_mix_config
from planted import planted_arrays, write_planted

MESH_DERIVED = ("pt_dist_pool", "pt_dist_udf_pool", "pt_dist_pc_pool", "udf_grid", "occ_grid",
                "ray_hit_pool", "ray_t_pool", "ray_n_pool", "ray_hit_pc_pool", "ray_t_pc_pool",
                "ray_n_pc_pool")


def sphere(G_unused=None, seed=0, N=600, P=200, M=48):
    a = planted_arrays("sphere", 0.5, np.random.default_rng(seed), N=N, P=P, M=M, G=4)
    a["pc_n"] = (a["pc_xyz"] / np.linalg.norm(a["pc_xyz"], axis=1, keepdims=True)).astype(np.float32)
    return a


def brute_nearest_cell_distance(points, pc, grid, dilate):
    """Occupied cells by looping; dilation by 6-neighbour steps; distance between cell centres."""
    vox = 2.0 / grid
    occ = set()
    for p in np.asarray(pc, float):
        occ.add(tuple(int(min(max(np.floor((c + 1) / vox), 0), grid - 1)) for c in p))
    for _ in range(dilate):
        grown = set(occ)
        for (i, j, k) in occ:
            for d in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)):
                n = (i + d[0], j + d[1], k + d[2])
                if all(0 <= x < grid for x in n):
                    grown.add(n)
        occ = grown
    cells = np.array(sorted(occ), float)
    out = []
    for p in np.asarray(points, float):
        c = np.array([min(max(np.floor((x + 1) / vox), 0), grid - 1) for x in p])
        out.append(np.sqrt(((cells - c) ** 2).sum(1)).min() * vox)
    return np.array(out)


@pytest.mark.parametrize("grid,dilate", [(16, 0), (16, 1), (12, 2)])
def test_point_distance_is_the_nearest_cell_edt(grid, dilate):
    a = sphere()
    pools = get_pools("voxel", "planted.npz", a, VoxelConfig(grid, dilate, 0))
    ref = brute_nearest_cell_distance(a["pt_xyz_pool"], a["pc_xyz"], grid, dilate)
    np.testing.assert_allclose(pools["pt_dist_pool"], ref, atol=1e-6)
    assert pools["pt_dist_pool"].dtype == np.float32 and pools["ray_available"] is True


def test_rays_hit_the_voxelised_sphere_with_point_cloud_normals():
    a = sphere(N=4000)
    grid = 32
    pools = get_pools("voxel", "planted.npz", a, VoxelConfig(grid, 1, 0))
    o, d = a["ray_o_pool"].astype(float), a["ray_d_pool"].astype(float)
    # every planted ray points at the centre from radius 2.2: the sphere (r = 0.5) is entered at
    # t = 1.7; the dilated occupancy is entered at most ~2 voxel diagonals earlier, never later
    vox = 2.0 / grid
    assert pools["ray_hit_pool"].min() == 1.0
    t = pools["ray_t_pool"].astype(float)
    assert np.all(t <= 1.7 + 1e-6) and np.all(t >= 1.7 - 2 * np.sqrt(3) * vox)
    # the normal is pc_n of the pc point nearest to the hit point (brute force)
    hitp = o + t[:, None] * d
    nn = np.argmin(((hitp[:, None, :] - a["pc_xyz"][None].astype(float)) ** 2).sum(-1), axis=1)
    np.testing.assert_allclose(pools["ray_n_pool"], a["pc_n"][nn], atol=1e-6)
    # a ray that misses the cube [-1, 1]^3 entirely is a miss with zeros
    miss = dict(a, ray_o_pool=np.array([[3.0, 3.0, 3.0]], np.float32),
                ray_d_pool=np.array([[1.0, 0.0, 0.0]], np.float32))
    p2 = get_pools("voxel", "planted.npz", miss, VoxelConfig(grid, 1, 0))
    assert p2["ray_hit_pool"][0] == 0 and p2["ray_t_pool"][0] == 0 and not p2["ray_n_pool"].any()


def test_voxel_backend_reads_no_mesh_derived_array():
    a = sphere()
    full = get_pools("voxel", "planted.npz", dict(a), VoxelConfig(16, 1, 0))
    stripped = {k: v for k, v in a.items() if k not in MESH_DERIVED}
    lean = get_pools("voxel", "planted.npz", stripped, VoxelConfig(16, 1, 0))
    for k in ("pt_dist_pool", "ray_hit_pool", "ray_t_pool", "ray_n_pool"):
        np.testing.assert_array_equal(full[k], lean[k])


def test_answers_are_memoised_per_config_and_errors_name_the_file():
    a = sphere()
    p1 = get_pools("voxel", "x.npz", a, VoxelConfig(16, 1, 0))
    p2 = get_pools("voxel", "x.npz", a, VoxelConfig(16, 1, 0))
    assert p1["pt_dist_pool"] is p2["pt_dist_pool"]
    p3 = get_pools("voxel", "x.npz", a, VoxelConfig(8, 0, 0))
    assert not np.array_equal(p1["pt_dist_pool"], p3["pt_dist_pool"])
    bad = {k: v for k, v in a.items() if k != "pc_xyz"}
    with pytest.raises(CacheError, match="x.npz"):
        get_pools("voxel", "x.npz", bad)
    with pytest.raises(ValueError, match="voxel_grid"):
        VoxelConfig(0, 1, 0)
    assert "voxel" in BACKENDS


def test_cli_flags_and_mix_overrides(tmp_path):
    ns = argparse.Namespace(voxel_grid=32, voxel_dilate=2, voxel_max_steps=7)
    assert VoxelConfig.from_args(ns) == VoxelConfig(32, 2, 7)
    write_planted(tmp_path / "c", "train", 2)
    mix = tmp_path / "mix.yaml"
    mix.write_text(f"""
datasets:
  - {{name: a, cache_root: {tmp_path / 'c'}, split: train, backend: voxel, weight: 1, voxel_grid: 16}}
  - {{name: b, cache_root: {tmp_path / 'c'}, split: train, backend: mesh, weight: 1}}
""")
    corpus = build_corpus(load_mix_config(str(mix)), num_samples=8, voxel=VoxelConfig(32, 2, 7))
    by_backend = {i.backend: i.voxel for i in corpus.items}
    assert by_backend["voxel"] == VoxelConfig(16, 2, 7)   # dataset key overrides the CLI's
    assert by_backend["mesh"] == VoxelConfig(32, 2, 7)
