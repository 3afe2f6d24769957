"""Caches written by the original 3D-NEPA code read as they are (issue 14, item 1).

The fixtures write files the way the original does (``np.savez_compressed`` of the keys and
dtypes of the original's ``preprocess_modelnet40.py`` / ``preprocess_scanobjectnn.py``,
KohsukeIde/3D-NEPA @ 737d98f; no ``schema_version``), with numpy only: nothing of this
project's writer is used to make them.
"""

import numpy as np
import pytest

from nepa3d.backends import BACKENDS, LeakageError, get_pools, read_backend_arrays
from nepa3d.data import migrate_add_pt_dist_pc_pool as migrate
from nepa3d.data.cache import CacheError, load_cache
from nepa3d.data.dataset import Item, TokenDataset
from nepa3d.token.tokenizer import TokenizerConfig

N, P, M, G = 64, 120, 40, 8


def original_mesh_arrays(seed: int = 0, with_pc_pool: bool = True) -> dict:
    """The original's mesh cache layout (``preprocess_modelnet40.preprocess_one``): a sphere of radius 0.6."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(N, 3))
    pc = 0.6 * d / np.linalg.norm(d, axis=1, keepdims=True)
    pts = rng.uniform(-1, 1, (P, 3))
    dist = np.abs(np.linalg.norm(pts, axis=1) - 0.6)
    o = rng.normal(size=(M, 3))
    o = 2.2 * o / np.linalg.norm(o, axis=1, keepdims=True)
    f4 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    out = {
        "pc_xyz": f4(pc), "pc_n": f4(pc / 0.6), "pt_xyz_pool": f4(pts), "pt_dist_pool": f4(dist),
        "pt_dist_pc_pool": f4(dist + 0.01), "pt_dist_udf_pool": f4(dist + 0.02),
        "udf_grid": rng.uniform(0, 1, (G, G, G)).astype(np.float16),
        "occ_grid": (rng.uniform(size=(G, G, G)) < 0.2).astype(np.uint8),
        "df_grid": np.array([G], np.int32), "df_dilate": np.array([1], np.int32),
        "ray_o_pool": f4(o), "ray_d_pool": f4(-o / 2.2), "ray_hit_pool": f4(np.ones(M)),
        "ray_t_pool": f4(np.full(M, 1.6)), "ray_n_pool": f4(o / 2.2),
        "ray_hit_pc_pool": f4(np.ones(M)), "ray_t_pc_pool": f4(np.full(M, 1.55)),
        "ray_n_pc_pool": f4(o / 2.2),
    }
    if not with_pc_pool:
        del out["pt_dist_pc_pool"]
    return out


def original_scan_arrays(seed: int = 1) -> dict:
    """The original's ScanObjectNN layout (``preprocess_scanobjectnn.py``): no pc pool, no UDF, zero rays."""
    a = original_mesh_arrays(seed)
    keep = ("pc_xyz", "pc_n", "pt_xyz_pool", "pt_dist_pool")
    out = {k: a[k] for k in keep}
    out["pc_n"] = np.zeros_like(out["pc_n"])
    out.update(ray_o_pool=np.zeros((M, 3), np.float32), ray_d_pool=np.zeros((M, 3), np.float32),
               ray_hit_pool=np.zeros(M, np.float32), ray_t_pool=np.zeros(M, np.float32),
               ray_n_pool=np.zeros((M, 3), np.float32))
    return out


def write_original(path, arrays):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def test_original_mesh_cache_reads_as_it_is(tmp_path):
    a = original_mesh_arrays()
    p = write_original(tmp_path / "train" / "syn" / "m.npz", a)
    full = load_cache(p)
    assert "schema_version" not in full
    for k, v in a.items():
        assert full[k].dtype == v.dtype and np.array_equal(full[k], v), k
    for backend in BACKENDS:
        pools = get_pools(backend, p)                  # lazy read of the backend's keys
        assert np.array_equal(pools["pt_xyz_pool"], a["pt_xyz_pool"])
    assert np.array_equal(get_pools("mesh", p)["pt_dist_pool"], a["pt_dist_pool"])
    assert np.array_equal(get_pools("pointcloud", p)["pt_dist_pool"], a["pt_dist_pc_pool"])
    assert np.array_equal(get_pools("pointcloud", p)["ray_t_pool"], a["ray_t_pc_pool"])
    assert np.array_equal(get_pools("udfgrid", p)["pt_dist_pool"], a["pt_dist_udf_pool"])
    assert set(read_backend_arrays("mesh", p)) == {
        "pt_xyz_pool", "pt_dist_pool", "ray_o_pool", "ray_d_pool", "ray_hit_pool", "ray_t_pool",
        "ray_n_pool"}


def test_original_files_tokenise_like_stamped_ones(tmp_path):
    """The same arrays, unstamped (original) or stamped (migrated), give the same tokens."""
    a = original_mesh_arrays(3)
    legacy = write_original(tmp_path / "legacy" / "train" / "syn" / "m.npz", a)
    stamped = write_original(tmp_path / "stamped" / "train" / "syn" / "m.npz",
                             dict(a, schema_version=np.array([1], np.int32)))
    tok = TokenizerConfig(n_point=16, n_ray=8)
    for backend in ("mesh", "pointcloud", "udfgrid"):
        feats = [TokenDataset([Item(str(p), backend)] * 3, tok, cache_items=0)[1][0]
                 for p in (legacy, stamped)]
        assert np.array_equal(feats[0].numpy(), feats[1].numpy()), backend


def test_original_scan_cache_needs_the_migration_for_point_cloud_backends(tmp_path, capsys):
    p = write_original(tmp_path / "train" / "class_000" / "s.npz", original_scan_arrays())
    assert np.array_equal(get_pools("mesh", p)["pt_dist_pool"], np.load(p)["pt_dist_pool"])
    with pytest.raises(LeakageError) as e:
        get_pools("pointcloud", p)
    msg = str(e.value)
    assert str(p) in msg and "pt_dist_pc_pool" in msg and "migrate_add_pt_dist_pc_pool" in msg
    assert migrate.main(["--cache_root", str(tmp_path), "--workers", "0"]) == 0
    assert "done: ok=1 skip=0 fail=0 total=1 stamped=0" in capsys.readouterr().out
    z = np.load(p)
    assert int(z["schema_version"][0]) == 1
    # scan caches: pt_dist_pool is the NN distance to pc_xyz already; the migration's is equal
    brute = np.sqrt(((z["pt_xyz_pool"][:, None, :].astype(np.float64)
                      - z["pc_xyz"][None].astype(np.float64)) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(get_pools("pointcloud", p)["pt_dist_pool"], brute, rtol=1e-6)


def test_migration_only_stamps_when_only_the_stamp_is_missing(tmp_path, capsys):
    a = original_mesh_arrays(5)
    p = write_original(tmp_path / "train" / "syn" / "m.npz", a)
    assert migrate.main(["--cache_root", str(tmp_path), "--workers", "0"]) == 0
    assert "done: ok=0 skip=0 fail=0 total=1 stamped=1" in capsys.readouterr().out
    with np.load(p) as z:
        assert set(z.files) == set(a) | {"schema_version"}
        assert int(z["schema_version"][0]) == 1
        for k, v in a.items():
            assert z[k].dtype == v.dtype and np.array_equal(z[k], v), k   # bit for bit
    assert migrate.main(["--cache_root", str(tmp_path), "--workers", "0"]) == 0
    assert "done: ok=0 skip=1 fail=0 total=1 stamped=0" in capsys.readouterr().out


@pytest.mark.parametrize("mutate,key,words", [
    (lambda a: a.__setitem__("pt_xyz_pool", a["pt_xyz_pool"].astype(np.float64)), "pt_xyz_pool", "dtype"),
    (lambda a: a.pop("pt_dist_pool"), "pt_dist_pool", "missing"),
    (lambda a: a.__setitem__("ray_t_pool", a["ray_t_pool"][:-1]), "ray_t_pool", "shape"),
    (lambda a: a["pt_dist_pool"].__setitem__(3, np.inf), "pt_dist_pool", "NaN or inf"),
    (lambda a: a.__setitem__("schema_version", np.array([2], np.int32)), "schema_version", "version 2"),
])
def test_bad_legacy_files_are_refused_naming_file_and_key(tmp_path, mutate, key, words):
    a = original_mesh_arrays(7)
    mutate(a)
    p = write_original(tmp_path / "bad.npz", a)
    for read in (load_cache, lambda q: get_pools("mesh", q)):
        with pytest.raises(CacheError) as e:
            read(p)
        assert e.value.key == key and str(p) in str(e.value) and words in str(e.value)


def test_a_backend_key_the_legacy_file_lacks_is_named(tmp_path):
    a = original_mesh_arrays(8)
    del a["pt_dist_udf_pool"], a["udf_grid"], a["occ_grid"]   # an older original profile
    p = write_original(tmp_path / "old.npz", a)
    assert np.array_equal(get_pools("udfgrid", p)["pt_dist_pool"], a["pt_dist_pool"])
    del a["ray_hit_pool"]
    p2 = write_original(tmp_path / "older.npz", a)
    with pytest.raises(CacheError) as e:
        get_pools("mesh", p2)
    assert e.value.key == "ray_hit_pool" and str(p2) in str(e.value)
