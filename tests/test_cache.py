"""The cache contract: validated reads name the file and the key; writes are atomic."""

import numpy as np
import pytest

from nepa3d.backends import LeakageError, get_pools
from nepa3d.data.cache import SCHEMA_VERSION, CacheError, load_cache, save_cache
from planted import planted_arrays


@pytest.fixture
def arrays():
    return planted_arrays("sphere", 0.5, np.random.default_rng(0), N=32, P=40, M=8, G=4)


def test_roundtrip_keeps_arrays(tmp_path, arrays):
    p = tmp_path / "a" / "x.npz"
    save_cache(p, arrays)
    back = load_cache(p)
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v)
    assert list(tmp_path.rglob(".tmp_*")) == []


@pytest.mark.parametrize("mutate,key", [
    (lambda a: a.pop("ray_t_pool"), "ray_t_pool"),
    (lambda a: a.__setitem__("pt_dist_pool", a["pt_dist_pool"].astype(np.float64)), "pt_dist_pool"),
    (lambda a: a.__setitem__("pt_dist_pool", a["pt_dist_pool"][:-1]), "pt_dist_pool"),
    (lambda a: a["pt_xyz_pool"].__setitem__((0, 0), np.nan), "pt_xyz_pool"),
])
def test_invalid_arrays_are_refused_naming_the_key(tmp_path, arrays, mutate, key):
    mutate(arrays)
    p = tmp_path / "bad.npz"
    with pytest.raises(CacheError) as e:
        save_cache(p, arrays)
    assert e.value.key == key and str(p) in str(e.value)
    assert not p.exists(), "a refused write leaves no file"
    np.savez_compressed(p, schema_version=np.array([SCHEMA_VERSION], np.int32), **arrays)  # bypasses the schema
    with pytest.raises(CacheError) as e:
        load_cache(p)
    assert e.value.key == key


def test_corrupt_and_truncated_files_name_the_path(tmp_path, arrays):
    p = tmp_path / "ok.npz"
    save_cache(p, arrays)
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    for bad in (trunc, garbage, tmp_path / "missing.npz"):
        with pytest.raises(CacheError) as e:
            load_cache(bad)
        assert str(bad) in str(e.value)


def test_pointcloud_backends_refuse_mesh_distances(tmp_path, arrays):
    del arrays["pt_dist_pc_pool"]  # a cache written before the leakage fix
    p = tmp_path / "legacy.npz"
    save_cache(p, arrays)
    assert np.array_equal(get_pools("mesh", p)["pt_dist_pool"], arrays["pt_dist_pool"])
    with pytest.raises(LeakageError) as e:
        get_pools("pointcloud_noray", p)
    assert "migrate_add_pt_dist_pc_pool" in str(e.value) and str(p) in str(e.value)


def test_repeated_loads_come_from_the_process_memo_read_only(tmp_path, arrays):
    p = tmp_path / "m.npz"
    save_cache(p, arrays)
    first, second = load_cache(p), load_cache(p)
    assert first is not second  # each caller owns its dict ...
    assert all(first[k] is second[k] for k in first)  # ... of the same decompressed arrays
    with pytest.raises(ValueError):
        first["pt_dist_pool"][0] = 123.0  # nobody can change what the next job reads
    first["extra"] = np.zeros(1)
    assert "extra" not in load_cache(p)
    assert np.array_equal(load_cache(p, keys=["pt_dist_pool"])["pt_dist_pool"], arrays["pt_dist_pool"])


def test_a_rewritten_file_is_read_again(tmp_path, arrays):
    p = tmp_path / "m.npz"
    save_cache(p, arrays)
    before = load_cache(p)
    changed = dict(arrays, pt_dist_pool=arrays["pt_dist_pool"] + 1.0)
    save_cache(p, changed)  # a new file (os.replace): new inode and mtime
    after = load_cache(p)
    assert np.array_equal(after["pt_dist_pool"], arrays["pt_dist_pool"] + 1.0)
    assert not np.array_equal(before["pt_dist_pool"], after["pt_dist_pool"])


def test_the_memo_can_be_turned_off(tmp_path, arrays, monkeypatch):
    monkeypatch.setenv("NEPA3D_LOADED_CACHE_MB", "0")
    p = tmp_path / "off.npz"
    save_cache(p, arrays)
    a, b = load_cache(p), load_cache(p)
    assert a["pt_dist_pool"] is not b["pt_dist_pool"] and a["pt_dist_pool"].flags.writeable
