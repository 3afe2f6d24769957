"""Materialise an unpaired split view of a ShapeNet cache (as the original's
``preprocess_shapenet_unpaired.py`` does, KohsukeIde/3D-NEPA @ 737d98f).

Example::

    .venv/bin/python -u -m nepa3d.data.preprocess_shapenet_unpaired \\
        --src_cache_root data/shapenet_cache_v0 \\
        --split_json data/shapenet_unpaired_splits_v1.json \\
        --out_root data/shapenet_unpaired_cache_v1 \\
        --splits train_mesh train_pc train_udf eval --link_mode symlink

For each wanted record: ``<out_root>/<split>/<synset>/<inst>.npz`` -> the absolute source
``<abs src_cache_root>/<src_relpath>`` (symlink, hard link or copy). Existing destinations that
already lead to their source are skipped unless ``--overwrite``; one that leads elsewhere is
replaced. A view entry the split JSON does not put there (a shape now in another split, or gone)
is removed from every split folder of the view, so a shape sits in one split of the view.

A missing source is a failure: one ``FAIL <source>: ...`` line each on stderr; more than
``--max_failures`` (default 0) of them, or no record of ``--splits`` at all, exit 1. Bad
arguments and an output folder that is a file exit 2. ``_meta/split_source.json`` records the
counts, the missing sources and the allowance.

Note on ``hardlink``: the migration (:mod:`nepa3d.data.migrate_add_pt_dist_pc_pool`)
rewrites source files atomically (new inode), so hard-linked views made *before* a migration
keep the old content until the next materialisation, which replaces them (their content no
longer matches the source); or use ``symlink``.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmark.atomic import atomic_write_file
from nepa3d.cli.args import make_parser, fail, nonneg_int
from nepa3d.data.cache import file_in_the_way, list_cache_files, remove_cache_files
from nepa3d.data.corpus_meta import run_verdict
from nepa3d.cli.config import CliConfig

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
        atomic_write_file(dst, lambda tmp: shutil.copy2(src, tmp))


def leads_to(dst: str, src: str) -> bool:
    """Whether the view entry ``dst`` gives the content of ``src`` (a link to it, the same
    inode, or an identical copy)."""
    if os.path.islink(dst):
        return os.path.realpath(dst) == os.path.realpath(src)
    if not os.path.isfile(dst):
        return False
    return os.path.samefile(src, dst) or filecmp.cmp(src, dst, shallow=True)


def view_relpath(rec: dict) -> str:
    """``<split>/<synset>/<inst>.npz`` of a split record, relative to the view root."""
    return f"{rec['split']}/{rec['key']}.npz"


def view_splits(out_root: str) -> list[str]:
    """The split folders of an existing view (every folder but ``_meta`` and hidden ones)."""
    root = Path(out_root)
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir()
                  if d.is_dir() and not d.name.startswith(("_", ".")))


def read_split_records(split_json: str) -> list[dict]:
    with open(split_json, encoding="utf-8") as f:
        doc = json.load(f)
    records = doc.get("records") if isinstance(doc, dict) else None
    if not records:
        raise ValueError(f"{split_json}: no 'records'")
    return records


def materialize(src_cache_root: str, split_json: str, out_root: str, splits, link_mode: str,
                overwrite: bool = False, max_failures: int = 0) -> dict:
    """Create the view; returns the summary written to ``_meta/split_source.json``
    (``missing_sources``: the sources that do not exist)."""
    if link_mode not in LINK_MODES:
        raise ValueError(f"link_mode must be one of {LINK_MODES}, got {link_mode!r}")
    records = read_split_records(split_json)
    wanted = set(splits)
    src_root = os.path.abspath(src_cache_root)
    placed = {view_relpath(r): r for r in records}
    stale = [rel for rel in list_cache_files(out_root, view_splits(out_root)) if rel not in placed]
    removed = remove_cache_files(out_root, stale)
    created = skipped = 0
    missing: list[str] = []
    for rec in records:
        if rec["split"] not in wanted:
            continue
        dst = os.path.join(out_root, *view_relpath(rec).split("/"))
        src = os.path.join(src_root, rec["src_relpath"])
        if not os.path.exists(src):
            missing.append(src)
            if os.path.lexists(dst):
                os.remove(dst)
            continue
        if os.path.lexists(dst):
            if not overwrite and leads_to(dst, src):
                skipped += 1
                continue
            os.remove(dst)
        _place(src, dst, link_mode)
        created += 1
    summary = {"src_cache_root": src_root, "split_json": os.path.abspath(split_json),
               "splits": sorted(wanted), "link_mode": link_mode, "created": created,
               "skipped": skipped, "missing": len(missing), "removed": removed,
               "max_failures": int(max_failures), "missing_sources": missing}
    meta = os.path.join(out_root, "_meta", "split_source.json")
    os.makedirs(os.path.dirname(meta), exist_ok=True)
    with open(meta, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    return summary


def build_parser() -> argparse.ArgumentParser:
    ap = make_parser("nepa3d.data.preprocess_shapenet_unpaired", __doc__.split("\n\n")[0])
    ap.add_argument("--src_cache_root", required=True,
                    help="paired ShapeNet cache the views are taken from")
    ap.add_argument("--split_json", required=True,
                    help="split JSON written by nepa3d.data.shapenet_unpaired_split")
    ap.add_argument("--out_root", required=True,
                    help="folder to fill with <split>/<synset>/<model>.npz views")
    ap.add_argument("--splits", nargs="+", default=list(DEFAULT_SPLITS),
                    help="splits of the JSON to materialise")
    ap.add_argument("--link_mode", choices=LINK_MODES, default="symlink",
                    help="how a view points at its source: symlink, hardlink or copy")
    ap.add_argument("--overwrite", action="store_true", help="replace existing view files")
    ap.add_argument("--max_failures", type=nonneg_int, default=0,
                    help="missing sources accepted before the run exits 1")
    return ap


@dataclass(frozen=True, kw_only=True)
class PreprocessShapenetUnpairedConfig(CliConfig):
    """Flags of ``python -m nepa3d.data.preprocess_shapenet_unpaired`` (one field per flag)."""

    src_cache_root: str
    split_json: str
    out_root: str
    splits: list[str]
    link_mode: str
    overwrite: bool
    max_failures: int

    @classmethod
    def build_parser(cls) -> argparse.ArgumentParser:
        return build_parser()


def main(argv: list[str] | None = None) -> int:
    args = PreprocessShapenetUnpairedConfig.parse(argv)
    blocker = file_in_the_way(args.out_root)
    if blocker is not None:
        return fail(PROG, f"--out_root {args.out_root}: {blocker} is a file, not a folder")
    try:
        s = materialize(args.src_cache_root, args.split_json, args.out_root, args.splits,
                        args.link_mode, args.overwrite, args.max_failures)
    except (ValueError, OSError, KeyError) as e:
        return fail(PROG, f"{type(e).__name__}: {e}" if isinstance(e, KeyError) else e)
    if s["removed"]:
        print(f"[{PROG}] removed {s['removed']} view file(s) the split JSON no longer puts there")
    for src in s["missing_sources"]:
        print(f"[{PROG}] FAIL {src}: source file missing", file=sys.stderr)
    print(f"[{PROG}] created={s['created']} skipped={s['skipped']} missing={s['missing']}")
    if args.link_mode == "hardlink":
        print(f"[{PROG}] note: hard links do not follow later atomic rewrites of the source "
              "(migrate the source first)", file=sys.stderr)
    verdict = run_verdict(s["missing"], args.max_failures, s["created"] + s["skipped"])
    if verdict:
        return fail(PROG, verdict, code=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
