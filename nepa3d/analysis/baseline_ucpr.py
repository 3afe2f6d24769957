"""Non-learned UCPR baseline: cross-primitive retrieval with hand-made shape descriptors.

    python -m nepa3d.analysis.baseline_ucpr --cache_root data/shapenet_unpaired_cache_v1 \
        --split eval --query_backend mesh --gallery_backend udfgrid --n_point 64 \
        --eval_seed 0 --eval_seed_gallery 999 --max_files 1000 --out_json results/ucpr_base.json

The protocol of :mod:`nepa3d.analysis.retrieval_ucpr` without a network: the same files, the
same tokens (``retrieval_ucpr.shape_sequences`` with the legacy layout, no rays: view k of a
shape on the query side is drawn from path_rng(path, eval_seed, k), on the gallery side from
path_rng(path, eval_seed_gallery, k); --ablate_point_xyz / --ablate_point_dist zero the same
channels), the same tie-aware ranks and metric names (task ``ucpr``).

Embedding of a shape on one side: the descriptor (:mod:`nepa3d.analysis.shape_descriptors`)
of its POINT tokens, averaged over the --mc_k views; each descriptor dimension is then
z-scored with the mean / std of the union of the N query and N gallery descriptors
(unsupervised and label-free: no class or pairing information is used; a constant dimension
becomes 0), and every row is L2-normalised. Scores are cosines, as in retrieval_ucpr.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import numpy as np

from nepa3d.analysis.metrics import (l2_normalize, retrieval_metrics, tie_aware_ranks,
                                     tie_noise_seed)
from nepa3d.analysis.retrieval_ucpr import shape_sequences, spread_metrics
from nepa3d.analysis.shape_descriptors import DESCRIPTOR_DIM, token_descriptor
from nepa3d import backends
from nepa3d.backends import BACKENDS, VoxelConfig
from nepa3d.data.cache import CacheError
from nepa3d.data.dataset import cache_files
from nepa3d.protocol_thresholds import EASY_PAIR_FLAG, easy_pair_saturated
from nepa3d.token.tokenizer import TokenizerConfig
from nepa3d.cli.args import (make_parser, fail, int_at_least, nonneg_float, nonneg_int,
                                   positive_int)
from nepa3d.cli.edge import check_voxel, emit_or_fail, interruptible, out_file_problem
from nepa3d.cli.config import CliConfig
from nepa3d.cli.groups import (UcprSamplingArgs, VoxelArgs, add_ucpr_sampling_args,
                                        add_voxel_args)
from nepa3d.utils.results import ResultTimer, build_result

PROTOCOL_VERSION = 1  # bump when this module's numbers change: its jobs get new ids and re-run
PROG = "baseline_ucpr"
BASELINE = "shape_descriptors"


class BaselineError(ValueError):
    """A flag value or input the baseline cannot use: one line, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    ap = make_parser("nepa3d.analysis.baseline_ucpr", __doc__.split("\n\n")[0])
    ap.add_argument("--cache_root", required=True,
                    help="cache folder holding the --split of shapes to retrieve among")
    ap.add_argument("--split", default="eval",
                    help="cache split whose shapes are evaluated (<cache_root>/<split>/*/*.npz)")
    ap.add_argument("--query_backend", required=True, choices=BACKENDS,
                    help="backend of the query view of each shape")
    ap.add_argument("--gallery_backend", required=True, choices=BACKENDS,
                    help="backend of the gallery view of each shape (the match is the same shape)")
    ap.add_argument("--n_point", type=int_at_least(2), default=64, help="POINT tokens per view")
    ap.add_argument("--n_ray", type=int, default=0, help="rays are not used: must be 0")
    add_ucpr_sampling_args(ap, xyz_tokens="POINT", dist_tokens="POINT")
    ap.add_argument("--max_files", type=nonneg_int, default=0, help="0: all files of the split")
    ap.add_argument("--chunk", type=positive_int, default=256, help="query rows per scoring chunk")
    add_voxel_args(ap)
    ap.add_argument("--tie_break_eps", type=nonneg_float, default=1e-6,
                    help="scale of the tie-breaking noise; 0: ties fall back to gallery order")
    ap.add_argument("--out_json", default="",
                    help="also write the result envelope (metrics, settings, timings) to this "
                         "file; empty = no")
    return ap


@dataclass(frozen=True, kw_only=True)
class BaselineUcprConfig(UcprSamplingArgs, VoxelArgs, CliConfig):
    """Flags of ``python -m nepa3d.analysis.baseline_ucpr`` (one field per flag)."""

    cache_root: str
    split: str
    query_backend: str
    gallery_backend: str
    n_point: int
    n_ray: int
    max_files: int
    chunk: int
    tie_break_eps: float
    out_json: str

    @classmethod
    def build_parser(cls) -> argparse.ArgumentParser:
        return build_parser()


def check_args(args: BaselineUcprConfig) -> None:
    """What the parser's types leave: --n_ray must be 0."""
    if args.n_ray != 0:
        raise BaselineError(f"--n_ray {args.n_ray}: the descriptor baseline uses no rays (pass 0)")


def descriptors(paths: list[str], args: BaselineUcprConfig, cfg: TokenizerConfig,
                gallery_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """-> query (N, D), gallery (N, D) float64 raw descriptors (mean over the MC views)."""
    acc = np.zeros((2, len(paths), DESCRIPTOR_DIM), dtype=np.float64)
    for i, path in enumerate(paths):
        for feat, types, (side, j) in shape_sequences(path, i, args, cfg, gallery_seed):
            acc[side, j] += token_descriptor(feat, types)
    acc /= max(1, args.mc_k)
    return acc[0], acc[1]


def embed(Dq: np.ndarray, Dg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z-score every dimension over the union of both sides (std 0 -> 1), then L2-normalise
    the rows. (N, D), (N, D) -> (N, D), (N, D) float64"""
    both = np.concatenate([Dq, Dg])
    mu, sd = both.mean(0), both.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    z = lambda X: l2_normalize((X - mu) / sd)  # noqa: E731
    return z(Dq), z(Dg)


def run(args: BaselineUcprConfig) -> dict:
    timer = ResultTimer()
    check_args(args)
    paths = cache_files(args.cache_root, args.split)
    if args.max_files > 0:
        paths = paths[:args.max_files]
    if not paths:
        raise BaselineError("no cache files under "
                            f"{os.path.join(args.cache_root, args.split, '*', '*.npz')}")
    gallery_seed = args.gallery_seed
    cfg = TokenizerConfig(n_point=args.n_point, n_ray=0, qa_tokens=False, add_eos=True,
                          drop_ray_prob=0.0, order_dtype=args.order_dtype)
    Q, G = embed(*descriptors(paths, args, cfg, gallery_seed))
    ranks = tie_aware_ranks(Q, G, eps=args.tie_break_eps,
                            seed=tie_noise_seed(args.eval_seed, gallery_seed), chunk=args.chunk)
    metrics = {**retrieval_metrics(ranks), **spread_metrics(Q, G)}
    extra = {"baseline": BASELINE, "descriptor_dim": DESCRIPTOR_DIM,
             "normalisation": "zscore_union_then_l2",
             "query_backend": args.query_backend, "gallery_backend": args.gallery_backend,
             "query_dist_source": backends.recorded_source(args.query_backend, paths[0]),
             "gallery_dist_source": backends.recorded_source(args.gallery_backend, paths[0]),
             "n_files": len(paths), "n_point": int(args.n_point), "n_ray": 0,
             "add_eos": True, "qa_tokens": False, "mc_k": int(args.mc_k),
             "eval_seed": int(args.eval_seed), "eval_seed_gallery": int(gallery_seed),
             "ablate_point_xyz": bool(args.ablate_point_xyz),
             "ablate_point_dist": bool(args.ablate_point_dist),
             "tie_break_eps": float(args.tie_break_eps), "order_dtype": args.order_dtype}
    flags = [EASY_PAIR_FLAG] if easy_pair_saturated(metrics["r@1"]) else []
    resolved = {**args.record(), "n_ray": 0, "eval_seed_gallery": int(gallery_seed)}
    prov = timer.provenance(seed=args.eval_seed, ckpt=None, cache_root=args.cache_root,
                            device="cpu")
    return build_result("ucpr", resolved, metrics, prov, flags=flags, extra=extra)


@interruptible(PROG, "no result written (--out_json untouched)")
def main(argv=None) -> dict:
    """The result dict; a flag or input file that cannot be used exits 2 with one line naming
    it (nothing written), a refused write of --out_json exits 1."""
    args = BaselineUcprConfig.parse(argv)
    check_voxel(args)
    blocked = out_file_problem("--out_json", args.out_json)
    if blocked:
        sys.exit(fail(PROG, blocked))
    try:
        result = run(args)
    except (CacheError, BaselineError) as e:
        sys.exit(fail(PROG, e))
    emit_or_fail(PROG, result, args.out_json)
    return result


if __name__ == "__main__":
    main()
