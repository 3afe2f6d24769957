"""``python -m benchmark {run,status,report,validate,accept-code} SUITE.yaml...``

Exit codes: 0 ok; 1 a job failed or a result is invalid; 2 a suite (or the command line) is
invalid, reported as one message without a traceback; 130 interrupted.
"""
from __future__ import annotations

import argparse
import importlib
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Optional, Sequence

from .errors import BenchmarkError, SuiteError
from .expand import Job, expand, select
from .suite import Suite, load_suite


def _suite_paths(items: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
            if not found:
                raise SuiteError(f"{p}: no *.yaml suites in this directory")
            out += found
        else:
            out.append(p)
    return out


def load_suites(items: Sequence[str], params: str) -> list[Suite]:
    """Load every suite (files or directories of *.yaml); names must be unique."""
    suites: list[Suite] = []
    seen: dict[str, Path] = {}
    for path in _suite_paths(items):
        suite = load_suite(path, params)
        if suite.name in seen:
            raise SuiteError(f"{path}: name: {suite.name!r} is also the name of {seen[suite.name]}; "
                             "suite names must be unique (they name result folders)")
        seen[suite.name] = path
        suites.append(suite)
    return suites


def _parse_only(values: Sequence[str], suite: Suite) -> dict[str, list[str]]:
    only: dict[str, list[str]] = {}
    allowed = suite.axes + ([suite.seed_arg] if suite.seed_arg else [])
    for item in values:
        axis, sep, rows = item.partition("=")
        if not sep or not rows:
            raise SuiteError(f"--only {item}: expected AXIS=ROW[,ROW...]")
        if axis not in allowed:
            raise SuiteError(f"--only {item}: {suite.source} has no axis {axis!r} (axes: {', '.join(allowed)})")
        only.setdefault(axis, []).extend(rows.split(","))
    return only


def _jobs(suite: Suite, args) -> list[Job]:
    jobs = expand(suite, args.results_dir)
    if getattr(args, "only", None):
        jobs = select(jobs, _parse_only(args.only, suite))
    return jobs


def cmd_run(args) -> int:
    from .runner import run_jobs

    suites = load_suites(args.suites, args.params)
    plans = [(s, _jobs(s, args)) for s in suites]
    if args.dry_run:
        from .report import _portable_argv
        from .results import is_valid_result

        for suite, jobs in plans:
            print(f"== {suite.name}: {len(jobs)} jobs")
            for job in jobs:
                state = "done" if is_valid_result(job.out_json, job.task) else "todo"
                print(f"[{state}] {job.label}  {job.job_id}\n    {_portable_argv(job.argv)}")
        return 0
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    executor = _make_executor(args, gpus)  # None: the local executor of each run_jobs
    tracker = None
    if not args.no_mlflow:
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
    return 0 if all(s.ok for s in summaries) else 1


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

    for flag, value, low in (("--jobs", args.jobs, 1), ("--jobs-per-gpu", args.jobs_per_gpu, 1),
                             ("--worker-max-rss-mb", args.worker_max_rss_mb, 0),
                             ("--worker-max-jobs", args.worker_max_jobs, 0)):
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


def cmd_status(args) -> int:
    from .status import status_lines

    for i, suite in enumerate(load_suites(args.suites, args.params)):
        if i:
            print()
        print("\n".join(status_lines(suite, _jobs(suite, args), limit=None if args.all else args.limit)))
    return 0


def cmd_report(args) -> int:
    from .report import build_report, write_report

    failed = False
    for suite in load_suites(args.suites, args.params):
        rep = build_report(suite, _jobs(suite, args), results_dir=Path(args.results_dir))
        if rep.problems:
            failed = True
            print(f"{suite.name}: report not written; invalid results (files left in place):", file=sys.stderr)
            print("\n".join(f"  {p}" for p in rep.problems), file=sys.stderr)
            continue
        paths = write_report(rep, args.out, args.summary)
        gate = f"; gate: {rep.gate.decision}" if rep.gate else ""
        plots = f", {len(rep.plots)} plot(s)" if rep.plots else ""
        print(f"{suite.name}: {len(rep.collected.rows)}/{len(rep.collected.jobs)} complete -> "
              f"{paths[0]}, {paths[1]}{plots}{gate}")
        if rep.gate and rep.gate.reasons:
            print("\n".join(f"  {reason}" for reason in rep.gate.reasons))
    return 1 if failed else 0


def cmd_validate(args) -> int:
    from .collect import collect

    failed = False
    for suite in load_suites(args.suites, args.params):
        jobs = _jobs(suite, args)
        col = collect(suite, jobs)
        problems = col.problems()
        print(f"{suite.name}: suite OK ({len(jobs)} jobs); results: {len(col.rows)} valid, "
              f"{len(col.invalid)} invalid, {len(col.missing)} missing")
        if problems:
            failed = True
            print("\n".join(f"  {p}" for p in problems), file=sys.stderr)
    return 1 if failed else 0


def cmd_accept_code(args) -> int:
    from .code_identity import accept_code

    for suite in load_suites(args.suites, args.params):
        done = accept_code(_jobs(suite, args))
        print(f"{suite.name}: {len(done)} result(s) accepted as computed by the checkout's code")
        for job, what in done:
            print(f"  {job.label} ({job.job_id}): {what}")
    return 0


def cmd_fingerprint(args) -> int:
    from .fingerprint import write_fingerprint

    digest = write_fingerprint(args.paths, args.out)
    print(f"{args.out}: sha256 {digest[:16]} ({', '.join(args.paths)})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmark", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("suites", nargs="+", metavar="SUITE", help="suite YAML files or directories of them")
        p.add_argument("--params", default="params.yaml", help="params file for ${...} (default: params.yaml)")
        p.add_argument("--results-dir", default="results", help="results root (default: results)")
        p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                       help="import MODULE first (it may register_task() new task kinds); repeatable")

    p = sub.add_parser("run", help="run every unfinished job of the suites")
    common(p)
    p.add_argument("--jobs", "-j", type=int, default=1, help="parallel local jobs (default 1)")
    p.add_argument("--gpus", default=None, help="comma list of GPU ids, round-robin CUDA_VISIBLE_DEVICES")
    p.add_argument("--jobs-per-gpu", type=int, default=1, help="concurrent jobs per GPU (with --gpus)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log finished jobs to MLflow")
    p.add_argument("--only", action="append", default=[], metavar="AXIS=ROW[,ROW]",
                   help="restrict to matching jobs (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="list jobs and argv; run nothing")
    p.add_argument("--no-reuse", action="store_true",
                   help="run every job here even when another suite's folder holds a finished result "
                        "of the same job id (default: adopt it)")
    p.add_argument("--executor", choices=("local", "pool", "dask"), default=None,
                   help="where commands run: local subprocess slots (default), a pool of persistent "
                        "local worker processes (Python jobs run in-process), or a dask cluster")
    p.add_argument("--worker-max-rss-mb", type=int, default=None, metavar="M",
                   help="pool: kill (during a job: failing it) or recycle a worker above M MiB RSS "
                        "(default: RAM / (2 x workers); 0: no limit)")
    p.add_argument("--worker-max-jobs", type=int, default=None, metavar="K",
                   help="pool: replace a worker after K jobs (default 0: never)")
    p.add_argument("--preload", default=None, metavar="MOD[,MOD]",
                   help="pool: modules every worker imports at start (default: none; the module of "
                        "each -m job is imported by a worker the first time it runs one)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="dask: a running scheduler, e.g. tcp://host:8786")
    p.add_argument("--cluster", choices=("local", "pbs", "slurm"), default=None,
                   help="dask: start a LocalCluster, PBSCluster or SLURMCluster")
    p.add_argument("--cluster-config", default=None, metavar="FILE",
                   help="dask: YAML of cluster kwargs (cores, memory, queue, walltime, "
                        "job_extra_directives, ...) and `workers: N`")
    p.add_argument("--workers", type=int, default=None,
                   help="dask: workers to scale the cluster to (default: the file's, else --jobs)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="completion per suite and per axis row; missing jobs")
    common(p)
    p.add_argument("--limit", type=int, default=30, help="list at most this many missing jobs (default 30)")
    p.add_argument("--all", action="store_true", help="list every missing job")
    p.add_argument("--only", action="append", default=[], metavar="AXIS=ROW[,ROW]",
                   help="restrict to matching jobs (repeatable)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("report", help="write Markdown/CSV reports and summary.json")
    common(p)
    p.add_argument("--out", default="reports", help="report directory (default: reports)")
    p.add_argument("--summary", default="summary.json", metavar="NAME",
                   help="file in --out that collects every suite's headline numbers for `dvc metrics` "
                        "(default: summary.json)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("validate", help="validate suites and every existing result")
    common(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("accept-code", help="re-stamp results of other code with the checkout's code digest "
                                          "(a refactor; a change of numbers bumps PROTOCOL_VERSION instead)")
    common(p)
    p.add_argument("--only", action="append", default=[], metavar="AXIS=ROW[,ROW]",
                   help="restrict to matching jobs (repeatable)")
    p.set_defaults(func=cmd_accept_code)

    p = sub.add_parser("fingerprint", help="write the content fingerprint of folders to a file "
                                          "(a cheap DVC dependency in place of the folders)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="folders or files")
    p.add_argument("--out", required=True, help="file to write (sha256 <hex> and the paths)")
    p.set_defaults(func=cmd_fingerprint)
    return parser


def _terminate_as_interrupt(signum, frame) -> None:  # noqa: ARG001
    raise KeyboardInterrupt


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run" and threading.current_thread() is threading.main_thread():
        # SIGTERM (kill, schedulers) takes the interrupt path: children terminated, locks released
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        for module in getattr(args, "plugin", ()):  # the suite commands take --plugin
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise SuiteError(f"--plugin {module}: cannot import: {exc}") from None
        return args.func(args)
    except SuiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `python -m benchmark run --dry-run ... | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
