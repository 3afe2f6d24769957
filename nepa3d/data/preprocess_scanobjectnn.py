"""ScanObjectNN h5 -> ``scan``-kind cache preprocessing CLI (the original's
``preprocess_scanobjectnn.py``, KohsukeIde/3D-NEPA @ 737d98f).

Example (the lab's paper-safe profile)::

    .venv/bin/python -u -m nepa3d.data.preprocess_scanobjectnn \\
        --scan_root data/ScanObjectNN/h5_files/main_split \\
        --out_root data/scanobjectnn_main_split_v2 --split all \\
        --pt_pool 4000 --ray_pool 256 --pt_surface_ratio 0.5 --pt_surface_sigma 0.02 --seed 0

Discovery: recursive ``**/*.h5`` under ``scan_root``; a file is *train* when its lowercase
basename or parent-directory name contains ``train``/``training``, *test* when either
contains ``test``. ``--variant`` keeps one ScanObjectNN variant by file name (default
``all`` = every h5 file found, as the reference does):

====================  ==========================================
variant               file name pattern
====================  ==========================================
``obj``               ``*objectdataset.h5`` (OBJ_BG in main_split, OBJ_ONLY in *_nobg)
``pb_t25``            ``*_augmented25_norot.h5``
``pb_t25_r``          ``*_augmented25rot.h5``
``pb_t50_r``          ``*_augmentedrot.h5``
``pb_t50_rs``         ``*_augmentedrot_scale75.h5`` (the hardest variant)
====================  ==========================================

Per sample: centroid / unit-sphere normalisation; ``pc_xyz`` = all points, ``pc_n`` = 0;
``pt_xyz_pool`` exactly as the mesh pipeline's pool, drawn from ONE ``RandomState`` per split
(``seed`` for train, ``seed + 12345`` for test) shared sequentially over files (sorted) then
samples -- the pool is drawn even for a skipped (existing) output, so resumed runs are
identical; ``pt_dist_pool`` = ``pt_dist_pc_pool`` = NN distance to ``pc_xyz``; ray pools are
zeros. Output ``<out_root>/<split>/class_{label:03d}/{h5stem}_{idx:06d}.npz`` (atomic).
After a successful run, ``<out_root>/_meta/corpus.json`` records which corpus ``scan_root``
belongs to (:mod:`nepa3d.data.corpus_meta`).

Re-runs: every file is recorded in ``<out_root>/_meta/cache_records.tsv`` with its split, the
profile digest of ``--pt_pool --ray_pool --pt_surface_ratio --pt_surface_sigma`` and its seed
(``<RandomState seed>:<position in the split's stream>``); a re-run keeps a file only when its
record matches what this run would write there, and removes every other file of the splits it
processes (another profile or seed, a sample gone from the input or now under another label, no
record) before rebuilding; files of a split it does not process stay only with this profile.

Failures: an h5 file that cannot be read, lacks ``data`` or ``label``, or whose ``label``
length differs from its number of clouds, and a sample with non-finite points, are each one
``FAIL <file>[<idx>]: <cause>`` line on stderr, listed in
``_meta/scanobjectnn_<split>_failures.txt`` and ``_meta/preprocess_scanobjectnn_run.json``
(with ``--max_failures``); more failures than ``--max_failures`` (default 0), or no sample at
all, exit 1. Bad arguments and an output folder that is a file exit 2.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from benchmark.atomic import atomic_write_text
from nepa3d.cli.args import (make_parser,
    fail,
    int_in,
    nonneg_float,
    nonneg_int,
    one_line,
    positive_int,
    unit_float,
)
from nepa3d.data.cache import (
    CacheError,
    FileRecord,
    append_record,
    describe_removals,
    file_in_the_way,
    list_cache_files,
    plan_cache,
    profile_digest,
    read_records,
    record_for,
    remove_cache_files,
    save_cache,
    write_records,
)
from nepa3d.data.corpus_meta import (
    describe_source,
    run_verdict,
    write_cache_corpus,
    write_run_record,
)
from nepa3d.geometry.distance import nearest_neighbors, sanitize_distances
from nepa3d.geometry.normalize import normalize_centroid_unit_sphere
from nepa3d.geometry.pools import point_query_pool
from nepa3d.cli.config import CliConfig

PROG = "preprocess_scanobjectnn"
TEST_SEED_OFFSET = 12345
SPLITS = ("train", "test")
MAX_SEED = 2**32 - 1 - TEST_SEED_OFFSET  # RandomState takes seeds in [0, 2**32)
VARIANTS = {
    "all": "*.h5",
    "obj": "*objectdataset.h5",
    "pb_t25": "*_augmented25_norot.h5",
    "pb_t25_r": "*_augmented25rot.h5",
    "pb_t50_r": "*_augmentedrot.h5",
    "pb_t50_rs": "*_augmentedrot_scale75.h5",
}


# ----------------------------------------------------------------------------------------
# discovery (pure given a file list)


def split_of(path: str) -> set[str]:
    """Splits a h5 file belongs to, from its lowercase basename and parent directory name."""
    names = (os.path.basename(path).lower(), os.path.basename(os.path.dirname(path)).lower())
    out = set()
    if any("train" in n or "training" in n for n in names):
        out.add("train")
    if any("test" in n for n in names):
        out.add("test")
    return out


def select_h5(paths: list[str], split: str, variant: str = "all") -> list[str]:
    """Sorted, de-duplicated h5 files of ``split`` matching ``variant``."""
    pat = VARIANTS[variant]
    return sorted({p for p in paths
                   if split in split_of(p) and fnmatch.fnmatch(os.path.basename(p).lower(), pat)})


def discover_h5(scan_root: str) -> list[str]:
    """Recursive ``**/*.h5`` under ``scan_root`` (sorted)."""
    return sorted(set(glob.glob(os.path.join(glob.escape(scan_root), "**", "*.h5"), recursive=True)))


def check_duplicate_stems(paths: list[str]) -> None:
    """Raise ``RuntimeError`` when two chosen files share a basename stem."""
    by_stem: dict[str, list[str]] = defaultdict(list)
    for p in paths:
        by_stem[os.path.splitext(os.path.basename(p))[0]].append(p)
    dups = {s: ps for s, ps in sorted(by_stem.items()) if len(ps) > 1}
    if dups:
        examples = "\n".join(f"  {s}: {ps}" for s, ps in list(dups.items())[:5])
        raise RuntimeError(
            f"{len(dups)} h5 stem(s) occur more than once under the scan root; their outputs "
            "(<stem>_<idx>.npz) would silently overwrite each other. Point "
            f"--scan_root at a split-specific folder (e.g. h5_files/main_split) or pass "
            f"--allow_duplicate_stems if this is intended. Examples:\n{examples}")


# ----------------------------------------------------------------------------------------
# per-sample math (pure)


def scan_arrays(points: np.ndarray, pt_pool: int, ray_pool: int, surface_ratio: float,
                surface_sigma: float, rng) -> dict[str, np.ndarray]:
    """All ``scan``-kind cache arrays of one observed cloud.

    Args:
        points: ``(N, >=3)`` raw points (only xyz used); pt_pool: ``P``; ray_pool: ``M``;
        rng: the split's shared ``RandomState`` (consumed by the pool draw only).

    Returns:
        dict keyed as in :mod:`nepa3d.data.cache` (kind ``scan``).

    Raises:
        ValueError: non-finite input points (after the pool was drawn, so the shared RNG
        advances the same way whether a sample succeeds or not).
    """
    pts = np.asarray(points, dtype=np.float64)[:, :3]
    finite = bool(np.all(np.isfinite(pts)))
    pc, _, _ = normalize_centroid_unit_sphere(pts if finite else np.nan_to_num(pts))
    pc = pc.astype(np.float32).astype(np.float64)
    pool = point_query_pool(pc, pt_pool, surface_ratio, surface_sigma, rng)
    if not finite:
        raise ValueError("non-finite point coordinates")
    pool = pool.astype(np.float32).astype(np.float64)
    dist = sanitize_distances(nearest_neighbors(pool, pc)[0])
    m = int(ray_pool)
    return {
        "pc_xyz": pc.astype(np.float32),
        "pc_n": np.zeros((len(pc), 3), dtype=np.float32),
        "pt_xyz_pool": pool.astype(np.float32),
        "pt_dist_pool": dist,
        "pt_dist_pc_pool": dist.copy(),
        "ray_o_pool": np.zeros((m, 3), dtype=np.float32),
        "ray_d_pool": np.zeros((m, 3), dtype=np.float32),
        "ray_hit_pool": np.zeros(m, dtype=np.float32),
        "ray_t_pool": np.zeros(m, dtype=np.float32),
        "ray_n_pool": np.zeros((m, 3), dtype=np.float32),
    }


# ----------------------------------------------------------------------------------------
# h5 sources and the per-split sample stream


@dataclass(frozen=True)
class H5Source:
    """A readable h5 file: its path, its stem, one class id per cloud and the points per cloud
    (``data``'s declared shape ``(clouds, n_points, >= 3)``)."""

    path: str
    stem: str
    labels: tuple[int, ...]
    n_points: int


def check_labels(labels: np.ndarray, n_clouds: int) -> tuple[int, ...]:
    """Class ids of ``n_clouds`` clouds from a ``label`` array (pure).

    Raises:
        ValueError: a length that differs from ``n_clouds``, or values that are not
        integers >= 0.
    """
    lab = np.asarray(labels).reshape(-1)
    if len(lab) != n_clouds:
        raise ValueError(f"'label' holds {len(lab)} entries but 'data' holds {n_clouds} clouds")
    if len(lab) and (lab.dtype.kind not in "iuf" or not np.all(np.isfinite(lab))
                     or np.any(lab < 0) or np.any(lab != np.round(lab))):
        raise ValueError("'label' holds values that are not class ids (integers >= 0)")
    return tuple(int(x) for x in lab)


def read_h5_source(path: str) -> H5Source:
    """Open ``path`` and check its ``data`` and ``label`` datasets (reads the labels only).

    Raises:
        ValueError: naming the cause (unreadable file, missing dataset, bad shape or labels).
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("data", "label") if not isinstance(f.get(k), h5py.Dataset)]
            if missing:
                raise ValueError(f"no {' and no '.join(repr(k) for k in missing)} dataset "
                                 f"(it holds {sorted(f.keys())})")
            shape = f["data"].shape
            if len(shape) != 3 or shape[1] < 1 or shape[2] < 3:
                raise ValueError(f"'data' has shape {shape}, expected (clouds, points >= 1, >= 3)")
            labels = check_labels(f["label"][()], shape[0])
    except OSError as e:
        raise ValueError(f"cannot read the h5 file ({type(e).__name__}: {e})") from e
    return H5Source(path, os.path.splitext(os.path.basename(path))[0], labels, int(shape[1]))


def split_rng_seed(split: str, seed: int) -> int:
    """Seed of the split's shared ``RandomState``: ``seed`` (train), ``seed + 12345`` (test)."""
    return seed if split == "train" else seed + TEST_SEED_OFFSET


def sample_relpath(split: str, label: int, stem: str, idx: int) -> str:
    """``<split>/class_{label:03d}/{stem}_{idx:06d}.npz`` (relative to the cache root)."""
    return f"{split}/class_{label:03d}/{stem}_{idx:06d}.npz"


def split_stream(split: str, sources: list[H5Source],
                 seed: int) -> list[tuple[H5Source, int, str, str]]:
    """``(source, idx, relpath, seed text)`` of every sample of ``split`` in the order the
    shared ``RandomState`` serves them; seed text ``<RandomState seed>:<position>``."""
    rs = split_rng_seed(split, seed)
    out: list[tuple[H5Source, int, str, str]] = []
    for src in sources:
        for idx, label in enumerate(src.labels):
            out.append((src, idx, sample_relpath(split, label, src.stem, idx), f"{rs}:{len(out)}"))
    return out


def profile_settings(args: PreprocessScanObjectNNConfig) -> dict:
    """Every setting that determines a file's content (seeds are recorded per file)."""
    return {"kind": "scan", "pt_pool": args.pt_pool, "ray_pool": args.ray_pool,
            "pt_surface_ratio": args.pt_surface_ratio,
            "pt_surface_sigma": args.pt_surface_sigma}


# ----------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    ap = make_parser("nepa3d.data.preprocess_scanobjectnn", __doc__.split("\n\n")[0])
    ap.add_argument("--scan_root", required=True,
                    help="folder searched recursively for ScanObjectNN *.h5 files")
    ap.add_argument("--out_root", required=True,
                    help="cache folder to write: <out_root>/<split>/class_NNN/<h5stem>_NNNNNN.npz")
    ap.add_argument("--split", choices=("train", "test", "all"), default="all",
                    help="which split's caches to write")
    ap.add_argument("--pt_pool", type=positive_int, default=2000,
                    help="query points per sample (pt_xyz_pool and its distances)")
    ap.add_argument("--ray_pool", type=positive_int, default=1000,
                    help="length of the (all-zero) ray pools")
    ap.add_argument("--pt_surface_ratio", type=unit_float, default=0.5,
                    help="fraction of the query pool drawn near the points (the rest uniform in "
                         "[-1, 1]^3)")
    ap.add_argument("--pt_surface_sigma", type=nonneg_float, default=0.02,
                    help="std of the Gaussian jitter of near-surface query points (world units)")
    ap.add_argument("--seed", type=int_in(0, MAX_SEED), default=0,
                    help="seed of the query pools (train: seed; test: seed + 12345)")
    ap.add_argument("--variant", choices=tuple(VARIANTS), default="all",
                    help="keep one ScanObjectNN variant by file name (obj, pb_t25, pb_t25_r, "
                         "pb_t50_r, pb_t50_rs); all = every h5 file")
    ap.add_argument("--allow_duplicate_stems", action="store_true",
                    help="accept two h5 files of one split with the same stem (their outputs "
                         "would collide)")
    ap.add_argument("--overwrite", action="store_true",
                    help="rewrite existing output files (default: skip them)")
    ap.add_argument("--max_failures", type=nonneg_int, default=0,
                    help="failed h5 files and samples accepted before the run exits 1")
    return ap


def write_provenance(args: PreprocessScanObjectNNConfig, split: str, files: list[str], profile: str) -> str:
    path = os.path.join(args.out_root, "_meta", f"scanobjectnn_{split}_source.txt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lines = [f"scan_root={os.path.abspath(args.scan_root)}", f"split={split}",
             f"seed={args.seed}", f"pt_pool={args.pt_pool}", f"ray_pool={args.ray_pool}",
             f"pt_surface_ratio={args.pt_surface_ratio}",
             f"pt_surface_sigma={args.pt_surface_sigma}", f"variant={args.variant}",
             f"profile={profile}", f"h5_count={len(files)}"] + [os.path.abspath(p) for p in files]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _load_data(path: str) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        return np.asarray(f["data"][:])


def process_split(args: PreprocessScanObjectNNConfig, split: str,
                  stream: list[tuple[H5Source, int, str, str]], keep: set[str], profile: str
                  ) -> tuple[dict[str, int], list[FileRecord], list[tuple[str, str]]]:
    """Compute every sample of ``stream`` whose file is not in ``keep``.

    Returns:
        ``(counts, records of the files written, [(input, reason)] of the failed samples)``.
    """
    rng = np.random.RandomState(split_rng_seed(split, args.seed))
    counts = {"ok": 0, "skip": 0, "fail": 0, "total": len(stream)}
    made: list[FileRecord] = []
    failures: list[tuple[str, str]] = []
    data, loaded, load_error = None, None, ""
    for src, idx, rel, seed in stream:
        if loaded != src.path:
            loaded, data, load_error = src.path, None, ""
            try:
                data = _load_data(src.path)
                if data.shape[:2] != (len(src.labels), src.n_points):
                    raise ValueError(f"'data' read as shape {data.shape}, declared "
                                     f"({len(src.labels)}, {src.n_points}, ...)")
            except Exception as e:
                data, load_error = None, one_line(f"{type(e).__name__}: {e}")
        try:
            if data is None or rel in keep:
                # draw the pool anyway (a kept file, or a sample whose data cannot be read):
                # every later sample keeps its place in the shared stream, as its record says
                point_query_pool(np.zeros((src.n_points, 3)), args.pt_pool,
                                 args.pt_surface_ratio, args.pt_surface_sigma, rng)
                if data is None:
                    raise ValueError(f"the h5 file's 'data' could not be read ({load_error})")
                counts["skip"] += 1
                continue
            arrays = scan_arrays(data[idx], args.pt_pool, args.ray_pool,
                                 args.pt_surface_ratio, args.pt_surface_sigma, rng)
            save_cache(os.path.join(args.out_root, *rel.split("/")), arrays, kind="scan")
        except Exception as e:
            counts["fail"] += 1
            failures.append((f"{src.path}[{idx}]", one_line(f"{type(e).__name__}: {e}")))
            continue
        rec = record_for(args.out_root, rel, split, profile, seed)
        append_record(args.out_root, rec)
        made.append(rec)
        counts["ok"] += 1
    return counts, made, failures


def _blocked_output(out_root: str) -> str | None:
    """One line when a folder the run writes into is a file, else None."""
    for sub in ("", "_meta", *SPLITS):
        blocker = file_in_the_way(os.path.join(out_root, sub))
        if blocker is not None:
            return f"--out_root {out_root}: {blocker} is a file, not a folder"
    return None


@dataclass(frozen=True, kw_only=True)
class PreprocessScanObjectNNConfig(CliConfig):
    """Flags of ``python -m nepa3d.data.preprocess_scanobjectnn`` (one field per flag)."""

    scan_root: str
    out_root: str
    split: str
    pt_pool: int
    ray_pool: int
    pt_surface_ratio: float
    pt_surface_sigma: float
    seed: int
    variant: str
    allow_duplicate_stems: bool
    overwrite: bool
    max_failures: int

    @classmethod
    def build_parser(cls) -> argparse.ArgumentParser:
        return build_parser()


def main(argv: list[str] | None = None) -> int:
    args = PreprocessScanObjectNNConfig.parse(argv)
    blocked = _blocked_output(args.out_root)
    if blocked:
        return fail(PROG, blocked)
    all_h5 = discover_h5(args.scan_root)
    splits = ["train", "test"] if args.split == "all" else [args.split]
    chosen = {s: select_h5(all_h5, s, args.variant) for s in splits}
    for s in splits:
        if not chosen[s]:
            return fail(PROG, f"no {s} h5 file (variant {args.variant!r}) under --scan_root "
                              f"{args.scan_root!r} ({len(all_h5)} h5 files found)")
        if not args.allow_duplicate_stems:
            try:
                check_duplicate_stems(chosen[s])
            except RuntimeError as e:
                print(f"[{PROG}] error ({s}): {e}", file=sys.stderr)
                return 2
    sources: dict[str, list[H5Source]] = {s: [] for s in splits}
    file_failures: dict[str, list[tuple[str, str]]] = {s: [] for s in splits}
    for s in splits:
        for h5 in chosen[s]:
            try:
                sources[s].append(read_h5_source(h5))
            except ValueError as e:
                file_failures[s].append((h5, one_line(e)))
    streams = {s: split_stream(s, sources[s], args.seed) for s in splits}
    profile = profile_digest(profile_settings(args))
    on_disk = list_cache_files(args.out_root, SPLITS)
    wanted = {rel: seed for s in splits for _, _, rel, seed in streams[s]}
    wanted.update({rel: None for rel in on_disk if rel.split("/", 1)[0] not in splits})
    try:
        records = read_records(args.out_root)
    except CacheError as e:
        return fail(PROG, e)
    plan = plan_cache(wanted, on_disk, records, profile, args.overwrite)

    # nothing was written before this line
    os.makedirs(os.path.join(args.out_root, "_meta"), exist_ok=True)
    if plan.remove:
        remove_cache_files(args.out_root, plan.remove)
        print(f"[{PROG}] removed {len(plan.remove)} existing file(s): "
              f"{describe_removals(plan.remove)}", flush=True)
    kept = [records[r] for r in plan.keep]
    write_records(args.out_root, kept)
    made: list[FileRecord] = []
    failures: list[tuple[str, str]] = []
    totals = {"ok": 0, "skip": 0, "fail": 0, "total": 0}
    for s in splits:
        files = chosen[s]
        variants = sorted({v for v, pat in VARIANTS.items() if v != "all" for p in files
                           if fnmatch.fnmatch(os.path.basename(p).lower(), pat)})
        if args.variant == "all" and len(variants) > 1:
            print(f"[{PROG}] note: split {s} mixes variants {variants}; use --variant to keep one",
                  file=sys.stderr)
        write_provenance(args, s, files, profile)
        t0 = time.time()
        c, split_made, split_failures = process_split(args, s, streams[s], set(plan.keep),
                                                      profile)
        split_failures = file_failures[s] + split_failures
        c["fail"] += len(file_failures[s])
        made += split_made
        failures += split_failures
        totals = {k: totals[k] + c[k] for k in totals}
        path = os.path.join(args.out_root, "_meta", f"scanobjectnn_{s}_failures.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(f"{i}\t{r}\n" for i, r in split_failures))
        for i, r in split_failures:
            print(f"[{PROG}] FAIL {i}: {r}", file=sys.stderr)
        print(f"[{PROG}] split={s} h5={len(files)} ok={c['ok']} skip={c['skip']} "
              f"fail={c['fail']} total={c['total']} seconds={time.time() - t0:.1f}", flush=True)
    write_records(args.out_root, kept + made)
    verdict = run_verdict(len(failures), args.max_failures, totals["ok"] + totals["skip"])
    rc = 0 if verdict is None else 1
    if verdict:
        print(f"[{PROG}] error: {verdict}", file=sys.stderr)
    write_run_record(args.out_root, PROG, profile=profile, max_failures=args.max_failures,
                     failures=failures, counts={**totals, "removed": len(plan.remove)},
                     exit_code=rc)
    if rc == 0:  # record which corpus this cache came from (read back into result provenance)
        write_cache_corpus(args.out_root, describe_source(args.scan_root))
    return rc


if __name__ == "__main__":
    sys.exit(main())
