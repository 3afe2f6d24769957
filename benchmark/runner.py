"""Runner: skip finished jobs, lock, hand commands to an executor, judge and record outcomes.

Everything but running the command happens here, in the client process: the skip decision, the
per-job lock, moving invalid or stale results aside, validating fresh results, ``<id>.job.json``
and MLflow logging (one writer). An executor (:mod:`benchmark.executors`: local slots, or a dask
cluster) only runs the argv and reports exit code and timing. ``run_jobs`` is the loop;
``claim_job`` / ``command_spec`` / ``finish_job`` are its steps and ``run_job`` runs one job here
(:mod:`benchmark.job_steps`).

A job is its id (module + args), not its suite: before running a job, the runner looks for a
finished, valid, up-to-date result of the same id in the other suites' folders of the same results
directory and adopts it (a copy, recorded as ``reused_from`` in ``<id>.job.json``), so a job that
two suites share runs once.

Jobs of one run may depend on each other: job B needs job A when a path B passes in one of its
declared ``inputs`` equals or lies under a path A passes in one of its declared ``outputs`` (e.g.
B resumes from ``<A's save_dir>/last.pt``; :func:`benchmark.job_deps.dependency_links`). A cycle is a SuiteError before
anything runs. B is judged (skip, or claim and run) only once every producer has an outcome in this
run, so a producer that re-ran makes B stale through its input fingerprint; B starts as soon as its
producers are done. A failed producer fails B without running it (its old result stays as it is);
a producer running elsewhere (locked) leaves B locked too. Jobs without producers run as before.

A job's lock carries a heartbeat that this process renews while the job is claimed (see
:mod:`benchmark.locks`). At the end of every run, :func:`benchmark.reconcile.reconcile` brings the
run's locks, ``running`` marks and MLflow runs in line with the results on disk (what a runner
killed outright leaves behind).
"""
from __future__ import annotations

import heapq
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional

from .collect import invalid_results
from .executors import TERM_GRACE_S, ExecResult, Executor, LocalExecutor
from .executors import THREAD_VARS, thread_share_env  # noqa: F401  (public path kept)
from .expand import Job, expand, select
from .inputs import out_of_date
from .job_deps import Link, _blocked, check_dependencies
from .job_deps import find_cycle, job_dependencies  # noqa: F401  (public path kept)
from .job_steps import (FINISHED, UNFINISHED, Claim, JobOutcome, adopt_twin, check_existing, claim_job,
                        command_spec, find_twin, finish_job, mark_started)
from .job_steps import _judge, run_job  # noqa: F401  (public path kept)
from .locks import inspect_lock
from .reconcile import INTERRUPTED, mlflow_record, reconcile
from .records import file_sha256, read_record, update_record
from .suite import Suite
from .tasks import TaskKind, get_task

#: The run loop wakes at least this often (an executor's capacity may grow: clusters scale).
WAIT_POLL_S = 2.0


@dataclass
class RunSummary:
    """All outcomes of one suite's run, in job order."""

    suite: str
    outcomes: list[JobOutcome]
    wall_s: float

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def ok(self) -> bool:
        return self.count("failed") == 0 and self.count(INTERRUPTED) == 0

    def line(self) -> str:
        """``suite: done=3 skipped=9 reused=1 failed=0 total=13 (4.2 s)``."""
        skipped = self.count("skipped") + self.count("locked")
        reused = f"reused={self.count('reused')} " if self.count("reused") else ""
        text = (f"{self.suite}: done={self.count('done')} skipped={skipped} {reused}"
                f"failed={self.count('failed')} "
                + (f"interrupted={self.count(INTERRUPTED)} " if self.count(INTERRUPTED) else "")
                + f"total={len(self.outcomes)} ({self.wall_s:.1f} s)")
        if self.count("locked"):
            text += f"; {self.count('locked')} running elsewhere"
        return text


def run_jobs(jobs: list[Job], *, suite_name: Optional[str] = None, n_jobs: int = 1,
             gpus: Optional[list[str]] = None, jobs_per_gpu: int = 1, tracker=None,
             log: Callable[[str], None] = print, env: Optional[Mapping[str, str]] = None,
             executor: Optional[Executor] = None, reuse: bool = True) -> RunSummary:
    """Run ``jobs`` through ``executor``; default: a :class:`LocalExecutor` with ``n_jobs`` slots
    (``len(gpus) * jobs_per_gpu`` with GPUs) and base environment ``env``. ``reuse``: adopt a
    finished result of the same job id from another suite's folder (:func:`find_twin`) instead of
    running the job again.

    This process alone skips, locks, validates, prints one line per job and logs finished jobs to
    ``tracker`` (an :class:`~benchmark.tracking.MlflowTracker`, or any object with its ``enabled``,
    ``store`` and ``log_job``; None: no MLflow); the executor only runs commands. Returns a :class:`RunSummary` in job order. An interrupt terminates running
    commands, records them, releases their locks and re-raises. Jobs that read what other jobs
    write wait for them (:func:`dependency_links`); a cycle raises SuiteError before anything runs.
    """
    links = check_dependencies(jobs)
    own = executor is None
    if executor is None:
        executor = LocalExecutor(n_jobs=n_jobs, gpus=gpus, jobs_per_gpu=jobs_per_gpu, env=env)
    try:
        return _run(jobs, executor, suite_name=suite_name, tracker=tracker, log=log, reuse=reuse, links=links)
    finally:
        if own:
            executor.close()


def _run(jobs: list[Job], executor: Executor, *, suite_name: Optional[str], tracker,
         log: Callable[[str], None], reuse: bool = True,
         links: Optional[dict[int, list[Link]]] = None) -> RunSummary:
    """The client loop. Each turn: fill the executor's free capacity first (commands start at
    once), then judge the commands that finished, print them, and log them to MLflow while the
    new commands run.

    ``links`` (default: :func:`check_dependencies` of ``jobs``): a job with producers waits in
    ``waiting`` until each has an outcome, then goes to ``ready``; :func:`_blocked` or the usual
    skip check decides it, or it joins ``pending`` (a heap of job indices: suite order)."""
    if links is None:
        links = check_dependencies(jobs)
    t0 = time.time()
    name = suite_name or (jobs[0].suite if jobs else "(empty)")
    width = len(str(len(jobs)))
    kinds: dict[str, TaskKind] = {}
    results: dict[int, JobOutcome] = {}
    walls: list[float] = []  # wall times of the jobs this run ran (for the suite's ETA)
    in_flight: dict[Future, tuple[int, Claim]] = {}
    finished: deque[tuple[int, Claim, Future]] = deque()  # command over, not judged yet
    to_track: deque[JobOutcome] = deque()
    waiting: dict[int, set[int]] = {i: {link.producer for link in found} for i, found in links.items()}
    consumers: dict[int, list[int]] = {}
    for i in sorted(waiting):
        for p in waiting[i]:
            consumers.setdefault(p, []).append(i)
    ready: deque[int] = deque()  # producers all have an outcome; not judged yet
    elsewhere: list[int] = []  # jobs whose lock another live process held when this run judged them

    def kind_of(job: Job) -> TaskKind:
        if job.task not in kinds:
            kinds[job.task] = get_task(job.task)
        return kinds[job.task]

    def record(i: int, outcome: JobOutcome) -> None:
        results[i] = outcome
        line = _outcome_line(outcome, len(results), len(jobs), width)
        if outcome.status in ("done", *UNFINISHED) and outcome.wall_s > 0:
            walls.append(outcome.wall_s)
            eta = suite_eta(walls, len(jobs) - len(results), executor.capacity())
            if eta:
                first, nl, rest = line.partition("\n")
                line = f"{first}  ETA {eta}{nl}{rest}"
        log(line)
        if outcome.status in ("done", "failed") and tracker is not None:
            to_track.append(outcome)
        for c in consumers.get(i, ()):
            waiting[c].discard(i)
            if not waiting[c]:
                del waiting[c]
                ready.append(c)

    def release() -> None:
        while ready:
            i = ready.popleft()
            job = jobs[i]
            outcome = _blocked(job, links[i], jobs, results)
            if outcome is None and (job.out_json.exists() and check_existing(job, kind_of(job)) is None
                                    and not out_of_date(job)):
                outcome = JobOutcome(job, "skipped", "done")
            if outcome is None:
                heapq.heappush(pending, i)
            else:
                record(i, outcome)

    def fill() -> None:
        while True:
            release()
            if not pending or len(in_flight) >= executor.capacity():
                return
            launch(heapq.heappop(pending))

    def launch(i: int) -> None:
        job = jobs[i]
        outcome, claim = claim_job(job, kind_of(job), prechecked=True)
        if claim is None:
            if outcome.status == "locked":
                elsewhere.append(i)
            record(i, outcome)
            return
        twin = find_twin(job, kind_of(job)) if reuse else None
        if twin is not None:
            record(i, adopt_twin(claim, twin))
            return
        try:
            fut, where = executor.submit(command_spec(claim))
        except Exception as exc:  # noqa: BLE001 - e.g. the scheduler went away
            record(i, finish_job(claim, ExecResult.not_started(f"cannot submit: {exc}"), kind_of(job)))
            return
        in_flight[fut] = (i, claim)
        mark_started(claim, where)
        if tracker is not None and hasattr(tracker, "start_job"):  # its MLflow run: RUNNING
            tracker.start_job(job)
        log(f"  start    {job.label}  {job.job_id}" + (f" [{where}]" if where else ""))

    deferred = set(waiting)  # (a skip below may already make some of them ready)
    bad = invalid_results([j for i, j in enumerate(jobs) if i not in deferred])  # one pandera pass
    pending: list[int] = []  # a heap: suite order, dependents included when they become ready
    for i, job in enumerate(jobs):
        if i in deferred:
            continue
        if job.out_json.exists() and job.job_id not in bad and not out_of_date(job):
            record(i, JobOutcome(job, "skipped", "done"))
        else:
            pending.append(i)

    try:
        while pending or ready or in_flight or finished:
            fill()
            while finished:
                i, claim, fut = finished.popleft()
                record(i, finish_job(claim, _result_of(fut), kind_of(claim.job)))
            if ready:  # dependents of what just finished start before the (slow) MLflow logging
                fill()
            while to_track:
                _track(tracker, to_track.popleft())
            if in_flight:
                done, _ = wait(in_flight, timeout=WAIT_POLL_S, return_when=FIRST_COMPLETED)
                finished.extend((*in_flight.pop(fut), fut) for fut in done)
    except KeyboardInterrupt:
        executor.interrupt()
        to_track.clear()  # nothing more is logged after an interrupt
        done, _ = wait(in_flight, timeout=TERM_GRACE_S + 5.0)
        finished.extend((*in_flight.pop(fut), fut) for fut in done)
        while finished:
            i, claim, fut = finished.popleft()
            record(i, finish_job(claim, _result_of(fut), kind_of(claim.job)))
        for i, claim in in_flight.values():  # still running after the grace: give the lock up
            record(i, finish_job(claim, ExecResult.not_started("interrupted"), kind_of(claim.job)))
        raise
    for i in elsewhere:  # what became of them while this run went on
        results[i] = settle_elsewhere(results[i], kind_of(jobs[i]))
        if results[i].status != "locked":
            verb = {"failed": "FAILED  ", INTERRUPTED: "INTERRUPTED"}.get(results[i].status, "finished")
            log(f"  since judged: {verb} {jobs[i].label}  {jobs[i].job_id}  {results[i].detail}")
    fixed = reconcile(jobs, {jobs[i].job_id for i, o in results.items() if o.status in FINISHED}, tracker)
    if fixed.line():
        log(fixed.line())
    return RunSummary(name, [results[i] for i in sorted(results)], time.time() - t0)


def settle_elsewhere(o: JobOutcome, kind: TaskKind) -> JobOutcome:
    """Judge again, at the end of a run, a job that another process was running when this run
    judged it: finished there meanwhile (skipped), still held by a live lock (locked, unchanged),
    or neither (failed: that process failed the job or died; the next run runs it)."""
    job = o.job
    if job.out_json.exists() and check_existing(job, kind) is None and not out_of_date(job):
        return JobOutcome(job, "skipped", "finished elsewhere meanwhile")
    check = inspect_lock(job.lock)
    if check is not None and check.live:
        return o
    record = read_record(job)
    why = (f"failed elsewhere: {record.get('detail', '')}" if record.get("status") == "failed"
           else "its runner elsewhere stopped without a valid result")
    return JobOutcome(job, "failed", f"{why} (the next run runs it)")


def _track(tracker, o: JobOutcome) -> None:
    """Log a finished job to MLflow (a done job with its result's digest) and record the run in
    its ``<id>.job.json``."""
    try:
        digest = file_sha256(o.job.out_json) if o.status == "done" else None
    except OSError:
        digest = None
    run_id = tracker.log_job(o.job, status=o.status, envelope=o.envelope, start=o.start, end=o.end,
                             result_sha256=digest)
    if run_id is not None:
        update_record(o.job, mlflow=mlflow_record(tracker, run_id, digest))


def _result_of(fut: Future) -> ExecResult:
    """The future's ExecResult; an executor error (worker lost, cancelled) is a not-run result."""
    try:
        return fut.result()
    except BaseException as exc:  # noqa: BLE001 - CancelledError, remote errors, ...
        return ExecResult.not_started(f"executor error: {type(exc).__name__}: {exc}")


def eta_text(seconds: float) -> str:
    """A short remaining-time estimate: ``~45s``, ``~12m``, ``~3.5h``."""
    if seconds < 90:
        return f"~{max(seconds, 0):.0f}s"
    if seconds < 90 * 60:
        return f"~{seconds / 60:.0f}m"
    return f"~{seconds / 3600:.1f}h"


def suite_eta(walls: list[float], remaining: int, slots: int) -> str:
    """ETA of the rest of a suite: mean wall time of the jobs run so far x jobs left (running
    ones included) / parallel slots; "" when nothing is left or nothing ran yet."""
    if remaining <= 0 or not walls:
        return ""
    return eta_text(sum(walls) / len(walls) * remaining / max(1, slots))


def _outcome_line(o: JobOutcome, k: int, total: int, width: int) -> str:
    head = f"[{k:>{width}}/{total}]"
    if o.status == "done":
        extra = (f"\n    (moved the previous result aside to {o.moved_aside.name}: {o.moved_why})"
                 if o.moved_aside else "")
        return f"{head} done     {o.job.label}  {o.job.job_id}  ({o.wall_s:.1f} s){extra}"
    if o.status == "skipped":
        return f"{head} skip     {o.job.label}  {o.job.job_id}  ({o.detail})"
    if o.status == "reused":
        return f"{head} reuse    {o.job.label}  {o.job.job_id}  (finished in {o.detail})"
    if o.status == "locked":
        return f"{head} locked   {o.job.label}  {o.job.job_id}  ({o.detail})"
    verb = "INTERRUPTED" if o.status == INTERRUPTED else "FAILED  "
    lines = [f"{head} {verb} {o.job.label}  {o.job.job_id}  {o.detail} ({o.wall_s:.1f} s); log: {o.job.log}"]
    if o.log_tail:
        lines.append(f"    last {len(o.log_tail)} lines of the log:")
        lines += [f"    | {line}" for line in o.log_tail]
    return "\n".join(lines)


def run_suite(suite: Suite, *, results_dir: Path | str = "results",
              only: Optional[dict[str, list[str]]] = None, **kwargs) -> RunSummary:
    """Expand ``suite`` (optionally restricted by ``only``: axis -> rows) and run its jobs."""
    jobs = expand(suite, results_dir)
    if only:
        jobs = select(jobs, only)
    return run_jobs(jobs, suite_name=suite.name, **kwargs)
