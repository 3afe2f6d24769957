"""Runner: skip finished jobs, lock, hand commands to an executor, judge and record outcomes.

Everything but running the command happens here, in the client process: the skip decision, the
per-job lock, moving invalid or stale results aside, validating fresh results, ``<id>.job.json``
and MLflow logging (one writer). An executor (:mod:`benchmark.executors`: local slots, or a dask
cluster) only runs the argv and reports exit code and timing. ``run_jobs`` is the loop;
``claim_job`` / ``command_spec`` / ``finish_job`` are its steps, ``run_job`` runs one job here.

A job is its id (module + args), not its suite: before running a job, the runner looks for a
finished, valid, up-to-date result of the same id in the other suites' folders of the same results
directory and adopts it (a copy, recorded as ``reused_from`` in ``<id>.job.json``), so a job that
two suites share runs once.

Jobs of one run may depend on each other: job B needs job A when a path B passes in one of its
declared ``inputs`` equals or lies under a path A passes in one of its declared ``outputs`` (e.g.
B resumes from ``<A's save_dir>/last.pt``; :func:`dependency_links`). A cycle is a SuiteError before
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
import os
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional

from .atomic import atomic_write_bytes
from .collect import invalid_results
from .errors import ResultError, SuiteError
from .executors import (TERM_GRACE_S, THREAD_VARS, CommandSpec, ExecResult, Executor,  # noqa: F401
                        LocalExecutor, execute_command, thread_share_env)
from .expand import Job, expand, select
from .inputs import fingerprints, missing_outputs, out_of_date, out_of_date_text, recorded_fingerprints
from .locks import JobLock, inspect_lock
from .reconcile import INTERRUPTED, mlflow_record, reconcile
from .records import file_sha256, now_iso, read_record, update_record, write_record
from .results import Envelope, load_result, move_aside
from .suite import Suite
from .tasks import TaskKind, get_task

LOG_TAIL_LINES = 20
#: Outcomes after which the job has a valid, up-to-date result.
FINISHED = ("done", "skipped", "reused")
#: Outcomes that leave a job without a result through no fault of its own: a failure (exit
#: != 0, invalid result) or an interrupt (SIGTERM/SIGINT). Either makes ``run`` exit non-zero.
UNFINISHED = ("failed", INTERRUPTED)
#: Exit statuses of a command stopped by SIGTERM or SIGINT: -N from a signal, 128+N from a
#: shell or a Python that handled it.
_SIGNALS = {2: "SIGINT", 15: "SIGTERM"}
INTERRUPT_EXITS = {**{-n: name for n, name in _SIGNALS.items()},
                   **{128 + n: name for n, name in _SIGNALS.items()}}
#: The run loop wakes at least this often (an executor's capacity may grow: clusters scale).
WAIT_POLL_S = 2.0


@dataclass
class JobOutcome:
    """What happened to one job in one ``run``."""

    job: Job
    status: str  # "done" | "skipped" | "reused" | "locked" | "failed" | "interrupted"
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
    host: Optional[str] = None  # where the command ran


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


def _tail(path: Path, offset: int, n: int = LOG_TAIL_LINES) -> list[str]:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-n:]


def job_env_vars(job: Job) -> dict[str, str]:
    """Variables every job gets on top of its executor's environment: BENCHMARK_* ids."""
    return {"BENCHMARK_SUITE": job.suite, "BENCHMARK_JOB_ID": job.job_id, "PYTHONUNBUFFERED": "1"}


def job_env(job: Job, gpu: Optional[str] = None, base: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Environment of a job: the runner's own, plus BENCHMARK_* ids and CUDA_VISIBLE_DEVICES."""
    env = dict(os.environ if base is None else base)
    env.update(job_env_vars(job))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


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
    """(status, detail, envelope) of a finished process: done only with exit 0 and a valid result;
    interrupted when SIGTERM/SIGINT stopped it."""
    if rc in INTERRUPT_EXITS:
        return INTERRUPTED, f"{INTERRUPT_EXITS[rc]} (exit {rc})", None
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


@dataclass
class Claim:
    """A job this runner has locked to run; :func:`finish_job` records it and releases the lock."""

    job: Job
    lock: JobLock
    started_iso: str
    inputs: dict
    moved: Optional[Path] = None
    moved_why: str = ""
    where: Optional[str] = None


def claim_job(job: Job, kind: TaskKind, *,
              prechecked: bool = False) -> tuple[Optional[JobOutcome], Optional[Claim]]:
    """Decide whether ``job`` runs: ``(outcome, None)`` if it needs no run (finished: skipped;
    locked by a live process: locked), else ``(None, claim)`` with the lock held.

    An existing result is re-checked under the lock (another runner may have just finished it);
    an invalid or stale one is moved aside (never deleted). ``prechecked``: the caller already
    knows the result is absent, invalid or stale (skips the lock-free fast path).
    """
    if (not prechecked and job.out_json.exists() and check_existing(job, kind) is None
            and not out_of_date(job)):
        return JobOutcome(job, "skipped", "done"), None
    lock = JobLock(job.lock)
    holder = lock.acquire()
    if holder is not None:
        return JobOutcome(job, "locked", f"running elsewhere ({holder.describe()})"), None
    try:
        moved: Optional[Path] = None
        moved_why = ""
        if job.out_json.exists():
            moved_why = check_existing(job, kind) or ""
            stale = [] if moved_why else out_of_date(job)
            if not moved_why and not stale:
                lock.release()
                return JobOutcome(job, "skipped", "done"), None
            if stale:
                moved_why = out_of_date_text(stale)
                if any(not r.startswith("output:") for r in stale):  # its inputs changed:
                    for path in move_outputs_aside(job):               # start from clean outputs
                        moved_why += f"; moved its output aside to {path}"
            moved = move_aside(job.out_json, "stale" if stale else "invalid")
        job.out_json.parent.mkdir(parents=True, exist_ok=True)
        return None, Claim(job, lock, now_iso(), fingerprints(job), moved, moved_why)
    except BaseException:
        lock.release()
        raise


def move_outputs_aside(job: Job) -> list[Path]:
    """Rename the job's existing declared outputs (``outputs: [save_dir]``) to
    ``<name>.stale-<stamp>`` (never deleted); the new paths. A job re-run because its inputs
    changed must not resume or reuse what the earlier run left there; a job that merely never
    finished keeps its outputs (a program with resume support carries on from them)."""
    gone = set(missing_outputs(job))
    moved = []
    for name in job.outputs:
        value = job.args.get(name)
        if name in gone or value is None or isinstance(value, (list, bool)):
            continue
        moved.append(move_aside(Path(str(value)), "stale"))
    return moved


def find_twin(job: Job, kind: TaskKind) -> Optional[Job]:
    """A finished result of the same job id in another suite's folder of this results directory
    that is valid (envelope + schema), up to date (inputs unchanged, outputs present) and of the
    same task; None if there is none. The twin is ``job`` pointed at that folder."""
    here = job.out_json
    for other in sorted(here.parent.parent.glob(f"*/{job.job_id}.json")):
        if other.parent == here.parent:
            continue
        twin = replace(job, out_json=other, log=other.parent / "logs" / f"{job.job_id}.log")
        if check_existing(twin, kind) is None and not out_of_date(twin):
            return twin
    return None


def adopt_twin(claim: Claim, twin: Job) -> JobOutcome:
    """Copy ``twin``'s result into the claimed job's place (atomically), record ``reused_from``
    and the twin's input fingerprints in ``<id>.job.json`` (so staleness is judged against the
    run that computed it), note it in the job's log and release the lock."""
    job = claim.job
    try:
        data = twin.out_json.read_bytes()
        atomic_write_bytes(job.out_json, data)
        inputs = recorded_fingerprints(twin) or claim.inputs
        job.log.parent.mkdir(parents=True, exist_ok=True)
        with job.log.open("a") as fh:
            fh.write(f"=== {now_iso()} reused the result of {twin.out_json} (same job id)\n")
        write_record(job, status="done", started=claim.started_iso, finished=now_iso(),
                     returncode=0, detail=f"reused from {twin.out_json}", reused_from=str(twin.out_json),
                     inputs=inputs)
        return JobOutcome(job, "reused", f"from {twin.out_json.parent.name}/", moved_aside=claim.moved,
                          moved_why=claim.moved_why)
    finally:
        claim.lock.release()


def command_spec(claim: Claim) -> CommandSpec:
    """The command of a claimed job, for an executor: argv, log, BENCHMARK_* variables."""
    job = claim.job
    header = (f"=== {claim.started_iso} benchmark job {job.job_id} ({job.label})\n"
              f"=== argv: {job.argv}\n")
    return CommandSpec(job_id=job.job_id, argv=list(job.argv), log=str(job.log), env=job_env_vars(job),
                       header=header)


def _gpu_of(where: Optional[str]) -> Optional[str]:
    return where[4:] if where and where.startswith("gpu ") else None


def mark_started(claim: Claim, where: Optional[str]) -> None:
    """Record ``status: running`` in ``<id>.job.json``, with the input fingerprints."""
    claim.where = where
    write_record(claim.job, status="running", started=claim.started_iso, where=where,
                 cuda_visible_devices=_gpu_of(where), inputs=claim.inputs)


def finish_job(claim: Claim, result: ExecResult, kind: TaskKind) -> JobOutcome:
    """Judge a finished command (done only with exit 0 and a valid result), record it in
    ``<id>.job.json`` and release the lock."""
    job = claim.job
    try:
        if result.returncode is None:
            why = result.error or "did not run"
            status, envelope = (INTERRUPTED if why.startswith("interrupted") else "failed"), None
        else:
            status, why, envelope = _judge(job, result.returncode, kind)
        outcome = JobOutcome(job, status, why, returncode=result.returncode, wall_s=result.end - result.start,
                             start=result.start, end=result.end, envelope=envelope, moved_aside=claim.moved,
                             moved_why=claim.moved_why, gpu=result.slot, host=result.host or None)
        if status in UNFINISHED:
            outcome.log_tail = _tail(job.log, result.log_offset)
        write_record(job, status=status, started=claim.started_iso, finished=now_iso(),
                     returncode=result.returncode, wall_s=round(outcome.wall_s, 3), detail=why,
                     where=claim.where, exec_host=result.host or None, cuda_visible_devices=result.slot,
                     inputs=claim.inputs)
        return outcome
    finally:
        claim.lock.release()


def run_job(job: Job, *, kind: Optional[TaskKind] = None, gpu: Optional[str] = None,
            env: Optional[Mapping[str, str]] = None,
            on_start: Optional[Callable[[Job, Optional[str]], None]] = None,
            prechecked: bool = False) -> JobOutcome:
    """Run one job in this thread unless it is finished or locked by a live process. Never raises
    for job errors. ``env``: base environment (default: this process's)."""
    kind = kind or get_task(job.task)
    outcome, claim = claim_job(job, kind, prechecked=prechecked)
    if claim is None:
        return outcome
    twin = find_twin(job, kind)
    if twin is not None:
        return adopt_twin(claim, twin)
    try:
        spec = command_spec(claim)
        if gpu is not None:
            spec = replace(spec, env={**spec.env, "CUDA_VISIBLE_DEVICES": gpu})
        mark_started(claim, f"gpu {gpu}" if gpu is not None else None)
        if on_start:
            on_start(job, gpu)
        result = replace(execute_command(spec, base_env=env), slot=gpu)
    except BaseException:
        claim.lock.release()
        raise
    return finish_job(claim, result, kind)


def norm_path(path: str) -> str:
    """One spelling per path: absolute (against the cwd) and normalised; symlinks are not followed."""
    return os.path.abspath(os.path.normpath(path))


def _path_args(job: Job, names: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(arg, path as passed)`` for each of ``names`` that ``job`` passes as one path (not a
    list, flag or None), in declared order."""
    out = []
    for name in names:
        value = job.args.get(name)
        if value is not None and not isinstance(value, (list, bool)):
            out.append((name, str(value)))
    return out


def _self_and_parents(path: str) -> Iterator[str]:
    """``path`` (normalised, absolute), then each folder above it up to the root."""
    while True:
        yield path
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


@dataclass(frozen=True)
class Link:
    """Why a job waits for job ``producer`` (an index): its input ``arg`` (``path``, as passed)
    equals or lies under a path the producer passes in one of its declared outputs."""

    producer: int
    arg: str
    path: str


def dependency_links(jobs: list[Job]) -> dict[int, list[Link]]:
    """``{consumer index: [Link, ...]}`` for the jobs that read what another job of ``jobs``
    writes; jobs without producers are left out. A job never depends on itself. Paths are
    compared whole, by components (``runs/a`` is not above ``runs/ab/x.pt``)."""
    writers: dict[str, list[int]] = {}
    for i, job in enumerate(jobs):
        for _, path in _path_args(job, job.outputs):
            here = writers.setdefault(norm_path(path), [])
            if i not in here:
                here.append(i)
    if not writers:
        return {}
    links: dict[int, list[Link]] = {}
    for i, job in enumerate(jobs):
        for arg, path in _path_args(job, job.inputs):
            for place in _self_and_parents(norm_path(path)):
                for p in writers.get(place, ()):
                    if p != i and all(link.producer != p for link in links.get(i, ())):
                        links.setdefault(i, []).append(Link(p, arg, path))
    return links


def job_dependencies(jobs: list[Job]) -> dict[int, set[int]]:
    """``{consumer index: {producer indices}}``: see :func:`dependency_links`."""
    return {i: {link.producer for link in found} for i, found in dependency_links(jobs).items()}


def find_cycle(deps: Mapping[int, set[int]]) -> Optional[list[int]]:
    """One cycle of the graph ``deps`` (node -> nodes it needs) as ``[a, b, ..., a]`` (each needs
    the next), or None. Deterministic: nodes and their needs are visited in sorted order."""
    state: dict[int, int] = {}  # 1: on the current path, 2: explored, no cycle through it
    for root in sorted(deps):
        if root in state:
            continue
        path, todo = [root], [iter(sorted(deps[root]))]
        state[root] = 1
        while path:
            nxt = next(todo[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                todo.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                todo.append(iter(sorted(deps.get(nxt, ()))))
    return None


def check_dependencies(jobs: list[Job]) -> dict[int, list[Link]]:
    """:func:`dependency_links` of ``jobs``; SuiteError naming the jobs if they form a cycle."""
    links = dependency_links(jobs)
    cycle = find_cycle({i: {link.producer for link in found} for i, found in links.items()})
    if cycle is not None:
        chain = " -> ".join(f"{jobs[i].label} ({jobs[i].job_id})" for i in cycle)
        raise SuiteError(f"{jobs[cycle[0]].suite}: jobs depend on each other in a cycle (each reads a path "
                         f"the next one writes through its `inputs` / `outputs` args): {chain}")
    return links


def _blocked(job: Job, links: list[Link], jobs: list[Job],
             results: Mapping[int, JobOutcome]) -> Optional[JobOutcome]:
    """The outcome of a job whose producers all have one, when it must not run: failed (a
    producer failed) or locked (a producer runs elsewhere); None when it may be judged as usual."""
    for status, verb, state in (("failed", "not run", "which failed"),
                                (INTERRUPTED, "not run", "which was interrupted"),
                                ("locked", "not judged", "which is running elsewhere")):
        for link in links:
            if results[link.producer].status == status:
                src = jobs[link.producer]
                return JobOutcome(job, status, f"{verb}: its input {link.arg} ({link.path}) comes from job "
                                               f"{src.job_id} ({src.label}), {state}")
    return None


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
