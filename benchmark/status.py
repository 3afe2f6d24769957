"""Completion status of a suite's jobs, read from the results directory (no side effects).

A job is ``running`` while a live lock holds it: a runner on this host whose pid is alive, or a
holder anywhere whose heartbeat is recent (:mod:`benchmark.locks`); a stale lock leaves it pending.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Optional

from .collect import invalid_results
from .expand import Job
from .inputs import out_of_date, out_of_date_text
from .locks import inspect_lock
from .reconcile import INTERRUPTED
from .records import read_record
from .suite import Suite


@dataclass
class JobState:
    job: Job
    state: str  # "complete" | "stale" | "invalid" | "running" | "failed" | "pending"
    detail: str = ""


def job_state(job: Job, invalid: Optional[str] = None) -> JobState:
    """State of one job: a valid result wins; then a live lock; then the last recorded outcome.

    ``invalid``: why the job's existing result is invalid (see :func:`collect.invalid_results`).
    """
    if job.out_json.exists():
        if invalid is None:
            stale = out_of_date(job)
            if stale:
                return JobState(job, "stale", f"{out_of_date_text(stale)} (re-run by the next run)")
            return JobState(job, "complete")
        return JobState(job, "invalid", f"{invalid} (moved aside and re-run by the next run)")
    lock = inspect_lock(job.lock)
    if lock is not None and lock.live:
        return JobState(job, "running")
    record = read_record(job)
    if record.get("status") == "failed":
        return JobState(job, "failed", str(record.get("detail", "")))
    if lock is not None:
        return JobState(job, "pending", f"stale lock: {lock.describe()} (broken on the next run)")
    if record.get("status") == INTERRUPTED and record.get("returncode") is not None:
        return JobState(job, "pending", f"interrupted: {record.get('detail', '')} (the next run runs it)")
    if record.get("status") in ("running", INTERRUPTED):
        return JobState(job, "pending", "interrupted: its runner stopped before the job finished")
    return JobState(job, "pending")


def status_lines(suite: Suite, jobs: list[Job], limit: Optional[int] = 30) -> list[str]:
    """Completion of ``jobs`` in the form the lab used for its tables::

        fewshot: completed jobs: 75 / 75 (running/locked: 0, failed: 0, stale: 0)
          completion by method:
            scratch: 15/15
            ...
          missing jobs (0)

    then ``completion by <axis>`` for the other matrix axes, and one line per missing job (any
    state but complete: running, failed, stale, invalid, pending), at most ``limit`` of them
    (None: all). ``invalid`` appears in the head line only when some result is invalid.
    """
    bad = invalid_results(jobs)
    states = [job_state(j, bad.get(j.job_id)) for j in jobs]
    count = Counter(s.state for s in states)
    extra = f", invalid: {count['invalid']}" if count["invalid"] else ""
    lines = [f"{suite.name}: completed jobs: {count['complete']} / {len(jobs)} "
             f"(running/locked: {count['running']}, failed: {count['failed']}, stale: {count['stale']}{extra})"]
    for axis in suite.axes:
        lines.append(f"  completion by {axis}:")
        for row in suite.matrix[axis]:
            mine = [s for s in states if str(s.job.tags.get(axis)) == str(row)]
            if mine:
                done = sum(s.state == "complete" for s in mine)
                lines.append(f"    {row}: {done}/{len(mine)}")
    missing = [s for s in states if s.state != "complete"]
    lines.append(f"  missing jobs ({len(missing)})" + (":" if missing else ""))
    shown = missing if limit is None else missing[:max(0, limit)]
    for s in shown:
        lines.append(f"    {s.state:<8} {s.job.label}  {s.job.job_id}  {s.detail}".rstrip())
    if len(shown) < len(missing):
        lines.append(f"    ... and {len(missing) - len(shown)} more (`status --all` lists every one)")
    return lines
