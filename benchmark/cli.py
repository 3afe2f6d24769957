"""``python -m benchmark {run,status,report,metrics,validate,unlock,accept-code,compare,fingerprint,dvc-stages} SUITE.yaml...``

Exit codes: 0 ok (``run``: every job of the suites has a valid result); 1 a job failed or a
result is invalid; 2 a suite (or the command line) is invalid, reported as one line without a
traceback; 3 (``run``) no job failed but some are running elsewhere (held by live locks): the
suites have holes until they finish and a re-run picks their results up; 130 interrupted.
``compare``: 0 nothing changed beyond seed noise, 1 some row/metric changed (or an invalid result on a side),
2 bad input (also: a suite without a valid result on either side).

This module: the parser and :func:`main`; the commands are in :mod:`benchmark.cli_run` and
:mod:`benchmark.cli_commands`, what they share in :mod:`benchmark.cli_common`.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import NoReturn, Optional, Sequence

from .cli_commands import (cmd_accept_code, cmd_compare, cmd_dvc_stages, cmd_fingerprint, cmd_metrics, cmd_report,
                           cmd_status, cmd_unlock, cmd_validate)
from .cli_common import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, NO_MLFLOW_ENV, check_outputs,
                         check_params_flag, prog_name)
from .cli_run import cmd_run
from .errors import BenchmarkError, SuiteError
from .plugins import load_plugins


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (the flag and what it allows; no usage block), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INVALID, f"error: {message} (`{self.prog} --help` lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=prog_name(), description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("suites", nargs="+", metavar="SUITE", help="suite YAML files or directories of them")
        p.add_argument("--params", default=None, help="params file for ${...} (default: params.yaml)")
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
                        "(every seed's value) from all its results, as `metrics` does; a run that did not finish leaves them as they were")
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
    p.add_argument("--params", default=None, help="params file for ${...} (default: params.yaml)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the comparison as JSON")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="load plugin MODULE first (benchmark.plugins: task kinds, guards); repeatable")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("fingerprint", help="write the content fingerprint of folders to a file "
                                          "(a cheap DVC dependency in place of the folders)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="folders or files")
    p.add_argument("--out", required=True, help="file to write (sha256 <hex> and the paths)")
    p.set_defaults(func=cmd_fingerprint)

    p = sub.add_parser("dvc-stages", help="write dvc.yaml's suite and report stages from dvc.suites.yaml "
                                         "and the suites (--check: exit 1 if they are not current)")
    p.add_argument("--dvc-yaml", default="dvc.yaml", help="the dvc.yaml to update (default: dvc.yaml)")
    p.add_argument("--spec", default=None, help="stage spec (default: dvc.suites.yaml beside --dvc-yaml)")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if dvc.yaml is not current")
    p.set_defaults(func=cmd_dvc_stages)
    return parser


def _terminate_as_interrupt(signum, frame) -> None:  # noqa: ARG001
    raise KeyboardInterrupt


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run" and threading.current_thread() is threading.main_thread():
        # SIGTERM (kill, schedulers) takes the interrupt path: children terminated, locks released
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        check_params_flag(args)
        check_outputs(args)
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
    except OSError as exc:  # met while running (a full disk, a read-only folder): the atomic writers left
        from .outpaths import os_error_line  # every file as it was

        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
