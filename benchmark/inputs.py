"""Content fingerprints of a job's input files: a finished job whose inputs changed is stale.

A suite lists the args that name input files (``inputs: [ckpt]``). The job id stays a function of
the args alone (the result path is stable), but the runner records each input's fingerprint in
``<id>.job.json`` when it launches the job; if a file's content differs later (a re-trained
checkpoint at the same path), the result is stale: moved aside and re-run, and flagged in reports.

Files are fingerprinted by sha256 of their bytes (memoized per path, size and mtime); directories
by a sha256 of their listing (relative path, size, mtime), which is cheap but time-based.

A suite may also list the args that name paths a job writes besides its result JSON (``outputs:
[save_dir]``, e.g. a checkpoint folder): a result whose outputs are gone is not finished. When
the engine accepts a result it records the sha256 of every file those outputs hold
(``outputs_sha256`` in ``<id>.job.json``; a folder's files, dot files left out); a recorded file
that is gone or whose bytes differ later (a truncated checkpoint) makes the result out of date:
its outputs are moved aside and the job runs again from a clean folder.
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


DEPENDS_PREFIX = "file:"


def input_paths(job: Job) -> dict[str, str]:
    """``{arg: path}`` for the job's declared inputs that it actually passes, plus
    ``{"file:<path>": path}`` for each of the suite's ``depends_on`` files."""
    out = {}
    for name in job.inputs:
        value = job.args.get(name)
        if value is not None and value is not False and not isinstance(value, (list, bool)):
            out[name] = str(value)
    for path in job.depends_on:
        out[f"{DEPENDS_PREFIX}{path}"] = path
    return out


def fingerprints(job: Job) -> dict[str, dict[str, str]]:
    """``{arg: {"path": ..., "fingerprint": ...}}`` now."""
    return {name: {"path": path, "fingerprint": fingerprint_path(path)}
            for name, path in input_paths(job).items()}


def recorded_fingerprints(job: Job) -> Optional[dict[str, dict[str, str]]]:
    """Fingerprints stored in ``<id>.job.json`` when the job was launched (None if unknown)."""
    inputs = _recorded(job, "inputs")
    return inputs if isinstance(inputs, dict) else None


def _recorded(job: Job, field: str):
    """Field ``field`` of ``<id>.job.json`` (None when the record is absent or unreadable); the
    runner writes it (:mod:`benchmark.records`, which builds on this module)."""
    try:
        record = json.loads(job.job_json.read_text())
    except (OSError, ValueError):
        return None
    return record.get(field) if isinstance(record, dict) else None


def stale_inputs(job: Job) -> list[str]:
    """Declared inputs whose content changed since the job ran ([] when nothing is recorded). A
    ``depends_on`` file the run did not record (declared later) counts as changed."""
    if not job.inputs and not job.depends_on:
        return []
    before = recorded_fingerprints(job)
    if before is None:
        return []
    now = fingerprints(job)
    return sorted(name for name, info in now.items()
                  if (name in before or name.startswith(DEPENDS_PREFIX))
                  and before.get(name, {}).get("fingerprint") != info["fingerprint"])


def output_paths(job: Job) -> dict[str, str]:
    """``{arg: path}`` of the declared outputs (``outputs: [arg]``) the job passes."""
    out = {}
    for name in job.outputs:
        value = job.args.get(name)
        if value is not None and value is not False and not isinstance(value, (list, bool)):
            out[name] = str(value)
    return out


def missing_outputs(job: Job) -> list[str]:
    """Declared outputs (``outputs: [arg]``) the job passes whose path does not exist now."""
    return sorted(name for name, path in output_paths(job).items() if not Path(path).exists())


#: The ``<id>.job.json`` field of the declared outputs' file digests at acceptance.
OUTPUT_DIGESTS = "outputs_sha256"


def output_digests(job: Job) -> dict[str, dict[str, str]]:
    """``{arg: {file: sha256 hex}}`` of every regular file a declared output holds now (the path
    itself when it is a file; a folder's files, recursively, dot files left out: temp files)."""
    out: dict[str, dict[str, str]] = {}
    for name, path in output_paths(job).items():
        root = Path(path)
        files = [root] if root.is_file() else sorted(
            p for p in root.rglob("*") if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(root).parts))
        out[name] = {str(f): _file_digest(f) for f in files}
    return out


def _file_digest(path: Path | str) -> str:
    """sha256 hex of a file (:func:`fingerprint_path`, memoized per size and mtime: the skip
    checks of one run hash a checkpoint once); ``missing`` when it is gone."""
    return fingerprint_path(path).removeprefix("sha256:")


def changed_outputs(job: Job) -> list[str]:
    """Declared outputs with a file recorded at acceptance that is gone or differs now ([] when
    nothing is recorded: results from before the record, or planted by hand)."""
    recorded = _recorded(job, OUTPUT_DIGESTS)
    if not isinstance(recorded, dict):
        return []
    declared = output_paths(job)
    return sorted(name for name, files in recorded.items()
                  if name in declared and isinstance(files, dict)
                  and any(_file_digest(path) != digest for path, digest in files.items()))


def out_of_date(job: Job) -> list[str]:
    """Why a finished result no longer counts: ``"<arg>"`` for each input whose content changed,
    ``"output:<arg>"`` for each declared output that is missing, ``"changed_output:<arg>"`` for
    each whose files differ from those accepted ([] when it still counts)."""
    missing = missing_outputs(job)
    return (stale_inputs(job) + [f"output:{name}" for name in missing]
            + [f"changed_output:{name}" for name in changed_outputs(job) if name not in missing])


def out_of_date_text(reasons: list[str]) -> str:
    """One line for :func:`out_of_date`'s reasons."""
    inputs = [r for r in reasons if ":" not in r or r.startswith(DEPENDS_PREFIX)]
    outputs = [r.split(":", 1)[1] for r in reasons if r.startswith("output:")]
    changed = [r.split(":", 1)[1] for r in reasons if r.startswith("changed_output:")]
    parts = []
    if inputs:
        parts.append(f"input changed since it ran: {', '.join(inputs)}")
    if outputs:
        parts.append(f"output missing: {', '.join(outputs)}")
    if changed:
        parts.append(f"output changed since the job wrote it: {', '.join(changed)}")
    return "; ".join(parts)
