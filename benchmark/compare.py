"""Did a change move any number beyond seed noise? Paired comparison of two sides.

``python -m benchmark compare [SUITE...] A B`` (or ``SUITE... --a A --b B``): each side is a
results directory (the suites are expanded against it and its valid results read:
:func:`benchmark.collect.collect`, minus the results that fail their task's schema:
:func:`benchmark.collect.invalid_results`), a git revision or a DVC experiment name (the
``metrics/<suite>.seeds.json`` committed there: :mod:`benchmark.revisions`). Both are reduced to
one form, :data:`SeedValues` (row label -> metric -> seed value -> value), and paired by seed
VALUE within a row and metric: an experiment that changes a parameter changes job ids, not rows.

A row is a job's tags without the seed arg; its metrics are the headline metrics (those the
suite's tables list; without a suite file, every non-baseline metric the sides have). Per row and
metric, over the seeds present (and not NaN) on both sides:

* every pair equal within 1e-12 relative -> ``identical``;
* one pair -> ``changed`` (note ``n=1, no noise estimate``) when the values differ;
* n >= 2 pairs -> an exact two-sided sign-flip permutation test of the per-seed differences (all
  2^n flips for n <= 16, else :data:`MC_FLIPS` seeded random flips) and the t interval
  ``mean ± t_{n-1, 0.975} · sd / sqrt(n)``; ``changed`` when p < alpha and the interval excludes
  0, ``within noise`` otherwise;
* a row (or metric) with results on one side only -> ``only in A`` / ``only in B``; results on
  both sides but no seed in common -> ``no paired seeds``.

``changed``, ``only in A`` and ``only in B`` make the command exit 1 (for CI, a row that appeared
or vanished is a difference too). Everything outside "IO at the edge" is pure.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from .collect import ResultRow, collect, invalid_results
from .errors import SuiteError
from .expand import Job, expand
from .results import BASELINE_PREFIX
from .suite import Suite

CHANGED = "changed"
WITHIN_NOISE = "within noise"
IDENTICAL = "identical"
ONLY_A = "only in A"
ONLY_B = "only in B"
#: Verdicts that make `compare` exit 1.
EXIT_VERDICTS = (CHANGED, ONLY_A, ONLY_B)
NO_PAIRS = "no paired seeds"
N1_NOTE = "n=1, no noise estimate"

REL_TOL = 1e-12  # two values closer than this (relative) are the same number
EXACT_MAX_N = 16  # sign-flip test: enumerate all 2^n flips up to this n
MC_FLIPS = 10_000  # ... else this many random flips
MC_SEED = 0
LEVEL = 0.95  # the t interval's coverage


@dataclass(frozen=True)
class Comparison:
    """One row x metric of a suite: means over the paired seeds (each side's own seeds when
    unpaired), ``delta = mean_b - mean_a``, the interval and p of the paired test (n >= 2)."""

    row: str
    metric: str
    verdict: str
    n: int = 0  # paired seeds
    mean_a: Optional[float] = None
    mean_b: Optional[float] = None
    delta: Optional[float] = None
    low: Optional[float] = None
    high: Optional[float] = None
    p: Optional[float] = None
    note: str = ""


@dataclass
class SuiteComparison:
    """Every comparison of one suite, and the invalid results skipped on each side."""

    suite: str
    items: list[Comparison] = field(default_factory=list)
    invalid_a: list[str] = field(default_factory=list)
    invalid_b: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """A difference that fails CI: a changed metric, a row on one side only, or an invalid
        result on either side (left out of the pairs: a metric that became NaN is a change)."""
        return bool(self.invalid_a or self.invalid_b) or any(c.verdict in EXIT_VERDICTS for c in self.items)

    def counts(self) -> dict[str, int]:
        """``verdict -> number of row x metric comparisons``, in first-seen order."""
        out: dict[str, int] = {}
        for c in self.items:
            out[c.verdict] = out.get(c.verdict, 0) + 1
        return out


# --- statistics (pure) ------------------------------------------------------------------------

def same_value(a: float, b: float) -> bool:
    """True if ``a`` and ``b`` agree within :data:`REL_TOL` relative (exact for zeros)."""
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=0.0)


def sign_flip_p(diffs: list[float], *, exact_max_n: int = EXACT_MAX_N, flips: int = MC_FLIPS,
                seed: int = MC_SEED) -> float:
    """Two-sided p of the sign-flip permutation test of ``mean(diffs) == 0``.

    The statistic is ``|sum(s_i d_i)|``; p is the share of sign vectors ``s`` whose statistic is
    at least the observed one (ties within 1e-9 of ``sum|d|`` count). Exact over all 2^n vectors
    for n <= ``exact_max_n``; otherwise ``(1 + hits) / (1 + flips)`` over ``flips`` random vectors
    drawn with ``seed`` (the observed vector counted once, so p > 0).
    """
    import numpy as np

    d = np.asarray(diffs, dtype=float)
    n = d.size
    if n == 0:
        raise ValueError("sign_flip_p: no differences")
    observed = abs(d.sum())
    tol = 1e-9 * float(np.abs(d).sum())
    if n <= exact_max_n:
        signs = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1) * 2 - 1
        hits = int((np.abs(signs @ d) >= observed - tol).sum())
        return hits / 2 ** n
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(flips, n))
    hits = int((np.abs(signs @ d) >= observed - tol).sum())
    return (1 + hits) / (1 + flips)


def t_quantile(q: float, dof: int) -> float:
    """Quantile ``q`` of Student's t with ``dof`` degrees of freedom (scipy)."""
    from scipy.stats import t

    return float(t.ppf(q, dof))


def t_interval(diffs: list[float], level: float = LEVEL) -> tuple[float, float]:
    """``mean ± t_{n-1, (1+level)/2} · sd / sqrt(n)`` (sample sd, ddof=1); needs n >= 2."""
    n = len(diffs)
    if n < 2:
        raise ValueError("t_interval: needs at least two differences")
    mean = statistics.fmean(diffs)
    half = t_quantile((1 + level) / 2, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return mean - half, mean + half


def paired_verdict(row: str, metric: str, pairs: list[tuple[float, float]], alpha: float) -> Comparison:
    """The comparison of one row and metric from its ``(a, b)`` pairs (one per common seed)."""
    if not pairs:
        raise ValueError("paired_verdict: no pairs")
    a = [x for x, _ in pairs]
    b = [y for _, y in pairs]
    diffs = [y - x for x, y in pairs]
    base = dict(row=row, metric=metric, n=len(pairs), mean_a=statistics.fmean(a), mean_b=statistics.fmean(b),
                delta=statistics.fmean(diffs))
    if all(same_value(x, y) for x, y in pairs):
        return Comparison(verdict=IDENTICAL, **base)
    if len(pairs) == 1:
        return Comparison(verdict=CHANGED, note=N1_NOTE, **base)
    low, high = t_interval(diffs)
    p = sign_flip_p(diffs)
    changed = p < alpha and (low > 0 or high < 0)
    return Comparison(verdict=CHANGED if changed else WITHIN_NOISE, low=low, high=high, p=p, **base)


# --- rows and pairing (pure) ------------------------------------------------------------------

#: ``row label -> metric -> seed value as text -> value``: one side of one suite, from a results
#: directory (:func:`seed_table`) or from a committed ``metrics/<suite>.seeds.json``
#: (:mod:`benchmark.revisions`). Every comparison goes through this form.
SeedValues = dict[str, dict[str, dict[str, float]]]

#: The seed text of a job when its suite has no seed axis (one job per row: paired as such).
NO_SEED = "null"


@dataclass
class SideTable:
    """One suite on one side: its seed arg, its values, and the invalid results left out."""

    seed_arg: Optional[str]
    rows: SeedValues
    invalid: list[str] = field(default_factory=list)


def headline_metrics(suite: Optional[Suite], present: list[str]) -> list[str]:
    """The metrics the suite's tables list, in order; with none listed (or no suite file at
    hand), every non-baseline metric of ``present`` (sorted with a suite, else as first seen)."""
    listed = [m for t in suite.tables for m in (t.metrics or [])] if suite is not None else []
    if listed:
        return list(dict.fromkeys(listed))
    keep = [m for m in dict.fromkeys(present) if not m.startswith(f"{BASELINE_PREFIX}/")]
    return sorted(keep) if suite is not None else keep


def row_label(job: Job, seed_arg: Optional[str]) -> str:
    """``ckpt=a q=plain``: the job's tags without the seed arg (``all`` for a single row)."""
    return " ".join(f"{k}={v}" for k, v in job.tags.items() if k != seed_arg) or "all"


def seed_text(job: Job, seed_arg: Optional[str]) -> str:
    """The seed of ``job`` as the key of :data:`SeedValues` (``str`` of its seed tag)."""
    return str(job.tags[seed_arg]) if seed_arg and seed_arg in job.tags else NO_SEED


def seed_table(suite: Suite, jobs: list[Job], results: dict[str, ResultRow]) -> SeedValues:
    """The :data:`SeedValues` of ``results`` (valid results by job id): every row of ``jobs`` in
    their order (empty when no result), every metric, NaN left out."""
    out: SeedValues = {}
    for job in jobs:
        row = out.setdefault(row_label(job, suite.seed_arg), {})
        result = results.get(job.job_id)
        for metric, value in (result.metrics.items() if result is not None else ()):
            if value is not None and not math.isnan(value):
                row.setdefault(metric, {})[seed_text(job, suite.seed_arg)] = value
    return out


def _one_side(row: str, metric: str, values: list[float], verdict: str) -> Comparison:
    mean = statistics.fmean(values)
    return Comparison(row=row, metric=metric, verdict=verdict,
                      mean_a=mean if verdict == ONLY_A else None, mean_b=mean if verdict == ONLY_B else None)


def compare_row(row: str, metric: str, a: dict[str, float], b: dict[str, float], alpha: float,
                unseeded: bool = False) -> Optional[Comparison]:
    """One row x metric from each side's ``seed text -> value``, paired by seed value (in A's
    order); ``unseeded`` (no seed axis): the single value of each side pairs whatever its key.
    None when neither side has a value."""
    pairs = [(x, b[seed]) for seed, x in a.items() if seed in b]
    if not pairs and unseeded and len(a) == len(b) == 1:
        pairs = [(next(iter(a.values())), next(iter(b.values())))]
    if pairs:
        return paired_verdict(row, metric, pairs, alpha)
    if a and b:
        mean_a, mean_b = statistics.fmean(a.values()), statistics.fmean(b.values())
        return Comparison(row=row, metric=metric, verdict=NO_PAIRS, mean_a=mean_a, mean_b=mean_b,
                          delta=mean_b - mean_a)
    if a or b:
        return _one_side(row, metric, list((a or b).values()), ONLY_A if a else ONLY_B)
    return None


def compare_tables(name: str, a: Optional[SideTable], b: Optional[SideTable], alpha: float,
                   suite: Optional[Suite] = None) -> SuiteComparison:
    """Every row (A's order, then B's new ones) x headline metric of one suite; a side without
    the suite (``None``) has no rows. ``suite`` (its YAML, when at hand) names the metrics."""
    tables = [t for t in (a, b) if t is not None]
    rows = list(dict.fromkeys(r for t in tables for r in t.rows))
    present = [m for t in tables for per_row in t.rows.values() for m in per_row]
    seed_args = {suite.seed_arg} if suite is not None else {t.seed_arg for t in tables}
    unseeded = seed_args == {None}
    out = SuiteComparison(suite=name, invalid_a=list(a.invalid) if a else [], invalid_b=list(b.invalid) if b else [])
    metrics = headline_metrics(suite, present)
    for row in rows:
        for metric in metrics:
            values = [t.rows.get(row, {}).get(metric, {}) if t is not None else {} for t in (a, b)]
            item = compare_row(row, metric, values[0], values[1], alpha, unseeded)
            if item is not None:
                out.items.append(item)
    return out


# --- IO at the edge ---------------------------------------------------------------------------

def load_side(suite: Suite, results_dir: Path | str) -> tuple[list[Job], dict[str, ResultRow], list[str]]:
    """The suite's jobs in ``results_dir``, their valid results by job id, and one line per
    invalid result (bad envelope, another task, or a schema failure) left out."""
    jobs = expand(suite, results_dir)
    col = collect(suite, jobs, live_cache_check=False)
    bad = invalid_results(jobs)
    valid = {r.job.job_id: r for r in col.rows if r.job.job_id not in bad}
    return jobs, valid, [bad[k] for k in sorted(bad)]


def dir_tables(suites: list[Suite], results_dir: Path | str) -> dict[str, SideTable]:
    """``suite name -> SideTable`` of every suite's results in ``results_dir``."""
    out = {}
    for suite in suites:
        jobs, valid, invalid = load_side(suite, results_dir)
        out[suite.name] = SideTable(suite.seed_arg, seed_table(suite, jobs, valid), invalid)
    return out


def revision_tables(spec: str, repo: Path | str = ".", label: str = "") -> dict[str, SideTable]:
    """``suite name -> SideTable`` of the ``metrics/*.seeds.json`` committed at the git revision
    or DVC experiment ``spec`` (:mod:`benchmark.revisions`)."""
    from .revisions import read_seed_files, resolve_revision

    files = read_seed_files(resolve_revision(spec, repo, label), repo)
    return {name: SideTable(f.seed_arg, f.rows) for name, f in files.items()}


def load_tables(spec: str, suites: list[Suite], repo: Path | str = ".", label: str = "") -> dict[str, SideTable]:
    """One side: ``spec`` is a results directory when one exists at that path (it needs the
    suite files), else a git revision, else a DVC experiment name."""
    if Path(spec).is_dir():
        if not suites:
            raise SuiteError(f"{label} {spec}: a results directory needs the suite files: "
                             "compare SUITE... A B".strip())
        return dir_tables(suites, spec)
    return revision_tables(spec, repo, label)


def compare_sides(suites: list[Suite], a: dict[str, SideTable], b: dict[str, SideTable],
                  alpha: float) -> list[SuiteComparison]:
    """One :class:`SuiteComparison` per suite: those of ``suites``, or with none given every
    suite either side has (sorted by name)."""
    if suites:
        return [compare_tables(s.name, a.get(s.name), b.get(s.name), alpha, s) for s in suites]
    return [compare_tables(name, a.get(name), b.get(name), alpha) for name in sorted({*a, *b})]


def compare_dirs(suite: Suite, dir_a: Path | str, dir_b: Path | str, alpha: float) -> SuiteComparison:
    """:func:`compare_suite` of the results of ``suite`` in two results directories."""
    return compare_sides([suite], dir_tables([suite], dir_a), dir_tables([suite], dir_b), alpha)[0]


# --- rendering (pure) -------------------------------------------------------------------------

HEADERS = ["row", "metric", "A mean", "B mean", "Δ (B−A)", "95% interval", "p", "n", "verdict"]


def _fmt_p(p: Optional[float]) -> str:
    from .report import DASH

    return DASH if p is None else f"{p:.4g}"


def table_rows(sc: SuiteComparison) -> list[list[str]]:
    """The Markdown cells of every comparison, in :data:`HEADERS` order."""
    from .report import DASH, fmt_delta, fmt_num

    out = []
    for c in sc.items:
        interval = DASH if c.low is None else f"[{fmt_delta(c.low)}, {fmt_delta(c.high)}]"
        verdict = f"{c.verdict} ({c.note})" if c.note else c.verdict
        out.append([c.row, c.metric, fmt_num(c.mean_a), fmt_num(c.mean_b), fmt_delta(c.delta), interval,
                    _fmt_p(c.p), str(c.n), verdict])
    return out


def render_markdown(sc: SuiteComparison, alpha: float) -> str:
    """``## suite`` + a one-line tally + the table (+ the invalid results left out)."""
    from tabulate import tabulate

    tally = ", ".join(f"{n} {v}" for v, n in sc.counts().items()) or "no results on either side"
    lines = [f"## {sc.suite}", "", f"{tally} (alpha {alpha:g}; paired by seed)", ""]
    if sc.items:
        lines += [tabulate(table_rows(sc), headers=HEADERS, tablefmt="pipe", disable_numparse=True), ""]
    for side, bad in (("A", sc.invalid_a), ("B", sc.invalid_b)):
        lines += [f"- {side}: invalid result left out: {msg}" for msg in bad]
    return "\n".join(lines).rstrip() + "\n"


def to_json(comparisons: list[SuiteComparison], dir_a: str, dir_b: str, alpha: float) -> dict[str, Any]:
    """Machine-readable form: ``{a, b, alpha, changed, suites: {name: {counts, items, invalid_*}}}``."""
    return {"a": dir_a, "b": dir_b, "alpha": alpha, "changed": any(sc.changed for sc in comparisons),
            "suites": {sc.suite: {"counts": sc.counts(), "items": [asdict(c) for c in sc.items],
                                  "invalid_a": sc.invalid_a, "invalid_b": sc.invalid_b}
                       for sc in comparisons}}
