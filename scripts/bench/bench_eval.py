"""Benchmark (not a test) of the frozen-model evaluators: CPAC and UCPR wall time.

    .venv/bin/python scripts/bench/bench_eval.py --d_model 384 --layers 8 --heads 6 \
        --n_eval 60 --n_train 80 --ucpr_files 60 --device cpu

Without ``--cache_root`` a planted cache (spheres of random radius, embedded-default
profile: pt_pool 4000, ray_pool 1024, df_grid 32) is written to a temp dir with ``eval``
and ``train_udf`` splits; without ``--ckpt`` a random-init checkpoint of the given size is
saved in a temp dir (seeded: the same weights every run; max_len 194 = the embedded pretrain's 64/32 QA length, so CPAC exercises the
pos-emb resize). Prints one line per run and a JSON summary.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")  # tqdm reads it at import

from nepa3d.analysis import completion_cpac_udf, retrieval_ucpr  # noqa: E402
from nepa3d.data.cache import save_cache  # noqa: E402
from nepa3d.models.query_nepa import ModelConfig, QueryNepa  # noqa: E402
from nepa3d.utils.ckpt import save_checkpoint  # noqa: E402


def sphere_cache(rng: np.random.RandomState, P: int, M: int, G: int, n_pc: int) -> dict:
    """A valid mesh-kind cache of a sphere of radius r: mesh / UDF distances are |‖x‖ - r|,
    the point-cloud distance is the NN distance to the n_pc surface samples."""
    r = rng.uniform(0.3, 0.8)
    v = rng.normal(size=(n_pc, 3))
    nrm = v / np.linalg.norm(v, axis=1, keepdims=True)
    pc = nrm * r
    n_uni = P // 2
    pool = np.clip(np.concatenate([rng.uniform(-1, 1, (n_uni, 3)),
                                   pc[rng.choice(n_pc, P - n_uni)]
                                   + rng.normal(0, 0.02, (P - n_uni, 3))]), -1, 1)
    dist = np.abs(np.linalg.norm(pool, axis=1) - r)
    pc_dist = cKDTree(pc).query(pool, k=1)[0]  # observation-derived, >= dist
    c = -1 + (np.arange(G) + 0.5) * 2 / G
    cx, cy, cz = np.meshgrid(c, c, c, indexing="ij")
    udf = np.abs(np.sqrt(cx ** 2 + cy ** 2 + cz ** 2) - r)
    o = rng.normal(size=(M, 3))
    o = o / np.linalg.norm(o, axis=1, keepdims=True) * 2.2
    d = -o / 2.2 + rng.normal(0, 0.2, (M, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    b = (o * d).sum(1)
    disc = b ** 2 - ((o * o).sum(1) - r * r)
    hit = disc > 0
    t = np.where(hit, -b - np.sqrt(np.maximum(disc, 0)), 0.0)
    n = np.where(hit[:, None], (o + t[:, None] * d) / r, 0.0)
    f = lambda x: np.asarray(x, dtype=np.float32)  # noqa: E731
    return {"pc_xyz": f(pc), "pc_n": f(nrm), "pt_xyz_pool": f(pool), "pt_dist_pool": f(dist),
            "pt_dist_pc_pool": f(pc_dist), "pt_dist_udf_pool": f(dist),
            "udf_grid": udf.astype(np.float16), "occ_grid": (udf <= 2 / G).astype(np.uint8),
            "df_grid": np.array([G], np.int32), "df_dilate": np.array([1], np.int32),
            "ray_o_pool": f(o), "ray_d_pool": f(d), "ray_hit_pool": f(hit), "ray_t_pool": f(t),
            "ray_n_pool": f(n), "ray_hit_pc_pool": f(hit), "ray_t_pc_pool": f(t),
            "ray_n_pc_pool": f(n)}


def write_planted(root: Path, n_eval: int, n_train: int, P: int, M: int, G: int, n_pc: int) -> None:
    rng = np.random.RandomState(0)
    for split, n in (("eval", n_eval), ("train_udf", n_train)):
        for i in range(n):
            save_cache(root / split / f"cls{i % 4}" / f"s{i:05d}.npz", sphere_cache(rng, P, M, G, n_pc))


def write_ckpt(path: Path, d_model: int, layers: int, heads: int, max_len: int) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=d_model, nhead=heads, num_layers=layers, max_len=max_len)
    save_checkpoint({"model": QueryNepa(cfg).state_dict(), "model_config": cfg.to_dict(),
                     "args": {"qa_tokens": 1, "add_eos": 1, "n_point": 64, "n_ray": 32,
                              "d_model": d_model, "heads": heads, "layers": layers},
                     "epoch": 0, "step": 0}, path)


def timed(fn, argv, repeat: int = 1) -> tuple[float, dict]:
    """Best wall time of ``repeat`` runs of ``fn(argv)`` (stdout swallowed) and the last result."""
    best, res = float("inf"), None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            res = fn(argv)
        best = min(best, time.perf_counter() - t0)
    return best, res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache_root", default="",
                    help="default: a planted cache in a temp dir; a missing folder is planted "
                         "there (reuse it to compare devices on the same paths and seeds)")
    ap.add_argument("--ckpt", default="", help="default: random init of the size below")
    ap.add_argument("--d_model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--n_eval", type=int, default=60, help="CPAC eval shapes (N)")
    ap.add_argument("--n_train", type=int, default=80, help="CPAC head-train shapes (M)")
    ap.add_argument("--ucpr_files", type=int, default=60, help="UCPR files (K)")
    ap.add_argument("--n_context", type=int, default=64)
    ap.add_argument("--n_query", type=int, default=64)
    ap.add_argument("--n_point", type=int, default=64)
    ap.add_argument("--n_ray", type=int, default=32)
    ap.add_argument("--query_source", default="pool", choices=("pool", "grid", "hybrid"))
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=0, help="loader threads (0: evaluator default)")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"))
    ap.add_argument("--repeat", type=int, default=1, help="runs per evaluator; the best is reported")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--pc_points", type=int, default=2048, help="planted pc_points")
    ap.add_argument("--pool", type=int, default=4000, help="planted pt_pool")
    ap.add_argument("--rays", type=int, default=1024, help="planted ray_pool")
    ap.add_argument("--grid", type=int, default=32, help="planted df_grid")
    ap.add_argument("--skip_ucpr", action="store_true")
    ap.add_argument("--skip_cpac", action="store_true")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        root = Path(args.cache_root) if args.cache_root else Path(tmp) / "cache"
        if not root.exists():
            t0 = time.perf_counter()
            write_planted(root, max(args.n_eval, args.ucpr_files), args.n_train, args.pool,
                          args.rays, args.grid, args.pc_points)
            print(f"[bench] planted cache in {time.perf_counter() - t0:.1f}s: {root}", file=sys.stderr)
        ckpt = args.ckpt or str(Path(tmp) / "ckpt.pt")  # seeded init: identical across runs
        if not args.ckpt:
            write_ckpt(Path(ckpt), args.d_model, args.layers, args.heads, max_len=194)
        common = ["--cache_root", str(root), "--ckpt", ckpt, "--device", args.device,
                  "--batch", str(args.batch), "--workers", str(args.workers),
                  "--precision", args.precision]
        summary = {"device": args.device, "threads": torch.get_num_threads(),
                   "model": f"d{args.d_model}/L{args.layers}/H{args.heads}"}
        if not args.skip_cpac:
            s, res = timed(completion_cpac_udf.main, common + [
                "--split", "eval", "--head_train_split", "train_udf", "--max_shapes", str(args.n_eval),
                "--head_train_max_shapes", str(args.n_train), "--n_context", str(args.n_context),
                "--n_query", str(args.n_query), "--query_source", args.query_source,
                "--baseline", "nn_copy"], args.repeat)
            summary["cpac"] = {"seconds": round(s, 3), "n_eval": args.n_eval, "n_train": args.n_train,
                               "n_context": args.n_context, "n_query": args.n_query,
                               "mae": res["metrics"]["mae"], "device": res["provenance"]["device"]}
            print(f"CPAC  {args.n_eval} eval / {args.n_train} head-train shapes, "
                  f"{args.n_context}/{args.n_query} ctx/q: {s:.2f} s")
        if not args.skip_ucpr:
            s, res = timed(retrieval_ucpr.main, common + [
                "--split", "eval", "--query_backend", "mesh", "--gallery_backend", "udfgrid",
                "--max_files", str(args.ucpr_files), "--n_point", str(args.n_point),
                "--n_ray", str(args.n_ray), "--pooling", "mean_a"], args.repeat)
            summary["ucpr"] = {"seconds": round(s, 3), "files": args.ucpr_files,
                               "n_point": args.n_point, "n_ray": args.n_ray,
                               "r@1": res["metrics"]["r@1"]}
            print(f"UCPR  {args.ucpr_files} files, {args.n_point}/{args.n_ray} point/ray: {s:.2f} s")
        print(json.dumps(summary, indent=2))
        return summary


if __name__ == "__main__":
    main()
