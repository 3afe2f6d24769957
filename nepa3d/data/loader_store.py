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
  ShapeNet files. A store that cannot be written (disk full, quota, read-only) is reported
  once and the loader reads the compressed sources instead (same arrays, slower). Deleting
  the folder at any time is safe.
- ``--loader_store auto`` (pretraining's default, :func:`resolve_store`): a store under
  ``$NEPA3D_LOADER_STORE`` or ``~/.cache/nepa3d/loader_store``, used only when the corpus has
  more files than the in-memory cache holds and that disk has room for it; ``none`` turns it
  off; any other value is the folder. The store changes no value a sample holds, only speed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from benchmark.atomic import atomic_write
from nepa3d.data import npz_members as npz
from nepa3d.data.cache import (CacheError, read_cache_keys, read_cache_keys_identified, read_members,
                               wanted_keys)

STORE_ENV = "NEPA3D_LOADER_STORE"
STORE_CHOICES_HELP = ("auto (a store under $NEPA3D_LOADER_STORE or ~/.cache/nepa3d/loader_store "
                      "when the corpus outgrows the in-memory cache and the disk has room), none, "
                      "or a folder: cache files are decompressed there once and read without "
                      "inflating (same values, ~3x the samples/s)")

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


def _read_entry(entry: Path, source: Path, keys) -> dict[str, np.ndarray] | None:
    """The arrays ``keys`` from a store entry; None when the entry does not exist."""
    try:
        fd = os.open(entry, os.O_RDONLY)
    except OSError:  # absent, or the store path is unusable (the write reports that)
        return None
    try:
        members = npz.read_directory(fd, os.fstat(fd).st_size)
        return read_members(fd, members, wanted_keys(keys, npz.array_names(members)), source)
    finally:
        os.close(fd)


def _write_entry(entry: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` uncompressed to ``entry`` (atomic); drop other versions of its source."""
    atomic_write(entry, lambda f: np.savez(f, **arrays), binary=True, prefix=".tmp_store_",
                 suffix=".npz")
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
    wanted = wanted_keys(keys, arrays.keys())
    missing = [k for k in wanted if k not in arrays]
    if missing:
        raise CacheError(path, "missing (needed by this reader)", missing[0])
    return {k: arrays[k] for k in wanted}


def default_store_root() -> Path:
    env = os.environ.get(STORE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nepa3d" / "loader_store"


def entry_bytes(path: str | os.PathLike) -> int:
    """Bytes a store entry of cache ``path`` takes (from the zip directory; no inflate)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        members = npz.read_directory(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    return sum(m.size + 128 for n, m in members.items() if n[:-4] not in STORE_SKIPS)


def _free_bytes(folder: Path) -> int:
    for p in (folder, *folder.parents):
        if p.is_dir():
            return shutil.disk_usage(p).free
    return 0


def resolve_store(flag: str, files: list[str], memory_items: int, sample: int = 8
                  ) -> tuple[str | None, str]:
    """The store folder pretraining uses for ``--loader_store flag`` (None: no store) and one
    line saying why. ``files``: the corpus; ``memory_items``: files the in-memory cache keeps."""
    flag = (flag or "none").strip()
    if flag == "none":
        return None, "off (--loader_store none)"
    if flag != "auto":
        return flag, f"{flag} (--loader_store)"
    unique = sorted(set(files))
    if len(unique) <= memory_items:
        return None, (f"off: the {len(unique)} files fit the in-memory cache ({memory_items}); "
                      "--loader_store DIR forces one")
    root = default_store_root()
    probe = unique[:: max(1, len(unique) // sample)][:sample]
    try:
        need = int(sum(entry_bytes(p) for p in probe) / len(probe) * len(unique))
    except (OSError, npz.NpzFormatError):
        return None, "off: could not size the store (unreadable cache file; errors follow)"
    free = _free_bytes(root)
    if free < need * 1.1 + (1 << 30):
        return None, (f"off: {root} has {free / 2**30:.1f} GiB free, the store needs "
                      f"~{need / 2**30:.1f} GiB (--loader_store DIR elsewhere)")
    return str(root), (f"{root} (~{need / 2**30:.1f} GiB for {len(unique)} files, written during "
                       "the first epoch; --loader_store none turns it off)")
