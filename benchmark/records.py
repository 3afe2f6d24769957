"""``<id>.job.json``: what the runner last recorded about a job (tags, argv, status, inputs, MLflow).

Written atomically by the runner process only. ``status`` is ``running`` while a runner has the
job's command in flight, then ``done`` / ``failed``; ``interrupted`` when a runner died with the
job unfinished (set by :mod:`benchmark.reconcile`). ``mlflow`` (``{"store", "run_id",
"result_sha256"}``) names the MLflow run that describes the result file with that sha256; with
``"status": "RUNNING"`` (and no digest), the run created when the job started
(:meth:`benchmark.tracking.MlflowTracker.start_job`), which :func:`write_record` keeps until the
job's end is logged (a runner that stops first leaves it for :mod:`benchmark.reconcile` to end).
``result_sha256`` (top level) is the sha256 of the result file as the engine accepted it (a job
that finished, a twin's result adopted, ``accept-code``'s rewrite): :func:`result_changed` says
when the file on disk is no longer that one (edited by hand, replaced by another run's copy).
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
from .inputs import OUTPUT_DIGESTS, output_digests


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


#: The record's field holding the sha256 of the result file as the engine accepted it.
RESULT_DIGEST = "result_sha256"


def accepted_digests(job: Job) -> dict[str, Any]:
    """The ``<id>.job.json`` fields of a result the engine accepts: the result file's sha256 and
    the files of its declared outputs (what :func:`result_changed` and
    :func:`benchmark.inputs.changed_outputs` compare with later)."""
    fields: dict[str, Any] = {RESULT_DIGEST: file_sha256(job.out_json)}
    if job.outputs:
        fields[OUTPUT_DIGESTS] = output_digests(job)
    return fields


def result_changed(job: Job) -> Optional[str]:
    """Why ``job``'s result file is not the one its job wrote, or None: the sha256 recorded in
    ``<id>.job.json`` when the engine accepted it differs from the file's now. None as well when
    nothing is recorded (results from before the field, or planted by hand without a record)."""
    recorded = read_record(job).get(RESULT_DIGEST)
    if not isinstance(recorded, str):
        return None
    try:
        now = file_sha256(job.out_json)
    except OSError:
        return None
    if now == recorded:
        return None
    return (f"{job.out_json}: changed since its job wrote it (sha256 {now[:12]}, recorded "
            f"{recorded[:12]} in {job.job_json.name}); `benchmark run` moves it aside and runs "
            "the job again")


def reaccept_result(job: Job) -> None:
    """After the engine itself rewrote ``job``'s result (``accept-code``): record the new file's
    sha256 where a digest was recorded, so the rewrite is not taken for a changed result."""
    if RESULT_DIGEST in read_record(job):
        update_record(job, **{RESULT_DIGEST: file_sha256(job.out_json)})
