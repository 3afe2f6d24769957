"""``<id>.job.json``: what the runner last recorded about a job (tags, argv, status, inputs, MLflow).

Written atomically by the runner process only. ``status`` is ``running`` while a runner has the
job's command in flight, then ``done`` / ``failed``; ``interrupted`` when a runner died with the
job unfinished (set by :mod:`benchmark.reconcile`). ``mlflow`` (``{"store", "run_id",
"result_sha256"}``) names the MLflow run that describes the result file with that sha256; with
``"status": "RUNNING"`` (and no digest), the run created when the job started
(:meth:`benchmark.tracking.MlflowTracker.start_job`), which :func:`write_record` keeps until the
job's end is logged (a runner that stops first leaves it for :mod:`benchmark.reconcile` to end).
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from .atomic import atomic_write_json
from .expand import Job


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_record(job: Job, **fields: Any) -> None:
    """Replace ``<id>.job.json`` with the job's identity plus ``fields`` (and the record of a run
    still open in MLflow, unless ``fields`` names one)."""
    if "mlflow" not in fields:
        mine = read_record(job).get("mlflow")
        if isinstance(mine, dict) and mine.get("status") == "RUNNING":
            fields = {**fields, "mlflow": mine}
    record = {"suite": job.suite, "job_id": job.job_id, "task": job.task, "tags": job.tags,
              "args": job.args, "argv": job.argv, "out_json": str(job.out_json), "log": str(job.log),
              "host": socket.gethostname(), "pid": os.getpid(), **fields}
    atomic_write_json(job.job_json, record)


def mlflow_record(tracker, run_id: str, result_sha256: Optional[str], **extra: Any) -> dict:
    """The ``mlflow`` field of ``<id>.job.json`` (``extra``: e.g. ``status="RUNNING"``)."""
    return {"store": tracker.store, "run_id": run_id, "result_sha256": result_sha256, **extra}


def read_record(job: Job) -> dict[str, Any]:
    """``<id>.job.json`` as a dict; {} when absent or unreadable."""
    try:
        record = json.loads(job.job_json.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def update_record(job: Job, **fields: Any) -> None:
    """Set ``fields`` in ``<id>.job.json``, keeping every other field (a fresh record if none)."""
    record = read_record(job)
    if not record:
        write_record(job, **fields)
        return
    record.update(fields)
    atomic_write_json(job.job_json, record)


def file_sha256(path: Path) -> str:
    """sha256 hex of a file's bytes (a result JSON: small)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
