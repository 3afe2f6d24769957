"""A generic benchmark engine: suites -> jobs -> results -> reports.

It knows no lab's protocol: a job is an argv, an output JSON path and tags; task kinds, guards
and report lines come from plugins (:mod:`benchmark.plugins`). Public API::

    from benchmark import load_suite, expand, run_jobs, run_suite, build_report, write_report

    suite = load_suite("suites/eval.yaml", params_path="params.yaml")
    jobs = expand(suite, results_dir="results")
    summary = run_jobs(jobs, suite_name=suite.name, n_jobs=4, tracker=MlflowTracker())
    rep = build_report(suite, jobs); write_report(rep, "reports")

Heavy dependencies (pydantic, pandas, pandera, tabulate, mlflow) are imported on first use: a job
that records its code identity (:mod:`benchmark.code_identity`) pays for none of them.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from .errors import BenchmarkError, ResultError, SuiteError
from .expand import Job, expand, job_id_for

# The task registry loads on first use too: the research code imports the leaves
# benchmark.envelope / benchmark.atomic without pulling the engine (or the protocol plugin).
_LAZY = {
    **dict.fromkeys(("Guard", "MetricRule", "RowCheck", "TaskKind", "get_task", "register_task"), "tasks"),
    "Suite": "suite", "load_suite": "suite",
    "run_job": "runner", "run_jobs": "runner", "run_suite": "runner", "RunSummary": "runner",
    "JobOutcome": "runner", "LocalExecutor": "executors", "DaskExecutor": "executors",
    "derive_seed": "seeds",
    "build_report": "report", "write_report": "report", "SuiteReport": "report",
    "collect": "collect", "load_result": "results", "Envelope": "results",
    "MlflowTracker": "tracking", "status_lines": "status", "main": "cli",
}

__all__ = ["BenchmarkError", "ResultError", "SuiteError", "Job", "expand", "job_id_for", "Guard",
           "MetricRule", "RowCheck", "TaskKind", "get_task", "register_task", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'benchmark' has no attribute {name!r}")
