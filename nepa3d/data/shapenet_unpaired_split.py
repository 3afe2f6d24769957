"""Unpaired ShapeNet split JSON (the original's ``shapenet_unpaired_split.py``,
KohsukeIde/3D-NEPA @ 737d98f).

Example::

    .venv/bin/python -u -m nepa3d.data.shapenet_unpaired_split \\
        --cache_root data/shapenet_cache_v0 --train_split train --eval_split test \\
        --out_json data/shapenet_unpaired_splits_v1.json --seed 0 --ratios 0.34 0.33 0.33

Every train-split shape goes to exactly one of ``train_mesh`` / ``train_pc`` / ``train_udf``
(per synset, shuffled with one ``RandomState(seed)`` shared over synsets in sorted order);
every eval-split shape goes to ``eval``. The files stay complete; "unpaired" means each
split is read through one backend only.

The files of a split come from the cache's records (``_meta/cache_records.tsv``, written by
the preprocessors: :func:`nepa3d.data.cache.split_files`), not from its folders; a cache
without records (made before records were kept, or planted by hand) is listed from its folders,
with a note. Either way a shape (``<synset>/<model>``) found in both the train and the eval
split is an error (exit 1, naming it): it would sit in a train bucket and in eval at once.
Bad arguments exit 2 (``--ratios`` takes three numbers in [0, 1] that sum to 1).
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
from dataclasses import dataclass

from benchmark.atomic import atomic_write_json
from nepa3d.cli.args import make_parser, fail, unit_float
from nepa3d.data.cache import CacheError, file_in_the_way, split_files
from nepa3d.cli.config import CliConfig

PROG = "shapenet_unpaired_split"
TRAIN_BUCKETS = ("train_mesh", "train_pc", "train_udf")
RATIO_SUM_TOL = 1e-6


class SplitOverlap(ValueError):
    """A shape listed in both the train and the eval split of a cache."""


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


def shape_key(path: str) -> str:
    """``<synset>/<model>`` of a cache file ``.../<synset>/<model>.npz``."""
    syn = os.path.basename(os.path.dirname(path))
    return f"{syn}/{os.path.splitext(os.path.basename(path))[0]}"


def _record(path: str, split: str, src_split: str) -> dict:
    key = shape_key(path)
    return {"key": key, "split": split, "src_split": src_split,
            "src_relpath": f"{src_split}/{key}.npz"}


def check_disjoint(train: list[str], evals: list[str]) -> None:
    """Raise :class:`SplitOverlap` when a shape key is in both lists (pure)."""
    both = sorted({shape_key(p) for p in train} & {shape_key(p) for p in evals})
    if both:
        raise SplitOverlap(f"{len(both)} shape(s) are in both the train and the eval split, "
                           f"e.g. {both[0]} (re-run the preprocessing of the cache)")


def list_split(cache_root: str, split: str) -> tuple[list[str], bool]:
    """``(sorted files of split, from_records)``: the cache's records when it has them,
    else the ``<root>/<split>/*/*.npz`` folders."""
    listed = split_files(cache_root, split)
    if listed is not None:
        return listed, True
    root = glob.escape(cache_root)
    return sorted(glob.glob(os.path.join(root, glob.escape(split), "*", "*.npz"))), False


def build_split(cache_root: str, train_split: str, eval_split: str, ratios, seed: int) -> dict:
    """The split document ``{"meta": {...}, "records": [...]}``.

    Raises:
        ValueError: bad ratios; :class:`SplitOverlap`: a shape in both splits;
        :class:`nepa3d.data.cache.CacheError`: an unreadable records file.
    """
    weights = normalize_ratios(ratios)
    train, from_records = list_split(cache_root, train_split)
    evals, _ = list_split(cache_root, eval_split)
    check_disjoint(train, evals)
    assignment = assign_unpaired(train, weights, seed)
    records = [_record(p, assignment[p], train_split) for p in train]
    records += [_record(p, "eval", eval_split) for p in evals]
    counts = {name: 0 for name in (*TRAIN_BUCKETS, "eval")}
    for r in records:
        counts[r["split"]] += 1
    meta = {"cache_root": os.path.abspath(cache_root), "train_split": train_split,
            "eval_split": eval_split, "seed": int(seed),
            "ratios_mesh_pc_udf": [float(x) for x in ratios], "counts": counts,
            "listed_from": "records" if from_records else "folders"}
    return {"meta": meta, "records": records}


def check_ratios(ratios: list[float]) -> str | None:
    """Why ``--ratios`` is unusable (three numbers in [0, 1] summing to 1), or None."""
    if len(ratios) != 3:
        return f"argument --ratios: expected 3 numbers (mesh pc udf), got {len(ratios)}"
    if abs(sum(ratios) - 1.0) > RATIO_SUM_TOL:
        return f"argument --ratios: the three numbers must sum to 1, got {sum(ratios):g}"
    return None


def build_parser() -> argparse.ArgumentParser:
    ap = make_parser("nepa3d.data.shapenet_unpaired_split", __doc__.split("\n\n")[0])
    ap.add_argument("--cache_root", required=True, help="paired ShapeNet cache to split")
    ap.add_argument("--train_split", default="train",
                    help="source split divided into the mesh/pc/udf training subsets")
    ap.add_argument("--eval_split", default="test", help="source split kept as the eval split")
    ap.add_argument("--out_json", required=True, help="split JSON to write")
    ap.add_argument("--ratios", type=unit_float, nargs="+", default=[0.34, 0.33, 0.33],
                    metavar="R", help="three ratios in [0, 1] summing to 1: mesh pc udf")
    ap.add_argument("--seed", type=int, default=0,
                    help="seed of the shuffle that assigns training shapes to subsets")
    return ap


@dataclass(frozen=True, kw_only=True)
class ShapenetUnpairedSplitConfig(CliConfig):
    """Flags of ``python -m nepa3d.data.shapenet_unpaired_split`` (one field per flag)."""

    cache_root: str
    train_split: str
    eval_split: str
    out_json: str
    ratios: list[float]
    seed: int

    @classmethod
    def build_parser(cls) -> argparse.ArgumentParser:
        return build_parser()


def main(argv: list[str] | None = None) -> int:
    args = ShapenetUnpairedSplitConfig.parse(argv)
    bad = check_ratios(args.ratios)
    if bad:
        return fail(PROG, bad)
    out_dir = os.path.dirname(os.path.abspath(args.out_json))
    blocker = file_in_the_way(out_dir)
    if blocker is not None:
        return fail(PROG, f"--out_json {args.out_json}: {blocker} is a file, not a folder")
    if os.path.isdir(args.out_json):
        return fail(PROG, f"--out_json {args.out_json}: is a folder, not a file")
    try:
        doc = build_split(args.cache_root, args.train_split, args.eval_split, args.ratios,
                          args.seed)
    except SplitOverlap as e:
        return fail(PROG, e, code=1)
    except (ValueError, CacheError) as e:
        return fail(PROG, e)
    if not doc["records"]:
        return fail(PROG, f"no .npz under {args.cache_root}/{{{args.train_split},"
                          f"{args.eval_split}}}/*/")
    if doc["meta"]["listed_from"] == "folders":
        print(f"[{PROG}] note: {args.cache_root} has no file records (_meta/cache_records.tsv); "
              "its splits were listed from the folders", file=sys.stderr)
    atomic_write_json(args.out_json, doc, sort_keys=False, default=None)
    print(f"[{PROG}] counts={json.dumps(doc['meta']['counts'])} -> {args.out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
