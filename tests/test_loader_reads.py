"""The loader's lazy reads and the decompress-once store, against np.load as the reference."""

import io
import os
import zipfile

import numpy as np
import pytest

from nepa3d.backends import backend_keys, read_backend_arrays
from nepa3d.data import cache as cache_mod
from nepa3d.data import loader_store
from nepa3d.data import npz_members as npz
from nepa3d.data.cache import CacheError, read_cache_keys, save_cache
from nepa3d.data.dataset import Item, TokenDataset
from nepa3d.token.tokenizer import TokenizerConfig
from planted import planted_arrays


@pytest.fixture
def arrays():
    return planted_arrays("sphere", 0.5, np.random.default_rng(0), N=32, P=50, M=12, G=4)


@pytest.fixture
def cache_file(tmp_path, arrays):
    p = tmp_path / "train" / "syn" / "a.npz"
    save_cache(p, arrays)
    return p


def _same_as_np_load(path, got):
    with np.load(path, allow_pickle=False) as z:
        for k, v in got.items():
            ref = z[k]
            assert v.dtype == ref.dtype and v.shape == ref.shape and np.array_equal(v, ref), k


@pytest.mark.parametrize("writer", ["savez_compressed", "savez"])
def test_lazy_read_equals_np_load(tmp_path, writer):
    rng = np.random.default_rng(1)
    data = {"f": np.asfortranarray(rng.normal(size=(5, 7)).astype(np.float32)),
            "empty": np.zeros((0, 3), np.float32), "scalar": np.array(3.5),
            "u8": rng.integers(0, 255, (4, 4, 4)).astype(np.uint8),
            "big": rng.normal(size=(40000, 3)).astype(np.float32)}
    p = tmp_path / "x.npz"
    getattr(np, writer)(p, **data)
    fd = os.open(p, os.O_RDONLY)
    try:
        members = npz.read_directory(fd, os.fstat(fd).st_size)
        got = {k: npz.array_from_member(npz.member_bytes(fd, members[k + ".npy"]), k) for k in data}
    finally:
        os.close(fd)
    _same_as_np_load(p, got)
    assert got["f"].flags.f_contiguous


def test_zip_with_a_comment_falls_back_to_zipfile(tmp_path, cache_file):
    with zipfile.ZipFile(cache_file, "a") as zf:
        zf.comment = b"archive comment: the end record is not at the end any more"
    got = read_cache_keys(cache_file, ["pt_xyz_pool", "ray_t_pool"])
    _same_as_np_load(cache_file, got)


def test_only_the_backend_keys_are_read(cache_file, monkeypatch):
    inflated = []
    real = npz.member_bytes
    monkeypatch.setattr(npz, "member_bytes", lambda fd, m: inflated.append(m.name) or real(fd, m))
    got = read_backend_arrays("mesh", cache_file)
    assert sorted(got) == sorted(backend_keys("mesh", got)) == sorted(
        ["pt_xyz_pool", "pt_dist_pool", "ray_o_pool", "ray_d_pool", "ray_hit_pool",
         "ray_t_pool", "ray_n_pool"])
    # the schema check of a first read inflates the (tiny) stamp; no other key is inflated
    assert sorted(inflated) == sorted([k + ".npy" for k in got] + ["schema_version.npy"])
    _same_as_np_load(cache_file, got)


def test_schema_is_checked_once_per_file_version(cache_file, arrays, monkeypatch):
    calls = []
    real = cache_mod._schema_check
    monkeypatch.setattr(cache_mod, "_schema_check", lambda *a: calls.append(1) or real(*a))
    cache_mod._CHECKED.clear()
    for _ in range(3):
        read_backend_arrays("mesh", cache_file)
    assert len(calls) == 1
    bad = dict(arrays, pt_dist_pool=arrays["pt_dist_pool"].astype(np.float64))
    np.savez_compressed(cache_file, **bad)      # the file changes on disk: checked again
    os.utime(cache_file, ns=(1, 1))
    with pytest.raises(CacheError) as e:
        read_backend_arrays("mesh", cache_file)
    assert e.value.key == "pt_dist_pool" and str(cache_file) in str(e.value)
    assert len(calls) == 2


def test_non_finite_values_are_refused_on_every_read(tmp_path, arrays):
    arrays = dict(arrays)
    arrays["ray_t_pool"] = arrays["ray_t_pool"].copy()
    arrays["ray_t_pool"][2] = np.nan
    p = tmp_path / "nan.npz"
    np.savez_compressed(p, **arrays)
    for _ in range(2):   # a refused file is never recorded as checked
        with pytest.raises(CacheError) as e:
            read_backend_arrays("mesh", p)
        assert e.value.key == "ray_t_pool" and "NaN" in str(e.value)


def _flip_byte_in_member(path, member):
    """Invert one byte in the middle of ``member``'s data (found through zipfile)."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as zf:
        info = zf.getinfo(member)
    o = info.header_offset
    start = o + 30 + int.from_bytes(raw[o + 26:o + 28], "little") + int.from_bytes(raw[o + 28:o + 30], "little")
    raw[start + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "missing"])
def test_damaged_files_name_the_file(tmp_path, cache_file, damage):
    if damage == "truncate":
        cache_file.write_bytes(cache_file.read_bytes()[:-100])
    elif damage == "flip":
        _flip_byte_in_member(cache_file, "pt_xyz_pool.npy")
    elif damage == "garbage":
        cache_file.write_bytes(b"not a zip")
    else:
        cache_file.unlink()
    with pytest.raises(CacheError) as e:
        read_backend_arrays("mesh", cache_file)
    assert str(cache_file) in str(e.value)


def test_a_requested_key_the_file_lacks_is_named(cache_file):
    with pytest.raises(CacheError) as e:
        read_cache_keys(cache_file, ["pt_xyz_pool", "no_such_key"])
    assert e.value.key == "no_such_key"


# ---------------------------------------------------------------------------------------
# the decompress-once store


def test_store_reads_equal_source_reads_and_skip_the_inflate(tmp_path, cache_file, monkeypatch):
    store = tmp_path / "store"
    first = read_backend_arrays("mesh", cache_file, store)
    entries = list(store.rglob("*.npz"))
    assert len(entries) == 1
    with np.load(entries[0]) as z:                      # a plain npz, every loader key...
        assert "udf_grid" not in z.files and "pc_xyz" in z.files
        assert {i.compress_type for i in zipfile.ZipFile(entries[0]).infolist()} == {zipfile.ZIP_STORED}
    monkeypatch.setattr(npz, "_inflate", lambda *a, **k: pytest.fail("inflated on a store read"))
    for backend in ("mesh", "pointcloud", "udfgrid", "voxel"):
        got = read_backend_arrays(backend, cache_file, store)
        _same_as_np_load(cache_file, got)
    assert first.keys() == read_backend_arrays("mesh", cache_file, store).keys()


def test_store_follows_a_rewritten_source(tmp_path, cache_file, arrays):
    store = tmp_path / "store"
    read_backend_arrays("mesh", cache_file, store)
    arrays2 = dict(arrays, pt_dist_pool=arrays["pt_dist_pool"] + np.float32(0.25))
    save_cache(cache_file, arrays2)
    got = read_backend_arrays("mesh", cache_file, store)
    assert np.array_equal(got["pt_dist_pool"], arrays2["pt_dist_pool"])
    assert len(list(store.rglob("*.npz"))) == 1          # the stale entry is gone


def test_corrupt_store_entry_is_rebuilt_from_the_source(tmp_path, cache_file, capsys):
    store = tmp_path / "store"
    read_backend_arrays("mesh", cache_file, store)
    entry = next(store.rglob("*.npz"))
    _flip_byte_in_member(entry, "pt_xyz_pool.npy")
    got = read_backend_arrays("mesh", cache_file, store)
    _same_as_np_load(cache_file, got)
    assert "rebuilding it from the source" in capsys.readouterr().err


def test_unwritable_store_falls_back_to_the_source(tmp_path, cache_file, capsys):
    blocker = tmp_path / "store"
    blocker.write_text("a file where the store folder should be")
    got = read_backend_arrays("mesh", cache_file, blocker)
    _same_as_np_load(cache_file, got)
    assert "cannot write" in capsys.readouterr().err


def test_tokens_are_the_same_with_and_without_store_and_memory_cache(tmp_path, cache_file):
    tok = TokenizerConfig(n_point=16, n_ray=8)
    items = [Item(str(cache_file), b) for b in ("mesh", "pointcloud", "udfgrid", "voxel")] * 2
    runs = [TokenDataset(items, tok, seed=3, cache_items=c, loader_store=s)
            for c, s in ((512, None), (0, None), (0, str(tmp_path / "store")))]
    for slot in range(len(items)):
        ref = runs[0][slot]
        for ds in runs[1:]:
            got = ds[slot]
            assert np.array_equal(got[0].numpy(), ref[0].numpy())
            assert np.array_equal(got[1].numpy(), ref[1].numpy())


def test_auto_store_only_when_the_corpus_outgrows_memory_and_fits_the_disk(tmp_path, cache_file,
                                                                            monkeypatch):
    monkeypatch.setenv(loader_store.STORE_ENV, str(tmp_path / "auto_store"))
    files = [str(cache_file)] * 3
    assert loader_store.resolve_store("none", files, 0)[0] is None
    assert loader_store.resolve_store(str(tmp_path / "x"), files, 512)[0] == str(tmp_path / "x")
    store, why = loader_store.resolve_store("auto", files, 512)
    assert store is None and "fit the in-memory cache" in why
    store, why = loader_store.resolve_store("auto", files, 0)
    assert store == str(tmp_path / "auto_store") and "GiB" in why
    # the estimate is the entry's size: every stored key's bytes (+ .npy header and zip
    # records, < 256 bytes a key), not the compressed file's
    with np.load(cache_file) as z:
        kept = [k for k in z.files if k not in loader_store.STORE_SKIPS]
        want = sum(z[k].nbytes for k in kept)
    assert want <= loader_store.entry_bytes(cache_file) <= want + 256 * len(kept)
    monkeypatch.setattr(loader_store, "_free_bytes", lambda folder: 1 << 20)
    store, why = loader_store.resolve_store("auto", files, 0)
    assert store is None and "free" in why
