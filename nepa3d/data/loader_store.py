"""Decompress each cache file once: an uncompressed mirror the pretraining loader reads.

Cache files are deflate-compressed npz; with no in-memory cache (a 46k-file corpus), inflating
a lab-profile file's pools costs ~2.4 ms per sample, more than everything else a sample costs.
With a store (``--loader_store DIR``), the first read of a file writes an uncompressed copy of
its loader keys (every key but the UDF / occupancy grids, which only the CPAC evaluator reads)
into DIR; every later read (next epoch, another DataLoader worker, another run sharing DIR)
reads its members with one ``pread`` each and checks their CRC-32, with no inflate.

- Entries: ``DIR/<h[:2]>/<h>-<inode>-<size>-<mtime_ns>.npz`` with ``h`` = sha1 of the source's
  real path: a plain (stored) npz that ``np.load`` opens. A source rewritten on disk has
  another identity, hence another entry; the stale one is deleted when the new one is written.
- Integrity: the source is schema-checked and its keys' finiteness checked when it is expanded
  (:func:`nepa3d.data.cache.read_cache_keys`); an entry whose structure or CRC fails is deleted
  and rebuilt from its source. Writes are atomic (temp file + rename), so workers racing on one
  file at worst write the same bytes twice.
- Disk: ~1.2 MiB per lab-profile file (pt_pool 20000, ray_pool 8000), ~55 GB for 46k
  ShapeNet files. A store that cannot be written (disk full, read-only) is reported once and
  the loader reads the compressed sources instead (same arrays, slower).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from nepa3d.data import npz_members as npz
from nepa3d.data.cache import CacheError, read_cache_keys, read_cache_keys_identified

#: Keys left out of a store entry (large, and read only by evaluators through ``load_cache``).
STORE_SKIPS = frozenset({"udf_grid", "occ_grid"})

_warned: set[str] = set()


def _warn_once(key: str, msg: str) -> None:
    if key not in _warned:
        _warned.add(key)
        print(f"[loader_store] {msg}", file=sys.stderr, flush=True)


def entry_stem(source: Path) -> str:
    """The part of an entry's name shared by every version of ``source``."""
    return hashlib.sha1(os.path.realpath(source).encode("utf-8", "surrogateescape")).hexdigest()[:20]


def entry_path(store: Path, source: Path, identity: tuple) -> Path:
    """Entry of ``source`` as it is on disk with ``identity = (path, inode, size, mtime_ns)``."""
    stem = entry_stem(source)
    _, ino, size, mtime = identity
    return Path(store) / stem[:2] / f"{stem}-{ino}-{size}-{mtime}.npz"


def _wanted(keys, available) -> list[str]:
    return list(keys(frozenset(available)) if callable(keys) else keys)


def _read_entry(entry: Path, source: Path, keys) -> dict[str, np.ndarray] | None:
    """The arrays ``keys`` from a store entry; None when the entry does not exist."""
    try:
        fd = os.open(entry, os.O_RDONLY)
    except OSError:  # absent, or the store path is unusable (the write reports that)
        return None
    try:
        members = npz.read_directory(fd, os.fstat(fd).st_size)
        wanted = _wanted(keys, npz.array_names(members))
        out = {}
        for k in wanted:
            m = members.get(npz.npy_name(k))
            if m is None:
                raise CacheError(source, "missing (needed by this reader)", k)
            out[k] = npz.array_from_member(npz.member_bytes(fd, m), k)
        return out
    finally:
        os.close(fd)


def _write_entry(entry: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` uncompressed to ``entry`` (atomic); drop other versions of its source."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_store_", suffix=".npz", dir=entry.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, entry)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    stem = entry.name.split("-", 1)[0]
    for old in entry.parent.glob(f"{stem}-*.npz"):
        if old != entry:
            try:
                old.unlink()
            except OSError:
                pass


def read_through_store(store: str | os.PathLike, path: str | os.PathLike, keys) -> dict[str, np.ndarray]:
    """Like :func:`nepa3d.data.cache.read_cache_keys`, through the store at ``store``.

    ``keys``: a list of names or a callable ``(available names) -> list``. Keys in
    :data:`STORE_SKIPS` are read from the source. Errors name the source file.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CacheError(path, "file does not exist") from None
    except OSError as e:
        raise CacheError(path, f"cannot open ({type(e).__name__}: {e})") from e
    if not callable(keys) and STORE_SKIPS.intersection(keys):
        return read_cache_keys(path, keys)
    entry = entry_path(Path(store), path, (str(path), st.st_ino, st.st_size, st.st_mtime_ns))
    try:
        got = _read_entry(entry, path, keys)
    except npz.NpzFormatError as e:
        _warn_once(str(entry), f"{entry} (store entry of {path}) is unreadable ({e}); "
                               "rebuilding it from the source")
        entry.unlink(missing_ok=True)
        got = None
    if got is not None:
        return got
    identity, arrays = read_cache_keys_identified(
        path, lambda names: [n for n in names if n not in STORE_SKIPS])
    try:
        _write_entry(entry_path(Path(store), path, identity), arrays)
    except OSError as e:
        _warn_once(str(store), f"cannot write to {store} ({type(e).__name__}: {e}); reading "
                               "the compressed cache files instead (same arrays, slower)")
    wanted = _wanted(keys, arrays.keys())
    missing = [k for k in wanted if k not in arrays]
    if missing:
        raise CacheError(path, "missing (needed by this reader)", missing[0])
    return {k: arrays[k] for k in wanted}
