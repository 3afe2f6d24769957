"""Materialise an unpaired split view of a ShapeNet cache (reference §1.7).

Example::

    .venv/bin/python -u -m nepa3d.data.preprocess_shapenet_unpaired \\
        --src_cache_root data/shapenet_cache_v0 \\
        --split_json data/shapenet_unpaired_splits_v1.json \\
        --out_root data/shapenet_unpaired_cache_v1 \\
        --splits train_mesh train_pc train_udf eval --link_mode symlink

For each wanted record: ``<out_root>/<split>/<synset>/<inst>.npz`` -> the absolute source
``<abs src_cache_root>/<src_relpath>`` (symlink, hard link or copy). Missing sources are
counted; existing destinations are skipped unless ``--overwrite``.

Note on ``hardlink``: the migration (:mod:`nepa3d.data.migrate_add_pt_dist_pc_pool`)
rewrites source files atomically (new inode), so hard-linked views made *before* a migration
keep the old content; migrate first, or use ``symlink``, or re-materialise with
``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

PROG = "materialize"
LINK_MODES = ("symlink", "hardlink", "copy")
DEFAULT_SPLITS = ("train_mesh", "train_pc", "train_udf", "eval")


def _place(src: str, dst: str, mode: str) -> None:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if mode == "symlink":
        os.symlink(src, dst)
    elif mode == "hardlink":
        os.link(src, dst)
    else:
        tmp = f"{dst}.tmp.{os.getpid()}"
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)


def materialize(src_cache_root: str, split_json: str, out_root: str, splits, link_mode: str,
                overwrite: bool = False) -> dict:
    """Create the view; returns the summary written to ``_meta/split_source.json``."""
    if link_mode not in LINK_MODES:
        raise ValueError(f"link_mode must be one of {LINK_MODES}, got {link_mode!r}")
    with open(split_json, encoding="utf-8") as f:
        doc = json.load(f)
    records = doc.get("records") if isinstance(doc, dict) else None
    if not records:
        raise ValueError(f"{split_json}: no 'records'")
    wanted = set(splits)
    src_root = os.path.abspath(src_cache_root)
    created = skipped = missing = 0
    for rec in records:
        if rec["split"] not in wanted:
            continue
        syn, inst = rec["key"].split("/", 1)
        dst = os.path.join(out_root, rec["split"], syn, f"{inst}.npz")
        src = os.path.join(src_root, rec["src_relpath"])
        if not os.path.exists(src):
            missing += 1
            continue
        if os.path.lexists(dst):
            if not overwrite:
                skipped += 1
                continue
            os.remove(dst)
        _place(src, dst, link_mode)
        created += 1
    summary = {"src_cache_root": src_root, "split_json": os.path.abspath(split_json),
               "splits": sorted(wanted), "link_mode": link_mode, "created": created,
               "skipped": skipped, "missing": missing}
    meta = os.path.join(out_root, "_meta", "split_source.json")
    os.makedirs(os.path.dirname(meta), exist_ok=True)
    with open(meta, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="preprocess_shapenet_unpaired",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--src_cache_root", required=True)
    ap.add_argument("--split_json", required=True)
    ap.add_argument("--out_root", required=True)
    ap.add_argument("--splits", nargs="+", default=list(DEFAULT_SPLITS))
    ap.add_argument("--link_mode", choices=LINK_MODES, default="symlink")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    try:
        s = materialize(args.src_cache_root, args.split_json, args.out_root, args.splits,
                        args.link_mode, args.overwrite)
    except (ValueError, OSError) as e:
        print(f"[{PROG}] error: {e}", file=sys.stderr)
        return 2
    print(f"[{PROG}] created={s['created']} skipped={s['skipped']} missing={s['missing']}")
    if args.link_mode == "hardlink":
        print(f"[{PROG}] note: hard links do not follow later atomic rewrites of the source "
              "(migrate the source first)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
