"""Write a job's result JSON (the envelope :mod:`benchmark.results` validates), atomically,
with provenance.

    {"schema_version": 1, "task", "args", "metrics", "baselines", "flags", "provenance"}

The benchmark engine validates these files (``benchmark.results`` / ``benchmark.schemas``);
this module is the producer side used by every nepa3d CLI. ``provenance.code`` says which code
computed the result: the running module, its ``PROTOCOL_VERSION`` and the sha256 of its in-repo
import closure (:func:`benchmark.code_identity.code_identity`), which reports compare with the
checkout's.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Callable, TextIO

from nepa3d.data.corpus_meta import read_cache_corpus

RESULT_SCHEMA_VERSION = 1


def sha256_file(path: str | os.PathLike, limit_bytes: int | None = None) -> str | None:
    p = Path(path)
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# Tracked files the pipeline itself rewrites while it runs: changes there are results, not code.
PIPELINE_OWNED = ("dvc.lock", "reports", "metrics")


def git_state(cwd: str | os.PathLike | None = None) -> tuple[str | None, bool | None]:
    """(HEAD sha, dirty) of the repository holding this code, or (None, None) outside git.

    ``dirty`` means uncommitted changes to tracked files other than the pipeline-owned ones
    (``dvc.lock``, ``reports/``, ``metrics/``), which ``dvc repro`` updates between stages.
    """
    cwd = cwd or Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10).stdout.strip() or None
        excludes = [f":(exclude){p}" for p in PIPELINE_OWNED]
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                 *excludes], cwd=cwd,
                                capture_output=True, text=True, timeout=10).stdout
        return rev, bool(status.strip()) if rev else None
    except (OSError, subprocess.SubprocessError):
        return None, None


def versions() -> dict:
    import numpy
    out = {"python": platform.python_version(), "numpy": numpy.__version__}
    try:
        import torch
        out["torch"] = torch.__version__
    except ImportError:
        pass
    return out


def _clean(x):
    """JSON-safe: numpy scalars to Python, NaN/inf to None (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        try:
            x = x.item()
        except (ValueError, AttributeError):
            return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def code_provenance() -> dict | None:
    """``provenance.code`` of the module this process runs as ``__main__`` (``python -m``, or a
    persistent pool worker's in-process job); None for anything else (a test calling ``main``)."""
    try:
        from benchmark.code_identity import code_identity, main_module
    except ImportError:
        return None
    module = main_module()
    return code_identity(module) if module else None


class ResultTimer:
    """Records the start time and the code (read when the job starts, the code it imported);
    ``provenance()`` fills wall time at write."""

    def __init__(self):
        self.t0 = time.time()
        self.started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.code = code_provenance()

    def provenance(self, *, seed=None, ckpt=None, cache_root=None, device="cpu", extra=None) -> dict:
        rev, dirty = git_state()
        prov = {"git_rev": rev, "dirty": dirty,
                "ckpt": str(Path(ckpt).resolve()) if ckpt else None,
                "ckpt_sha256": sha256_file(ckpt) if ckpt else None,
                "cache_root": str(Path(cache_root).resolve()) if cache_root else None,
                "cache_manifest_sha256": cache_manifest_sha256(cache_root) if cache_root else None,
                "corpus": read_cache_corpus(cache_root),  # which corpus the cache came from
                "seed": seed, "versions": versions(), "device": str(device),
                "host": platform.node(), "started": self.started,
                "wall_s": round(time.time() - self.t0, 3), "code": self.code}
        if extra:
            prov.update(extra)
        return prov


def cache_manifest_sha256(cache_root: str | os.PathLike) -> str | None:
    """Hash of the sorted relative paths and sizes of every .npz under the root: identifies
    which cache a result was computed on (cheap: no file contents are read)."""
    root = Path(cache_root)
    if not root.is_dir():
        return None
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.npz")):
        try:
            size = p.stat().st_size
        except OSError:
            continue
        h.update(f"{p.relative_to(root)}\t{size}\n".encode())
    return h.hexdigest()


def build_result(task: str, args: dict, metrics: dict, provenance: dict, *,
                 baselines: dict | None = None, flags: list[str] | None = None,
                 extra: dict | None = None, history: list[dict] | None = None) -> dict:
    """The result envelope (:mod:`benchmark.results`). ``history``: per-epoch records
    ``{"epoch": e, name: value, ...}`` that trackers log as metric series with ``step = epoch``."""
    out = {"schema_version": RESULT_SCHEMA_VERSION, "task": task, "args": _clean(dict(args)),
           "metrics": _clean(metrics), "baselines": _clean(baselines or {}),
           "flags": sorted(set(flags or [])), "provenance": _clean(provenance)}
    if extra:
        out["extra"] = _clean(extra)
    if history:
        out["history"] = [_clean(dict(r)) for r in history]
    return out


def public_mode(fd: int) -> None:
    """mkstemp creates 0600 files; give the final file the usual 0666 & ~umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)


def write_atomic(path: str | os.PathLike, write: Callable[[IO], object], *, binary: bool = False,
                 prefix: str = ".tmp_") -> Path:
    """Replace file ``path`` atomically with what ``write(f)`` writes to ``f`` (UTF-8 text, or
    bytes with ``binary``): a temp file ``<prefix>*`` in the same folder, then os.replace; a
    failed write leaves neither a partial file nor the temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=path.suffix, dir=path.parent)
    try:
        public_mode(fd)
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    return write_atomic(path, lambda f: f.write(text))


def write_json_atomic(obj: dict, path: str | os.PathLike) -> Path:
    def dump(f: TextIO) -> None:
        json.dump(obj, f, indent=2, allow_nan=False)
        f.write("\n")
    return write_atomic(path, dump)


def emit_result(result: dict, out_json: str | os.PathLike | None) -> None:
    """Print the result and, with ``out_json``, write it atomically (``[saved] <path>``)."""
    print(json.dumps(result, indent=2))
    if out_json:
        p = write_json_atomic(result, out_json)
        print(f"[saved] {p}")
