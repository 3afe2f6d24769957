"""CPAC-UDF: completion probe of a frozen NEPA-3D backbone on unsigned distances.

A shape's context points (with the distances a *context backend* observes) are followed by
query points whose answers are zero; the hidden state at each query token feeds a ridge
head that predicts the query's UDF (from the cache's UDF grid / pool). Metrics are
micro-averaged over all test query points.

    python -m nepa3d.analysis.completion_cpac_udf --cache_root data/shapenet_unpaired_cache_v1 \
        --split eval --ckpt runs/x/ckpt_ep049.pt --context_backend pointcloud_noray \
        --head_train_split train_udf --head_train_backend udfgrid --head_train_max_shapes 4000 \
        --max_shapes 800 --ridge_lambda 1e-3 --tau 0.03 --out_json results/cpac_x.json

Protocols: non-transductive (default; the head is fit on ``--head_train_split`` with context
from ``--head_train_backend``) or legacy transductive (``--head_train_split ""|none``: a random
part of the evaluation shapes fits the head; flagged ``transductive_probe``).
Per-shape sampling: RandomState((md5(path) + seed) & 0xFFFFFFFF) with seed = eval_seed for
head-train shapes and eval_seed + 999 for test shapes (and the nn_copy baseline, which
therefore sees exactly the probe's test contexts and queries).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np
from tqdm import tqdm

from nepa3d.analysis import metrics as M
from nepa3d.analysis.features import (EvalError, default_workers, forward_batched,
                                      gather_positions, load_eval_model, prefetch_map,
                                      resolve_precision)
from nepa3d.analysis.grid_sampling import GRID_MODES, sample_grid_queries
from nepa3d import backends
from nepa3d.backends import BACKENDS, VoxelConfig, get_pools
from nepa3d.data.cache import CacheError, load_cache
from nepa3d.data.dataset import cache_files
from nepa3d.token.ordering import DEFAULT_ORDER_DTYPE, morton_order
from nepa3d.token.tokenizer import point_only_sequence
from nepa3d.token.types import required_len
from nepa3d.utils.ckpt import CheckpointError
from nepa3d.cli.args import (make_parser, SWITCH, TRI_STATE, fail, int_at_least,
                                   nonneg_float, nonneg_int, positive_float, positive_int,
                                   positive_or_auto, unit_float, usage_error)
from nepa3d.cli.edge import check_voxel, emit_or_fail, interruptible, out_file_problem
from nepa3d.cli.config import CliConfig
from nepa3d.cli.groups import (DeviceArgs, DeviceUnavailable, EvalSamplingArgs,
                                        PrecisionArgs, VoxelArgs, add_device_arg,
                                        add_eval_sampling_args, add_precision_arg,
                                        add_voxel_args, resolve_device)
from nepa3d.utils.results import ResultTimer, build_result
from nepa3d.utils.seeding import path_rng

PROTOCOL_VERSION = 1  # bump when this module's numbers change: its jobs get new ids and re-run
PROG = "completion_cpac_udf"
TARGET_NAME = "udfgrid_distance_probe"
CONTEXT_MODES = ("normal", "none", "mismatch")
TEST_SEED_OFFSET = 999
#: one coarse-to-fine stage resolution (grid_sampling clamps it to [2, G])
_STAGE_RES = int_at_least(2)


def res_schedule(text: str) -> str:
    """argparse type: comma-separated integers >= 2 (kept as text for
    :func:`~nepa3d.analysis.grid_sampling.parse_res_schedule`, which would skip a bad item)."""
    try:
        for item in text.split(","):
            _STAGE_RES(item.strip())
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated integers >= 2 (got {text!r})") from None
    return text


def stage_weights(text: str) -> str:
    """argparse type: empty (1..K) or comma-separated numbers >= 0 with a positive sum (kept as
    text for :func:`~nepa3d.analysis.grid_sampling.parse_stage_weights`, which would fall back
    to 1..K)."""
    if not text.strip():
        return text
    try:
        weights = [nonneg_float(item.strip()) for item in text.split(",")]
    except argparse.ArgumentTypeError:
        weights = []
    if not weights or sum(weights) <= 0:
        raise argparse.ArgumentTypeError("must be empty or comma-separated numbers >= 0 with a "
                                         f"positive sum (got {text!r})")
    return text


def build_parser() -> argparse.ArgumentParser:
    ap = make_parser("nepa3d.analysis.completion_cpac_udf", __doc__.split("\n\n")[0])
    g = ap.add_argument_group("general")
    g.add_argument("--cache_root", required=True,
                   help="cache folder with the evaluation split and the head-training split")
    g.add_argument("--split", default="eval",
                   help="cache split whose shapes are evaluated (<cache_root>/<split>/*/*.npz)")
    g.add_argument("--ckpt", required=True,
                   help="pretrained checkpoint whose features the ridge head reads")
    g.add_argument("--max_len", type=positive_or_auto, default=-1,
                   help="positional-embedding length (resized); -1: checkpoint's, grown if needed")
    g.add_argument("--context_backend", default="pointcloud_noray", choices=BACKENDS,
                   help="backend of the test context tokens (pointcloud_noray: distances to the "
                        "observed points)")
    g.add_argument("--n_context", type=positive_int, default=256,
                   help="context (observed point, distance) tokens per shape")
    g.add_argument("--n_query", type=positive_int, default=256,
                   help="query points per shape whose UDF is predicted")
    g.add_argument("--add_eos", type=int, choices=TRI_STATE, default=-1,
                   help="-1: infer from the checkpoint")
    g.add_argument("--qa_tokens", type=int, choices=TRI_STATE, default=-1,
                   help="-1: infer from the checkpoint")
    add_eval_sampling_args(g)
    g.add_argument("--seed", type=int, default=None, help="alias that overrides --eval_seed")
    add_device_arg(g)
    g.add_argument("--batch", type=positive_int, default=16, help="sequences per forward")
    add_precision_arg(g)
    g.add_argument("--workers", type=nonneg_int, default=0,
                   help="threads loading and sampling cache files; 0: none on CPU, "
                        "min(4, cpus) beside a GPU (results do not depend on it)")
    h = ap.add_argument_group("head training")
    h.add_argument("--head_train_ratio", type=unit_float, default=0.2,
                   help="legacy transductive only (at least 1 and at most N-1 shapes)")
    h.add_argument("--head_train_n", type=nonneg_int, default=0,
                   help="cap on head-train rows (and shapes, in legacy transductive mode); 0: none")
    h.add_argument("--head_train_split", default="train_udf",
                   help='split that fits the head; "" or none: legacy transductive')
    h.add_argument("--head_train_backend", default="udfgrid", choices=BACKENDS,
                   help="backend of the context when collecting the head's training data")
    h.add_argument("--head_train_max_shapes", type=nonneg_int, default=0, help="0: all")
    h.add_argument("--ridge_lambda", type=nonneg_float, default=1e-3,
                   help="L2 penalty of the closed-form ridge head (also on the bias)")
    lp = ap.add_argument_group("Lipschitz refinement")
    lp.add_argument("--ridge_lipschitz_lambda", type=nonneg_float, default=0.0, help="0: off")
    lp.add_argument("--ridge_lipschitz_pairs", type=positive_int, default=2048,
                    help="Lipschitz refinement: same-shape point pairs per step")
    lp.add_argument("--ridge_lipschitz_steps", type=positive_int, default=200,
                    help="Lipschitz refinement: Adam steps")
    lp.add_argument("--ridge_lipschitz_lr", type=positive_float, default=1e-2,
                    help="Lipschitz refinement: Adam learning rate")
    lp.add_argument("--ridge_lipschitz_batch", type=positive_int, default=8192,
                    help="recorded only")
    lp.add_argument("--ridge_lipschitz_max_points", type=positive_int, default=200000,
                    help="Lipschitz refinement: cap on training points (random subset)")
    lp.add_argument("--ridge_lipschitz_seed", type=int, default=0,
                    help="Lipschitz refinement: seed (xor --eval_seed)")
    e = ap.add_argument_group("evaluation and sampling")
    e.add_argument("--tau", type=positive_float, default=0.03,
                   help="UDF threshold (world units) of the near-surface set in iou@tau")
    e.add_argument("--max_shapes", type=nonneg_int, default=0, help="0: all evaluation shapes")
    add_voxel_args(e)
    e.add_argument("--disjoint_context_query", type=int, choices=SWITCH, default=1,
                   help="1: pool queries and context points are drawn without overlap")
    e.add_argument("--context_mode_train", default="normal", choices=CONTEXT_MODES,
                   help="head training context: normal; none (no context tokens); mismatch "
                        "(another shape's context)")
    e.add_argument("--context_mode_test", default="normal", choices=CONTEXT_MODES,
                   help="test context: normal; none (no context tokens); mismatch (another "
                        "shape's context)")
    e.add_argument("--mismatch_shift", type=int, default=1, help="context donor i + shift (mod N)")
    e.add_argument("--rep_source", default="h", choices=("h", "zhat"),
                   help="features read at the query tokens: h = backbone hidden state, zhat = "
                        "predicted embedding")
    e.add_argument("--query_source", default="pool", choices=("pool", "grid", "hybrid"),
                   help="where query points come from: pool = pt_xyz_pool, grid = udf_grid cells, "
                        "hybrid = both (--query_pool_frac)")
    e.add_argument("--query_pool_frac", type=unit_float, default=0.5,
                   help="hybrid: fraction of queries from the pool, the rest from the grid")
    e.add_argument("--grid_sample_mode", default="uniform", choices=GRID_MODES,
                   help="how grid queries are picked: uniform, near_surface (--grid_near_frac of "
                        "cells with UDF <= --grid_near_tau), stratified (UDF quintiles), "
                        "coarse_to_fine")
    e.add_argument("--grid_near_tau", type=positive_float, default=0.05,
                   help="near_surface/coarse_to_fine: a cell is near when its UDF <= this (world "
                        "units)")
    e.add_argument("--grid_near_frac", type=unit_float, default=0.7,
                   help="near_surface: fraction of grid queries taken from near cells")
    e.add_argument("--grid_res_schedule", type=res_schedule, default="16,32,64",
                   help="coarse_to_fine stages")
    e.add_argument("--grid_c2f_expand", type=nonneg_int, default=1,
                   help="coarse_to_fine: jitter of parent cells, in cells")
    e.add_argument("--grid_c2f_stage_weights", type=stage_weights, default="",
                   help="one weight per --grid_res_schedule stage; default: 1..K")
    t = ap.add_argument_group("targets, reporting, baseline")
    t.add_argument("--target_transform", default="none", choices=M.TARGET_TRANSFORMS,
                   help="transform of the head's training targets: none, trunc (min(y, "
                        "--target_trunc_max)), log1p (log1p(y / --target_log_scale))")
    t.add_argument("--target_trunc_max", type=positive_float, default=0.1,
                   help="trunc: cap of the training targets (world units)")
    t.add_argument("--target_log_scale", type=positive_float, default=0.03,
                   help="log1p: scale s of log1p(y / s) (world units)")
    t.add_argument("--report_near_tau", type=positive_float, default=0.05,
                   help="near@tau_report: metrics restricted to points whose true UDF <= this")
    t.add_argument("--baseline", default="none", choices=("none", "nn_copy"),
                   help="also report a baseline: nn_copy = the distance of the nearest context "
                        "point")
    t.add_argument("--baseline_only", type=int, choices=SWITCH, default=0,
                   help="1: report the --baseline only (no checkpoint forward, no head)")
    t.add_argument("--out_json", default="",
                   help="also write the result envelope (metrics, settings, timings) to this "
                        "file; empty = no")
    return ap


@dataclass(frozen=True, kw_only=True)
class CompletionCpacConfig(EvalSamplingArgs, VoxelArgs, DeviceArgs, PrecisionArgs, CliConfig):
    """Flags of ``python -m nepa3d.analysis.completion_cpac_udf`` (one field per flag)."""

    cache_root: str
    split: str
    ckpt: str
    max_len: int
    context_backend: str
    n_context: int
    n_query: int
    add_eos: int
    qa_tokens: int
    seed: int | None
    batch: int
    workers: int
    head_train_ratio: float
    head_train_n: int
    head_train_split: str
    head_train_backend: str
    head_train_max_shapes: int
    ridge_lambda: float
    ridge_lipschitz_lambda: float
    ridge_lipschitz_pairs: int
    ridge_lipschitz_steps: int
    ridge_lipschitz_lr: float
    ridge_lipschitz_batch: int
    ridge_lipschitz_max_points: int
    ridge_lipschitz_seed: int
    tau: float
    max_shapes: int
    disjoint_context_query: bool
    context_mode_train: str
    context_mode_test: str
    mismatch_shift: int
    rep_source: str
    query_source: str
    query_pool_frac: float
    grid_sample_mode: str
    grid_near_tau: float
    grid_near_frac: float
    grid_res_schedule: str  # comma-separated stage resolutions
    grid_c2f_expand: int
    grid_c2f_stage_weights: str  # comma-separated weights or empty
    target_transform: str
    target_trunc_max: float
    target_log_scale: float
    report_near_tau: float
    baseline: str
    baseline_only: bool
    out_json: str

    @classmethod
    def build_parser(cls) -> argparse.ArgumentParser:
        return build_parser()


def check_args(args: CompletionCpacConfig) -> None:
    """Checks across flags (usage error, exit 2): stage weights need one weight per stage,
    --baseline_only needs the baseline."""
    weights = [w for w in args.grid_c2f_stage_weights.split(",") if w.strip()]
    stages = args.grid_res_schedule.split(",")
    if weights and len(weights) != len(stages):
        usage_error(f"--grid_c2f_stage_weights has {len(weights)} weights for the "
                    f"{len(stages)} stages of --grid_res_schedule {args.grid_res_schedule}")
    if args.baseline_only and args.baseline == "none":
        usage_error("--baseline_only 1 requires --baseline nn_copy")


# --------------------------------------------------------------------------------------------
# Per-shape context / query sampling
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SampleConfig:
    backend: str
    context_mode: str
    n_context: int
    n_query: int
    disjoint: bool
    query_source: str
    query_pool_frac: float
    grid_mode: str
    grid_near_tau: float
    grid_near_frac: float
    grid_res_schedule: str
    grid_c2f_expand: int
    grid_c2f_stage_weights: str
    voxel: VoxelConfig = VoxelConfig()
    #: Morton order arithmetic of contexts and queries (``--order_dtype``)
    order_dtype: str = DEFAULT_ORDER_DTYPE


@dataclass
class ShapeSample:
    """ctx_xyz (c, 3), ctx_dist (c,), q_xyz (q, 3), q_dist (q,) — both Morton-ordered."""
    ctx_xyz: np.ndarray
    ctx_dist: np.ndarray
    q_xyz: np.ndarray
    q_dist: np.ndarray


class ArrayLoader:
    """Validated cache arrays by path, with a small thread-safe LRU (mismatch contexts reuse
    neighbours)."""

    def __init__(self, max_items: int = 16):
        self.max_items = max_items
        self._d: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, path: str) -> dict:
        with self._lock:
            if path in self._d:
                self._d.move_to_end(path)
                return self._d[path]
        a = load_cache(path)
        with self._lock:
            self._d[path] = a
            if len(self._d) > self.max_items:
                self._d.popitem(last=False)
        return a


def query_counts(n_query: int, source: str, pool_frac: float) -> tuple[int, int]:
    """(n from the pool, n from the grid): pool | grid | hybrid = round(n·clip(frac)) pool."""
    if source == "pool":
        return n_query, 0
    if source == "grid":
        return 0, n_query
    n_pool = max(0, min(int(round(n_query * min(max(pool_frac, 0.0), 1.0))), n_query))
    return n_pool, n_query - n_pool


def _choose(n: int, k: int, rng: np.random.RandomState) -> np.ndarray:
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    return rng.choice(n, size=k, replace=n < k).astype(np.int64)


def udf_grid_of(arrays: dict, path: str) -> np.ndarray:
    u = arrays.get("udf_grid")
    if u is None or u.ndim != 3 or u.shape[0] < 2:
        shape = None if u is None else tuple(u.shape)
        raise CacheError(path, f"no usable UDF grid (shape {shape}); --query_source grid/hybrid "
                               "needs a cache built with the UDF enabled", "udf_grid")
    return u


def sample_ctx_query(path: str, cfg: SampleConfig, seed: int, load: ArrayLoader,
                     mismatch_path: str | None = None) -> ShapeSample:
    """One shape's context and queries (the original's ``_sample_ctx_query``,
    KohsukeIde/3D-NEPA @ 737d98f).

    RNG: RandomState((md5(path) + seed) & 0xFFFFFFFF): context + pool-query indices (one
    disjoint draw in normal mode, else two independent draws), a context redraw when the
    context comes from another shape, then the grid sampler. Context distances come from
    ``cfg.backend`` on the context shape; query targets are the shape's own
    ``pt_dist_udf_pool`` (pool) or UDF grid cells (grid), whatever the backend.
    """
    rng = path_rng(path, seed)
    d = load(path)
    xyz_pool = d["pt_xyz_pool"]
    n_pool = len(xyz_pool)
    n_qp, n_qg = query_counts(cfg.n_query, cfg.query_source, cfg.query_pool_frac)
    if cfg.context_mode == "normal" and cfg.disjoint:
        idx = _choose(n_pool, cfg.n_context + n_qp, rng)
        cidx, qidx = idx[:cfg.n_context], idx[cfg.n_context:]
    else:
        cidx = _choose(n_pool, cfg.n_context, rng)
        qidx = _choose(n_pool, n_qp, rng)

    if cfg.context_mode == "none":
        ctx_xyz, ctx_dist = np.zeros((0, 3), np.float32), np.zeros(0, np.float32)
    else:
        ctx_path = mismatch_path if (cfg.context_mode == "mismatch" and mismatch_path) else path
        pools = get_pools(cfg.backend, ctx_path, load(ctx_path), cfg.voxel)
        n_ctx_pool = len(pools["pt_xyz_pool"])
        if ctx_path != path or (len(cidx) and int(cidx.max()) >= n_ctx_pool):
            cidx = _choose(n_ctx_pool, cfg.n_context, rng)
        ctx_xyz = pools["pt_xyz_pool"][cidx].astype(np.float32)
        ctx_dist = pools["pt_dist_pool"][cidx].astype(np.float32)
        order = morton_order(ctx_xyz, cfg.order_dtype)
        ctx_xyz, ctx_dist = ctx_xyz[order], ctx_dist[order]

    target_pool = d.get("pt_dist_udf_pool", d["pt_dist_pool"])
    parts_xyz = [xyz_pool[qidx].astype(np.float32)] if n_qp else []
    parts_y = [target_pool[qidx].astype(np.float32)] if n_qp else []
    if n_qg > 0:
        gx, gy = sample_grid_queries(
            udf_grid_of(d, path), n_qg, rng, mode=cfg.grid_mode, near_tau=cfg.grid_near_tau,
            near_frac=cfg.grid_near_frac, res_schedule=cfg.grid_res_schedule,
            c2f_expand=cfg.grid_c2f_expand, c2f_stage_weights=cfg.grid_c2f_stage_weights)
        parts_xyz.append(gx)
        parts_y.append(gy)
    q_xyz = np.concatenate(parts_xyz) if parts_xyz else np.zeros((0, 3), np.float32)
    q_dist = np.concatenate(parts_y) if parts_y else np.zeros(0, np.float32)
    order = morton_order(q_xyz, cfg.order_dtype)
    return ShapeSample(ctx_xyz, ctx_dist, q_xyz[order], q_dist[order])


def mismatch_paths(paths: list[str], context_mode: str, shift: int) -> list[str | None]:
    """Context donor of each shape in mismatch mode: paths[(i + shift) mod N] (shift 0 -> 1)."""
    n = len(paths)
    if context_mode != "mismatch" or n <= 1:
        return [None] * n
    s = int(shift) % n or 1
    return [paths[(i + s) % n] for i in range(n)]


def iter_samples(paths: list[str], cfg: SampleConfig, seed: int, shift: int, load: ArrayLoader,
                 desc: str, workers: int = 1):
    """Yield (i, ShapeSample) for every path in order, with a progress bar."""
    donors = mismatch_paths(paths, cfg.context_mode, shift)
    fn = lambda i: (i, sample_ctx_query(paths[i], cfg, seed, load, donors[i]))  # noqa: E731
    yield from tqdm(prefetch_map(fn, range(len(paths)), workers=workers), total=len(paths),
                    desc=desc, file=sys.stderr)


def iter_features(lb, samples, *, rep_source: str, batch: int, device, precision: str = "fp32",
                  source: str = "the model"):
    """Yield (i, ShapeSample, X (q, C) float32): representations at the query tokens
    (:class:`~nepa3d.analysis.features.NonFiniteOutput` naming ``source`` if they hold NaN/inf)."""

    def seqs():
        for i, s in samples:
            feat, types, qpos = point_only_sequence(s.ctx_xyz, s.ctx_dist, s.q_xyz,
                                                    qa_tokens=lb.qa_tokens, add_eos=lb.add_eos)
            yield feat, types, (i, s, qpos)

    def reduce(h, z_hat, types, metas):
        rep = z_hat if rep_source == "zhat" else h
        return gather_positions(rep, [m[2] for m in metas])

    for (i, s, _), X in forward_batched(lb.model, seqs(), batch=batch, device=device, reduce=reduce,
                                        precision=precision, source=source):
        yield i, s, X


# --------------------------------------------------------------------------------------------
# Head fitting and evaluation
# --------------------------------------------------------------------------------------------

def _transform(args: CompletionCpacConfig, y):
    return M.transform_target(y, args.target_transform, args.target_trunc_max,
                              args.target_log_scale)


def fit_head(lb, tr_paths, cfg: SampleConfig, args: CompletionCpacConfig, device, load) -> tuple[np.ndarray, dict, int]:
    """Fit the ridge head on the head-train shapes. -> w (d+1, 1) float64, lipschitz info,
    number of training rows. Rows are streamed into the normal equations unless they are
    needed in memory (row cap, Lipschitz refinement). A system without a unique solution
    (``--ridge_lambda 0`` with fewer rows than unknowns) raises EvalError naming the flag."""
    try:
        return _fit_head(lb, tr_paths, cfg, args, device, load)
    except M.SingularHead as e:
        raise EvalError(f"--ridge_lambda {args.ridge_lambda:g}: {e}") from None


def _fit_head(lb, tr_paths, cfg: SampleConfig, args: CompletionCpacConfig, device, load) -> tuple[np.ndarray, dict, int]:
    lip_lambda = float(args.ridge_lipschitz_lambda)
    if lip_lambda > 0 and args.target_transform != "none":
        print("[warn] ridge_lipschitz_lambda > 0 with target_transform != none; "
              "Lipschitz refinement disabled for this run", file=sys.stderr)
        lip_lambda = 0.0
    keep_rows = args.head_train_n > 0 or lip_lambda > 0
    samples = iter_samples(tr_paths, cfg, args.eval_seed, args.mismatch_shift, load,
                           "collect train", args.workers or default_workers(device))
    acc = M.RidgeAccumulator(lb.model.cfg.d_model)
    rows = []
    precision = resolve_precision(args.precision, device)
    for i, s, X in iter_features(lb, samples, rep_source=args.rep_source, batch=args.batch,
                                 device=device, precision=precision, source=args.ckpt):
        if keep_rows:
            rows.append((i, X, s.q_dist, s.q_xyz))
        else:
            acc.add(X, _transform(args, s.q_dist))
    if not keep_rows:
        return acc.solve(args.ridge_lambda), {"enabled": False}, acc.n
    rows.sort(key=lambda r: r[0])
    X = np.concatenate([r[1] for r in rows])
    y = np.concatenate([r[2] for r in rows])
    q = np.concatenate([r[3] for r in rows])
    gid = np.concatenate([np.full(len(r[2]), r[0], dtype=np.int64) for r in rows])
    if args.head_train_n > 0 and len(X) > args.head_train_n:
        perm = np.random.RandomState(args.eval_seed & 0xFFFFFFFF).permutation(len(X))
        sel = perm[:args.head_train_n]
        X, y, q, gid = X[sel], y[sel], q[sel], gid[sel]
    y_t = _transform(args, y)
    if lip_lambda > 0:
        w, info = M.ridge_fit_lipschitz(
            X, y_t, q, gid, lam=args.ridge_lambda, lip_lambda=lip_lambda,
            pairs=args.ridge_lipschitz_pairs, steps=args.ridge_lipschitz_steps,
            lr=args.ridge_lipschitz_lr, batch=args.ridge_lipschitz_batch,
            max_points=args.ridge_lipschitz_max_points,
            seed=int(args.ridge_lipschitz_seed) ^ int(args.eval_seed))
        return w, info, len(X)
    return M.ridge_fit(X, y_t, args.ridge_lambda), {"enabled": False}, len(X)


def evaluate(lb, te_paths, cfg: SampleConfig, args: CompletionCpacConfig, device, load, w, *, with_probe: bool,
             with_nn_copy: bool) -> dict:
    """Test pass: probe predictions (transformed and original space) and/or nn_copy.
    -> {"y": (n,), "yhat_t": (n,), "yhat": (n,), "nn": (n,)} float arrays (absent when off)."""
    samples = iter_samples(te_paths, cfg, args.eval_seed + TEST_SEED_OFFSET, args.mismatch_shift,
                           load, "collect test", args.workers or default_workers(device))
    ys, yts, nns = [], [], []
    if with_probe:
        it = ((s, X) for _, s, X in iter_features(
            lb, samples, rep_source=args.rep_source, batch=args.batch, device=device,
            precision=resolve_precision(args.precision, device), source=args.ckpt))
    else:
        it = ((s, None) for _, s in samples)
    for s, X in it:
        ys.append(s.q_dist)
        if X is not None:
            yts.append(M.ridge_predict(X, w))
        if with_nn_copy:
            nns.append(M.nn_copy_predict(s.ctx_xyz, s.ctx_dist, s.q_xyz))
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.float32)  # noqa: E731
    out = {"y": cat(ys)}
    if with_probe:
        out["yhat_t"] = cat(yts)
        out["yhat"] = M.inverse_transform_target(out["yhat_t"], args.target_transform,
                                                 args.target_trunc_max,
                                                 args.target_log_scale).astype(np.float32)
    if with_nn_copy:
        out["nn"] = cat(nns)
    return out


def split_protocol(args: CompletionCpacConfig, eval_paths: list[str]) -> tuple[list[str], list[str], str, bool, str]:
    """-> head-train paths, test paths, head backend, legacy_transductive, and the
    head_train_split label."""
    head_split = (args.head_train_split or "").strip()
    legacy = head_split == "" or head_split.lower() == "none"
    if not legacy:
        tr = cache_files(args.cache_root, head_split)
        if args.head_train_max_shapes > 0:
            tr = tr[:args.head_train_max_shapes]
        if not tr:
            raise EvalError(f"no head-train cache files under "
                            f"{os.path.join(args.cache_root, head_split, '*', '*.npz')}")
        return tr, eval_paths, args.head_train_backend, False, head_split
    n = len(eval_paths)
    if n < 2:
        raise EvalError("the legacy transductive head split needs at least 2 evaluation shapes")
    perm = np.random.RandomState(args.eval_seed & 0xFFFFFFFF).permutation(n)
    if args.head_train_n > 0:
        n_train = min(args.head_train_n, n - 1)
    else:
        n_train = max(1, min(int(round(args.head_train_ratio * n)), n - 1))
    return ([eval_paths[i] for i in perm[:n_train]], [eval_paths[i] for i in perm[n_train:]],
            args.context_backend, True, "legacy_transductive")


def sample_config(args: CompletionCpacConfig, backend: str, context_mode: str) -> SampleConfig:
    return SampleConfig(backend=backend, context_mode=context_mode, n_context=args.n_context,
                        n_query=args.n_query, disjoint=args.disjoint_context_query,
                        query_source=args.query_source, query_pool_frac=args.query_pool_frac,
                        grid_mode=args.grid_sample_mode, grid_near_tau=args.grid_near_tau,
                        grid_near_frac=args.grid_near_frac,
                        grid_res_schedule=args.grid_res_schedule,
                        grid_c2f_expand=args.grid_c2f_expand,
                        grid_c2f_stage_weights=args.grid_c2f_stage_weights,
                        voxel=args.voxel_config(), order_dtype=args.order_dtype)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def with_seed_alias(args: CompletionCpacConfig) -> CompletionCpacConfig:
    """``--seed`` given: a copy whose ``eval_seed`` is it (the alias overrides --eval_seed)."""
    return args if args.seed is None else replace(args, eval_seed=int(args.seed))


def run(args: CompletionCpacConfig) -> dict:
    timer = ResultTimer()
    args = with_seed_alias(args)
    device = resolve_device(args.device)
    eval_paths = cache_files(args.cache_root, args.split)
    if args.max_shapes > 0:
        eval_paths = eval_paths[:args.max_shapes]
    if not eval_paths:
        raise EvalError("no cache files under "
                        f"{os.path.join(args.cache_root, args.split, '*', '*.npz')}")
    tr_paths, te_paths, head_backend, legacy, head_label = split_protocol(args, eval_paths)

    probe = not args.baseline_only
    lb = load_eval_model(args.ckpt, max_len=args.max_len, qa_tokens=args.qa_tokens,
                         add_eos=args.add_eos, device=device,
                         seq_len=lambda lb: required_len(args.n_context, args.n_query, lb.qa_tokens,
                                                         lb.add_eos) if probe else 0)
    load = ArrayLoader()
    test_cfg = sample_config(args, args.context_backend, args.context_mode_test)
    w, lip_info, n_rows = None, {"enabled": False}, 0
    if probe:
        train_cfg = sample_config(args, head_backend, args.context_mode_train)
        w, lip_info, n_rows = fit_head(lb, tr_paths, train_cfg, args, device, load)
    res = evaluate(lb, te_paths, test_cfg, args, device, load, w, with_probe=probe,
                   with_nn_copy=args.baseline == "nn_copy")

    baselines = {}
    if "nn" in res:
        # the envelope's baselines hold numbers only: the key names the baseline
        baselines["nn_copy"] = M.udf_metrics(res["nn"], res["y"], args.tau)
    tau_t = M.transform_tau(args.tau, args.target_transform, args.target_trunc_max,
                            args.target_log_scale)
    if probe:
        metrics = M.udf_metrics(res["yhat"], res["y"], args.tau)
        metrics[M.near_key(args.report_near_tau)] = M.near_block(res["yhat"], res["y"], args.tau,
                                                                 args.report_near_tau)
        metrics["metrics_transformed"] = M.udf_metrics(res["yhat_t"], _transform(args, res["y"]),
                                                       tau_t, key_tau=args.tau)
    else:
        metrics = dict(baselines["nn_copy"])

    ckpt_abs = os.path.abspath(args.ckpt)
    extra = {
        # setup
        "context_backend": args.context_backend, "target": TARGET_NAME,
        "n_context": args.n_context, "n_query": args.n_query, "query_source": args.query_source,
        "query_pool_frac": args.query_pool_frac, "grid_sample_mode": args.grid_sample_mode,
        "grid_near_tau": args.grid_near_tau, "grid_near_frac": args.grid_near_frac,
        "grid_res_schedule": args.grid_res_schedule, "grid_c2f_expand": args.grid_c2f_expand,
        "grid_c2f_stage_weights": args.grid_c2f_stage_weights,
        # protocol
        "eval_split": args.split, "head_train_split": head_label,
        "head_train_backend": head_backend, "legacy_transductive": legacy,
        # the cache key each backend's context distances came from (mesh_distance_leak guard)
        "context_dist_source": backends.distance_source(args.context_backend, load(te_paths[0]).keys()),
        "head_train_dist_source": (backends.distance_source(head_backend, load(tr_paths[0]).keys())
                                   if probe and tr_paths else None),
        "eval_seed": args.eval_seed, "n_shapes_total": len(eval_paths),
        "n_shapes_head_train": len(tr_paths), "n_shapes_head_test": len(te_paths),
        "n_rows_head_train": n_rows, "n_points_test": int(len(res["y"])),
        # head
        "ridge_lambda": args.ridge_lambda,
        **{k: getattr(args, k) for k in ("ridge_lipschitz_lambda", "ridge_lipschitz_pairs",
                                         "ridge_lipschitz_steps", "ridge_lipschitz_lr",
                                         "ridge_lipschitz_batch", "ridge_lipschitz_max_points",
                                         "ridge_lipschitz_seed")},
        # remaining settings
        "tau": args.tau, "tau_transformed": tau_t,
        "disjoint_context_query": bool(args.disjoint_context_query),
        "context_mode_train": args.context_mode_train, "context_mode_test": args.context_mode_test,
        "mismatch_shift": args.mismatch_shift, "rep_source": args.rep_source,
        "target_transform": args.target_transform, "target_trunc_max": args.target_trunc_max,
        "target_log_scale": args.target_log_scale, "report_near_tau": args.report_near_tau,
        "add_eos": bool(lb.add_eos), "qa_tokens": bool(lb.qa_tokens),
        "order_dtype": args.order_dtype,
        "max_len": int(lb.model.pos_emb.shape[1]), "ckpt": ckpt_abs,
        "precision": resolve_precision(args.precision, device),
        "baseline": args.baseline if args.baseline != "none" else None,
        "baseline_only": bool(args.baseline_only),
    }
    if probe:
        extra["ridge_lipschitz_info"] = lip_info
    flags = []
    if legacy:
        flags.append("transductive_probe")
    if probe and args.target_transform != "none":
        flags.append(f"target_transform:{args.target_transform}")
    if args.baseline_only:
        flags.append("baseline_only")
    resolved = {**args.record(), "ckpt": ckpt_abs, "add_eos": int(lb.add_eos),
                "qa_tokens": int(lb.qa_tokens)}
    prov = timer.provenance(seed=args.eval_seed, ckpt=args.ckpt, cache_root=args.cache_root,
                            device=device)
    return build_result("cpac", resolved, metrics, prov, baselines=baselines, flags=flags,
                        extra=extra)


@interruptible(PROG, "no result written (--out_json untouched)")
def main(argv=None) -> dict:
    """The result dict; a flag or input file that cannot be used exits 2 with one line naming
    it (nothing written), a refused write of --out_json exits 1."""
    args = CompletionCpacConfig.parse(argv)
    check_voxel(args)
    check_args(args)
    blocked = out_file_problem("--out_json", args.out_json)
    if blocked:
        sys.exit(fail(PROG, blocked))
    try:
        result = run(args)
    except (CheckpointError, CacheError, EvalError, DeviceUnavailable) as e:
        sys.exit(fail(PROG, e))
    emit_or_fail(PROG, result, args.out_json)
    return result


if __name__ == "__main__":
    main()
