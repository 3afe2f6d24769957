"""Benchmark (not a test) of the pretraining loader: token samples per second per backend.

Three readers of the same cache files, each producing QA token sequences (``--n_point`` /
``--n_ray``, default 256 / 256) exactly as pretraining does:

- ``original``: the original code's per-sample path, re-enacted: ``np.load`` of the file (a
  lazy ``NpzFile``) and the backend's keys read through :mod:`zipfile`, then tokenisation
  (the original rebuilt its backend on every ``__getitem__``; no in-memory cache);
- ``before``: this project's previous path: every key of the file decompressed and the whole
  file validated on every sample (``load_cache``), then the backend;
- ``now``: :class:`nepa3d.data.dataset.TokenDataset` as pretraining builds it: only the
  backend's keys, one read and one inflate each, the schema checked once per file.

With ``--cache off`` (default) every sample reads its file (``cache_items=0`` and the
evaluators' memo off), which is what a 46k-file corpus sees; ``--cache on`` adds the
512-file in-memory cache. Each measurement loops over the files for ``--seconds`` in one
process; then ``now`` runs through a ``DataLoader`` with 1..``--max_workers`` workers
(batch 32) for the scaling figure and its extrapolation to 16 cores. A per-file breakdown
(directory, schema check, inflate per key, tokenisation) is printed for one file.

The cache: ``--cache_root DIR --split S`` (e.g. a lab cache), or, by default, ``--build N``
shapes of the embedded corpus preprocessed with the lab's full profile (pc 2048, pt_pool
20000, ray_pool 8000, df_grid 64) into a temp dir.

    .venv/bin/python scripts/bench/bench_loader.py                      # ~3 min on 2 cores
    .venv/bin/python scripts/bench/bench_loader.py --backends mesh --seconds 5 --json out.json
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ["NEPA3D_LOADED_CACHE_MB"] = "0"  # the evaluators' memo stays off: no hidden cache

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from nepa3d.backends import BACKENDS, backend_keys, get_pools, read_backend_arrays  # noqa: E402
from nepa3d.data import npz_members as npz  # noqa: E402
from nepa3d.data.cache import _CHECKED, load_cache, read_cache_keys  # noqa: E402
from nepa3d.data.dataset import Item, TokenDataset, collate, train_key  # noqa: E402
from nepa3d.token.tokenizer import TokenizerConfig, build_sequence  # noqa: E402

CORPUS = ROOT / "data" / "synthetic" / "ShapeNetCore.v2"


def build_cache(n: int, out: Path) -> Path:
    """Preprocess ``n`` embedded-corpus meshes with the lab profile (the CLI's defaults)."""
    meshes = sorted(glob.glob(str(CORPUS / "*" / "*" / "models" / "model_normalized.obj")))
    if not meshes:
        sys.exit(f"bench_loader: no meshes under {CORPUS}; run `dvc repro synthesize` or pass "
                 "--cache_root")
    src = out / "meshes"
    for m in meshes[:: max(1, len(meshes) // n)][:n]:
        rel = Path(m).relative_to(CORPUS)
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(m, src / rel)
    subprocess.run([sys.executable, "-m", "nepa3d.data.preprocess_shapenet", "--shapenet_root",
                    str(src), "--out_root", str(out / "cache"), "--split", "all",
                    "--test_ratio", "0", "--workers", str(os.cpu_count() or 1)],
                   check=True, stdout=subprocess.DEVNULL)
    return out / "cache"


class OriginalReader:
    """The original's per-sample path: np.load (lazy NpzFile), the backend's keys via zipfile."""

    def __init__(self, backend: str):
        self.backend = backend

    def __call__(self, path: str) -> dict:
        with np.load(path, allow_pickle=False) as z:
            names = [f[:-4] if f.endswith(".npy") else f for f in z.files]
            return {k: z[k] for k in backend_keys(self.backend, names)}


def loop_rate(files: list[str], backend: str, read, tok: TokenizerConfig, seconds: float) -> float:
    """Samples per second of ``read(path) -> arrays`` + get_pools + tokenisation, one process."""
    rng = np.random.RandomState()
    n, t0 = 0, time.perf_counter()
    while True:
        path = files[n % len(files)]
        rng.seed(train_key(0, 0, n))
        build_sequence(get_pools(backend, path, read(path)), tok, rng)
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds and n >= len(files):
            return n / dt


def dataset_for(files: list[str], backend: str, tok: TokenizerConfig, cache: bool,
                store: str | None = None) -> TokenDataset:
    items = [Item(p, backend) for p in files]
    reps = max(1, 4096 // len(items))
    return TokenDataset(items * reps, tok, mode="train", seed=0, cache_items=512 if cache else 0,
                        loader_store=store)


def first_pass_rate(files: list[str], backend: str, store: str) -> float:
    """Files per second of the first read through an empty store (inflate + write)."""
    t0 = time.perf_counter()
    for p in files:
        read_backend_arrays(backend, p, store)
    return len(files) / (time.perf_counter() - t0)


def dataset_rate(ds: TokenDataset, seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    while True:
        ds[n % len(ds)]
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds and n >= 64:
            return n / dt


def loader_rate(ds: TokenDataset, workers: int, seconds: float, batch: int = 32) -> float:
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=False, num_workers=workers,
                                     collate_fn=collate, persistent_workers=workers > 0)
    it = iter(dl)
    next(it)  # start-up (worker processes, first files) is not counted
    n, t0 = 0, time.perf_counter()
    for feat, _, _ in it:
        n += feat.shape[0]
        if time.perf_counter() - t0 >= seconds:
            break
    rate = n / (time.perf_counter() - t0)
    del it, dl
    return rate


def breakdown(path: str, backend: str, tok: TokenizerConfig, reps: int = 50) -> dict:
    """Milliseconds of each part of one ``now`` sample of ``path`` (mean of ``reps``)."""
    out: dict[str, float] = {}

    def timed(name, fn):
        t = time.perf_counter()
        for _ in range(reps):
            r = fn()
        out[name] = (time.perf_counter() - t) / reps * 1e3
        return r

    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        members = timed("directory", lambda: npz.read_directory(fd, size))
        keys = backend_keys(backend, npz.array_names(members))
        for k in keys:
            m = members[npz.npy_name(k)]
            data = timed(f"inflate+crc {k} ({m.size // 1024} KiB)", lambda: npz.member_bytes(fd, m))
            timed(f"decode {k}", lambda: npz.array_from_member(data, k))
    finally:
        os.close(fd)

    def first_read():
        _CHECKED.clear()
        return read_cache_keys(path, keys)

    timed("first read in a process (schema check + read)", first_read)
    arrays = timed("later read (schema known)", lambda: read_cache_keys(path, keys))
    pools = get_pools(backend, path, arrays)
    rng = np.random.RandomState(0)
    timed("tokenise", lambda: build_sequence(pools, tok, rng))
    legacy = Path(tempfile.mkdtemp(prefix="legacy_")) / "legacy.npz"
    with np.load(path) as z:  # the same arrays as the original code writes them: no stamp
        np.savez_compressed(legacy, **{k: z[k] for k in z.files if k != "schema_version"})

    def first_legacy():
        _CHECKED.clear()
        return read_cache_keys(legacy, keys)

    timed("legacy (unstamped) file: first read in a process", first_legacy)
    timed("legacy (unstamped) file: load_cache, all keys", lambda: load_cache(legacy))
    timed("original: np.load + keys", lambda: OriginalReader(backend)(path))
    timed("before: load_cache (all keys, validated)", lambda: load_cache(path))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache_root", default="")
    ap.add_argument("--split", default="train")
    ap.add_argument("--build", type=int, default=48, help="shapes to preprocess without --cache_root")
    ap.add_argument("--max_files", type=int, default=64)
    ap.add_argument("--backends", default="mesh,pointcloud,pointcloud_noray,udfgrid,voxel")
    ap.add_argument("--n_point", type=int, default=256)
    ap.add_argument("--n_ray", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--max_workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--cores", type=int, default=16, help="extrapolate the scaling to this many cores")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        if args.cache_root:
            root, split = Path(args.cache_root), args.split
        else:
            print(f"building {args.build} lab-profile cache files from the embedded corpus ...",
                  flush=True)
            root, split = build_cache(args.build, Path(tmp)), "train"
        files = sorted(glob.glob(str(root / split / "*" / "*.npz")))[: args.max_files]
        if not files:
            sys.exit(f"bench_loader: no files under {root / split}")
        mb = np.mean([os.path.getsize(f) for f in files]) / 2**20
        tok = TokenizerConfig(n_point=args.n_point, n_ray=args.n_ray, qa_tokens=True)
        print(f"{len(files)} files, mean {mb:.2f} MiB, QA {args.n_point}/{args.n_ray}, "
              f"inflate: {npz.INFLATE}, torch threads 1")
        report: dict = {"files": len(files), "mean_mib": round(mb, 3), "inflate": npz.INFLATE,
                        "n_point": args.n_point, "n_ray": args.n_ray, "backends": {}}
        for backend in [b for b in args.backends.split(",") if b]:
            if backend not in BACKENDS:
                sys.exit(f"bench_loader: --backends: unknown backend {backend!r}")
            for f in files[:2]:
                read_cache_keys(f, lambda a: backend_keys(backend, a))  # warm the page cache
            r = {
                "original": loop_rate(files, backend, OriginalReader(backend), tok, args.seconds),
                "before": loop_rate(files, backend, load_cache, tok, args.seconds),
                "now": dataset_rate(dataset_for(files, backend, tok, False), args.seconds),
                "now_cache_on": dataset_rate(dataset_for(files, backend, tok, True), args.seconds),
            }
            store = tempfile.mkdtemp(prefix="store_", dir=tmp)
            r["store_first_pass_files_per_s"] = first_pass_rate(files, backend, store)
            r["now_store"] = dataset_rate(dataset_for(files, backend, tok, False, store), args.seconds)
            r["speedup_store_vs_original"] = r["now_store"] / r["original"]
            r["speedup_vs_original"] = r["now"] / r["original"]
            r["speedup_vs_before"] = r["now"] / r["before"]
            for w in range(1, args.max_workers + 1):
                r[f"now_{w}_workers"] = loader_rate(dataset_for(files, backend, tok, False), w,
                                                    args.seconds)
                r[f"store_{w}_workers"] = loader_rate(dataset_for(files, backend, tok, False, store),
                                                      w, args.seconds)
            w = args.max_workers
            eff = r[f"now_{w}_workers"] / (w * r["now_1_workers"])
            r["scaling_efficiency"] = eff
            r[f"extrapolated_{args.cores}_cores"] = r["now_1_workers"] * args.cores * eff
            eff_s = r[f"store_{w}_workers"] / (w * r["store_1_workers"])
            r["store_scaling_efficiency"] = eff_s
            r[f"store_extrapolated_{args.cores}_cores"] = r["store_1_workers"] * args.cores * eff_s
            print(f"[{backend:18s}] samples/s  original {r['original']:7.1f}  before "
                  f"{r['before']:7.1f}  now {r['now']:7.1f} (x{r['speedup_vs_original']:.2f} "
                  f"original, x{r['speedup_vs_before']:.2f} before)  cache on {r['now_cache_on']:7.1f}")
            print(f"    --loader_store: {r['now_store']:7.1f} samples/s (x{r['speedup_store_vs_original']:.2f} "
                  f"original) after a first pass at {r['store_first_pass_files_per_s']:.1f} files/s")
            print("    DataLoader: " + "  ".join(
                f"{k_}w {r[f'now_{k_}_workers']:.1f}" for k_ in range(1, w + 1))
                + f"  efficiency {eff:.2f} -> {args.cores} cores ~{r[f'extrapolated_{args.cores}_cores']:.0f}")
            print("    DataLoader, store: " + "  ".join(
                f"{k_}w {r[f'store_{k_}_workers']:.1f}" for k_ in range(1, w + 1))
                + f"  efficiency {eff_s:.2f} -> {args.cores} cores "
                  f"~{r[f'store_extrapolated_{args.cores}_cores']:.0f}")
            report["backends"][backend] = {k: round(v, 3) for k, v in r.items()}
        first = [b for b in args.backends.split(",") if b][0]
        bd = breakdown(files[0], first, tok)
        print(f"per-file breakdown ({first}, {Path(files[0]).name}, "
              f"{os.path.getsize(files[0]) / 2**20:.2f} MiB), ms:")
        for k, v in bd.items():
            print(f"    {v:8.3f}  {k}")
        report["breakdown_ms"] = {k: round(v, 4) for k, v in bd.items()}
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
