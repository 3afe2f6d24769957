"""UCPR: unpaired cross-primitive retrieval with a frozen NEPA-3D backbone.

Shape i seen through ``--query_backend`` must retrieve the same shape seen through
``--gallery_backend`` among all N gallery shapes (one relevant item per query).

    python -m nepa3d.analysis.retrieval_ucpr --cache_root data/shapenet_unpaired_cache_v1 \
        --split eval --ckpt runs/x/ckpt_ep049.pt --query_backend mesh --gallery_backend udfgrid \
        --eval_seed 0 --eval_seed_gallery 999 --max_files 1000 --out_json results/ucpr_x.json

Per shape, side and MC view k: RandomState((md5(path) + seed + 1000003·k) & 0xFFFFFFFF) samples
the tokens (seed = eval_seed for queries, eval_seed_gallery for the gallery), the model pools
one embedding (eos | mean_a | mean_zhat), views are averaged, everything is L2-normalised.
Ranks are tie-aware (see :func:`nepa3d.analysis.metrics.tie_aware_ranks`).
Collapse diagnostics: ``embed_spread_query`` / ``embed_spread_gallery`` = 1 - mean pairwise
cosine of the final query / gallery embeddings (0: every shape has the same embedding).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from nepa3d.analysis.features import (POOLINGS, EvalError, ablate_tokens, default_workers,
                                      forward_batched, load_eval_model, pool_embeddings,
                                      prefetch_map, resolve_precision)
from nepa3d.analysis.metrics import (l2_normalize, mean_pairwise_cosine, retrieval_metrics,
                                     tie_aware_ranks, tie_noise_seed)
from nepa3d import backends
from nepa3d.backends import BACKENDS, get_pools
from nepa3d.data.cache import CacheError, load_cache
from nepa3d.data.dataset import cache_files
from nepa3d.protocol_thresholds import EASY_PAIR_FLAG, easy_pair_saturated
from nepa3d.token.tokenizer import TokenizerConfig, build_sequence
from nepa3d.token.types import required_len
from nepa3d.utils.ckpt import CheckpointError
from nepa3d.cli.args import (make_parser, TRI_STATE, fail, nonneg_float, nonneg_int,
                                   positive_int, positive_or_auto)
from nepa3d.cli.edge import check_voxel, emit_or_fail, interruptible, out_file_problem
from nepa3d.cli.config import CliConfig
from nepa3d.cli.groups import (DeviceArgs, DeviceUnavailable, PrecisionArgs,
                                        UcprSamplingArgs, VoxelArgs, add_device_arg,
                                        add_precision_arg, add_ucpr_sampling_args,
                                        add_voxel_args, resolve_device)
from nepa3d.utils.results import ResultTimer, build_result
from nepa3d.utils.seeding import path_rng

PROTOCOL_VERSION = 1  # bump when this module's numbers change: its jobs get new ids and re-run
PROG = "retrieval_ucpr"


def build_parser() -> argparse.ArgumentParser:
    ap = make_parser("nepa3d.analysis.retrieval_ucpr", __doc__.split("\n\n")[0])
    ap.add_argument("--cache_root", required=True,
                    help="cache folder holding the --split of shapes to retrieve among")
    ap.add_argument("--split", default="eval",
                    help="cache split whose shapes are evaluated (<cache_root>/<split>/*/*.npz)")
    ap.add_argument("--ckpt", required=True,
                    help="pretrained checkpoint whose embeddings are compared")
    ap.add_argument("--max_len", type=positive_or_auto, default=-1,
                    help="positional-embedding length (resized); -1: checkpoint's, grown if needed")
    ap.add_argument("--query_backend", required=True, choices=BACKENDS,
                    help="backend of the query view of each shape")
    ap.add_argument("--gallery_backend", required=True, choices=BACKENDS,
                    help="backend of the gallery view of each shape (the match is the same shape)")
    ap.add_argument("--n_point", type=positive_int, default=None,
                    help="default: checkpoint args (256)")
    ap.add_argument("--n_ray", type=nonneg_int, default=None, help="default: checkpoint args (256)")
    ap.add_argument("--add_eos", type=int, choices=TRI_STATE, default=-1,
                    help="-1: infer from the checkpoint")
    ap.add_argument("--qa_tokens", type=int, choices=TRI_STATE, default=-1,
                    help="-1: infer from the checkpoint")
    add_ucpr_sampling_args(ap)
    ap.add_argument("--pooling", default="eos", choices=POOLINGS,
                    help="shape embedding: eos = hidden state of the last token; mean_a = mean "
                         "hidden state over answer tokens; mean_zhat = mean prediction before "
                         "answer tokens")
    ap.add_argument("--max_files", type=nonneg_int, default=0, help="0: all files of the split")
    ap.add_argument("--chunk", type=positive_int, default=256, help="query rows per scoring chunk")
    add_voxel_args(ap)
    ap.add_argument("--tie_break_eps", type=nonneg_float, default=1e-6,
                    help="scale of the tie-breaking noise; 0: ties fall back to gallery order")
    ap.add_argument("--sanity_constant_embed", action="store_true",
                    help="replace every embedding by a constant: R@1 should be about 1/N")
    ap.add_argument("--out_json", default="",
                    help="also write the result envelope (metrics, settings, timings) to this "
                         "file; empty = no")
    add_device_arg(ap)
    ap.add_argument("--batch", type=positive_int, default=16, help="sequences per forward")
    add_precision_arg(ap)
    ap.add_argument("--workers", type=nonneg_int, default=0,
                    help="threads loading and tokenising cache files; 0: none on CPU, "
                         "min(4, cpus) beside a GPU (results do not depend on it)")
    return ap


@dataclass(frozen=True, kw_only=True)
class RetrievalUcprConfig(UcprSamplingArgs, VoxelArgs, DeviceArgs, PrecisionArgs, CliConfig):
    """Flags of ``python -m nepa3d.analysis.retrieval_ucpr`` (one field per flag)."""

    cache_root: str
    split: str
    ckpt: str
    max_len: int
    query_backend: str
    gallery_backend: str
    n_point: int | None
    n_ray: int | None
    add_eos: int
    qa_tokens: int
    pooling: str
    max_files: int
    chunk: int
    tie_break_eps: float
    sanity_constant_embed: bool
    out_json: str
    batch: int
    workers: int

    @classmethod
    def build_parser(cls) -> argparse.ArgumentParser:
        return build_parser()


def shape_sequences(path: str, i: int, args: UcprSamplingArgs, cfg: TokenizerConfig,
                    gallery_seed: int) -> list:
    """[(feat (T, 15), type_id (T,), (side, i))] for both sides (0 query, 1 gallery) and
    every MC view of one shape. ``args``: a UCPR configuration (sampling flags, the
    ``query_backend`` / ``gallery_backend`` and the voxel settings)."""
    arrays = load_cache(path)
    out = []
    for side, backend, seed in ((0, args.query_backend, args.eval_seed),
                                (1, args.gallery_backend, gallery_seed)):
        pools = get_pools(backend, path, arrays, args.voxel_config())
        for k in range(max(1, args.mc_k)):
            feat, types = build_sequence(pools, cfg, path_rng(path, seed, k))
            feat = ablate_tokens(feat, types, point_xyz=args.ablate_point_xyz,
                                 point_dist=args.ablate_point_dist)
            out.append((feat, types, (side, i)))
    return out


def _sequences(paths, args: UcprSamplingArgs, cfg: TokenizerConfig, gallery_seed: int, workers: int):
    fn = lambda i: shape_sequences(paths[i], i, args, cfg, gallery_seed)  # noqa: E731
    for seqs in tqdm(prefetch_map(fn, range(len(paths)), workers=workers), total=len(paths),
                     desc="ucpr embed", file=sys.stderr):
        yield from seqs


def embed_all(lb, paths, args: RetrievalUcprConfig, cfg: TokenizerConfig, gallery_seed: int,
              device) -> tuple[np.ndarray, np.ndarray]:
    """-> query (N, C), gallery (N, C) float32 embeddings (view mean, L2-normalised)."""
    n, d = len(paths), lb.model.cfg.d_model
    acc = np.zeros((2, n, d), dtype=np.float64)

    def reduce(h, z_hat, types, metas):
        return list(pool_embeddings(h, z_hat, types, args.pooling, lb.qa_tokens).cpu().numpy())

    seqs = _sequences(paths, args, cfg, gallery_seed, args.workers or default_workers(device))
    for (side, i), v in forward_batched(lb.model, seqs, batch=args.batch, device=device,
                                        reduce=reduce, source=args.ckpt,
                                        precision=resolve_precision(args.precision, device)):
        acc[side, i] += v
    acc /= max(1, args.mc_k)
    return (l2_normalize(acc[0]).astype(np.float32), l2_normalize(acc[1]).astype(np.float32))


def spread_metrics(Q: np.ndarray, G: np.ndarray) -> dict:
    """{embed_spread_query, embed_spread_gallery}: 1 - mean pairwise cosine of the final
    (view-averaged, L2-normalised) embeddings Q (N, C), G (N, C); 0 = collapsed."""
    return {"embed_spread_query": 1.0 - mean_pairwise_cosine(Q),
            "embed_spread_gallery": 1.0 - mean_pairwise_cosine(G)}


def run(args: RetrievalUcprConfig) -> dict:
    timer = ResultTimer()
    device = resolve_device(args.device)
    paths = cache_files(args.cache_root, args.split)
    if args.max_files > 0:
        paths = paths[:args.max_files]
    if not paths:
        raise EvalError("no cache files under "
                        f"{os.path.join(args.cache_root, args.split, '*', '*.npz')}")

    def sizes(lb):
        n_point = lb.n_point if args.n_point is None else int(args.n_point)
        n_ray = lb.n_ray if args.n_ray is None else int(args.n_ray)
        return n_point, n_ray

    lb = load_eval_model(args.ckpt, max_len=args.max_len, qa_tokens=args.qa_tokens,
                         add_eos=args.add_eos, device=device,
                         seq_len=lambda lb: required_len(*sizes(lb), lb.qa_tokens, lb.add_eos))
    n_point, n_ray = sizes(lb)
    gallery_seed = args.gallery_seed
    cfg = TokenizerConfig(n_point=n_point, n_ray=n_ray, qa_tokens=lb.qa_tokens,
                          add_eos=lb.add_eos, drop_ray_prob=0.0, order_dtype=args.order_dtype)
    Q, G = embed_all(lb, paths, args, cfg, gallery_seed, device)
    if args.sanity_constant_embed:
        Q = l2_normalize(np.ones_like(Q))
        G = l2_normalize(np.ones_like(G))
    ranks = tie_aware_ranks(Q, G, eps=args.tie_break_eps,
                            seed=tie_noise_seed(args.eval_seed, gallery_seed), chunk=args.chunk)
    metrics = {**retrieval_metrics(ranks), **spread_metrics(Q, G)}

    ckpt_abs = os.path.abspath(args.ckpt)
    keys = load_cache(paths[0]).keys()  # the cache key each side's distances came from
    extra = {"query_backend": args.query_backend, "gallery_backend": args.gallery_backend,
             "query_dist_source": backends.distance_source(args.query_backend, keys),
             "gallery_dist_source": backends.distance_source(args.gallery_backend, keys),
             "n_files": len(paths), "n_point": n_point, "n_ray": n_ray,
             "add_eos": bool(lb.add_eos), "qa_tokens": bool(lb.qa_tokens), "mc_k": int(args.mc_k),
             "eval_seed": int(args.eval_seed), "eval_seed_gallery": int(gallery_seed),
             "ablate_point_xyz": bool(args.ablate_point_xyz),
             "ablate_point_dist": bool(args.ablate_point_dist), "pooling": args.pooling,
             "tie_break_eps": float(args.tie_break_eps), "order_dtype": args.order_dtype,
             "sanity_constant_embed": bool(args.sanity_constant_embed),
             "max_len": int(lb.model.pos_emb.shape[1]), "ckpt": ckpt_abs,
             "precision": resolve_precision(args.precision, device)}
    flags = []
    if easy_pair_saturated(metrics["r@1"]):
        flags.append(EASY_PAIR_FLAG)
    if args.sanity_constant_embed:
        flags.append("sanity_constant_embed")
    resolved = {**args.record(), "ckpt": ckpt_abs, "n_point": n_point, "n_ray": n_ray,
                "add_eos": int(lb.add_eos), "qa_tokens": int(lb.qa_tokens),
                "eval_seed_gallery": int(gallery_seed)}
    prov = timer.provenance(seed=args.eval_seed, ckpt=args.ckpt, cache_root=args.cache_root,
                            device=device)
    return build_result("ucpr", resolved, metrics, prov, flags=flags, extra=extra)


@interruptible(PROG, "no result written (--out_json untouched)")
def main(argv=None) -> dict:
    """The result dict; a flag or input file that cannot be used exits 2 with one line naming
    it (nothing written), a refused write of --out_json exits 1."""
    args = RetrievalUcprConfig.parse(argv)
    check_voxel(args)
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
