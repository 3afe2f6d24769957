"""Per-shape cache schema: the one definition of what a cache ``.npz`` holds.

Every writer goes through :func:`save_cache` (atomic: temp file + ``os.replace``), every
reader through :func:`load_cache` (validated: a bad file raises :class:`CacheError` that
names the path and the key at fault).

Two kinds of cache share the schema:

- ``mesh``: ShapeNet / ModelNet shapes, preprocessed from a mesh (all keys).
- ``scan``: ScanObjectNN samples, preprocessed from an observed point cloud. Ray pools are
  zeros (no mesh to cast against) and there is no UDF grid.

Shape symbols: N = pc points, P = point-query pool, M = ray pool, G = UDF grid side.
Frame: normalised shape inside the unit ball; every pool and grid lives in [-1, 1]^3.

Loaded files are kept in a per-process memo (:class:`_LoadedFiles`), keyed by the file's
identity on disk (real path, inode, size, mtime), so that the jobs a persistent benchmark worker
runs one after another decompress and validate each file once; a rewritten file is a new key.
Memoised arrays are read-only, so no caller can change what the next caller reads.

File records (``<root>/_meta/cache_records.tsv``, written by the preprocessors): one line per
cache file with its split, the digest of the settings that determine its content
(:func:`profile_digest`), its seed and its size. A re-run keeps only files whose record matches
what it would write, and readers list a split from the records (:func:`split_files`), not from
the folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from benchmark.atomic import atomic_write, atomic_write_text
from nepa3d.data import npz_members as npz

SCHEMA_VERSION = 1


class CacheError(ValueError):
    """A cache file that cannot be used: names the file, the key and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str, key: str | None = None):
        self.path = str(path)
        self.key = key
        self.problem = problem
        where = f" key '{key}'" if key else ""
        super().__init__(f"{self.path}:{where} {problem}")


@dataclass(frozen=True)
class KeySpec:
    """One array of the cache: dtype, symbolic shape, the kinds that must hold it."""

    name: str
    dtype: str
    shape: tuple  # ints or symbols ("N", "P", "M", "G", "1" style literal ints)
    kinds: tuple = ("mesh", "scan")
    finite: bool = True
    doc: str = ""


KEYS: tuple[KeySpec, ...] = (
    KeySpec("schema_version", "int32", (1,), doc="cache schema version"),
    KeySpec("pc_xyz", "float32", ("N", 3), doc="surface (mesh) or observed (scan) points"),
    KeySpec("pc_n", "float32", ("N", 3), doc="face normals of sampled faces; zeros for scans"),
    KeySpec("pt_xyz_pool", "float32", ("P", 3), doc="query points: uniform block then near-surface block"),
    KeySpec("pt_dist_pool", "float32", ("P",), doc="mesh-derived UDF (mesh) / NN distance to pc_xyz (scan)"),
    # Optional: caches written before the leakage fix lack it; point-cloud backends refuse those
    # (nepa3d.backends.pc_distance) and the migration adds it.
    KeySpec("pt_dist_pc_pool", "float32", ("P",), kinds=(),
            doc="NN distance to pc_xyz (observation-derived); -1 = invalid"),
    KeySpec("pt_dist_udf_pool", "float32", ("P",), kinds=("mesh",), doc="trilinear sample of udf_grid"),
    KeySpec("udf_grid", "float16", ("G", "G", "G"), kinds=("mesh",), doc="EDT UDF, world units, [ix,iy,iz]"),
    KeySpec("occ_grid", "uint8", ("G", "G", "G"), kinds=("mesh",), doc="dilated occupancy used for the UDF"),
    KeySpec("df_grid", "int32", (1,), kinds=("mesh",)),
    KeySpec("df_dilate", "int32", (1,), kinds=("mesh",)),
    KeySpec("ray_o_pool", "float32", ("M", 3), doc="ray origins (camera positions)"),
    KeySpec("ray_d_pool", "float32", ("M", 3), doc="unit ray directions"),
    KeySpec("ray_hit_pool", "float32", ("M",), doc="1 hit / 0 miss against the mesh"),
    KeySpec("ray_t_pool", "float32", ("M",), doc="hit distance along d; 0 for a miss"),
    KeySpec("ray_n_pool", "float32", ("M", 3), doc="hit face normal; 0 for a miss"),
    KeySpec("ray_hit_pc_pool", "float32", ("M",), kinds=("mesh",), doc="hit from point-cloud occupancy DDA"),
    KeySpec("ray_t_pc_pool", "float32", ("M",), kinds=("mesh",)),
    KeySpec("ray_n_pc_pool", "float32", ("M", 3), kinds=("mesh",)),
)
KEY_BY_NAME = {k.name: k for k in KEYS}
KINDS = ("mesh", "scan")


def required_keys(kind: str) -> list[str]:
    if kind not in KINDS:
        raise ValueError(f"unknown cache kind {kind!r}; expected one of {KINDS}")
    return [k.name for k in KEYS if kind in k.kinds]


def infer_kind(keys) -> str:
    """``mesh`` if the file carries a UDF grid, else ``scan``."""
    return "mesh" if "udf_grid" in keys else "scan"


#: Files written by the original code carry no ``schema_version``: they read as this version.
LEGACY_SCHEMA_VERSION = 0


def file_schema_version(arrays_or_names, read_version=None) -> int:
    """``schema_version`` of a file: its stamp, or :data:`LEGACY_SCHEMA_VERSION` when it has none.
    ``read_version``: callable returning the stamp array (lazy readers)."""
    if "schema_version" not in arrays_or_names:
        return LEGACY_SCHEMA_VERSION
    stamp = arrays_or_names["schema_version"] if read_version is None else read_version()
    return int(np.asarray(stamp).reshape(-1)[0])


def required_for(kind: str, version: int) -> list[str]:
    """Keys a file of ``kind`` and schema ``version`` must hold. A legacy (unstamped) file is held
    to the keys every original cache has (the ``scan`` set, no stamp); the keys a backend needs
    beyond those are checked when that backend reads it (:func:`read_cache_keys`)."""
    if version == LEGACY_SCHEMA_VERSION:
        return [k for k in required_keys("scan") if k != "schema_version"]
    return required_keys(kind)


def validate_specs(specs: Mapping[str, tuple], path: str | os.PathLike = "<memory>",
                   kind: str | None = None, version: int = SCHEMA_VERSION) -> str:
    """Check key presence, dtypes and symbolic shapes from ``{key: (dtype, shape)}`` (no data
    needed: the headers of a lazily read file suffice). Returns the kind.

    Raises :class:`CacheError` naming the first key at fault.
    """
    if version not in (SCHEMA_VERSION, LEGACY_SCHEMA_VERSION):
        raise CacheError(path, f"schema version {version}, this code reads {SCHEMA_VERSION} "
                               f"(and unstamped files of the original code)", "schema_version")
    kind = kind or infer_kind(specs.keys())
    for name in required_for(kind, version):
        if name not in specs:
            what = "an unstamped (original-code)" if version == LEGACY_SCHEMA_VERSION else f"a '{kind}'"
            raise CacheError(path, f"missing (required for {what} cache)", name)
    binding: dict[str, int] = {}
    for name, (dtype, shape) in specs.items():
        spec = KEY_BY_NAME.get(name)
        if spec is None:
            continue  # extra keys are allowed (forward compatible)
        if str(dtype) != spec.dtype:
            raise CacheError(path, f"dtype {dtype}, expected {spec.dtype}", name)
        if len(shape) != len(spec.shape):
            raise CacheError(path, f"shape {tuple(shape)}, expected {spec.shape}", name)
        for dim, sym in zip(shape, spec.shape):
            if isinstance(sym, int):
                ok = dim == sym
            elif name in ("udf_grid", "occ_grid") and tuple(shape) == (1, 1, 1):
                ok = True  # placeholder when the UDF is disabled
            else:
                ok = binding.setdefault(sym, dim) == dim
            if not ok:
                raise CacheError(path, f"shape {tuple(shape)} disagrees with {spec.shape} "
                                       f"(bound so far: {binding})", name)
    return kind


def require_finite(name: str, arr: np.ndarray, path: str | os.PathLike) -> None:
    """Raise :class:`CacheError` when a key the schema declares finite holds NaN or inf."""
    spec = KEY_BY_NAME.get(name)
    if spec is not None and spec.finite and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise CacheError(path, "holds NaN or inf", name)


def validate_arrays(arrays: Mapping[str, np.ndarray], path: str | os.PathLike = "<memory>",
                    kind: str | None = None, check_finite: bool = True) -> str:
    """Check keys, dtypes, symbolic shapes, finiteness and the schema version. Returns the kind.

    Unstamped files (the original code's) are accepted as :data:`LEGACY_SCHEMA_VERSION`.
    Raises :class:`CacheError` naming the first key at fault.
    """
    version = file_schema_version(arrays)
    kind = validate_specs({k: (a.dtype, a.shape) for k, a in arrays.items()}, path, kind, version)
    if check_finite:
        for name, arr in arrays.items():
            require_finite(name, arr, path)
    return kind


#: Bytes of decompressed arrays the per-process memo keeps (least recently used dropped first);
#: ``NEPA3D_LOADED_CACHE_MB`` overrides it, 0 turns the memo off.
LOADED_CACHE_MB = 1024


class _LoadedFiles:
    """Validated arrays of recently loaded cache files, by file identity, within a byte budget."""

    def __init__(self) -> None:
        self._d: OrderedDict[tuple, dict[str, np.ndarray]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def budget() -> int:
        return int(float(os.environ.get("NEPA3D_LOADED_CACHE_MB", LOADED_CACHE_MB)) * (1 << 20))

    @staticmethod
    def identity(path: Path) -> tuple | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns)

    def get(self, key: tuple) -> dict[str, np.ndarray] | None:
        with self._lock:
            arrays = self._d.get(key)
            if arrays is not None:
                self._d.move_to_end(key)
            return arrays

    def put(self, key: tuple, arrays: dict[str, np.ndarray]) -> None:
        size = sum(a.nbytes for a in arrays.values())
        budget = self.budget()
        if size > budget:
            return
        for a in arrays.values():
            a.flags.writeable = False
        with self._lock:
            if key in self._d:
                return
            self._d[key] = arrays
            self._bytes += size
            while self._bytes > budget and self._d:
                _, old = self._d.popitem(last=False)
                self._bytes -= sum(a.nbytes for a in old.values())

    def clear(self) -> None:
        with self._lock:
            self._d.clear()
            self._bytes = 0


_LOADED = _LoadedFiles()


def load_cache(path: str | os.PathLike, keys: list[str] | None = None,
               validate: bool = True) -> dict[str, np.ndarray]:
    """Load a cache file into a dict of arrays (all keys, or only ``keys``).

    A missing, truncated or schema-violating file raises :class:`CacheError`. Validated loads
    come from the per-process memo when the same file (same inode, size and mtime) was loaded
    before; their arrays are read-only (the dict is the caller's own).
    """
    path = Path(path)
    if not path.exists():
        raise CacheError(path, "file does not exist")
    key = _LoadedFiles.identity(path) if validate else None
    memo = _LOADED.get(key) if key is not None else None
    if memo is not None:
        return dict(memo) if keys is None else _select(memo, keys, path)
    arrays = _read_npz(path, keys, validate)
    if validate:
        validate_arrays(arrays, path)
        if key is not None:
            _LOADED.put(key, arrays)
            arrays = dict(arrays)
    if keys is not None:
        arrays = _select(arrays, keys, path)
    return arrays


def _select(arrays: Mapping[str, np.ndarray], keys: list[str], path: Path) -> dict[str, np.ndarray]:
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise CacheError(path, "missing", missing[0])
    return {k: arrays[k] for k in keys}


def _read_npz(path: Path, keys: list[str] | None, validate: bool) -> dict[str, np.ndarray]:
    """Every array of the file (``validate``), else only ``keys`` (all when None)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            names = z.files
            wanted = names if validate or keys is None else [k for k in keys if k in names]
            return {k: z[k] for k in wanted}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise CacheError(path, f"unreadable npz ({type(e).__name__}: {e})") from e


# ----------------------------------------------------------------------------------------
# lazy reads: only the keys a consumer needs, each file's schema checked once per process


class _CheckedFiles:
    """Files whose schema this process has checked, by identity (path, inode, size, mtime):
    ``identity -> (version, kind, keys checked finite)``. Bounded; a rewritten file is a new
    identity, so it is checked again."""

    MAX = 1 << 18

    def __init__(self) -> None:
        self._d: OrderedDict[tuple, tuple[int, str, frozenset]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple):
        with self._lock:
            return self._d.get(key)

    def put(self, key: tuple, value: tuple[int, str, frozenset]) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.MAX:
                self._d.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()


_CHECKED = _CheckedFiles()


def _schema_check(fd: int, members: Mapping, path: Path) -> tuple[int, str]:
    """Version and kind of an opened file, from the ``.npy`` headers of all its arrays."""
    specs = {}
    for name in npz.array_names(members):
        head = npz.member_prefix(fd, members[npz.npy_name(name)])
        h = npz.parse_npy_header(head, name)
        specs[name] = (h.dtype, h.shape)
    version = file_schema_version(
        specs, lambda: npz.array_from_member(npz.member_bytes(fd, members["schema_version.npy"]),
                                             "schema_version"))
    return version, validate_specs(specs, path, version=version)


def wanted_keys(keys, available) -> list[str]:
    """``keys`` as a list: itself, or a callable's answer for the key names ``available``."""
    return list(keys(frozenset(available)) if callable(keys) else keys)


def read_members(fd: int, members: Mapping, keys: list[str], path: str | os.PathLike
                 ) -> dict[str, np.ndarray]:
    """Arrays ``keys`` of the open npz ``fd`` (directory ``members``); a key the file lacks
    raises :class:`CacheError` naming ``path`` and the key."""
    out = {}
    for k in keys:
        m = members.get(npz.npy_name(k))
        if m is None:
            raise CacheError(path, "missing (needed by this reader)", k)
        out[k] = npz.array_from_member(npz.member_bytes(fd, m), k)
    return out


def read_cache_keys(path: str | os.PathLike, keys) -> dict[str, np.ndarray]:
    """Only the arrays ``keys`` of cache ``path``, decompressed once each (the loader's path).

    ``keys``: a list of key names, or a callable ``(available key names) -> list`` (a backend
    choosing by what the file holds). The file's schema (keys, dtypes, shapes, version; legacy
    unstamped files accepted) is checked from its headers the first time this process reads
    that file, and each returned key's finiteness the first time it is read; later reads of the
    same unchanged file skip both. Arrays are read-only.

    Raises :class:`CacheError` naming the file (and the key) for a missing, truncated, corrupt
    or schema-violating file, or a requested key the file lacks.
    """
    return read_cache_keys_identified(path, keys)[1]


def read_cache_keys_identified(path: str | os.PathLike, keys) -> tuple[tuple, dict[str, np.ndarray]]:
    """:func:`read_cache_keys` plus the identity ``(path, inode, size, mtime_ns)`` of the file
    the arrays were read from (taken on the open file)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise CacheError(path, "file does not exist") from None
    except OSError as e:
        raise CacheError(path, f"cannot open ({type(e).__name__}: {e})") from e
    try:
        st = os.fstat(fd)
        identity = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        try:
            members = npz.read_directory(fd, st.st_size)
            checked = _CHECKED.get(identity)
            first = checked is None
            if first:
                version, kind = _schema_check(fd, members, path)
                checked = (version, kind, frozenset())
            wanted = wanted_keys(keys, npz.array_names(members))
            out = read_members(fd, members, wanted, path)
        except npz.NpzFormatError as e:
            raise CacheError(path, f"unreadable npz ({e})") from e
        fresh = [k for k in wanted if k not in checked[2]]
        for k in fresh:
            require_finite(k, out[k], path)
        if fresh or first:
            _CHECKED.put(identity, (checked[0], checked[1], checked[2] | frozenset(fresh)))
        return identity, out
    finally:
        os.close(fd)


def file_in_the_way(folder: str | os.PathLike) -> Path | None:
    """The first of ``folder`` and its parents that exists but is not a folder (a file where
    a folder is needed), or None."""
    for p in (Path(folder), *Path(folder).parents):
        if p.is_dir():
            return None
        if os.path.lexists(p) and not p.is_dir():  # re-checked: another worker may have just
            return p                                # created the folder between the two calls
    return None


def save_cache(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
               kind: str | None = None) -> None:
    """Validate then write atomically (temp file in the same folder + ``os.replace``)."""
    path = Path(path)
    arrays = dict(arrays)
    arrays.setdefault("schema_version", np.array([SCHEMA_VERSION], dtype=np.int32))
    validate_arrays(arrays, path, kind=kind)
    blocker = file_in_the_way(path.parent)
    if blocker is not None:
        raise CacheError(path, f"cannot create its folder: {blocker} is a file, not a folder")
    if path.is_dir():
        raise CacheError(path, "is a folder, not a file")
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays), binary=True, prefix=".tmp_npz_",
                 suffix=".npz")


# ----------------------------------------------------------------------------------------
# file records: which settings, split and seed made each file of a cache root

RECORDS_FILE = ("_meta", "cache_records.tsv")
RECORDS_HEADER = "# nepa3d cache records v1: relpath split profile seed bytes (tab-separated)"
PROFILE_DIGITS = 16


@dataclass(frozen=True)
class FileRecord:
    """What made one cache file.

    ``relpath``: ``<split>/<class>/<name>.npz`` ('/'-separated, relative to the cache root);
    ``profile``: :func:`profile_digest` of the settings that determine the content; ``seed``:
    the file's own seed, as text; ``size``: bytes on disk when it was written.
    """

    relpath: str
    split: str
    profile: str
    seed: str
    size: int

    def line(self) -> str:
        fields = (self.relpath, self.split, self.profile, self.seed, str(int(self.size)))
        if any(c in f for f in fields for c in "\t\n\r"):
            raise ValueError(f"cache record field holds a tab or line break: {fields!r}")
        return "\t".join(fields)

    @classmethod
    def parse(cls, line: str) -> "FileRecord":
        relpath, split, profile, seed, size = line.rstrip("\n").split("\t")
        return cls(relpath, split, profile, seed, int(size))


def profile_digest(settings: Mapping[str, object]) -> str:
    """First 16 hex digits of the sha256 of ``settings`` (plus the schema version) as
    canonical JSON: equal digests = files made the same way."""
    doc = json.dumps({"schema_version": SCHEMA_VERSION, **settings}, sort_keys=True,
                     separators=(",", ":"))
    return hashlib.sha256(doc.encode("utf-8")).hexdigest()[:PROFILE_DIGITS]


def records_path(root: str | os.PathLike) -> Path:
    return Path(root).joinpath(*RECORDS_FILE)


def read_records(root: str | os.PathLike) -> dict[str, FileRecord] | None:
    """``{relpath: record}`` of a cache root (a later line for the same file wins), or None
    when the root has no records file. A malformed line raises :class:`CacheError`."""
    path = records_path(root)
    if not path.is_file():
        return None
    out: dict[str, FileRecord] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        try:
            rec = FileRecord.parse(line)
        except ValueError as e:
            raise CacheError(path, f"line {i} is not a cache record ({e})") from e
        out[rec.relpath] = rec
    return out


def write_records(root: str | os.PathLike, records: Iterable[FileRecord]) -> Path:
    """Replace the records file of ``root`` atomically (header, then lines sorted by path)."""
    lines = [RECORDS_HEADER] + sorted(r.line() for r in records)
    return atomic_write_text(records_path(root), "\n".join(lines) + "\n")


def append_record(root: str | os.PathLike, record: FileRecord) -> None:
    """Add one record at the end of the records file (a file finished during a run)."""
    with open(records_path(root), "a", encoding="utf-8") as f:
        f.write(record.line() + "\n")


def record_for(root: str | os.PathLike, relpath: str, split: str, profile: str,
               seed: object) -> FileRecord:
    """The record of the file ``root/relpath`` as it is on disk now."""
    size = Path(root).joinpath(*relpath.split("/")).stat().st_size
    return FileRecord(relpath, split, profile, str(seed), size)


def split_files(root: str | os.PathLike, split: str) -> list[str] | None:
    """Sorted paths of the files the records put in ``split`` (spelled as the glob
    ``<root>/<split>/*/*.npz`` spells them), or None when ``root`` has no records file."""
    records = read_records(root)
    if records is None:
        return None
    return sorted(os.path.join(str(root), *r.relpath.split("/"))
                  for r in records.values() if r.split == split)


# ----------------------------------------------------------------------------------------
# re-runs: which existing files may stay

#: Why an existing file cannot stay (the keys of ``CachePlan.remove`` values).
WHY_NOT_WANTED = "not wanted at this place (shape gone from the input, or now in another split)"
WHY_NO_RECORD = "no record (written before records were kept, or by an interrupted run)"
WHY_CHANGED = "changed on disk since it was recorded"
WHY_PROFILE = "made with other settings (profile differs)"
WHY_SEED = "made with another seed"
WHY_OVERWRITE = "--overwrite"


@dataclass(frozen=True)
class CachePlan:
    """What a re-run does with the files already in its cache root.

    ``keep``: files whose record matches (left as they are); ``remove``: ``{relpath: why}``;
    ``build``: wanted files this run computes.
    """

    keep: tuple[str, ...]
    remove: dict[str, str]
    build: tuple[str, ...]


def plan_cache(wanted: Mapping[str, str | None], on_disk: Mapping[str, int],
               records: Mapping[str, FileRecord] | None, profile: str,
               overwrite: bool = False) -> CachePlan:
    """Decide, file by file, what stays (pure).

    Args:
        wanted: ``{relpath: seed}`` of every file the current inputs call for; seed ``None``
            marks a file this run does not build (another split's), which may stay with any
            seed as long as its profile matches.
        on_disk: ``{relpath: size}`` of the files now present; records: the root's records
            (None: no records file); profile: this run's :func:`profile_digest`;
        overwrite: rebuild every file this run builds.

    A file stays only when it is wanted at exactly its place, its record matches its size,
    its split (first path component) and ``profile``, and, if this run builds it, its seed.
    """
    records = records or {}
    keep, remove = [], {}
    for rel in sorted(on_disk):
        rec = records.get(rel)
        if rel not in wanted:
            remove[rel] = WHY_NOT_WANTED
        elif overwrite and wanted[rel] is not None:
            remove[rel] = WHY_OVERWRITE
        elif rec is None:
            remove[rel] = WHY_NO_RECORD
        elif rec.size != on_disk[rel] or rec.split != rel.split("/", 1)[0]:
            remove[rel] = WHY_CHANGED
        elif rec.profile != profile:
            remove[rel] = WHY_PROFILE
        elif wanted[rel] is not None and rec.seed != wanted[rel]:
            remove[rel] = WHY_SEED
        else:
            keep.append(rel)
    kept = set(keep)
    build = tuple(r for r in sorted(wanted) if wanted[r] is not None and r not in kept)
    return CachePlan(tuple(keep), remove, build)


def describe_removals(remove: Mapping[str, str]) -> str:
    """``"3 made with another seed; 1 no record (...)"``: the reasons of a plan's removals,
    most frequent first."""
    counts: dict[str, int] = {}
    for why in remove.values():
        counts[why] = counts.get(why, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return "; ".join(f"{n} {why}" for why, n in ranked)


def list_cache_files(root: str | os.PathLike, splits: Iterable[str]) -> dict[str, int]:
    """``{"<split>/<class>/<name>.npz": size}`` of the files now under ``<root>/<split>/*/``
    (hidden temp files excluded)."""
    out: dict[str, int] = {}
    for split in splits:
        base = Path(root) / split
        if not base.is_dir():
            continue
        for cls in sorted(base.iterdir()):
            if not cls.is_dir():
                continue
            for f in cls.iterdir():
                if f.name.endswith(".npz") and not f.name.startswith("."):
                    try:
                        out[f"{split}/{cls.name}/{f.name}"] = f.stat().st_size
                    except OSError:  # a dangling link: no size a record can match
                        out[f"{split}/{cls.name}/{f.name}"] = -1
    return out


def remove_cache_files(root: str | os.PathLike, relpaths: Iterable[str]) -> int:
    """Delete ``root/relpath`` for each path (and class folders left empty); returns the
    number deleted."""
    n, folders = 0, set()
    for rel in relpaths:
        path = Path(root).joinpath(*rel.split("/"))
        try:
            path.unlink()
            n += 1
        except FileNotFoundError:
            pass
        folders.add(path.parent)
    for folder in sorted(folders):
        try:
            folder.rmdir()  # only succeeds when empty
        except OSError:
            pass
    return n
