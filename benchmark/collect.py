"""Gather a suite's results: which jobs are complete, invalid or missing; flattened rows; checks."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .code_identity import code_flags
from .errors import ResultError
from .expand import Job
from .guards import derive, fingerprint_flags, segregation_key
from .inputs import changed_outputs, missing_outputs, stale_inputs
from .records import result_changed
from .results import Envelope, load_result
from .suite import Suite


@dataclass
class ResultRow:
    """One complete job: its tags, flattened metrics and every flag (own and derived).

    ``reasons``: why each derived flag fired (one line each); ``segregation``: the non-default
    values of args that change what the metrics mean (see :func:`guards.segregation_key`).
    """

    job: Job
    envelope: Envelope
    metrics: dict[str, float]
    flags: list[str]
    derived: list[str]
    reasons: dict[str, str] = field(default_factory=dict)
    segregation: tuple = ()

    @property
    def tags(self) -> dict[str, Any]:
        return self.job.tags

    def add_flags(self, reasons: dict[str, str]) -> None:
        """Add derived flags (with their reasons) found after the row was built."""
        self.reasons.update(reasons)
        self.derived = sorted(set(self.derived) | set(reasons))
        self.flags = sorted(set(self.flags) | set(reasons))


@dataclass
class Collected:
    """Everything found on disk for one suite's jobs."""

    suite: Suite
    jobs: list[Job]
    rows: list[ResultRow] = field(default_factory=list)
    missing: list[Job] = field(default_factory=list)
    invalid: list[tuple[Job, str]] = field(default_factory=list)

    def metric_frame(self):
        """pandas frame: index = result file, columns = flattened metrics (NaN where absent)."""
        import pandas as pd

        return pd.DataFrame([r.metrics for r in self.rows], index=[str(r.job.out_json) for r in self.rows])

    def problems(self) -> list[str]:
        """Every reason these results cannot be reported: invalid envelopes, schema failures,
        and table metrics that no result provides."""
        from .schemas import schema_problems

        out = [msg for _, msg in self.invalid]
        out += schema_problems(self.metric_frame(), self.suite.kind)
        if self.rows:
            present = set().union(*(r.metrics for r in self.rows))
            wanted = [(f"tables[{i}].metrics", m) for i, t in enumerate(self.suite.tables) for m in t.metrics or []]
            wanted += [(f"plots[{i}].y", p.y) for i, p in enumerate(getattr(self.suite, "plots", None) or [])]
            for key, metric in wanted:
                if metric not in present:
                    out.append(f"{self.suite.source}: {key}: {metric!r} is in no result "
                               f"of suite {self.suite.name!r} (have: {', '.join(sorted(present))})")
        return out


def invalid_results(jobs: list[Job]) -> dict[str, str]:
    """``{job_id: reason}`` for every job whose result JSON exists but is not valid: a bad envelope,
    another task, or a row that fails its task's schema (validated together, one pandera pass)."""
    import pandas as pd

    from .schemas import schema_failures
    from .tasks import get_task

    bad: dict[str, str] = {}
    flat_by_task: dict[str, list[tuple[Job, dict[str, float]]]] = {}
    for job in jobs:
        if not job.out_json.exists():
            continue
        try:
            env = load_result(job.out_json, job.task)
        except ResultError as exc:
            bad[job.job_id] = str(exc)
            continue
        changed = result_changed(job)
        if changed:
            bad[job.job_id] = changed
            continue
        flat_by_task.setdefault(job.task, []).append((job, env.flat()))
    for task, items in flat_by_task.items():
        frame = pd.DataFrame([flat for _, flat in items], index=[str(j.out_json) for j, _ in items])
        failures = schema_failures(frame, get_task(task))
        for job, _ in items:
            msgs = failures.get(str(job.out_json))
            if msgs:
                bad[job.job_id] = f"{job.out_json}: " + "; ".join(msgs)
    return bad


def collect(suite: Suite, jobs: list[Job], *, live_cache_check: bool = True) -> Collected:
    """Read every job's result JSON (envelope-validated, task-checked) and apply the guards.

    ``live_cache_check``: compare each result's cache fingerprint with the cache as it is now
    (when it exists on this machine); otherwise only with the suite's other results. A result
    whose recorded code differs from the checkout's carries ``code_changed``.
    """
    out = Collected(suite=suite, jobs=jobs)
    kind = suite.kind
    for job in jobs:
        if not job.out_json.exists():
            out.missing.append(job)
            continue
        try:
            env = load_result(job.out_json, suite.task)
        except ResultError as exc:
            out.invalid.append((job, str(exc)))
            continue
        changed = result_changed(job)
        if changed:
            out.invalid.append((job, changed))
            continue
        reasons = derive(job, env, kind)
        reasons.update({f"stale_input:{name}": f"{name} changed since the job ran" for name in stale_inputs(job)})
        reasons.update({f"missing_output:{name}": f"{name} ({job.args.get(name)}) no longer exists"
                        for name in missing_outputs(job)})
        reasons.update({f"changed_output:{name}": f"{name} ({job.args.get(name)}) changed since the "
                        "job wrote it" for name in changed_outputs(job)})
        derived = sorted(reasons)
        flags = sorted(set(env.flags) | set(derived))
        out.rows.append(ResultRow(job=job, envelope=env, metrics=env.flat(), flags=flags, derived=derived,
                                  reasons=reasons, segregation=segregation_key(env)))
    by_id = {r.job.job_id: r for r in out.rows}
    for job_id, reasons in fingerprint_flags([(r.job, r.envelope) for r in out.rows],
                                             live=live_cache_check).items():
        by_id[job_id].add_flags(reasons)
    for job_id, reasons in code_flags([(r.job, r.envelope) for r in out.rows]).items():
        by_id[job_id].add_flags(reasons)
    return out
