"""ShapeNetCore mesh -> cache preprocessing CLI (reference §1.3).

Example (the active-track profile, which is the default)::

    .venv/bin/python -u -m nepa3d.data.preprocess_shapenet \\
        --shapenet_root data/ShapeNetCore.v2 --out_root data/shapenet_cache_v0 \\
        --split all --workers 4 --chunk_size 1 --max_tasks_per_child 2

Layout: ``<out_root>/<train|test>/<synset>/<model>.npz``; split manifest
``<out_root>/_splits/{train,test}.txt`` (always written for all meshes); failures of the
last run in ``<out_root>/_meta/preprocess_failures.txt`` (``path<TAB>reason`` per line); after a
successful run ``<out_root>/_meta/corpus.json`` records which corpus ``shapenet_root`` belongs
to (:mod:`nepa3d.data.corpus_meta`).

Split: per synset, models sorted by id; ``n_test = int(round(test_ratio * n))``, at least 1
when ``n >= 10``, capped at ``n``; the ``n_test`` models with the smallest
``int(md5(f"{synset}/{model}:{split_seed}").hexdigest()[:8], 16)`` go to test.

Seeds: task ``i`` of the sorted target list (all meshes for ``--split all``) uses
``seed + i``; the index is counted before existing outputs are skipped, so a resumed run
computes exactly what an uninterrupted one would. Outputs are written atomically (temp file
+ rename), so an interrupted run never leaves a truncated ``.npz``; stale temp files
(``.tmp_npz_*``) of an interrupted run are removed at start-up. Run one preprocess per
``out_root`` at a time.

Exit status: 0 when done (individual failures are logged, not fatal); 1 when every attempted
mesh failed; 2 on bad arguments or when the glob matches no mesh.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
from collections import defaultdict

from nepa3d.data.corpus_meta import describe_source, write_cache_corpus
from nepa3d.data.mesh_pipeline import PT_DIST_MODES, MeshCacheConfig, preprocess_mesh, require_embree

PROG = "preprocess_shapenet"
DEFAULT_GLOB = "*/*/models/model_normalized.obj"
SPLITS = ("train", "test")


# ----------------------------------------------------------------------------------------
# pure helpers


def synset_model(path: str) -> tuple[str, str]:
    """``(synset, model)`` of a mesh path.

    If a component ``models`` sits at index ``i >= 2``: ``(parts[i-2], parts[i-1])``;
    otherwise ``(parts[-3], basename without extension)``.
    """
    parts = os.path.normpath(path).split(os.sep)
    for i, p in enumerate(parts):
        if p == "models" and i >= 2:
            return parts[i - 2], parts[i - 1]
    if len(parts) < 3:
        raise ValueError(f"cannot infer synset/model from {path!r}")
    return parts[-3], os.path.splitext(parts[-1])[0]


def split_key(synset: str, model: str, split_seed: int) -> int:
    """``int(md5(f"{synset}/{model}:{split_seed}").hexdigest()[:8], 16)``."""
    return int(hashlib.md5(f"{synset}/{model}:{split_seed}".encode("utf-8")).hexdigest()[:8], 16)


def n_test_for(n: int, test_ratio: float) -> int:
    """``int(round(test_ratio * n))``, at least 1 when ``n >= 10``, capped at ``n``."""
    k = int(round(float(test_ratio) * n))
    if n >= 10:
        k = max(1, k)
    return max(0, min(k, n))


def assign_splits(paths: list[str], test_ratio: float, split_seed: int) -> dict[str, str]:
    """Deterministic per-synset train/test assignment: ``{mesh_path: 'train' | 'test'}``."""
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for p in paths:
        syn, model = synset_model(p)
        groups[syn].append((model, p))
    out: dict[str, str] = {}
    for syn in sorted(groups):
        items = sorted(groups[syn])
        n = len(items)
        k = n_test_for(n, test_ratio)
        # stable sort on the md5 key; ties (astronomically rare) keep model-id order
        order = sorted(range(n), key=lambda j: split_key(syn, items[j][0], split_seed))
        test_idx = set(order[:k])
        for j, (_, p) in enumerate(items):
            out[p] = "test" if j in test_idx else "train"
    return out


def output_path(out_root: str, split: str, mesh_path: str) -> str:
    syn, model = synset_model(mesh_path)
    return os.path.join(out_root, split, syn, f"{model}.npz")


# ----------------------------------------------------------------------------------------
# side effects


def _write_text_atomic(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_split_manifest(out_root: str, assignment: dict[str, str]) -> dict[str, list[str]]:
    """Write ``_splits/{train,test}.txt`` (sorted mesh paths, newline-terminated)."""
    lists = {s: sorted(p for p, sp in assignment.items() if sp == s) for s in SPLITS}
    for s in SPLITS:
        _write_text_atomic(os.path.join(out_root, "_splits", f"{s}.txt"),
                           "".join(f"{p}\n" for p in lists[s]))
    return lists


def remove_stale_temp_files(out_root: str, splits: list[str]) -> int:
    """Delete ``.tmp_npz_*`` leftovers of an interrupted run under ``<out_root>/<split>/*/``."""
    n = 0
    for s in splits:
        for p in glob.glob(os.path.join(glob.escape(out_root), s, "*", ".tmp_npz_*")):
            try:
                os.unlink(p)
                n += 1
            except FileNotFoundError:
                pass
    return n


def _run_task(task: tuple) -> tuple[str, str, str, str, float]:
    """Pool worker: ``(mesh, out, cfg, seed) -> (mesh, out, status, reason, seconds)``."""
    mesh_path, out_path, cfg, seed = task
    t0 = time.perf_counter()
    try:
        status, reason = preprocess_mesh(mesh_path, out_path, cfg, seed)
    except Exception as e:  # preprocess_mesh already catches; belt and braces
        status, reason = "fail", f"{type(e).__name__}: {e}"
    return mesh_path, out_path, status, reason, time.perf_counter() - t0


def build_parser() -> argparse.ArgumentParser:
    d = MeshCacheConfig()
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--shapenet_root", required=True)
    ap.add_argument("--out_root", required=True)
    ap.add_argument("--split", choices=("train", "test", "all"), default="all")
    ap.add_argument("--mesh_glob", default=DEFAULT_GLOB)
    ap.add_argument("--test_ratio", type=float, default=0.1)
    ap.add_argument("--split_seed", type=int, default=0)
    ap.add_argument("--pc_points", type=int, default=d.pc_points)
    ap.add_argument("--pt_pool", type=int, default=d.pt_pool)
    ap.add_argument("--ray_pool", type=int, default=d.ray_pool)
    ap.add_argument("--n_views", type=int, default=d.n_views)
    ap.add_argument("--rays_per_view", type=int, default=d.rays_per_view)
    ap.add_argument("--pc_grid", type=int, default=d.pc_grid)
    ap.add_argument("--pc_dilate", type=int, default=d.pc_dilate)
    ap.add_argument("--pc_max_steps", type=int, default=d.pc_max_steps)
    ap.add_argument("--no_pc_rays", action="store_true")
    ap.add_argument("--df_grid", type=int, default=d.df_grid)
    ap.add_argument("--df_dilate", type=int, default=d.df_dilate)
    ap.add_argument("--no_udf", action="store_true")
    ap.add_argument("--pt_surface_ratio", type=float, default=d.pt_surface_ratio)
    ap.add_argument("--pt_surface_sigma", type=float, default=d.pt_surface_sigma)
    ap.add_argument("--pt_query_chunk", type=int, default=d.pt_query_chunk)
    ap.add_argument("--ray_query_chunk", type=int, default=d.ray_query_chunk)
    ap.add_argument("--pt_dist_mode", choices=PT_DIST_MODES, default="kdtree")
    ap.add_argument("--dist_ref_points", type=int, default=d.dist_ref_points)
    ap.add_argument("--seed", type=int, default=0, help="task i uses seed + i; -1 = unseeded")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--workers", type=int, default=4, help="0 or 1 = run in-process")
    ap.add_argument("--chunk_size", type=int, default=1)
    ap.add_argument("--max_tasks_per_child", type=int, default=2, help="0 = unlimited")
    return ap


def config_from_args(args: argparse.Namespace) -> MeshCacheConfig:
    return MeshCacheConfig(
        pc_points=args.pc_points, pt_pool=args.pt_pool, ray_pool=args.ray_pool,
        n_views=args.n_views, rays_per_view=args.rays_per_view, pc_grid=args.pc_grid,
        pc_dilate=args.pc_dilate, pc_max_steps=args.pc_max_steps, df_grid=args.df_grid,
        df_dilate=args.df_dilate, pt_surface_ratio=args.pt_surface_ratio,
        pt_surface_sigma=args.pt_surface_sigma, pt_dist_mode=args.pt_dist_mode,
        dist_ref_points=args.dist_ref_points, compute_udf=not args.no_udf,
        compute_pc_rays=not args.no_pc_rays, pt_query_chunk=args.pt_query_chunk,
        ray_query_chunk=args.ray_query_chunk,
    ).validate()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ValueError as e:
        print(f"[{PROG}] error: {e}", file=sys.stderr)
        return 2
    try:  # fail fast, and import once in the parent so forked workers inherit it
        require_embree()
    except ImportError as e:
        print(f"[{PROG}] error: {e}", file=sys.stderr)
        return 2
    if cfg.udf_enabled:
        try:
            from scipy.ndimage import distance_transform_edt  # noqa: F401
        except ImportError:
            print(f"[{PROG}] error: the UDF needs scipy.ndimage.distance_transform_edt "
                  "(install scipy or pass --no_udf)", file=sys.stderr)
            return 2

    pattern = os.path.join(args.shapenet_root, args.mesh_glob)
    meshes = sorted(set(glob.glob(pattern)))
    if not meshes:
        print(f"[{PROG}] error: no mesh matches --mesh_glob {args.mesh_glob!r} under "
              f"--shapenet_root {args.shapenet_root!r} (pattern {pattern!r})", file=sys.stderr)
        return 2
    try:
        assignment = assign_splits(meshes, args.test_ratio, args.split_seed)
    except ValueError as e:
        print(f"[{PROG}] error: {e}", file=sys.stderr)
        return 2
    lists = write_split_manifest(args.out_root, assignment)
    print(f"[{PROG}] meshes={len(meshes)} train={len(lists['train'])} test={len(lists['test'])} "
          f"root={args.shapenet_root}", flush=True)

    targets = meshes if args.split == "all" else lists[args.split]
    splits_touched = list(SPLITS) if args.split == "all" else [args.split]
    stale = remove_stale_temp_files(args.out_root, splits_touched)
    if stale:
        print(f"[{PROG}] removed {stale} stale temp file(s) of an interrupted run", flush=True)

    meta_dir = os.path.join(args.out_root, "_meta")
    os.makedirs(meta_dir, exist_ok=True)
    _write_text_atomic(os.path.join(meta_dir, "preprocess_shapenet_args.json"),
                       json.dumps({"argv": list(sys.argv[1:] if argv is None else argv),
                                   "args": vars(args), "config": cfg.as_dict()}, indent=2) + "\n")

    tasks, skip = [], 0
    for i, mesh in enumerate(targets):  # seed index counted before the skip
        out = output_path(args.out_root, assignment[mesh], mesh)
        if not args.overwrite and os.path.exists(out):
            skip += 1
            continue
        seed = -1 if args.seed < 0 else args.seed + i
        tasks.append((mesh, out, cfg, seed))

    from tqdm import tqdm

    tqdm.monitor_interval = 0  # no monitor thread: pool workers may be forked mid-run
    t0 = time.time()
    ok, failures = 0, []
    pool = None
    if args.workers > 1 and tasks:
        pool = mp.get_context().Pool(processes=args.workers,
                                     maxtasksperchild=args.max_tasks_per_child or None)
    try:
        results = (pool.imap_unordered(_run_task, tasks, chunksize=max(1, args.chunk_size))
                   if pool is not None else map(_run_task, tasks))
        with tqdm(total=len(tasks), desc=PROG, unit="mesh", dynamic_ncols=True,
                  file=sys.stderr) as bar:
            for mesh, _out, status, reason, _secs in results:
                if status == "ok":
                    ok += 1
                else:
                    failures.append((mesh, reason))
                bar.update(1)
                bar.set_postfix(ok=ok, fail=len(failures), refresh=False)
        if pool is not None:
            pool.close()
            pool.join()
    finally:
        if pool is not None:
            pool.terminate()
    seconds = time.time() - t0

    failures.sort()
    _write_text_atomic(os.path.join(meta_dir, "preprocess_failures.txt"),
                       "".join(f"{m}\t{r}\n" for m, r in failures))
    for m, r in failures[:20]:
        print(f"[{PROG}] FAIL {m}: {r}", file=sys.stderr)
    if len(failures) > 20:
        print(f"[{PROG}] ... {len(failures) - 20} more in {meta_dir}/preprocess_failures.txt",
              file=sys.stderr)
    print(f"[{PROG}] ok={ok} skip={skip} fail={len(failures)} total={len(targets)} "
          f"seconds={seconds:.1f}", flush=True)
    if failures and ok == 0 and skip == 0:
        print(f"[{PROG}] error: all {len(failures)} meshes failed", file=sys.stderr)
        return 1
    # record which corpus this cache came from (read back into result provenance)
    write_cache_corpus(args.out_root, describe_source(args.shapenet_root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
