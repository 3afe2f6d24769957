"""The steps of one job in a run: judge an existing result (:func:`check_existing`), claim the job
(lock, move invalid or stale results aside, adopt a twin result of another suite), build its
command (:func:`command_spec`), and judge and record what the command left (:func:`finish_job`);
:func:`run_job` chains them for one job here. The loop over many jobs is :mod:`benchmark.runner`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Optional

from .atomic import atomic_write_bytes
from .errors import ResultError, SuiteError
from .executors import CommandSpec, ExecResult, execute_command
from .expand import Job
from .inputs import fingerprints, missing_outputs, out_of_date, out_of_date_text, recorded_fingerprints
from .locks import JobLock
from .reconcile import INTERRUPTED
from .records import accepted_digests, now_iso, result_changed, write_record
from .results import Envelope, load_result, move_aside
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
    if problems:
        return f"{job.out_json}: " + "; ".join(problems)
    return result_changed(job)


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
    try:
        holder = lock.acquire()
    except SuiteError as exc:  # the lock path is not a lock file: this job fails, the others run
        return JobOutcome(job, "failed", str(exc)), None
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
                     inputs=inputs, **accepted_digests(job))
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
        accepted = accepted_digests(job) if status == "done" else {}
        write_record(job, status=status, started=claim.started_iso, finished=now_iso(),
                     returncode=result.returncode, wall_s=round(outcome.wall_s, 3), detail=why,
                     where=claim.where, exec_host=result.host or None, cuda_visible_devices=result.slot,
                     inputs=claim.inputs, **accepted)
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

