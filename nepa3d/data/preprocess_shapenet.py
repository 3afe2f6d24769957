"""ShapeNetCore mesh -> cache preprocessing CLI (the original's ``preprocess_shapenet.py``,
KohsukeIde/3D-NEPA @ 737d98f, same flags and layout).

Example (the lab's cache profile, which is the default; the embedded corpus uses the smaller
profile of params.yaml ``preprocess.shapenet``)::

    .venv/bin/python -u -m nepa3d.data.preprocess_shapenet \\
        --shapenet_root data/ShapeNetCore.v2 --out_root data/shapenet_cache_v0 \\
        --split all --workers 4 --chunk_size 1 --max_tasks_per_child 2

Layout: ``<out_root>/<train|test>/<synset>/<model>.npz``; split manifest
``<out_root>/_splits/{train,test}.txt`` (every mesh of the input, failures included, rewritten
by every run); file records ``<out_root>/_meta/cache_records.tsv`` (split, profile digest and
seed of every cache file: :mod:`nepa3d.data.cache`; readers list a split from them); failures
of the last run in ``<out_root>/_meta/preprocess_failures.txt`` (``path<TAB>reason`` per line)
and ``<out_root>/_meta/preprocess_shapenet_run.json`` (profile, ``--max_failures``, failed
inputs, counts, exit code); after a successful run ``<out_root>/_meta/corpus.json`` records
which corpus ``shapenet_root`` belongs to (:mod:`nepa3d.data.corpus_meta`).

Split: per synset, models sorted by id; ``n_test = int(round(test_ratio * n))``, at least 1
when ``n >= 10``, capped at ``n``; the ``n_test`` models with the smallest
``int(md5(f"{synset}/{model}:{split_seed}").hexdigest()[:8], 16)`` go to test. The split is a
function of the current input: adding or removing a mesh can move another shape of its synset
to the other split.

Seeds: task ``i`` of the sorted target list (all meshes for ``--split all``) uses
``seed + i``; the index is counted before existing outputs are kept, so a resumed run
computes exactly what an uninterrupted one would. Outputs are written atomically (temp file
+ rename), so an interrupted run never leaves a truncated ``.npz``; stale temp files
(``.tmp_npz_*``) of an interrupted run are removed at start-up. Run one preprocess per
``out_root`` at a time.

Re-runs: the cache afterwards holds what a fresh run with the same input and flags would hold.
An existing file stays only when its record says it was made in the split the input now
assigns it, with this run's profile (a digest of every flag that determines the content:
:func:`profile_settings`) and, for a file this run builds, with this run's seed; every other
file is removed (a shape that moved split, a mesh gone from the input, another profile or
seed, no record) and, if this run builds it, rebuilt. A shape lives in one split only. A flag
added after v1 of the profile (``--mesh_cleanup``) enters it only when not at its default, so
files made before the flag existed keep their digest.

Exit status: 0 when done; 1 when more inputs failed than ``--max_failures`` allows (default
0; every failure is one ``FAIL <mesh>: <cause>`` line on stderr) or when no cache file
results; 2 on bad arguments, an output folder that is a file, or a glob that matches no mesh.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from collections import defaultdict

from benchmark.atomic import atomic_write_json, atomic_write_text
from nepa3d.cli.args import (make_parser,
    fail,
    int_at_least,
    nonneg_float,
    nonneg_int,
    one_line,
    positive_int,
    unit_float,
)
from nepa3d.data.cache import (
    CacheError,
    append_record,
    describe_removals,
    file_in_the_way,
    list_cache_files,
    plan_cache,
    profile_digest,
    read_records,
    record_for,
    remove_cache_files,
    write_records,
)
from nepa3d.data.corpus_meta import (
    describe_source,
    run_verdict,
    write_cache_corpus,
    write_run_record,
)
from nepa3d.data.mesh_pipeline import (
    MESH_CLEANUPS,
    PT_DIST_MODES,
    MeshCacheConfig,
    preprocess_mesh,
    require_embree,
)
from nepa3d.cli.config import CliConfig

PROG = "preprocess_shapenet"
DEFAULT_GLOB = "*/*/models/model_normalized.obj"
SPLITS = ("train", "test")
#: MeshCacheConfig fields that change how the work is chunked, never a stored value.
CONTENT_FREE = ("pt_query_chunk", "ray_query_chunk")
#: MeshCacheConfig fields added after v1 of the profile. Such a field enters the profile (and
#: so its digest) only when it differs from its default: the default is what the code did
#: before the field existed, so caches made then keep their digest and are not rebuilt.
ADDED_AFTER_V1 = ("mesh_cleanup",)


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


def split_lists(assignment: dict[str, str]) -> dict[str, list[str]]:
    """``{split: sorted mesh paths}`` of an assignment."""
    return {s: sorted(p for p, sp in assignment.items() if sp == s) for s in SPLITS}


def cache_relpath(split: str, mesh_path: str) -> str:
    """``<split>/<synset>/<model>.npz`` ('/'-separated, relative to the cache root)."""
    syn, model = synset_model(mesh_path)
    return f"{split}/{syn}/{model}.npz"


def output_path(out_root: str, split: str, mesh_path: str) -> str:
    return os.path.join(out_root, *cache_relpath(split, mesh_path).split("/"))


def shared_outputs(paths: list[str]) -> dict[str, list[str]]:
    """``{"<synset>/<model>": meshes}`` for every cache file more than one mesh maps to."""
    by_shape: dict[str, list[str]] = defaultdict(list)
    for p in paths:
        by_shape["/".join(synset_model(p))].append(p)
    return {k: v for k, v in sorted(by_shape.items()) if len(v) > 1}


def profile_settings(cfg: MeshCacheConfig) -> dict:
    """Every setting that determines a file's content (the digest's input; seeds are recorded
    per file). Fields of :data:`ADDED_AFTER_V1` appear only when not at their default."""
    default = MeshCacheConfig().as_dict()
    return {"kind": "mesh",
            **{k: v for k, v in sorted(cfg.as_dict().items())
               if k not in CONTENT_FREE and not (k in ADDED_AFTER_V1 and v == default[k])}}


def task_seeds(targets: list[str], seed: int) -> dict[str, int]:
    """``{mesh: seed + i}`` over the sorted target list; -1 (unseeded) for every mesh when
    ``seed < 0``."""
    return {m: (-1 if seed < 0 else seed + i) for i, m in enumerate(targets)}


# ----------------------------------------------------------------------------------------
# side effects


def write_split_manifest(out_root: str, lists: dict[str, list[str]]) -> None:
    """Write ``_splits/{train,test}.txt`` (sorted mesh paths, newline-terminated)."""
    for s in SPLITS:
        atomic_write_text(os.path.join(out_root, "_splits", f"{s}.txt"),
                          "".join(f"{p}\n" for p in lists[s]))


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
    ap = make_parser("nepa3d.data.preprocess_shapenet", __doc__.split("\n\n")[0])
    ap.add_argument("--shapenet_root", required=True,
                    help="ShapeNet root folder (the meshes are found with --mesh_glob under it)")
    ap.add_argument("--out_root", required=True,
                    help="cache folder to write: <out_root>/<train|test>/<synset>/<model>.npz and "
                         "_splits/")
    ap.add_argument("--split", choices=("train", "test", "all"), default="all",
                    help="which split's caches to write (the split manifests are always written "
                         "for all meshes)")
    ap.add_argument("--mesh_glob", default=DEFAULT_GLOB,
                    help="glob of the mesh files under --shapenet_root")
    ap.add_argument("--test_ratio", type=unit_float, default=0.1,
                    help="fraction of each synset's models put in the test split")
    ap.add_argument("--split_seed", type=int, default=0,
                    help="seed of the per-synset md5 ordering that picks the test models")
    ap.add_argument("--pc_points", type=positive_int, default=d.pc_points,
                    help="surface samples per shape (pc_xyz, pc_n)")
    ap.add_argument("--pt_pool", type=positive_int, default=d.pt_pool,
                    help="query points per shape (pt_xyz_pool and its distances)")
    ap.add_argument("--ray_pool", type=positive_int, default=d.ray_pool,
                    help="rays per shape (ray_*_pool)")
    ap.add_argument("--n_views", type=positive_int, default=d.n_views,
                    help="camera positions on a radius-2.2 spiral")
    ap.add_argument("--rays_per_view", type=positive_int, default=d.rays_per_view,
                    help="rays cast from each camera (raised so that views x rays >= --ray_pool)")
    ap.add_argument("--pc_grid", type=positive_int, default=d.pc_grid,
                    help="point-cloud rays: occupancy grid resolution (cells per axis)")
    ap.add_argument("--pc_dilate", type=nonneg_int, default=d.pc_dilate,
                    help="point-cloud rays: dilation iterations of the occupancy")
    ap.add_argument("--pc_max_steps", type=nonneg_int, default=d.pc_max_steps,
                    help="DDA voxel budget; 0 = 3 * pc_grid")
    ap.add_argument("--no_pc_rays", action="store_true",
                    help="skip the point-cloud rays (ray_*_pc_pool are zeros)")
    ap.add_argument("--df_grid", type=positive_int, default=d.df_grid,
                    help="UDF grid side (--no_udf turns the UDF off)")
    ap.add_argument("--df_dilate", type=nonneg_int, default=d.df_dilate,
                    help="UDF: dilation iterations of the occupancy before the distance transform")
    ap.add_argument("--no_udf", action="store_true",
                    help="skip the UDF grid (udf_grid/occ_grid become (1,1,1) zeros; "
                         "pt_dist_udf_pool copies pt_dist_pool)")
    ap.add_argument("--pt_surface_ratio", type=unit_float, default=d.pt_surface_ratio,
                    help="fraction of the query pool drawn near the surface (the rest uniform in "
                         "[-1, 1]^3)")
    ap.add_argument("--pt_surface_sigma", type=nonneg_float, default=d.pt_surface_sigma,
                    help="std of the Gaussian jitter of near-surface query points (world units)")
    ap.add_argument("--pt_query_chunk", type=positive_int, default=d.pt_query_chunk,
                    help="query points per distance call (memory/speed only)")
    ap.add_argument("--ray_query_chunk", type=positive_int, default=d.ray_query_chunk,
                    help="rays per intersection call (memory/speed only)")
    ap.add_argument("--pt_dist_mode", choices=PT_DIST_MODES, default="kdtree",
                    help="pt_dist_pool: kdtree = distance to --dist_ref_points surface samples; "
                         "mesh = exact closest-point distance")
    ap.add_argument("--dist_ref_points", type=positive_int, default=d.dist_ref_points,
                    help="kdtree mode: surface samples of the reference set")
    ap.add_argument("--mesh_cleanup", choices=MESH_CLEANUPS, default=d.mesh_cleanup,
                    help="clean: merge vertices, drop degenerate and duplicate faces; none: "
                         "load as the original code did with a current trimesh (what the "
                         "labs' caches were built from; README 'Reading caches made by the "
                         "original code')")
    ap.add_argument("--seed", type=int_at_least(-1), default=0,
                    help="task i uses seed + i; -1 = unseeded")
    ap.add_argument("--overwrite", action="store_true",
                    help="rewrite existing output files (default: skip them)")
    ap.add_argument("--max_failures", type=nonneg_int, default=0,
                    help="failed meshes accepted before the run exits 1")
    ap.add_argument("--workers", type=nonneg_int, default=4, help="0 or 1 = run in-process")
    ap.add_argument("--chunk_size", type=positive_int, default=1,
                    help="meshes handed to a worker at a time")
    ap.add_argument("--max_tasks_per_child", type=nonneg_int, default=2, help="0 = unlimited")
    return ap


def config_from_args(args: PreprocessShapenetConfig) -> MeshCacheConfig:
    return MeshCacheConfig(
        pc_points=args.pc_points, pt_pool=args.pt_pool, ray_pool=args.ray_pool,
        n_views=args.n_views, rays_per_view=args.rays_per_view, pc_grid=args.pc_grid,
        pc_dilate=args.pc_dilate, pc_max_steps=args.pc_max_steps, df_grid=args.df_grid,
        df_dilate=args.df_dilate, pt_surface_ratio=args.pt_surface_ratio,
        pt_surface_sigma=args.pt_surface_sigma, pt_dist_mode=args.pt_dist_mode,
        dist_ref_points=args.dist_ref_points, compute_udf=not args.no_udf,
        compute_pc_rays=not args.no_pc_rays, pt_query_chunk=args.pt_query_chunk,
        ray_query_chunk=args.ray_query_chunk, mesh_cleanup=args.mesh_cleanup,
    ).validate()


def _blocked_output(out_root: str) -> str | None:
    """One line when a folder the run writes into is a file, else None."""
    for sub in ("", "_meta", "_splits", *SPLITS):
        blocker = file_in_the_way(os.path.join(out_root, sub))
        if blocker is not None:
            return f"--out_root {out_root}: {blocker} is a file, not a folder"
    return None


def _run_tasks(tasks: list[tuple], args: PreprocessShapenetConfig, on_result) -> None:
    """Run ``tasks`` (in a pool for ``--workers > 1``); ``on_result(mesh, status, reason)``."""
    from tqdm import tqdm

    tqdm.monitor_interval = 0  # no monitor thread: pool workers may be forked mid-run
    pool = None
    if args.workers > 1 and tasks:
        pool = mp.get_context().Pool(processes=args.workers,
                                     maxtasksperchild=args.max_tasks_per_child or None)
    try:
        results = (pool.imap_unordered(_run_task, tasks, chunksize=args.chunk_size)
                   if pool is not None else map(_run_task, tasks))
        with tqdm(total=len(tasks), desc=PROG, unit="mesh", dynamic_ncols=True,
                  file=sys.stderr) as bar:
            n_fail = 0
            for mesh, _out, status, reason, _secs in results:
                on_result(mesh, status, reason)
                n_fail += status != "ok"
                bar.update(1)
                bar.set_postfix(ok=bar.n - n_fail, fail=n_fail, refresh=False)
        if pool is not None:
            pool.close()
            pool.join()
    finally:
        if pool is not None:
            pool.terminate()


@dataclass(frozen=True, kw_only=True)
class PreprocessShapenetConfig(CliConfig):
    """Flags of ``python -m nepa3d.data.preprocess_shapenet`` (one field per flag)."""

    shapenet_root: str
    out_root: str
    split: str
    mesh_glob: str
    test_ratio: float
    split_seed: int
    pc_points: int
    pt_pool: int
    ray_pool: int
    n_views: int
    rays_per_view: int
    pc_grid: int
    pc_dilate: int
    pc_max_steps: int
    no_pc_rays: bool
    df_grid: int
    df_dilate: int
    no_udf: bool
    pt_surface_ratio: float
    pt_surface_sigma: float
    pt_query_chunk: int
    ray_query_chunk: int
    pt_dist_mode: str
    dist_ref_points: int
    mesh_cleanup: str
    seed: int
    overwrite: bool
    max_failures: int
    workers: int
    chunk_size: int
    max_tasks_per_child: int

    @classmethod
    def build_parser(cls) -> argparse.ArgumentParser:
        return build_parser()


def main(argv: list[str] | None = None) -> int:
    args = PreprocessShapenetConfig.parse(argv)
    try:
        cfg = config_from_args(args)
    except ValueError as e:
        return fail(PROG, e)
    blocked = _blocked_output(args.out_root)
    if blocked:
        return fail(PROG, blocked)
    try:  # fail fast, and import once in the parent so forked workers inherit it
        require_embree()
    except ImportError as e:
        return fail(PROG, e)
    if cfg.udf_enabled:
        try:
            from scipy.ndimage import distance_transform_edt  # noqa: F401
        except ImportError:
            return fail(PROG, "the UDF needs scipy.ndimage.distance_transform_edt "
                              "(install scipy or pass --no_udf)")

    pattern = os.path.join(args.shapenet_root, args.mesh_glob)
    meshes = sorted(set(glob.glob(pattern)))
    if not meshes:
        return fail(PROG, f"no mesh matches --mesh_glob {args.mesh_glob!r} under "
                          f"--shapenet_root {args.shapenet_root!r} (pattern {pattern!r})")
    try:
        assignment = assign_splits(meshes, args.test_ratio, args.split_seed)
    except ValueError as e:
        return fail(PROG, e)
    shared = shared_outputs(meshes)
    if shared:
        key, paths = next(iter(shared.items()))
        return fail(PROG, f"{len(shared)} cache file(s) would each be written from several "
                          f"meshes, e.g. {key}: {paths[0]} and {paths[1]} (narrow --mesh_glob)")
    lists = split_lists(assignment)
    targets = meshes if args.split == "all" else lists[args.split]
    seeds = task_seeds(targets, args.seed)
    relpath = {m: cache_relpath(assignment[m], m) for m in meshes}
    wanted = {relpath[m]: (str(seeds[m]) if m in seeds else None) for m in meshes}
    profile = profile_digest(profile_settings(cfg))
    try:
        records = read_records(args.out_root)
    except CacheError as e:
        return fail(PROG, e)
    plan = plan_cache(wanted, list_cache_files(args.out_root, SPLITS), records, profile,
                      args.overwrite)

    # nothing was written before this line
    print(f"[{PROG}] meshes={len(meshes)} train={len(lists['train'])} test={len(lists['test'])} "
          f"root={args.shapenet_root} profile={profile}", flush=True)
    stale = remove_stale_temp_files(args.out_root, list(SPLITS))
    if stale:
        print(f"[{PROG}] removed {stale} stale temp file(s) of an interrupted run", flush=True)
    meta_dir = os.path.join(args.out_root, "_meta")
    atomic_write_json(os.path.join(meta_dir, "preprocess_shapenet_args.json"),
                      {"argv": list(sys.argv[1:] if argv is None else argv), "args": args.record(),
                       "config": cfg.as_dict(), "profile": profile,
                       "profile_settings": profile_settings(cfg)},
                      sort_keys=False, default=None, allow_nan=False)
    write_split_manifest(args.out_root, lists)
    if plan.remove:
        remove_cache_files(args.out_root, plan.remove)
        print(f"[{PROG}] removed {len(plan.remove)} existing file(s): "
              f"{describe_removals(plan.remove)}", flush=True)
    kept = [records[r] for r in plan.keep]
    write_records(args.out_root, kept)

    build = set(plan.build)
    tasks = [(m, output_path(args.out_root, assignment[m], m), cfg, seeds[m])
             for m in targets if relpath[m] in build]
    made, failures = [], []

    def on_result(mesh: str, status: str, reason: str) -> None:
        if status == "ok":
            rec = record_for(args.out_root, relpath[mesh], assignment[mesh], profile, seeds[mesh])
            append_record(args.out_root, rec)
            made.append(rec)
        else:
            failures.append((mesh, one_line(reason)))

    t0 = time.time()
    _run_tasks(tasks, args, on_result)
    seconds = time.time() - t0
    write_records(args.out_root, kept + made)

    failures.sort()
    atomic_write_text(os.path.join(meta_dir, "preprocess_failures.txt"),
                      "".join(f"{m}\t{r}\n" for m, r in failures))
    for m, r in failures:
        print(f"[{PROG}] FAIL {m}: {r}", file=sys.stderr)
    skip = sum(wanted[r] is not None for r in plan.keep)
    print(f"[{PROG}] ok={len(made)} skip={skip} fail={len(failures)} total={len(targets)} "
          f"seconds={seconds:.1f}", flush=True)
    verdict = run_verdict(len(failures), args.max_failures, len(made) + skip)
    rc = 0 if verdict is None else 1
    if verdict:
        print(f"[{PROG}] error: {verdict}", file=sys.stderr)
    write_run_record(args.out_root, PROG, profile=profile, max_failures=args.max_failures,
                     failures=failures, exit_code=rc,
                     counts={"ok": len(made), "skip": skip, "fail": len(failures),
                             "total": len(targets), "removed": len(plan.remove)})
    if rc == 0:  # record which corpus this cache came from (read back into result provenance)
        write_cache_corpus(args.out_root, describe_source(args.shapenet_root))
    return rc


if __name__ == "__main__":
    sys.exit(main())
