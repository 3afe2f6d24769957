"""ScanObjectNN h5 -> ``scan``-kind cache preprocessing CLI (reference §1.4).

Example (the paper-safe profile of the lab notes)::

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
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import os
import sys
import time
from collections import defaultdict

import numpy as np

from nepa3d.data.cache import save_cache
from nepa3d.data.corpus_meta import describe_source, write_cache_corpus
from nepa3d.geometry.distance import nearest_neighbors, sanitize_distances
from nepa3d.geometry.normalize import normalize_centroid_unit_sphere
from nepa3d.geometry.pools import point_query_pool

PROG = "preprocess_scanobjectnn"
TEST_SEED_OFFSET = 12345
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
# CLI


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--scan_root", required=True)
    ap.add_argument("--out_root", required=True)
    ap.add_argument("--split", choices=("train", "test", "all"), default="all")
    ap.add_argument("--pt_pool", type=int, default=2000)
    ap.add_argument("--ray_pool", type=int, default=1000)
    ap.add_argument("--pt_surface_ratio", type=float, default=0.5)
    ap.add_argument("--pt_surface_sigma", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variant", choices=tuple(VARIANTS), default="all")
    ap.add_argument("--allow_duplicate_stems", action="store_true")
    ap.add_argument("--overwrite", action="store_true")
    return ap


def write_provenance(args: argparse.Namespace, split: str, files: list[str]) -> str:
    path = os.path.join(args.out_root, "_meta", f"scanobjectnn_{split}_source.txt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lines = [f"scan_root={os.path.abspath(args.scan_root)}", f"split={split}",
             f"seed={args.seed}", f"pt_pool={args.pt_pool}", f"ray_pool={args.ray_pool}",
             f"pt_surface_ratio={args.pt_surface_ratio}",
             f"pt_surface_sigma={args.pt_surface_sigma}", f"variant={args.variant}",
             f"h5_count={len(files)}"] + [os.path.abspath(p) for p in files]
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def process_split(args: argparse.Namespace, split: str, files: list[str]) -> dict[str, int]:
    """Process every sample of ``files`` for ``split``; returns the counters."""
    import h5py

    rng = np.random.RandomState(args.seed if split == "train" else args.seed + TEST_SEED_OFFSET)
    counts = {"ok": 0, "skip": 0, "fail": 0, "total": 0}
    failures = []
    for h5 in files:
        stem = os.path.splitext(os.path.basename(h5))[0]
        with h5py.File(h5, "r") as f:
            if "data" not in f or "label" not in f:
                print(f"[{PROG}] skip file without data/label: {h5}", file=sys.stderr)
                continue
            data = np.asarray(f["data"][:])
            labels = np.asarray(f["label"][:]).reshape(-1)
        if len(labels) != len(data):
            print(f"[{PROG}] skip file with {len(data)} clouds but {len(labels)} labels: {h5}",
                  file=sys.stderr)
            continue
        for idx in range(len(data)):
            counts["total"] += 1
            out = os.path.join(args.out_root, split, f"class_{int(labels[idx]):03d}",
                               f"{stem}_{idx:06d}.npz")
            exists = os.path.exists(out) and not args.overwrite
            try:
                if exists:  # draw the pool anyway: keeps the shared stream aligned
                    point_query_pool(np.zeros((data.shape[1], 3)), args.pt_pool,
                                     args.pt_surface_ratio, args.pt_surface_sigma, rng)
                    counts["skip"] += 1
                    continue
                arrays = scan_arrays(data[idx], args.pt_pool, args.ray_pool,
                                     args.pt_surface_ratio, args.pt_surface_sigma, rng)
                save_cache(out, arrays, kind="scan")
                counts["ok"] += 1
            except Exception as e:
                counts["fail"] += 1
                failures.append(f"{h5}\t{idx}\t{type(e).__name__}: {e}")
    if failures:
        path = os.path.join(args.out_root, "_meta", f"scanobjectnn_{split}_failures.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(failures) + "\n")
        print(f"[{PROG}] {len(failures)} failure(s) listed in {path}", file=sys.stderr)
    return counts


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.pt_pool < 0 or args.ray_pool < 0 or not 0.0 <= args.pt_surface_ratio <= 1.0:
        print(f"[{PROG}] error: bad pool settings", file=sys.stderr)
        return 2
    all_h5 = discover_h5(args.scan_root)
    splits = ["train", "test"] if args.split == "all" else [args.split]
    chosen = {s: select_h5(all_h5, s, args.variant) for s in splits}
    for s in splits:
        if not chosen[s]:
            print(f"[{PROG}] error: no {s} h5 file (variant {args.variant!r}) under "
                  f"--scan_root {args.scan_root!r} ({len(all_h5)} h5 files found)",
                  file=sys.stderr)
            return 2
        if not args.allow_duplicate_stems:
            try:
                check_duplicate_stems(chosen[s])
            except RuntimeError as e:
                print(f"[{PROG}] error ({s}): {e}", file=sys.stderr)
                return 2
    rc = 0
    for s in splits:
        files = chosen[s]
        variants = sorted({v for v, pat in VARIANTS.items() if v != "all" for p in files
                           if fnmatch.fnmatch(os.path.basename(p).lower(), pat)})
        if args.variant == "all" and len(variants) > 1:
            print(f"[{PROG}] note: split {s} mixes variants {variants}; use --variant to keep one",
                  file=sys.stderr)
        write_provenance(args, s, files)
        t0 = time.time()
        c = process_split(args, s, files)
        print(f"[{PROG}] split={s} h5={len(files)} ok={c['ok']} skip={c['skip']} "
              f"fail={c['fail']} total={c['total']} seconds={time.time() - t0:.1f}", flush=True)
        if c["total"] and c["fail"] == c["total"]:
            rc = 1
    if rc == 0:  # record which corpus this cache came from (read back into result provenance)
        write_cache_corpus(args.out_root, describe_source(args.scan_root))
    return rc


if __name__ == "__main__":
    sys.exit(main())
