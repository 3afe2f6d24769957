"""Write a job's result JSON (the envelope of :mod:`benchmark.envelope`), atomically,
with provenance.

    {"schema_version": 1, "task", "args", "metrics", "baselines", "flags", "provenance"}

The envelope (fields, schema version, validation, JSON text) is defined once in
:mod:`benchmark.envelope`, files are written by :mod:`benchmark.atomic`; this module adds what
every nepa3d CLI records beside its metrics (git state, versions, checkpoint and cache hashes). ``provenance.code`` says which code
computed the result: the running module, its ``PROTOCOL_VERSION`` and the sha256 of its in-repo
import closure (:func:`benchmark.code_identity.code_identity`), which reports compare with the
checkout's.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import time
from pathlib import Path

from benchmark.atomic import atomic_write
from benchmark.envelope import build_envelope, dump_json
from nepa3d.data.corpus_meta import read_cache_corpus


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
    """The result envelope (:func:`benchmark.envelope.build_envelope`: canonical key order,
    JSON-safe, validated). ``history``: per-epoch records ``{"epoch": e, name: value, ...}`` that
    trackers log as metric series with ``step = epoch``."""
    return build_envelope(task, args, metrics, provenance, baselines=baselines, flags=flags,
                          extra=extra, history=history)


def write_json_atomic(obj: dict, path: str | os.PathLike) -> Path:
    """Write ``obj`` atomically as the research side's JSON (:func:`benchmark.envelope.dump_json`:
    indent 2, insertion order, strict)."""
    return atomic_write(path, lambda f: dump_json(obj, f))


def emit_result(result: dict, out_json: str | os.PathLike | None) -> None:
    """Print the result and, with ``out_json``, write it atomically (``[saved] <path>``)."""
    print(json.dumps(result, indent=2))
    if out_json:
        p = write_json_atomic(result, out_json)
        print(f"[saved] {p}")
