"""What every ``python -m benchmark`` command shares: the exit codes, loading the suites named on the
command line (files or folders of them), their jobs narrowed by ``--only``, the lock settings check,
the per-suite metrics files and the program's name as messages print it.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

from .errors import SuiteError
from .expand import Job, expand, select
from .suite import Suite, load_suite

#: Set to 1, turns MLflow logging off like ``run --no-mlflow`` (for runs that dvc stages start).
NO_MLFLOW_ENV = "BENCH_NO_MLFLOW"

#: The params file of ``${...}`` references when ``--params`` is not given (it may be absent when
#: no suite refers to it).
DEFAULT_PARAMS = "params.yaml"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_RUNNING_ELSEWHERE = 3
EXIT_INTERRUPTED = 130


def check_params_flag(args) -> None:
    """``--params`` given: the file must exist (a typo would otherwise go unnoticed by a suite
    without references); not given: :data:`DEFAULT_PARAMS`. Sets ``args.params``."""
    if not hasattr(args, "params"):
        return
    if args.params is None:
        args.params = DEFAULT_PARAMS
    elif not Path(args.params).is_file():
        what = "is a folder" if Path(args.params).is_dir() else "no such file"
        raise SuiteError(f"--params {args.params}: {what}")


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


def _check_lock_settings() -> None:
    """The lock heartbeat periods from the environment are valid (SuiteError naming the variable)."""
    from .locks import renew_period, stale_limit

    renew_period()
    stale_limit()



#: The output locations of each command: (flag, attribute, "dir" or "file"); ``--summary`` is a
#: file name inside ``--out``.
OUTPUTS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "run": (("--results-dir", "results_dir", "dir"), ("--metrics", "metrics", "dir")),
    "report": (("--results-dir", "results_dir", "dir"), ("--out", "out", "dir"), ("--summary", "summary", "file")),
    "metrics": (("--results-dir", "results_dir", "dir"), ("--out", "out", "dir")),
    "status": (("--results-dir", "results_dir", "dir"),),
    "validate": (("--results-dir", "results_dir", "dir"),),
    "unlock": (("--results-dir", "results_dir", "dir"),),
    "accept-code": (("--results-dir", "results_dir", "dir"),),
    "compare": (("--json", "json", "file"),),
    "fingerprint": (("--out", "out", "file"),),
    "dvc-stages": (("--dvc-yaml", "dvc_yaml", "file"),),
}


def check_outputs(args) -> None:
    """Every output location of ``args.command`` can take what the command writes there: a
    SuiteError naming the flag otherwise (exit 2, before anything runs or is written)."""
    from .outpaths import dir_problem, file_problem

    for flag, attr, kind in OUTPUTS.get(args.command, ()):
        value = getattr(args, attr, None)
        if value is None:
            continue
        if attr == "summary":
            if not value or Path(value).name != value:
                raise SuiteError(f"--summary {value!r}: expected a file name (it goes in --out)")
            value = Path(args.out) / value
        problem = dir_problem(flag, value) if kind == "dir" else file_problem(flag, value)
        if problem:
            raise SuiteError(problem)


def _write_metrics(suite: Suite, results_dir: str, out_dir: str) -> list[str]:
    """Write the suite's metrics files (:mod:`benchmark.suite_metrics`) and print one line."""
    from .suite_metrics import write_metrics

    path, seeds_path, n_rows, invalid = write_metrics(suite, results_dir, out_dir)
    left_out = f"; {len(invalid)} invalid result(s) left out" if invalid else ""
    print(f"{suite.name}: metrics -> {path}, {seeds_path} ({n_rows} rows{left_out})", flush=True)
    return invalid


def prog_name(argv0: Optional[str] = None) -> str:
    """The console script's name when invoked through one of the installed distribution's
    (``[project.scripts]``: ``<script> run ...`` = ``python -m benchmark run ...``), else
    ``python -m benchmark``."""
    from .distribution import FALLBACK_PROG, script_names

    name = Path(sys.argv[0] if argv0 is None else argv0).name
    return next((s for s in script_names() if name in (s, s + ".exe")), FALLBACK_PROG)
