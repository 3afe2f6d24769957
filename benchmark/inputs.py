"""Content fingerprints of a job's input files: a finished job whose inputs changed is stale.

A suite lists the args that name input files (``inputs: [ckpt]``). The job id stays a function of
the args alone (the result path is stable), but the runner records each input's fingerprint in
``<id>.job.json`` when it launches the job; if a file's content differs later (a re-trained
checkpoint at the same path), the result is stale: moved aside and re-run, and flagged in reports.

Files are fingerprinted by sha256 of their bytes (memoized per path, size and mtime); directories
by a sha256 of their listing (relative path, size, mtime), which is cheap but time-based.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Optional

from .expand import Job

MISSING = "missing"
_memo: dict[tuple[str, int, int], str] = {}
_memo_lock = threading.Lock()


def fingerprint_path(path: Path | str) -> str:
    """``sha256:<hex>`` of a file, ``dir-sha256:<hex>`` of a directory listing, or ``missing``."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return MISSING
    if p.is_dir():
        h = hashlib.sha256()
        for root, dirs, files in os.walk(p):
            dirs.sort()
            for name in sorted(files):
                f = Path(root) / name
                try:
                    fst = f.stat()
                except OSError:
                    continue
                h.update(f"{f.relative_to(p)}\0{fst.st_size}\0{fst.st_mtime_ns}\n".encode())
        return f"dir-sha256:{h.hexdigest()}"
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    with _memo_lock:
        if key in _memo:
            return _memo[key]
    h = hashlib.sha256()
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    digest = f"sha256:{h.hexdigest()}"
    with _memo_lock:
        _memo[key] = digest
    return digest


def input_paths(job: Job) -> dict[str, str]:
    """``{arg: path}`` for the job's declared inputs that it actually passes."""
    out = {}
    for name in job.inputs:
        value = job.args.get(name)
        if value is not None and value is not False and not isinstance(value, (list, bool)):
            out[name] = str(value)
    return out


def fingerprints(job: Job) -> dict[str, dict[str, str]]:
    """``{arg: {"path": ..., "fingerprint": ...}}`` now."""
    return {name: {"path": path, "fingerprint": fingerprint_path(path)}
            for name, path in input_paths(job).items()}


def recorded_fingerprints(job: Job) -> Optional[dict[str, dict[str, str]]]:
    """Fingerprints stored in ``<id>.job.json`` when the job was launched (None if unknown)."""
    try:
        record = json.loads(job.job_json.read_text())
    except (OSError, ValueError):
        return None
    inputs = record.get("inputs")
    return inputs if isinstance(inputs, dict) else None


def stale_inputs(job: Job) -> list[str]:
    """Declared inputs whose content changed since the job ran ([] when nothing is recorded)."""
    if not job.inputs:
        return []
    before = recorded_fingerprints(job)
    if before is None:
        return []
    now = fingerprints(job)
    return sorted(name for name, info in now.items()
                  if name in before and before[name].get("fingerprint") != info["fingerprint"])
