"""Unpaired ShapeNet split JSON (reference §1.6).

Example::

    .venv/bin/python -u -m nepa3d.data.shapenet_unpaired_split \\
        --cache_root data/shapenet_cache_v0 --train_split train --eval_split test \\
        --out_json data/shapenet_unpaired_splits_v1.json --seed 0 --ratios 0.34 0.33 0.33

Every train-split shape goes to exactly one of ``train_mesh`` / ``train_pc`` / ``train_udf``
(per synset, shuffled with one ``RandomState(seed)`` shared over synsets in sorted order);
every eval-split shape goes to ``eval``. The files stay complete; "unpaired" means each
split is read through one backend only.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
from collections import defaultdict

import numpy as np

PROG = "shapenet_unpaired_split"
TRAIN_BUCKETS = ("train_mesh", "train_pc", "train_udf")


def normalize_ratios(ratios) -> list[float]:
    """Validate three finite, non-negative ratios with a positive sum; return them / sum."""
    r = [float(x) for x in ratios]
    if len(r) != 3:
        raise ValueError(f"expected 3 ratios (mesh pc udf), got {len(r)}")
    if not all(math.isfinite(x) and x >= 0 for x in r):
        raise ValueError(f"ratios must be finite and >= 0, got {r}")
    s = sum(r)
    if s <= 0:
        raise ValueError(f"ratios must have a positive sum, got {r}")
    return [x / s for x in r]


def bucket_counts(n: int, weights: list[float]) -> list[int]:
    """Counts of the three buckets for ``n`` items.

    ``n0 = clamp(round(w0 n), 0, n)``, ``n1 = clamp(round(w1 n), 0, n - n0)``, ``n2 = rest``;
    then, if ``n >= 3``, every empty bucket (in order) takes one item from the currently
    largest bucket when that one holds more than 1.
    """
    n0 = min(max(int(round(weights[0] * n)), 0), n)
    n1 = min(max(int(round(weights[1] * n)), 0), n - n0)
    counts = [n0, n1, n - n0 - n1]
    if n >= 3:
        for i in range(3):
            if counts[i] == 0:
                j = int(np.argmax(counts))
                if counts[j] > 1:
                    counts[j] -= 1
                    counts[i] += 1
    return counts


def assign_unpaired(train_paths: list[str], weights: list[float], seed: int) -> dict[str, str]:
    """``{path: bucket}`` for train-split cache files ``.../<synset>/<inst>.npz``."""
    groups: dict[str, list[str]] = defaultdict(list)
    for p in train_paths:
        groups[os.path.basename(os.path.dirname(p))].append(p)
    rng = np.random.RandomState(int(seed) & 0xFFFFFFFF)
    out: dict[str, str] = {}
    for syn in sorted(groups):
        paths = sorted(groups[syn])
        rng.shuffle(paths)
        c = bucket_counts(len(paths), weights)
        bounds = np.cumsum([0] + c)
        for b, name in enumerate(TRAIN_BUCKETS):
            for p in paths[bounds[b]:bounds[b + 1]]:
                out[p] = name
    return out


def _record(path: str, split: str, src_split: str) -> dict:
    syn = os.path.basename(os.path.dirname(path))
    inst = os.path.splitext(os.path.basename(path))[0]
    return {"key": f"{syn}/{inst}", "split": split, "src_split": src_split,
            "src_relpath": f"{src_split}/{syn}/{inst}.npz"}


def build_split(cache_root: str, train_split: str, eval_split: str, ratios, seed: int) -> dict:
    """The split document ``{"meta": {...}, "records": [...]}``."""
    weights = normalize_ratios(ratios)
    root = glob.escape(cache_root)
    train = sorted(glob.glob(os.path.join(root, glob.escape(train_split), "*", "*.npz")))
    evals = sorted(glob.glob(os.path.join(root, glob.escape(eval_split), "*", "*.npz")))
    assignment = assign_unpaired(train, weights, seed)
    records = [_record(p, assignment[p], train_split) for p in train]
    records += [_record(p, "eval", eval_split) for p in evals]
    counts = {name: 0 for name in (*TRAIN_BUCKETS, "eval")}
    for r in records:
        counts[r["split"]] += 1
    meta = {"cache_root": os.path.abspath(cache_root), "train_split": train_split,
            "eval_split": eval_split, "seed": int(seed),
            "ratios_mesh_pc_udf": [float(x) for x in ratios], "counts": counts}
    return {"meta": meta, "records": records}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache_root", required=True)
    ap.add_argument("--train_split", default="train")
    ap.add_argument("--eval_split", default="test")
    ap.add_argument("--out_json", required=True)
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.34, 0.33, 0.33], metavar="R",
                    help="three ratios: train_mesh train_pc train_udf")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        doc = build_split(args.cache_root, args.train_split, args.eval_split, args.ratios,
                          args.seed)
    except ValueError as e:
        print(f"[{PROG}] error: {e}", file=sys.stderr)
        return 2
    if not doc["records"]:
        print(f"[{PROG}] error: no .npz under {args.cache_root}/{{{args.train_split},"
              f"{args.eval_split}}}/*/", file=sys.stderr)
        return 2
    out_dir = os.path.dirname(os.path.abspath(args.out_json))
    os.makedirs(out_dir, exist_ok=True)
    tmp = f"{args.out_json}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(tmp, args.out_json)
    print(f"[{PROG}] counts={json.dumps(doc['meta']['counts'])} -> {args.out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
