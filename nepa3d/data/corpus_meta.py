"""Where a cache's data came from: the corpus record kept in ``<cache>/_meta/corpus.json``.

The preprocessors call ``write_cache_corpus(out_root, describe_source(<input root>))`` after a
successful run; result writers read it back with :func:`read_cache_corpus`, so every result
says which corpus (the embedded procedural one, with its generator arguments, or a real
data set) produced it.

:func:`describe_source` of a data-set root (a ShapeNetCore.v2 folder or a ScanObjectNN h5
folder such as ``.../h5_files/main_split``)::

    synthetic: {"synthetic": true, "name": "embedded procedural corpus (nepa3d.data.synthetic)",
                "generator": "nepa3d.data.synthetic", "args": {...generator args...},
                "variant": "shapenet" | "main_split" | "main_split_nobg" | null,
                "source": "<abs root>", "corpus_json": "<abs path of the generator's corpus.json>"}
    otherwise: {"synthetic": false, "name": "ShapeNetCore.v2" | "ScanObjectNN (main_split_nobg)" | ...,
                "variant": "shapenet" | "<h5_files sub-folder>" | null, "source": "<abs root>"}

The synthetic corpus is recognised by the generator's ``corpus.json`` in the root or one of
its first 4 parents (the root must lie inside a path that file lists), or by the
``.nepa3d_synthetic`` marker in a ShapeNetCore.v2 folder.

Every preprocessing run also leaves ``<cache>/_meta/<prog>_run.json``
(:func:`write_run_record`): its profile digest, its ``--max_failures`` allowance, the inputs
that failed and why, its counts and its exit code (:func:`run_verdict` decides the code).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from benchmark.atomic import atomic_write_json

GENERATOR = "nepa3d.data.synthetic"
SYNTHETIC_NAME = "embedded procedural corpus (nepa3d.data.synthetic)"
MARKER = ".nepa3d_synthetic"  # = nepa3d.data.synthetic.MARKER (not imported: no trimesh needed here)
META_DIR = "_meta"
CACHE_CORPUS = "corpus.json"
MAX_PARENTS = 4


# --------------------------------------------------------------------------- describe a source


def _load_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _corpus_variant_dirs(corpus: dict) -> dict[str, str]:
    """``{variant: folder relative to the corpus root}`` of a generator corpus.json (also for
    files written before the scan variants were recorded)."""
    out: dict[str, str] = {}
    paths = corpus.get("paths") or {}
    if paths.get("shapenet"):
        out["shapenet"] = str(paths["shapenet"])
    for name, rec in (corpus.get("variants") or {}).items():
        if isinstance(rec, dict) and rec.get("path"):
            out[str(name)] = str(rec["path"])
    if not any(k != "shapenet" for k in out):
        for key in ("scan_train", "scan_test"):
            if paths.get(key):
                folder = os.path.dirname(os.path.normpath(str(paths[key])))
                out[os.path.basename(folder)] = folder
    return {k: os.path.normpath(v) for k, v in out.items()}


def _within(rel: str, folder: str) -> bool:
    return rel == folder or rel.startswith(folder + os.sep)


def _synthetic_match(root: Path) -> tuple[Path, dict, str | None] | None:
    """``(corpus.json path, its content, variant)`` when ``root`` lies in a generated corpus."""
    for folder in [root, *list(root.parents)[:MAX_PARENTS]]:
        path = folder / "corpus.json"
        corpus = _load_json(path) if path.is_file() else None
        if not corpus or corpus.get("generator") != GENERATOR:
            continue
        rel = os.path.normpath(os.path.relpath(root, folder))
        dirs = _corpus_variant_dirs(corpus)
        for variant, sub in dirs.items():
            if _within(rel, sub):
                return path, corpus, variant
        if rel == "." or any(_within(sub, rel) for sub in dirs.values()):
            return path, corpus, None  # a folder above the variants (e.g. the corpus root)
    return None


def _inferred_name(root: Path) -> tuple[str, str | None]:
    """``(name, variant)`` of a real data-set root, from its folder names."""
    parts = root.parts
    for i in range(len(parts) - 1, -1, -1):
        p = parts[i]
        if p.lower().startswith("shapenetcore"):
            return p, "shapenet"
        if p == "h5_files" and i + 1 < len(parts):
            return f"ScanObjectNN ({parts[i + 1]})", parts[i + 1]
    for i in range(len(parts) - 1, -1, -1):
        if "scanobjectnn" in parts[i].lower():
            sub = parts[i + 1] if i + 1 < len(parts) and parts[i + 1] != "h5_files" else None
            return ("ScanObjectNN" + (f" ({sub})" if sub else "")), sub
    if root.name.startswith("main_split") or root.name.startswith("split"):
        return f"ScanObjectNN ({root.name})", root.name
    return root.name or str(root), None


def describe_source(root: str | os.PathLike) -> dict:
    """Describe the data set at ``root`` (see the module docstring for the two shapes)."""
    src = Path(os.path.abspath(root))
    match = _synthetic_match(src)
    if match is not None:
        path, corpus, variant = match
        return {"synthetic": True, "name": SYNTHETIC_NAME, "generator": GENERATOR,
                "args": corpus.get("args"), "variant": variant, "source": str(src),
                "corpus_json": str(path)}
    if (src / MARKER).is_file():
        return {"synthetic": True, "name": SYNTHETIC_NAME, "generator": GENERATOR, "args": None,
                "variant": "shapenet", "source": str(src), "corpus_json": None}
    name, variant = _inferred_name(src)
    return {"synthetic": False, "name": name, "variant": variant, "source": str(src)}


# --------------------------------------------------------------------------- cache record


def cache_corpus_path(cache_root: str | os.PathLike) -> Path:
    return Path(cache_root) / META_DIR / CACHE_CORPUS


def write_cache_corpus(out_root: str | os.PathLike, desc: dict) -> Path:
    """Write ``desc`` to ``<out_root>/_meta/corpus.json`` atomically (temp file + os.replace)."""
    return _write_meta_json(cache_corpus_path(out_root), desc)


def _write_meta_json(path: Path, doc: dict) -> Path:
    return atomic_write_json(path, doc, indent=1, sort_keys=False, default=None, mode=0o644)


# --------------------------------------------------------------------------- run record


def run_record_path(cache_root: str | os.PathLike, prog: str) -> Path:
    return Path(cache_root) / META_DIR / f"{prog}_run.json"


def run_verdict(n_failed: int, max_failures: int, n_files: int) -> str | None:
    """Why a preprocessing run must exit non-zero, or None: an empty result always; more
    failed inputs than ``--max_failures`` allows."""
    if n_files == 0:
        return "no cache file was produced (an empty result is always an error)"
    if n_failed > max_failures:
        return (f"{n_failed} input(s) failed, more than --max_failures {max_failures} allows "
                "(each is listed above)")
    return None


def write_run_record(out_root: str | os.PathLike, prog: str, *, profile: str,
                     max_failures: int, failures: list[tuple[str, str]], counts: dict,
                     exit_code: int) -> Path:
    """``<out_root>/_meta/<prog>_run.json``: the last run's profile digest, failure allowance,
    failed inputs (``[{"input", "reason"}]``), counts and exit code."""
    doc = {"prog": prog, "profile": profile, "max_failures": int(max_failures),
           "failed": [{"input": i, "reason": r} for i, r in failures],
           "counts": dict(counts), "exit_code": int(exit_code)}
    return _write_meta_json(run_record_path(out_root, prog), doc)


def _first_npz(root: Path) -> Path | None:
    """The first ``.npz`` under ``root`` in sorted walk order (stops at the first hit)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        for name in sorted(filenames):
            if name.endswith(".npz") and not name.startswith("."):
                return Path(dirpath) / name
    return None


def read_cache_corpus(cache_root: str | os.PathLike | None, _depth: int = 0) -> dict | None:
    """The corpus record of a cache, or None when none can be found.

    Tried in order: ``_meta/corpus.json`` of the cache root (as given and its realpath) and of
    its first 2 parents (a split sub-folder given as the root); for a materialised view
    (:mod:`nepa3d.data.preprocess_shapenet_unpaired`), the source cache recorded in its
    ``_meta/split_source.json``; finally the parents (up to 4) of the realpath of the first
    ``.npz`` under the root (a view whose files are symlinks into the source cache).
    """
    if not cache_root or _depth > 3:
        return None
    given = Path(os.path.abspath(cache_root))
    if not given.is_dir():
        return None
    real = Path(os.path.realpath(given))
    seen: set[Path] = set()
    for base in (given, real):
        for folder in [base, *list(base.parents)[:2]]:
            path = cache_corpus_path(folder)
            if path in seen:
                continue
            seen.add(path)
            doc = _load_json(path) if path.is_file() else None
            if doc is not None:
                return doc
    for base in (given, real):
        view = _load_json(base / META_DIR / "split_source.json")
        src = view.get("src_cache_root") if view else None
        if src and os.path.realpath(src) != str(real):
            doc = read_cache_corpus(src, _depth + 1)
            if doc is not None:
                return doc
    first = _first_npz(given)
    if first is not None:
        target = Path(os.path.realpath(first))
        if target != first:
            for folder in list(target.parents)[:MAX_PARENTS]:
                path = cache_corpus_path(folder)
                doc = _load_json(path) if path.is_file() else None
                if doc is not None:
                    return doc
    return None
