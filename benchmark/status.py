"""Completion status of a suite's jobs, read from the results directory (no side effects)."""
from __future__ import annotations

import json
from typing import Optional
from dataclasses import dataclass

from .expand import Job
from .locks import lock_state
from .collect import invalid_results
from .inputs import stale_inputs
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
            stale = stale_inputs(job)
            if stale:
                return JobState(job, "stale", f"input changed since it ran: {', '.join(stale)} (re-run by the next run)")
            return JobState(job, "complete")
        return JobState(job, "invalid", f"{invalid} (moved aside and re-run by the next run)")
    lock = lock_state(job.lock)
    if lock == "live":
        return JobState(job, "running")
    try:
        record = json.loads(job.job_json.read_text())
    except (OSError, ValueError):
        record = {}
    if record.get("status") == "failed":
        return JobState(job, "failed", str(record.get("detail", "")))
    if lock == "stale":
        return JobState(job, "pending", "stale lock (broken on the next run)")
    return JobState(job, "pending")


def status_lines(suite: Suite, jobs: list[Job]) -> list[str]:
    """``name: n/N complete (failed k, running r)`` then per-axis-row completion lines."""
    bad = invalid_results(jobs)
    states = [job_state(j, bad.get(j.job_id)) for j in jobs]
    n = sum(s.state == "complete" for s in states)
    failed = sum(s.state == "failed" for s in states)
    running = sum(s.state == "running" for s in states)
    invalid = sum(s.state == "invalid" for s in states)
    stale = sum(s.state == "stale" for s in states)
    extra = (f", invalid {invalid}" if invalid else "") + (f", stale {stale}" if stale else "")
    lines = [f"{suite.name}: {n}/{len(jobs)} complete (failed {failed}, running {running}{extra})"]
    for axis in suite.axes:
        for row in suite.matrix[axis]:
            mine = [s for s in states if s.job.tags.get(axis) == row]
            done = sum(s.state == "complete" for s in mine)
            lines.append(f"  {axis}={row}: {done}/{len(mine)}")
    for s in states:
        if s.state in ("failed", "invalid", "stale"):
            lines.append(f"  {s.state}: {s.job.label}  {s.job.job_id}  {s.detail}".rstrip())
    return lines
