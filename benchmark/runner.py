"""Local runner: skip finished jobs, lock, launch subprocesses in a thread pool, record outcomes.

``run_job`` is the unit (lock -> subprocess -> validate -> unlock) and has no global state, so a
distributed engine can call it on a worker and log the outcome from its client. ``run_jobs`` is
the local pool; it alone prints and logs to MLflow (one writer).
"""
from __future__ import annotations

import os
import queue
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping, Optional

from .atomic import atomic_write_json
from .errors import ResultError
from .expand import Job, expand, select
from .inputs import fingerprints, stale_inputs
from .locks import JobLock
from .collect import invalid_results
from .results import Envelope, load_result, move_aside
from .suite import Suite
from .tasks import TaskKind, get_task

LOG_TAIL_LINES = 20


@dataclass
class JobOutcome:
    """What happened to one job in one ``run``."""

    job: Job
    status: str  # "done" | "skipped" | "locked" | "failed"
    detail: str = ""
    returncode: Optional[int] = None
    wall_s: float = 0.0
    start: Optional[float] = None
    end: Optional[float] = None
    log_tail: list[str] = field(default_factory=list)
    envelope: Optional[Envelope] = None
    moved_aside: Optional[Path] = None
    moved_why: str = ""
    gpu: Optional[str] = None


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
        return self.count("failed") == 0

    def line(self) -> str:
        """``suite: done=3 skipped=9 failed=0 total=12 (4.2 s)``."""
        skipped = self.count("skipped") + self.count("locked")
        text = (f"{self.suite}: done={self.count('done')} skipped={skipped} failed={self.count('failed')} "
                f"total={len(self.outcomes)} ({self.wall_s:.1f} s)")
        if self.count("locked"):
            text += f"; {self.count('locked')} running elsewhere"
        return text


class _Procs:
    """Live subprocesses, so that an interrupt can terminate them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()

    def add(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.add(proc)

    def discard(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    def terminate_all(self) -> None:
        with self._lock:
            for proc in self._procs:
                try:
                    proc.terminate()
                except OSError:
                    pass


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _tail(path: Path, offset: int, n: int = LOG_TAIL_LINES) -> list[str]:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-n:]


def job_env(job: Job, gpu: Optional[str] = None, base: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Environment of a job: the runner's own, plus BENCHMARK_* ids and CUDA_VISIBLE_DEVICES."""
    env = dict(os.environ if base is None else base)
    env.update(BENCHMARK_SUITE=job.suite, BENCHMARK_JOB_ID=job.job_id, PYTHONUNBUFFERED="1")
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def _write_job_json(job: Job, **fields) -> None:
    record = {"suite": job.suite, "job_id": job.job_id, "task": job.task, "tags": job.tags,
              "args": job.args, "argv": job.argv, "out_json": str(job.out_json), "log": str(job.log),
              "host": socket.gethostname(), "pid": os.getpid(), **fields}
    atomic_write_json(job.job_json, record)


def _row_problems(job: Job, env: Envelope, kind: TaskKind) -> list[str]:
    import pandas as pd

    from .schemas import schema_failures

    return schema_failures(pd.DataFrame([env.flat()], index=[str(job.out_json)]), kind).get(str(job.out_json), [])


def check_existing(job: Job, kind: TaskKind) -> Optional[str]:
    """None if ``job`` has a valid result (envelope + its task's schema), else the reason."""
    try:
        env = load_result(job.out_json, job.task)
    except ResultError as exc:
        return str(exc)
    problems = _row_problems(job, env, kind)
    return f"{job.out_json}: " + "; ".join(problems) if problems else None


def _judge(job: Job, rc: int, kind: TaskKind) -> tuple[str, str, Optional[Envelope]]:
    """(status, detail, envelope) of a finished process: done only with exit 0 and a valid result."""
    if rc != 0:
        return "failed", f"exit {rc}", None
    if not job.out_json.exists():
        return "failed", f"exit 0 but no result JSON at {job.out_json}", None
    try:
        env = load_result(job.out_json, job.task)
    except ResultError as exc:
        return "failed", str(exc), None
    problems = _row_problems(job, env, kind)
    if problems:
        return "failed", "result fails its schema: " + "; ".join(problems), env
    return "done", "", env


def run_job(job: Job, *, kind: Optional[TaskKind] = None, gpu: Optional[str] = None,
            env: Optional[Mapping[str, str]] = None,
            on_start: Optional[Callable[[Job, Optional[str]], None]] = None,
            procs: Optional[_Procs] = None, prechecked: bool = False) -> JobOutcome:
    """Run one job unless it is finished or locked by a live process. Never raises for job errors.

    A finished job has a valid result JSON (envelope and task schema); an invalid one is moved
    aside (never deleted) and the job re-runs. The lock is released whatever happens.
    ``prechecked``: the caller already knows the result is absent or invalid (skip the fast path).
    """
    kind = kind or get_task(job.task)
    if (not prechecked and job.out_json.exists() and check_existing(job, kind) is None
            and not stale_inputs(job)):
        return JobOutcome(job, "skipped", "done")
    lock = JobLock(job.lock)
    holder = lock.acquire()
    if holder is not None:
        return JobOutcome(job, "locked", f"running elsewhere ({holder.describe()})")
    moved: Optional[Path] = None
    moved_why = ""
    try:
        if job.out_json.exists():  # re-check under the lock: another runner may have finished it
            moved_why = check_existing(job, kind) or ""
            stale = [] if moved_why else stale_inputs(job)
            if not moved_why and not stale:
                return JobOutcome(job, "skipped", "done")
            if stale:
                moved_why = f"input changed since it ran: {', '.join(stale)}"
            moved = move_aside(job.out_json, "stale" if stale else "invalid")
        job.log.parent.mkdir(parents=True, exist_ok=True)
        job.out_json.parent.mkdir(parents=True, exist_ok=True)
        started_iso = _now_iso()
        inputs = fingerprints(job)
        _write_job_json(job, status="running", started=started_iso, cuda_visible_devices=gpu, inputs=inputs)
        if on_start:
            on_start(job, gpu)
        start = time.time()
        with job.log.open("ab") as log:
            offset = log.tell()
            log.write(f"=== {started_iso} benchmark job {job.job_id} ({job.label})\n"
                      f"=== argv: {job.argv}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(job.argv, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=job_env(job, gpu, env))
            except OSError as exc:
                rc, detail = None, f"cannot start: {exc}"
            else:
                if procs:
                    procs.add(proc)
                try:
                    rc = proc.wait()
                finally:
                    if procs:
                        procs.discard(proc)
                detail = ""
        end = time.time()
        status, why, envelope = _judge(job, rc, kind) if rc is not None else ("failed", detail, None)
        outcome = JobOutcome(job, status, why, returncode=rc, wall_s=end - start, start=start, end=end,
                             envelope=envelope, moved_aside=moved, moved_why=moved_why, gpu=gpu)
        if outcome.status == "failed":
            outcome.log_tail = _tail(job.log, offset)
        _write_job_json(job, status=outcome.status, started=started_iso, finished=_now_iso(),
                        returncode=rc, wall_s=round(outcome.wall_s, 3), detail=outcome.detail,
                        cuda_visible_devices=gpu, inputs=inputs)
        return outcome
    finally:
        lock.release()


def _gpu_tokens(gpus: Optional[list[str]], jobs_per_gpu: int) -> Optional[queue.Queue]:
    if not gpus:
        return None
    tokens: queue.Queue = queue.Queue()
    for _ in range(max(1, jobs_per_gpu)):
        for gpu in gpus:
            tokens.put(gpu)
    return tokens


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_share_env(workers: int, env: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Give each of ``workers`` concurrent jobs its share of the CPU cores.

    Numeric libraries start one thread per core in every process; N parallel jobs would then
    run N x cores threads and oversubscribe the machine (measured: 2 fine-tuning jobs on 2 cores
    ran 3-4x slower than one after the other). Variables the caller already set are kept.
    """
    out = dict(os.environ if env is None else env)
    share = str(max(1, (os.cpu_count() or 1) // max(1, workers)))
    for var in THREAD_VARS:
        out.setdefault(var, share)
    return out


def run_jobs(jobs: list[Job], *, suite_name: Optional[str] = None, n_jobs: int = 1,
             gpus: Optional[list[str]] = None, jobs_per_gpu: int = 1, tracker=None,
             log: Callable[[str], None] = print, env: Optional[Mapping[str, str]] = None) -> RunSummary:
    """Run ``jobs`` with ``n_jobs`` local workers (or ``len(gpus) * jobs_per_gpu`` with GPUs).

    Prints one line per job and returns a :class:`RunSummary`; logs finished jobs to ``tracker``
    (an :class:`~benchmark.tracking.MlflowTracker` or None) from this thread only.
    """
    t0 = time.time()
    name = suite_name or (jobs[0].suite if jobs else "(empty)")
    tokens = _gpu_tokens(gpus, jobs_per_gpu)
    workers = max(1, tokens.qsize() if tokens else n_jobs)
    env = thread_share_env(workers, env)
    procs = _Procs()
    stop = threading.Event()
    print_lock = threading.Lock()
    width = len(str(len(jobs)))

    def say(text: str) -> None:
        with print_lock:
            log(text)

    def on_start(job: Job, gpu: Optional[str]) -> None:
        where = f" [gpu {gpu}]" if gpu is not None else ""
        say(f"  start    {job.label}  {job.job_id}{where}")

    bad = invalid_results(jobs)  # one pandera pass over every existing result

    def work(job: Job) -> JobOutcome:
        if stop.is_set():
            return JobOutcome(job, "skipped", "interrupted")
        if job.out_json.exists() and job.job_id not in bad and not stale_inputs(job):
            return JobOutcome(job, "skipped", "done")
        gpu = tokens.get() if tokens else None
        try:
            if stop.is_set():
                return JobOutcome(job, "skipped", "interrupted")
            return run_job(job, gpu=gpu, env=env, on_start=on_start, procs=procs, prechecked=True)
        finally:
            if tokens:
                tokens.put(gpu)

    results: dict[int, JobOutcome] = {}
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bench")
    try:
        futures = {pool.submit(work, job): i for i, job in enumerate(jobs)}
        for k, fut in enumerate(as_completed(futures), 1):
            outcome = fut.result()
            results[futures[fut]] = outcome
            say(_outcome_line(outcome, k, len(jobs), width))
            if outcome.status in ("done", "failed") and tracker is not None:
                tracker.log_job(outcome.job, status=outcome.status, envelope=outcome.envelope,
                                start=outcome.start, end=outcome.end)
    except KeyboardInterrupt:
        stop.set()
        procs.terminate_all()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
    summary = RunSummary(name, [results[i] for i in sorted(results)], time.time() - t0)
    return summary


def _outcome_line(o: JobOutcome, k: int, total: int, width: int) -> str:
    head = f"[{k:>{width}}/{total}]"
    if o.status == "done":
        extra = (f"\n    (moved the previous result aside to {o.moved_aside.name}: {o.moved_why})"
                 if o.moved_aside else "")
        return f"{head} done     {o.job.label}  {o.job.job_id}  ({o.wall_s:.1f} s){extra}"
    if o.status == "skipped":
        return f"{head} skip     {o.job.label}  {o.job.job_id}  ({o.detail})"
    if o.status == "locked":
        return f"{head} locked   {o.job.label}  {o.job.job_id}  ({o.detail})"
    lines = [f"{head} FAILED   {o.job.label}  {o.job.job_id}  {o.detail} ({o.wall_s:.1f} s); log: {o.job.log}"]
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
