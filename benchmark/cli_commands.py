"""The other ``python -m benchmark`` commands: metrics, status, report, validate, unlock,
accept-code, compare and fingerprint (``run``: :mod:`benchmark.cli_run`).
"""
from __future__ import annotations

import sys
from pathlib import Path

from .cli_common import EXIT_FAILED, EXIT_OK, _check_lock_settings, _jobs, _write_metrics, load_suites, prog_name
from .errors import SuiteError


def _no_results_folder(suite, results_dir: str, what: str) -> bool:
    """True (and one line on stderr) when the suite has no results folder in ``results_dir``:
    ``report`` and ``metrics`` then write nothing (a wrong --results-dir must not replace good
    files with empty ones)."""
    folder = Path(results_dir) / suite.name
    if folder.is_dir():
        return False
    print(f"{suite.name}: no results folder {folder} (run `{prog_name()} run {suite.source}` first); "
          f"no {what} written", file=sys.stderr)
    return True


def cmd_metrics(args) -> int:
    """Per-suite metrics files from the results on disk (what ``run --metrics DIR`` writes); none
    at all when a suite has no results folder."""
    suites = load_suites(args.suites, args.params)
    if [s for s in suites if _no_results_folder(s, args.results_dir, "metrics")]:
        return EXIT_FAILED
    for suite in suites:
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
    """Render every suite first; write (all files at once, :func:`benchmark.report_write.write_reports`)
    only if every suite rendered: a missing results folder or invalid results leave every
    existing report file as it was."""
    from .report import build_report
    from .report_write import write_reports

    reps, failed = [], False
    for suite in load_suites(args.suites, args.params):
        if _no_results_folder(suite, args.results_dir, "report"):
            failed = True
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
    from .records import reaccept_result

    for suite in load_suites(args.suites, args.params):
        done = accept_code(_jobs(suite, args))
        for job, _ in done:
            reaccept_result(job)
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
    empty = [c.suite for c in comparisons if not c.items]
    if empty or not comparisons:  # exit 0 would say "nothing changed" of what was never compared
        what = f"suite {empty[0]!r}" if empty else "no suite"
        raise SuiteError(f"compare: {what}: no valid result in {labels[0]} {side_a} nor in {labels[1]} {side_b}; "
                         "nothing to compare (wrong results directory, revision or suite?)")
    print("\n".join(render_markdown(c, args.alpha) for c in comparisons), end="")
    if args.json:
        atomic_write_json(args.json, to_json(comparisons, side_a, side_b, args.alpha))
    return EXIT_FAILED if any(c.changed for c in comparisons) else EXIT_OK


def cmd_fingerprint(args) -> int:
    from .fingerprint import write_fingerprint

    digest = write_fingerprint(args.paths, args.out)
    print(f"{args.out}: sha256 {digest[:16]} ({', '.join(args.paths)})")
    return EXIT_OK


def cmd_dvc_stages(args) -> int:
    from .dvc_stages import main, spec_default

    return main(args.spec or spec_default(args.dvc_yaml), args.dvc_yaml, args.check)
