"""Bring locks, ``<id>.job.json`` marks and MLflow in line with the results on disk.

A runner killed outright (SIGKILL, OOM killer, a lost node; SIGINT/SIGTERM take the interrupt path
instead) leaves its locks, ``status: running`` marks, and jobs whose commands finished after it
died: valid results that no MLflow run describes and that the next run skips. The runner calls
:func:`reconcile` at the end of every run, over the run's jobs:

* a stale lock (see :mod:`benchmark.locks`) is removed;
* a ``running`` mark whose job holds no live lock becomes ``done`` (the job has a valid result)
  or ``interrupted`` (it has none);
* an MLflow run still RUNNING for a job no runner holds (its runner stopped before logging the
  job's end; the record's ``mlflow.status``) becomes KILLED, unless the job's result is logged
  into a new run below (which replaces it);
* every valid result gets exactly one active MLflow run in its suite's experiment, tagged with the
  job id and the sha256 of the result file (:meth:`~benchmark.tracking.MlflowTracker.log_job`
  replaces the job's other runs). ``<id>.job.json`` records which run (``mlflow``: store, run id,
  digest); a result whose record matches costs one hash of the file and no MLflow call, so an
  all-skipped run does not even import MLflow.

A job held by a live lock is left alone (its holder records it). Everything else is done under the
job's lock, so a runner that starts the job meanwhile is never overwritten.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Optional

from .errors import ResultError, SuiteError
from .expand import Job
from .locks import JobLock, inspect_lock
from .records import (accepted_digests, file_sha256, mlflow_record, now_iso, read_record,  # noqa: F401
                      update_record)
from .results import load_result

#: The mark a running job gets when its runner died before it finished.
INTERRUPTED = "interrupted"


@dataclass
class Reconciled:
    """What :func:`reconcile` changed."""

    locks_removed: int = 0
    marks: Counter = field(default_factory=Counter)  # new status of fixed ``running`` marks
    logged: int = 0  # results without a recorded MLflow run, now logged (or matched to their run)
    killed: int = 0  # MLflow runs left RUNNING by a runner that stopped, now KILLED

    def line(self) -> Optional[str]:
        """``  reconciled: 2 result(s) ... synced to MLflow, 1 `running` mark(s) -> done, ...``; None
        if nothing changed."""
        parts = []
        if self.logged:
            parts.append(f"{self.logged} result(s) without a recorded MLflow run synced to MLflow")
        if self.killed:
            parts.append(f"{self.killed} MLflow run(s) left RUNNING -> KILLED")
        parts += [f"{n} `running` mark(s) -> {status}" for status, n in sorted(self.marks.items())]
        if self.locks_removed:
            parts.append(f"{self.locks_removed} stale lock(s) removed")
        return "  reconciled: " + ", ".join(parts) if parts else None


def _open_run(record: dict, tracker) -> Optional[str]:
    """The id of the MLflow run the record says is RUNNING in ``tracker``'s store, if any."""
    mine = record.get("mlflow")
    if (tracker is None or not tracker.enabled or not isinstance(mine, dict)
            or mine.get("status") != "RUNNING" or mine.get("store") != tracker.store):
        return None
    return mine.get("run_id")


def _in_sync(record: dict, tracker, digest: str) -> bool:
    mine = record.get("mlflow")
    return isinstance(mine, dict) and mine.get("store") == tracker.store and mine.get("result_sha256") == digest


def reconcile(jobs: Iterable[Job], finished: set[str], tracker=None) -> Reconciled:
    """Fix the locks, marks and MLflow runs of ``jobs``; ``finished``: ids of the jobs that have a
    valid, up-to-date result (judged by this run). ``tracker``: an
    :class:`~benchmark.tracking.MlflowTracker` or None (MLflow off: only locks and marks)."""
    out = Reconciled()
    for job in jobs:
        try:
            check = inspect_lock(job.lock)
        except SuiteError:  # not a lock file: the claim failed that job, naming the path
            continue
        if check is not None and check.live:
            continue
        record = read_record(job)
        done = job.job_id in finished
        marked = record.get("status") == "running"
        untracked = (done and tracker is not None and tracker.enabled
                     and not _in_sync(record, tracker, file_sha256(job.out_json)))
        dangling = not untracked and _open_run(record, tracker) is not None
        if check is None and not marked and not untracked and not dangling:
            continue
        lock = JobLock(job.lock)
        if lock.acquire() is not None:
            continue  # taken by a live runner meanwhile
        try:
            if check is not None:
                out.locks_removed += 1
            if marked and read_record(job).get("status") == "running":
                status = "done" if done else INTERRUPTED
                accepted = accepted_digests(job) if done else {}
                update_record(job, status=status, finished=now_iso(),
                              detail="finished while no runner watched it" if done else
                                     "its runner stopped before the job finished", **accepted)
                out.marks[status] += 1
            if untracked and _log(job, tracker):
                out.logged += 1
            run_id = None if untracked else _open_run(read_record(job), tracker)
            if run_id is not None and tracker.end_run(run_id, "KILLED"):
                update_record(job, mlflow={**read_record(job)["mlflow"], "status": "KILLED"})
                out.killed += 1
        finally:
            lock.release()
    return out


def _log(job: Job, tracker) -> bool:
    """Log ``job``'s result (re-read under the lock) as its MLflow run; record the run."""
    try:
        digest = file_sha256(job.out_json)
        envelope = load_result(job.out_json, job.task)
        end = job.out_json.stat().st_mtime
    except (OSError, ResultError):
        return False
    record = read_record(job)
    if _in_sync(record, tracker, digest):
        return False
    run_id = tracker.log_job(job, status="done", envelope=envelope, start=end - envelope.provenance.wall_s,
                             end=end, result_sha256=digest)
    if run_id is None:
        return False
    fresh = {} if record else {"status": "done", "detail": "result found on disk"}
    update_record(job, mlflow=mlflow_record(tracker, run_id, digest), **fresh)
    return True
