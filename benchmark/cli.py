"""``python -m benchmark {run,status,report,metrics,validate,unlock,accept-code,compare} SUITE.yaml...``

Exit codes: 0 ok (``run``: every job of the suites has a valid result); 1 a job failed or a
result is invalid; 2 a suite (or the command line) is invalid, reported as one line without a
traceback; 3 (``run``) no job failed but some are running elsewhere (held by live locks): the
suites have holes until they finish and a re-run picks their results up; 130 interrupted.
``compare``: 0 nothing changed beyond seed noise, 1 some row/metric changed, 2 bad input.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import NoReturn, Optional, Sequence

from .errors import BenchmarkError, SuiteError
from .expand import Job, expand, select
from .plugins import load_plugins
from .suite import Suite, load_suite

#: Set to 1, turns MLflow logging off like ``run --no-mlflow`` (for runs that dvc stages start).
NO_MLFLOW_ENV = "BENCH_NO_MLFLOW"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_RUNNING_ELSEWHERE = 3
EXIT_INTERRUPTED = 130


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


def _parse_only(values: Sequence[str], suite: Suite, jobs: list[Job]) -> dict[str, list[str]]:
    """``--only AXIS=ROW[,ROW]`` items as ``{axis: [rows]}``; an axis the suite lacks or a row
    no job of ``jobs`` has on that axis is a SuiteError naming the ones it has."""
    only: dict[str, list[str]] = {}
    allowed = suite.axes + ([suite.seed_arg] if suite.seed_arg else [])
    for item in values:
        axis, sep, rows = item.partition("=")
        if not sep or not rows:
            raise SuiteError(f"--only {item}: expected AXIS=ROW[,ROW...]")
        if axis not in allowed:
            raise SuiteError(f"--only {item}: {suite.source} has no axis {axis!r} (axes: {', '.join(allowed)})")
        known = list(dict.fromkeys(str(j.tags.get(axis)) for j in jobs))
        for row in rows.split(","):
            if row not in known:
                raise SuiteError(f"--only {item}: {suite.source} has no row {row!r} on axis {axis!r} "
                                 f"(rows: {', '.join(known)})")
        only.setdefault(axis, []).extend(rows.split(","))
    return only


def _jobs(suite: Suite, args) -> list[Job]:
    jobs = expand(suite, args.results_dir)
    if getattr(args, "only", None):
        jobs = select(jobs, _parse_only(args.only, suite, jobs))
    return jobs


def _check_counts(args) -> None:
    """Counts of ``run`` must be positive integers: SuiteError naming the flag otherwise."""
    for flag, value in (("--jobs", args.jobs), ("--jobs-per-gpu", args.jobs_per_gpu), ("--workers", args.workers)):
        if value is not None and value < 1:
            raise SuiteError(f"{flag}: expected an integer >= 1; got {value}")


def _check_lock_settings() -> None:
    """The lock heartbeat periods from the environment are valid (SuiteError naming the variable)."""
    from .locks import renew_period, stale_limit

    renew_period()
    stale_limit()


def cmd_run(args) -> int:
    from .runner import run_jobs

    _check_counts(args)
    _check_lock_settings()
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
        return EXIT_OK
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
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
    if args.metrics:
        for suite, _ in plans:
            _write_metrics(suite, args.results_dir, args.metrics)
    return _run_exit(sum(s.count("failed") for s in summaries), sum(s.count("locked") for s in summaries),
                     sum(s.count("interrupted") for s in summaries))


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


def _write_metrics(suite: Suite, results_dir: str, out_dir: str) -> list[str]:
    """Write the suite's metrics files (:mod:`benchmark.suite_metrics`) and print one line."""
    from .suite_metrics import write_metrics

    path, seeds_path, n_rows, invalid = write_metrics(suite, results_dir, out_dir)
    left_out = f"; {len(invalid)} invalid result(s) left out" if invalid else ""
    print(f"{suite.name}: metrics -> {path}, {seeds_path} ({n_rows} rows{left_out})", flush=True)
    return invalid


def cmd_metrics(args) -> int:
    """Per-suite metrics files from the results on disk (what ``run --metrics DIR`` writes)."""
    for suite in load_suites(args.suites, args.params):
        for line in _write_metrics(suite, args.results_dir, args.out):
            print(f"  invalid result left out: {line}", file=sys.stderr)
    return EXIT_OK


def cmd_status(args) -> int:
    from .status import status_lines

    if args.limit < 0:
        raise SuiteError(f"--limit: expected an integer >= 0; got {args.limit}")
    _check_lock_settings()
    for i, suite in enumerate(load_suites(args.suites, args.params)):
        if i:
            print()
        print("\n".join(status_lines(suite, _jobs(suite, args), limit=None if args.all else args.limit)))
    return EXIT_OK


def cmd_report(args) -> int:
    """Render every suite first; write (all files at once, :func:`benchmark.report.write_reports`)
    only if every suite rendered: a missing results folder or invalid results leave every
    existing report file as it was."""
    from .report import build_report, write_reports

    reps, failed = [], False
    for suite in load_suites(args.suites, args.params):
        folder = Path(args.results_dir) / suite.name
        if not folder.is_dir():
            failed = True
            print(f"{suite.name}: no results folder {folder} (run `{prog_name()} run {suite.source}` first); "
                  "no report written", file=sys.stderr)
            continue
        rep = build_report(suite, _jobs(suite, args), results_dir=Path(args.results_dir))
        if rep.problems:
            failed = True
            print(f"{suite.name}: invalid results (files left in place); no report written:", file=sys.stderr)
            print("\n".join(f"  {p}" for p in rep.problems), file=sys.stderr)
            continue
        reps.append(rep)
    if failed:
        return EXIT_FAILED
    for rep, paths in zip(reps, write_reports(reps, args.out, args.summary)):
        gate = f"; gate: {rep.gate.decision}" if rep.gate else ""
        plots = f", {len(rep.plots)} plot(s)" if rep.plots else ""
        print(f"{rep.suite.name}: {len(rep.collected.rows)}/{len(rep.collected.jobs)} complete -> "
              f"{paths[0]}, {paths[1]}{plots}{gate}")
        if rep.gate and rep.gate.reasons:
            print("\n".join(f"  {reason}" for reason in rep.gate.reasons))
    return EXIT_OK


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
    return EXIT_FAILED if failed else EXIT_OK


def cmd_unlock(args) -> int:
    """Remove the locks of the suites' jobs whose holder is dead or stale (``--force``: every
    lock); one line per lock file found. Live locks are kept (and named) without ``--force``."""
    from .locks import break_lock, inspect_lock

    _check_lock_settings()
    jobs = [job for suite in load_suites(args.suites, args.params) for job in _jobs(suite, args)]
    wanted = set(args.job)
    unknown = sorted(wanted - {job.job_id for job in jobs})
    if unknown:
        raise SuiteError(f"--job {unknown[0]}: no job of the suites has this id")
    found = 0
    for job in jobs:
        if wanted and job.job_id not in wanted:
            continue
        check = inspect_lock(job.lock)
        if check is None:
            continue
        found += 1
        if check.live and not args.force:
            print(f"kept     {job.lock}: {check.describe()}; live (--force removes it)")
        elif break_lock(job.lock, check.holder):
            print(f"removed  {job.lock}: {check.describe()}" + ("; live, forced" if check.live else ""))
        else:
            print(f"kept     {job.lock}: re-taken by another process while being removed")
    if not found:
        print(f"no locks among {len(jobs)} job(s)")
    return EXIT_OK


def cmd_accept_code(args) -> int:
    from .code_identity import accept_code

    for suite in load_suites(args.suites, args.params):
        done = accept_code(_jobs(suite, args))
        print(f"{suite.name}: {len(done)} result(s) accepted as computed by the checkout's code")
        for job, what in done:
            print(f"  {job.label} ({job.job_id}): {what}")
    return EXIT_OK


def cmd_compare(args) -> int:
    """Paired comparison of two sides: results directories, git revisions or DVC experiments
    (see :mod:`benchmark.compare`). ``SUITE... A B``, or ``SUITE... --a A --b B``."""
    from .atomic import atomic_write_json
    from .compare import compare_sides, load_tables, render_markdown, to_json

    items = list(args.items)
    if args.a is not None or args.b is not None:
        if args.a is None or args.b is None:
            raise SuiteError("compare: --a and --b go together (or give A B as the last two arguments)")
        side_a, side_b, suite_items = args.a, args.b, items
        labels = ("--a", "--b")
    elif len(items) >= 2:
        side_a, side_b, suite_items = items[-2], items[-1], items[:-2]
        labels = ("A", "B")
    else:
        raise SuiteError("compare: expected [SUITE...] A B (each a results directory, git revision "
                         "or DVC experiment name), or SUITE... --a A --b B")
    if not 0 < args.alpha < 1:
        raise SuiteError(f"--alpha: expected a number in (0, 1); got {args.alpha}")
    suites = load_suites(suite_items, args.params) if suite_items else []
    tables_a = load_tables(side_a, suites, args.repo, labels[0])
    tables_b = load_tables(side_b, suites, args.repo, labels[1])
    comparisons = compare_sides(suites, tables_a, tables_b, args.alpha)
    print("\n".join(render_markdown(c, args.alpha) for c in comparisons), end="")
    if args.json:
        atomic_write_json(args.json, to_json(comparisons, side_a, side_b, args.alpha))
    return EXIT_FAILED if any(c.changed for c in comparisons) else EXIT_OK


def cmd_fingerprint(args) -> int:
    from .fingerprint import write_fingerprint

    digest = write_fingerprint(args.paths, args.out)
    print(f"{args.out}: sha256 {digest[:16]} ({', '.join(args.paths)})")
    return EXIT_OK


def prog_name(argv0: Optional[str] = None) -> str:
    """The console script's name when invoked through one of the installed distribution's
    (``[project.scripts]``: ``<script> run ...`` = ``python -m benchmark run ...``), else
    ``python -m benchmark``."""
    from .distribution import FALLBACK_PROG, script_names

    name = Path(sys.argv[0] if argv0 is None else argv0).name
    return next((s for s in script_names() if name in (s, s + ".exe")), FALLBACK_PROG)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (the flag and what it allows; no usage block), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INVALID, f"error: {message} (`{self.prog} --help` lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=prog_name(), description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("suites", nargs="+", metavar="SUITE", help="suite YAML files or directories of them")
        p.add_argument("--params", default="params.yaml", help="params file for ${...} (default: params.yaml)")
        p.add_argument("--results-dir", default="results", help="results root (default: results)")
        p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                       help="load plugin MODULE first (benchmark.plugins: task kinds, guards); repeatable")

    p = sub.add_parser("run", help="run every unfinished job of the suites")
    common(p)
    p.add_argument("--jobs", "-j", type=int, default=1, help="parallel local jobs (default 1)")
    p.add_argument("--gpus", default=None, help="comma list of GPU ids, round-robin CUDA_VISIBLE_DEVICES")
    p.add_argument("--jobs-per-gpu", type=int, default=1, help="concurrent jobs per GPU (with --gpus)")
    p.add_argument("--no-mlflow", action="store_true",
                   help=f"do not log jobs to MLflow (also: environment {NO_MLFLOW_ENV}=1, for runs "
                        "started by dvc stages)")
    p.add_argument("--only", action="append", default=[], metavar="AXIS=ROW[,ROW]",
                   help="restrict to matching jobs (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="list jobs and argv; run nothing")
    p.add_argument("--metrics", default=None, metavar="DIR",
                   help="afterwards, write each suite's metrics files DIR/<suite>.json (seed mean, std, "
                        "n per row and headline metric: a dvc metrics file) and DIR/<suite>.seeds.json "
                        "(every seed's value) from all its results, as `metrics` does")
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

    p = sub.add_parser("metrics", help="write DIR/<suite>.json (seed mean, std, n per row and headline "
                                       "metric; for `dvc metrics`) and DIR/<suite>.seeds.json (every seed)")
    common(p)
    p.add_argument("--out", default="metrics", metavar="DIR", help="metrics directory (default: metrics)")
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("validate", help="validate suites and every existing result")
    common(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("unlock", help="remove locks whose holder is dead or stale (--force: every lock)")
    common(p)
    p.add_argument("--job", action="append", default=[], metavar="ID",
                   help="only this job id's lock (repeatable)")
    p.add_argument("--only", action="append", default=[], metavar="AXIS=ROW[,ROW]",
                   help="restrict to matching jobs (repeatable)")
    p.add_argument("--force", action="store_true",
                   help="remove live locks too (their runner may still be running the job)")
    p.set_defaults(func=cmd_unlock)

    p = sub.add_parser("accept-code", help="re-stamp results of other code with the checkout's code digest "
                                          "(a refactor; a change of numbers bumps PROTOCOL_VERSION instead)")
    common(p)
    p.add_argument("--only", action="append", default=[], metavar="AXIS=ROW[,ROW]",
                   help="restrict to matching jobs (repeatable)")
    p.set_defaults(func=cmd_accept_code)

    p = sub.add_parser("compare", help="did any number move beyond seed noise between two results "
                                      "directories, git revisions or DVC experiments? (exit 1 if so)",
                       usage="%(prog)s [options] [SUITE...] A B\n       %(prog)s [options] SUITE... --a A --b B")
    p.add_argument("items", nargs="*", metavar="SUITE... A B",
                   help="suite YAML files or directories of them (needed for a results directory side; "
                        "with two revisions, the suites default to every metrics/*.seeds.json), then the "
                        "sides A B: each a results directory, else a git revision, else a DVC experiment name")
    p.add_argument("--a", default=None, metavar="A", help="the baseline side (then every positional is a suite)")
    p.add_argument("--b", default=None, metavar="B", help="the changed side")
    p.add_argument("--repo", default=".", metavar="DIR",
                   help="git repository of revision/experiment sides (default: the current directory)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--params", default="params.yaml", help="params file for ${...} (default: params.yaml)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the comparison as JSON")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="load plugin MODULE first (benchmark.plugins: task kinds, guards); repeatable")
    p.set_defaults(func=cmd_compare)

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
        load_plugins(getattr(args, "plugin", ()), origin="--plugin")  # the suite commands take --plugin
        return args.func(args)
    except SuiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `python -m benchmark run --dry-run ... | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
