"""Benchmark (not a test) of the frozen-model evaluators: CPAC and UCPR wall time.

Three presets (explicit flags override any preset value):

``--preset paper``: the issue's configuration at paper model size. CPAC on 800 eval shapes
with a ridge head fit on 4000 head-train shapes (n_context 256 / n_query 256), UCPR on 1000
files (n_point 256 / n_ray 256, mesh -> udfgrid, mean_a pooling, gallery seed 999), with a
random-init QA checkpoint d384 / L8 / H6, max_len 1026 (``nepa3d.train.scratch_ckpt``).
The cache is planted in a temp dir (``eval`` 1000 + ``train_udf`` 4000 spheres, real schema,
written by --gen_workers processes) with the lab's cache profile (``--profile lab``:
pc 2048, pt_pool 20000, ray_pool 8000, df_grid 64; ``--profile embedded`` is the smaller
4000 / 1024 / 32 profile). Targets on an H100: CPAC <= 60 s, UCPR <= 10 s.

    # H100 (< 10 min incl. writing the 5000-file cache; $OUT/bench_eval_paper.json)
    python3 scripts/bench/bench_eval.py --preset paper --device cuda --json $OUT/bench_eval_paper.json
    # CPU smoke of the same configuration on 20 shapes
    .venv/bin/python scripts/bench/bench_eval.py --preset paper --device cpu \
        --n_eval 20 --n_train 20 --ucpr_files 20

``--preset embedded``: the embedded default pipeline as `dvc repro` runs it: the cache
``data.unpaired_cache`` and ``runs/pretrain/qa_dualmask/last.pt`` (the lab's main Q/A
dual-mask checkpoint, a DVC output) with the ``cpac`` / ``ucpr`` settings of params.yaml
(60 eval / 120 head-train shapes capped by what the split holds, 32 / 32 ctx / q; 60 files,
the checkpoint's 64 / 32 point / ray) on the CPU. When the
cache or checkpoint is missing, a planted embedded-profile cache and a random-init
checkpoint of params.yaml's model size stand in (said so in the output).

    .venv/bin/python scripts/bench/bench_eval.py --preset embedded

``--preset custom`` (the default; ``make bench``): d128 / L4 / H4, 60 eval / 80 head-train /
60 UCPR files, 64 / 64 and 64 / 32, planted embedded-profile cache, random-init checkpoint
(max_len 194 = the embedded pretrain's 64/32 QA length, so CPAC exercises the pos-emb resize).

Each evaluator runs in-process (``main(argv)``, stdout swallowed), ``--repeat`` times; the
best wall time is reported with the first (which also pays one-off costs: cold files, first
kernels); on CUDA the context is created before timing. Prints one line per run and
a JSON summary (also written to ``--json``). ``scripts/bench/run_gpu_benches.sh`` runs the
paper preset and ``bench_gpu_train.py`` on a GPU machine in one call.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # tqdm reads it when first imported (torch does)

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmark.atomic import atomic_write_text  # noqa: E402
from nepa3d.analysis import completion_cpac_udf, retrieval_ucpr  # noqa: E402
from nepa3d.data.analytic_sphere import sphere_cache_arrays  # noqa: E402
from nepa3d.data.cache import save_cache  # noqa: E402
from nepa3d.token.types import required_len  # noqa: E402
from nepa3d.train import scratch_ckpt  # noqa: E402

PROFILES = {  # planted cache profiles: pc points, pt_pool, ray_pool, df_grid
    "embedded": {"pc_points": 2048, "pool": 4000, "rays": 1024, "grid": 32},
    "lab": {"pc_points": 2048, "pool": 20000, "rays": 8000, "grid": 64},
}
BASE = {"cache_root": "", "ckpt": "", "d_model": 128, "layers": 4, "heads": 4,
        "ckpt_n_point": 64, "ckpt_n_ray": 32, "n_eval": 60, "n_train": 80, "ucpr_files": 60,
        "n_context": 64, "n_query": 64, "n_point": 64, "n_ray": 32, "device": "auto",
        "batch": 16, "profile": "embedded", "pooling": "mean_a"}
PRESETS = {
    "custom": {},
    "paper": {"d_model": 384, "layers": 8, "heads": 6, "ckpt_n_point": 256, "ckpt_n_ray": 256,
              "n_eval": 800, "n_train": 4000, "ucpr_files": 1000, "n_context": 256,
              "n_query": 256, "n_point": 256, "n_ray": 256, "batch": 32, "profile": "lab"},
    "embedded": {"device": "cpu"},  # the rest comes from params.yaml (embedded_defaults)
}


def embedded_defaults() -> dict:
    """The embedded pipeline's evaluator settings, read from params.yaml."""
    out = {"cache_root": "data/shapenet_unpaired_cache_v1", "ckpt": "runs/pretrain/qa_dualmask/last.pt",
           "n_eval": 60, "n_train": 120, "ucpr_files": 60, "n_context": 64, "n_query": 64,
           "n_point": None, "n_ray": None, "d_model": 128, "layers": 4, "heads": 4}
    try:
        import yaml

        p = yaml.safe_load((ROOT / "params.yaml").read_text())
        out.update(cache_root=p["data"]["unpaired_cache"], n_eval=p["cpac"]["max_shapes"],
                   n_train=p["cpac"]["head_train_max_shapes"], n_context=p["cpac"]["n_context"],
                   n_query=p["cpac"]["n_query"], ucpr_files=p["ucpr"]["max_files"],
                   pooling=p["ucpr"]["pooling"], d_model=p["model"]["d_model"],
                   layers=p["model"]["layers"], heads=p["model"]["heads"])
    except (ImportError, OSError, KeyError, TypeError) as e:
        print(f"[bench] params.yaml not read ({e}); built-in embedded settings", file=sys.stderr)
    for k in ("cache_root", "ckpt"):
        if out[k] and not os.path.isabs(out[k]):
            out[k] = str(ROOT / out[k])
    return out


# --------------------------------------------------------------------------------------------
# Planted cache
# --------------------------------------------------------------------------------------------

_SPLIT_SEED = {"eval": 0, "train_udf": 1}


def _write_one(job) -> None:
    root, split, i, P, M, G, n_pc = job
    rng = np.random.RandomState((_SPLIT_SEED[split] * 1_000_003 + i) & 0xFFFFFFFF)  # per file
    save_cache(Path(root) / split / f"cls{i % 4}" / f"s{i:05d}.npz", sphere_cache_arrays(rng, P, M, G, n_pc))


def write_planted(root: Path, n_eval: int, n_train: int, P: int, M: int, G: int, n_pc: int,
                  workers: int = 1) -> int:
    """``eval`` (n_eval) and ``train_udf`` (n_train) sphere caches under ``root``, four
    classes. Every file has its own seed, so the contents do not depend on ``workers``."""
    jobs = [(str(root), s, i, P, M, G, n_pc)
            for s, n in (("eval", n_eval), ("train_udf", n_train)) for i in range(n)]
    workers = max(1, min(int(workers), len(jobs)))
    if workers == 1:
        for j in jobs:
            _write_one(j)
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_one, jobs, chunksize=16):
                pass
    return len(jobs)


def write_ckpt(path: Path, d_model: int, layers: int, heads: int, n_point: int, n_ray: int) -> int:
    """Random-init QA checkpoint (seed 0: the same weights every run) through
    ``nepa3d.train.scratch_ckpt``; max_len = the QA + EOS length of n_point / n_ray."""
    with contextlib.redirect_stdout(io.StringIO()):
        scratch_ckpt.main(["--out", str(path), "--d_model", str(d_model), "--layers", str(layers),
                           "--heads", str(heads), "--n_point", str(n_point), "--n_ray", str(n_ray),
                           "--qa_tokens", "1", "--add_eos", "1", "--seed", "0"])
    return required_len(n_point, n_ray, True, True)


def timed(fn, argv, repeat: int = 1) -> tuple[list[float], dict]:
    """Wall times of ``repeat`` runs of ``fn(argv)`` (stdout swallowed) and the last result.
    The first run of a process also pays one-off costs (imports, kernel JIT, cold files)."""
    times, res = [], None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            res = fn(argv)
        times.append(time.perf_counter() - t0)
    return times, res


def _fmt(times: list[float]) -> str:
    if len(times) == 1:
        return f"{times[0]:.2f} s"
    return f"{min(times):.2f} s best of {len(times)} (first {times[0]:.2f} s)"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    a = ap.add_argument
    a("--preset", default="custom", choices=tuple(PRESETS))
    a("--cache_root", default=None,
      help="default: a planted cache in a temp dir; a missing folder is planted there (reuse "
           "it to compare devices on the same paths and seeds)")
    a("--ckpt", default=None, help="default: random init of the size below")
    a("--d_model", type=int)
    a("--layers", type=int)
    a("--heads", type=int)
    a("--ckpt_n_point", type=int, help="n_point recorded in the random-init checkpoint")
    a("--ckpt_n_ray", type=int, help="n_ray recorded in the random-init checkpoint (max_len)")
    a("--n_eval", type=int, help="CPAC eval shapes (N)")
    a("--n_train", type=int, help="CPAC head-train shapes (M)")
    a("--ucpr_files", type=int, help="UCPR files (K)")
    a("--n_context", type=int)
    a("--n_query", type=int)
    a("--n_point", type=int, help="UCPR points (embedded preset: the checkpoint's)")
    a("--n_ray", type=int, help="UCPR rays (embedded preset: the checkpoint's)")
    a("--pooling", default=None, choices=("eos", "mean_a", "mean_zhat"))
    a("--query_source", default="pool", choices=("pool", "grid", "hybrid"))
    a("--device", default=None, choices=("auto", "cpu", "cuda"))
    a("--batch", type=int, help="sequences per forward")
    a("--workers", type=int, default=0, help="loader threads (0: evaluator default)")
    a("--precision", default="fp32", choices=("fp32", "bf16", "auto"),
      help="fp32 is the evaluators' default (see nepa3d.analysis.features.resolve_precision)")
    a("--repeat", type=int, default=1, help="runs per evaluator; the best is reported")
    a("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    a("--profile", default=None, choices=tuple(PROFILES), help="planted cache profile")
    a("--pc_points", type=int, help="planted pc_points (default: the profile's)")
    a("--pool", type=int, help="planted pt_pool (default: the profile's)")
    a("--rays", type=int, help="planted ray_pool (default: the profile's)")
    a("--grid", type=int, help="planted df_grid (default: the profile's)")
    a("--gen_workers", type=int, default=0, help="processes writing the planted cache (0: all CPUs)")
    a("--skip_ucpr", action="store_true")
    a("--skip_cpac", action="store_true")
    a("--json", default="", help="also write the summary here")
    return ap


def resolve_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    values = dict(BASE)
    if args.preset == "embedded":
        values.update(embedded_defaults())
    values.update(PRESETS[args.preset])
    for k, v in values.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    for k, v in PROFILES[args.profile].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def main(argv=None) -> dict:
    args = resolve_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("error: --device cuda but CUDA is not available")
    notes = []

    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        root = Path(args.cache_root) if args.cache_root else Path(tmp) / "cache"
        if args.preset == "embedded" and not root.exists():
            notes.append(f"embedded cache {root} missing: planted embedded-profile stand-in")
            root = Path(tmp) / "cache"
        gen = None
        if not root.exists():
            t0 = time.perf_counter()
            n = write_planted(root, max(args.n_eval, args.ucpr_files), args.n_train, args.pool,
                              args.rays, args.grid, args.pc_points,
                              workers=args.gen_workers or os.cpu_count() or 1)
            gen = {"files": n, "seconds": round(time.perf_counter() - t0, 2),
                   "profile": {k: getattr(args, k) for k in ("pc_points", "pool", "rays", "grid")}}
            print(f"[bench] planted {n} cache files ({args.profile}-profile sizes {gen['profile']}) "
                  f"in {gen['seconds']:.1f}s: {root}", file=sys.stderr)
        ckpt = args.ckpt
        if args.preset == "embedded" and ckpt and not Path(ckpt).exists():
            notes.append(f"embedded checkpoint {ckpt} missing: random-init stand-in")
            ckpt = ""
        if not ckpt:
            ckpt = str(Path(tmp) / "ckpt.pt")  # seeded init: identical across runs
            max_len = write_ckpt(Path(ckpt), args.d_model, args.layers, args.heads,
                                 args.ckpt_n_point, args.ckpt_n_ray)
            model_desc = f"random init d{args.d_model}/L{args.layers}/H{args.heads} (max_len {max_len})"
        else:
            model_desc = ckpt
        for n_ in notes:
            print(f"[bench] note: {n_}", file=sys.stderr)
        if device == "cuda":  # after the forked cache writers; not part of the timed runs
            torch.zeros(1, device="cuda")
        common = ["--cache_root", str(root), "--ckpt", ckpt, "--device", device,
                  "--batch", str(args.batch), "--workers", str(args.workers),
                  "--precision", args.precision]
        summary = {"preset": args.preset, "device": device, "threads": torch.get_num_threads(),
                   "cpus": os.cpu_count(), "model": model_desc, "precision": args.precision,
                   "batch": args.batch, "cache_root": str(root) if args.cache_root else "planted (temp)",
                   "planted": gen, "notes": notes, "torch": torch.__version__,
                   "gpu": torch.cuda.get_device_name() if device == "cuda" else None}
        if args.preset == "paper":
            summary["targets_h100_s"] = {"cpac": 60, "ucpr": 10}
        where = summary["gpu"] or f"{summary['threads']} threads"
        print(f"[bench] preset {args.preset}: {model_desc} on {device} ({where}), "
              f"{args.precision}, batch {args.batch}")
        if not args.skip_cpac:
            ts, res = timed(completion_cpac_udf.main, common + [
                "--split", "eval", "--head_train_split", "train_udf", "--max_shapes", str(args.n_eval),
                "--head_train_max_shapes", str(args.n_train), "--n_context", str(args.n_context),
                "--n_query", str(args.n_query), "--query_source", args.query_source,
                "--baseline", "nn_copy"], args.repeat)
            ex = res["extra"]
            summary["cpac"] = {"seconds": round(min(ts), 3), "seconds_all": [round(t, 3) for t in ts],
                               "n_eval": ex["n_shapes_head_test"],
                               "n_train": ex["n_shapes_head_train"], "n_context": args.n_context,
                               "n_query": args.n_query, "rows_head_train": ex["n_rows_head_train"],
                               "seq_len": required_len(args.n_context, args.n_query,
                                                       ex["qa_tokens"], ex["add_eos"]),
                               "mae": res["metrics"]["mae"], "device": res["provenance"]["device"]}
            print(f"CPAC  {ex['n_shapes_head_test']} eval / {ex['n_shapes_head_train']} head-train "
                  f"shapes, {args.n_context}/{args.n_query} ctx/q: {_fmt(ts)}")
        if not args.skip_ucpr:
            extra_pts = []
            if args.n_point is not None:
                extra_pts += ["--n_point", str(args.n_point)]
            if args.n_ray is not None:
                extra_pts += ["--n_ray", str(args.n_ray)]
            ts, res = timed(retrieval_ucpr.main, common + [
                "--split", "eval", "--query_backend", "mesh", "--gallery_backend", "udfgrid",
                "--eval_seed_gallery", "999", "--max_files", str(args.ucpr_files),
                "--pooling", args.pooling] + extra_pts, args.repeat)
            ex = res["extra"]
            summary["ucpr"] = {"seconds": round(min(ts), 3), "seconds_all": [round(t, 3) for t in ts],
                               "files": ex["n_files"],
                               "n_point": ex["n_point"], "n_ray": ex["n_ray"],
                               "pooling": args.pooling, "r@1": res["metrics"]["r@1"]}
            print(f"UCPR  {ex['n_files']} files, {ex['n_point']}/{ex['n_ray']} point/ray: {_fmt(ts)}")
        if args.preset == "paper" and device == "cuda":
            for k, lim in summary["targets_h100_s"].items():
                if k in summary:
                    ok = summary[k]["seconds"] <= lim
                    summary[k]["target_met"] = ok
                    print(f"[target] {k.upper()} {summary[k]['seconds']:.1f} s vs <= {lim} s on an "
                          f"H100: {'MET' if ok else 'NOT MET'} ({summary['gpu']})")
        print(json.dumps(summary, indent=2))
        if args.json:
            atomic_write_text(args.json, json.dumps(summary, indent=2))
        return summary


if __name__ == "__main__":
    main()
