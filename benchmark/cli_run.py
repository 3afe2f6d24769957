"""``python -m benchmark run``: run every unfinished job of the suites on the executor the flags
choose (local slots, persistent workers, a dask cluster) and the run's exit code.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Optional

from .cli_common import (EXIT_FAILED, EXIT_OK, EXIT_RUNNING_ELSEWHERE, NO_MLFLOW_ENV, _check_lock_settings, _jobs,
                         _write_metrics, load_suites)
from .errors import SuiteError


def _check_counts(args) -> None:
    """Counts of ``run`` must be positive integers: SuiteError naming the flag otherwise."""
    for flag, value in (("--jobs", args.jobs), ("--jobs-per-gpu", args.jobs_per_gpu), ("--workers", args.workers)):
        if value is not None and value < 1:
            raise SuiteError(f"{flag}: expected an integer >= 1; got {value}")


def _gpu_list(value: Optional[str]) -> Optional[list[str]]:
    """``--gpus 0,1`` as ``["0", "1"]`` (None without the flag); an empty item is a SuiteError
    (``--gpus ,`` or ``--gpus ""`` used to run on no GPU without a word)."""
    if value is None:
        return None
    gpus = [g.strip() for g in value.split(",")]
    if not all(gpus):
        raise SuiteError(f"--gpus {value!r}: expected a comma list of GPU ids, e.g. 0,1")
    return gpus


def cmd_run(args) -> int:
    from .runner import run_jobs

    _check_counts(args)
    gpus = _gpu_list(args.gpus)
    _check_lock_settings()
    suites = load_suites(args.suites, args.params)
    plans = [(s, _jobs(s, args)) for s in suites]
    if args.dry_run:
        from .report_format import _portable_argv
        from .results import is_valid_result

        for suite, jobs in plans:
            print(f"== {suite.name}: {len(jobs)} jobs")
            for job in jobs:
                state = "done" if is_valid_result(job.out_json, job.task) else "todo"
                print(f"[{state}] {job.label}  {job.job_id}\n    {_portable_argv(job.argv)}")
        return EXIT_OK
    executor = _make_executor(args, gpus)  # None: the local executor of each run_jobs
    tracker = None
    if not args.no_mlflow and os.environ.get(NO_MLFLOW_ENV) == "1":
        print(f"MLflow logging off ({NO_MLFLOW_ENV}=1)", flush=True)
    elif not args.no_mlflow:
        from .tracking import MlflowTracker

        tracker = MlflowTracker()
    summaries = []
    try:
        if executor is not None:
            print(f"executor: {executor.describe()}", flush=True)
        for suite, jobs in plans:
            print(f"== {suite.name}: {len(jobs)} jobs ({suite.source})", flush=True)
            summaries.append(run_jobs(jobs, suite_name=suite.name, n_jobs=args.jobs, gpus=gpus,
                                      jobs_per_gpu=args.jobs_per_gpu, tracker=tracker,
                                      log=lambda s: print(s, flush=True), executor=executor,
                                      reuse=not args.no_reuse))
    finally:
        if executor is not None:
            executor.close()
    for s in summaries:
        print(s.line())
    code = _run_exit(sum(s.count("failed") for s in summaries), sum(s.count("locked") for s in summaries),
                     sum(s.count("interrupted") for s in summaries))
    if args.metrics and code == EXIT_OK:
        for suite, _ in plans:
            _write_metrics(suite, args.results_dir, args.metrics)
    elif args.metrics:  # an unfinished run's metrics would replace the last good files with a partial table
        print(f"metrics: {args.metrics} left as it was (the run did not finish)", flush=True)
    return code


def _run_exit(failed: int, elsewhere: int, interrupted: int = 0) -> int:
    """``run``'s exit code, with one line on stderr when jobs are left without a result (an
    interrupted job counts as failed: exit 1)."""
    if not failed and not elsewhere and not interrupted:
        return EXIT_OK
    parts = [f"{failed} failed (see the FAILED lines)"] if failed else []
    if interrupted:
        parts.append(f"{interrupted} interrupted (SIGTERM/SIGINT; see the INTERRUPTED lines)")
    if elsewhere:
        parts.append(f"{elsewhere} running elsewhere (held by live locks; re-run when they finish, or "
                     "`python -m benchmark unlock` if their runner is gone)")
    print(f"not finished: {failed + interrupted + elsewhere} job(s): " + "; ".join(parts), file=sys.stderr)
    return EXIT_FAILED if failed or interrupted else EXIT_RUNNING_ELSEWHERE


POOL_FLAGS = (("--worker-max-rss-mb", "worker_max_rss_mb"), ("--worker-max-jobs", "worker_max_jobs"),
              ("--preload", "preload"))
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _make_executor(args, gpus: Optional[list[str]]):
    """The executor of ``--executor``: None for local slots (each run_jobs builds its own), a
    :class:`~benchmark.pool.PoolExecutor` (workers start at the first job), or a lazily started
    dask executor.

    ``--scheduler`` or ``--cluster`` alone imply ``--executor dask``. The cluster config is
    validated now; the cluster starts when the first job needs it.
    """
    kind = args.executor or ("dask" if args.scheduler or args.cluster else "local")
    if kind != "pool":
        for flag, attr in POOL_FLAGS:
            if getattr(args, attr) is not None:
                raise SuiteError(f"{flag}: only with --executor pool")
    if kind in ("local", "pool"):
        for flag, value in (("--scheduler", args.scheduler), ("--cluster", args.cluster),
                            ("--cluster-config", args.cluster_config), ("--workers", args.workers)):
            if value is not None:
                raise SuiteError(f"{flag}: only with --executor dask")
        return _pool_executor(args, gpus) if kind == "pool" else None
    if gpus:
        raise SuiteError("--gpus: only with --executor local or pool; on a dask cluster each worker's GPU "
                         "comes from its own environment (CUDA_VISIBLE_DEVICES of the worker)")
    if bool(args.scheduler) == bool(args.cluster):
        raise SuiteError("--executor dask: expected exactly one of --scheduler tcp://HOST:PORT (a running "
                         "scheduler) or --cluster local|pbs|slurm (start one)")
    from .executors import dask_executor, load_cluster_config

    if args.scheduler:
        for flag, value in (("--cluster-config", args.cluster_config), ("--workers", args.workers)):
            if value is not None:
                raise SuiteError(f"{flag}: only with --cluster (a running scheduler has its own workers)")
        return dask_executor(scheduler=args.scheduler)
    config = load_cluster_config(args.cluster, args.cluster_config, args.workers, default_workers=args.jobs)
    return dask_executor(config=config)


def _pool_executor(args, gpus: Optional[list[str]]):
    """``--executor pool``: validate its flags; the workers start when the first job runs."""
    from .pool import PoolExecutor

    for flag, value, low in (("--worker-max-rss-mb", args.worker_max_rss_mb, 0),
                             ("--worker-max-jobs", args.worker_max_jobs, 0)):  # --jobs: _check_counts
        if value is not None and value < low:
            raise SuiteError(f"{flag}: expected an integer >= {low}; got {value}")
    preload = [m.strip() for m in (args.preload or "").split(",") if m.strip()]
    for module in preload:
        if not _MODULE_NAME.fullmatch(module):
            raise SuiteError(f"--preload {args.preload}: {module!r} is not a module name (MOD[,MOD...])")
    if args.preload is not None and not preload:
        raise SuiteError("--preload: expected MOD[,MOD...]; got nothing")
    return PoolExecutor(n_jobs=args.jobs, gpus=gpus, jobs_per_gpu=args.jobs_per_gpu,
                        max_rss_mb=args.worker_max_rss_mb, max_jobs_per_worker=args.worker_max_jobs or 0,
                        preload=preload)


