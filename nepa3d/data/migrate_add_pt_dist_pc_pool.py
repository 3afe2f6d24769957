"""Add ``pt_dist_pc_pool`` (NN distance from the pool to ``pc_xyz``) to existing caches.

The fix for mesh-derived distances in point-cloud backends
(docs/protocols.md#mesh-derived-distances-in-a-point-cloud-modality); the original's
``migrate_add_pt_dist_pc_pool.py`` (KohsukeIde/3D-NEPA @ 737d98f) does the same.

Example (run on the *source* cache, before the unpaired view is materialised)::

    .venv/bin/python -u -m nepa3d.data.migrate_add_pt_dist_pc_pool \\
        --cache_root data/shapenet_cache_v0 --splits train,test --workers 16

Files: recursive ``**/*.npz`` under the root (``--splits all``) or under each
``<root>/<split>``; sorted, de-duplicated, cut to ``--limit`` (0 = all). Each path is
resolved with ``realpath`` (a symlinked view updates its source; two links to one source are
processed once). A file whose ``pt_dist_pc_pool`` exists, is finite and ``>= 0`` is skipped
unless ``--overwrite`` -- or, when it lacks only the ``schema_version`` stamp (a file of the
original code), rewritten with the stamp and every array as it was (``stamped``). Rewrites go
through :func:`nepa3d.data.cache.save_cache` (validated, temp file + ``os.replace``), which
stamps legacy files. Caches written by the current preprocessors already carry both.

Prints ``done: ok=N skip=S fail=M total=T stamped=K`` (the original's line plus the stamp
count); failures (``fail:<ExceptionName>``) are listed on stderr. Exit status 1 if any file
failed.
"""

from __future__ import annotations

import argparse
import glob
import multiprocessing as mp
import os
import sys

import numpy as np
from dataclasses import dataclass

from nepa3d.data.cache import load_cache, save_cache
from nepa3d.geometry.distance import nearest_neighbors, sanitize_distances
from nepa3d.cli.args import fail, make_parser, nonneg_int, positive_int
from nepa3d.cli.config import CliConfig

PROG = "migrate_add_pt_dist_pc_pool"


def list_files(cache_root: str, splits: str, limit: int = 0) -> list[str]:
    """Sorted unique ``.npz`` paths (not yet resolved) for ``splits`` ('all' or 'a,b,c')."""
    root = glob.escape(cache_root)
    names = [s.strip() for s in splits.split(",") if s.strip()]
    if not names or names == ["all"]:
        bases = [root]
    else:
        bases = [os.path.join(root, glob.escape(s)) for s in names]
    files = sorted({p for b in bases for p in glob.glob(os.path.join(b, "**", "*.npz"),
                                                            recursive=True)
                    if not os.path.basename(p).startswith(".tmp_npz_")})
    return files[:limit] if limit and limit > 0 else files


def has_valid_pc_pool(arrays: dict) -> bool:
    d = arrays.get("pt_dist_pc_pool")
    return d is not None and d.size > 0 and bool(np.all(np.isfinite(d)) and np.all(d >= 0))


def migrate_one(task: tuple[str, bool, int]) -> tuple[str, str, str]:
    """``(realpath, overwrite, chunk) -> (realpath, status, detail)``;
    status ok|stamped|skip|fail:<Name>."""
    path, overwrite, chunk = task
    try:
        arrays = load_cache(path, validate=False)
        if not overwrite and has_valid_pc_pool(arrays):
            if "schema_version" in arrays:
                return path, "skip", ""
            save_cache(path, arrays)  # only the stamp is missing: add it, keep every array
            return path, "stamped", ""
        for k in ("pt_xyz_pool", "pc_xyz"):
            if k not in arrays:
                raise KeyError(f"missing {k}")
        d, _ = nearest_neighbors(arrays["pt_xyz_pool"], arrays["pc_xyz"], chunk=chunk)
        arrays["pt_dist_pc_pool"] = sanitize_distances(d)
        save_cache(path, arrays)
        return path, "ok", ""
    except Exception as e:
        return path, f"fail:{type(e).__name__}", str(e)


def build_parser() -> argparse.ArgumentParser:
    ap = make_parser("nepa3d.data.migrate_add_pt_dist_pc_pool", __doc__.split("\n\n")[0])
    ap.add_argument("--cache_root", required=True,
                    help="cache folder whose <split>/*/*.npz files get pt_dist_pc_pool")
    ap.add_argument("--splits", default="all", help="'all' or a comma list, e.g. train,test")
    ap.add_argument("--workers", type=nonneg_int, default=8, help="0 or 1 = in-process")
    ap.add_argument("--chunk", type=positive_int, default=4096, help="query rows per kd-tree call")
    ap.add_argument("--overwrite", action="store_true",
                    help="recompute pt_dist_pc_pool in files that already have it")
    ap.add_argument("--limit", type=nonneg_int, default=0,
                    help="process at most this many files (0 = all)")
    return ap


@dataclass(frozen=True, kw_only=True)
class MigratePtDistPcPoolConfig(CliConfig):
    """Flags of ``python -m nepa3d.data.migrate_add_pt_dist_pc_pool`` (one field per flag)."""

    cache_root: str
    splits: str
    workers: int
    chunk: int
    overwrite: bool
    limit: int

    @classmethod
    def build_parser(cls) -> argparse.ArgumentParser:
        return build_parser()


def main(argv: list[str] | None = None) -> int:
    args = MigratePtDistPcPoolConfig.parse(argv)

    files = list_files(args.cache_root, args.splits, args.limit)
    if not files:  # a mistyped root or split migrated nothing: not a success
        where = "" if args.splits.strip() in ("", "all") else f" (splits {args.splits})"
        return fail(PROG, f"--cache_root {args.cache_root}: no .npz files{where}")
    real, seen = [], set()
    for p in files:
        r = os.path.realpath(p)
        if r not in seen:
            seen.add(r)
            real.append(r)
    print(f"[{PROG}] files={len(files)} unique_targets={len(real)} root={args.cache_root}",
          flush=True)
    tasks = [(p, args.overwrite, args.chunk) for p in real]
    linked = 0
    for p in real:  # before the rewrite: other hard links will keep the old inode
        try:
            if os.stat(p).st_nlink > 1:
                linked += 1
        except OSError:
            pass

    from tqdm import tqdm

    counts = {"ok": 0, "stamped": 0, "skip": 0, "fail": 0}
    failures = []
    if args.workers <= 1:
        results = map(migrate_one, tasks)
        pool = None
    else:
        pool = mp.get_context().Pool(processes=args.workers)
        results = pool.imap_unordered(migrate_one, tasks, chunksize=16)
    try:
        for path, status, detail in tqdm(results, total=len(tasks), desc=PROG, unit="file",
                                         file=sys.stderr, dynamic_ncols=True):
            key = status.split(":")[0]
            counts[key] += 1
            if key == "fail":
                failures.append((path, status, detail))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    for path, status, detail in sorted(failures):
        print(f"[{PROG}] {status} {path}: {detail}", file=sys.stderr)
    if linked:
        print(f"[{PROG}] note: {linked} target file(s) had other hard links; rewritten files "
              "get a new inode, so those links keep the old content", file=sys.stderr)
    print(f"done: ok={counts['ok']} skip={counts['skip']} fail={counts['fail']} "
          f"total={len(tasks)} stamped={counts['stamped']}", flush=True)
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
