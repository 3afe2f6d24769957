"""What the MLflow tracker logs of a job, as plain data: the tracking URI and store, run and source
names, the repository head, DVC's experiment tags, a job's ``outputs`` folders and epoch log, its
params (args, matrix row, id), its checkpoint's sha256, and whether a run already describes a
result. No MLflow call here: :mod:`benchmark.tracking` logs.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional

from . import mlflow_names as names
from .expand import Job
from .mlflow_names import DIGEST_TAG, metric_name

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
_SQLITE = "sqlite:///"
_MAX_PARAM_LEN = 6000
_MAX_TAG_LEN = 5000
#: What a training job leaves in its ``outputs`` folder: the epoch log (one
#: JSON object per finished epoch: ``epoch``, ``step``, ``loss``, ...), the checkpoint, and plots
#: (pretrain's ``LOG_NAME`` and ``RUN_FILES``; tests/test_benchmark_tracking_live.py checks they agree).
TRAIN_LOG = "train_log.jsonl"
CHECKPOINT = "last.pt"
PLOT_SUFFIXES = (".png", ".svg")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def store_of(uri: str) -> str:
    """``uri`` with a relative SQLite or file path made absolute: the same store gets one name
    whatever the working directory (recorded in ``<id>.job.json``)."""
    if uri.startswith(_SQLITE) and not uri[len(_SQLITE):].startswith("/"):
        return _SQLITE + os.path.abspath(uri[len(_SQLITE):])
    if "://" not in uri:
        return os.path.abspath(uri)
    return uri


def sanitize_key(key: str) -> str:
    """MLflow name of a report column (:func:`benchmark.mlflow_names.metric_name`)."""
    return metric_name(key)


def run_name(job: Job) -> str:
    """``suite/ckpt=scratch,query=pool,eval_seed=0``."""
    tags = ",".join(f"{k}={v}" for k, v in job.tags.items())
    return f"{job.suite}/{tags}" if tags else job.suite


def repo_head(start: Path | None = None) -> Optional[str]:
    """Commit of HEAD read from ``.git`` files (no git subprocess); None outside a repository."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        git = folder / ".git"
        if git.is_file():  # worktree: "gitdir: <path>"
            text = git.read_text().strip()
            if text.startswith("gitdir:"):
                git = (folder / text.split(":", 1)[1].strip()).resolve()
        if not git.is_dir():
            continue
        try:
            head = (git / "HEAD").read_text().strip()
        except OSError:
            return None
        if not head.startswith("ref:"):
            return head or None
        ref = head.split(":", 1)[1].strip()
        common = git
        if (git / "commondir").exists():
            common = (git / (git / "commondir").read_text().strip()).resolve()
        for base in (git, common):
            if (base / ref).exists():
                return (base / ref).read_text().strip() or None
            packed = base / "packed-refs"
            if packed.exists():
                for line in packed.read_text().splitlines():
                    parts = line.split()
                    if len(parts) == 2 and parts[1] == ref:
                        return parts[0]
        return None
    return None


def source_name(job: Job) -> str:
    """``mlflow.source.name``: the module a job runs (``python -m m``), else its program."""
    argv = job.argv
    if len(argv) >= 3 and argv[1] == "-m":
        return argv[2]
    if len(argv) >= 2 and Path(argv[0]).name.startswith("python"):
        return argv[1]
    return argv[0] if argv else job.suite


def dvc_tags(environ: Optional[dict] = None) -> dict[str, str]:
    """``dvc.exp_name`` / ``dvc.exp_baseline_rev`` when running inside ``dvc exp run``."""
    env = os.environ if environ is None else environ
    return {tag: env[var] for var, tag in names.DVC_ENV.items() if env.get(var)}


def output_dirs(job: Job) -> list[Path]:
    """The folders a job writes besides its result (its ``outputs`` args naming a path)."""
    out = []
    for arg in job.outputs:
        value = job.args.get(arg)
        if isinstance(value, str) and value:
            out.append(Path(value))
    return out


def read_epochs(path: Path) -> dict[int, dict[str, float]]:
    """``{epoch: {name: value}}`` of a training job's epoch log (finite numbers only; a torn or
    odd line is skipped)."""
    out: dict[int, dict[str, float]] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        epoch = rec.get("epoch") if isinstance(rec, dict) else None
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            continue
        out[epoch] = {k: float(v) for k, v in rec.items() if k != "epoch" and isinstance(v, (int, float))
                      and not isinstance(v, bool) and math.isfinite(v)}
    return out


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)
    return text[:_MAX_PARAM_LEN]


def _params(job: Job) -> list:
    """The job's args and matrix row (``tag.<axis>``) and id, as MLflow params."""
    from mlflow.entities import Param

    params: dict[str, str] = {}
    for key, value in job.args.items():
        params[metric_name(key)] = _param_value(value)
    for key, value in job.tags.items():
        params[metric_name(f"tag.{key}")] = _param_value(value)
    params[names.JOB_TAG] = job.job_id
    return [Param(k, v) for k, v in params.items()]


def _checkpoint_sha256(job: Job) -> Optional[str]:
    """sha256 of the checkpoint (``last.pt``) in the job's first output folder that has one."""
    from .inputs import MISSING, fingerprint_path

    for folder in output_dirs(job):
        found = fingerprint_path(folder / CHECKPOINT)
        if found != MISSING and found.startswith("sha256:"):
            return found.split(":", 1)[1]
    return None


def _describes(run, result_sha256: str) -> bool:
    """Whether ``run`` is a completely logged done run of the result file with that digest."""
    tags = run.data.tags
    return (run.info.status == "FINISHED" and tags.get(names.STATUS_TAG) == "done"
            and tags.get(DIGEST_TAG) == result_sha256)
