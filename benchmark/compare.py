"""Did a change move any number beyond seed noise? Paired comparison of two results directories.

``python -m benchmark compare SUITE.yaml --a results_A --b results_B`` expands each suite against
both directories, reads their valid results (:func:`benchmark.collect.collect`, minus the results
that fail their task's schema: :func:`benchmark.collect.invalid_results`) and pairs them by job id:
the same args give the same id on both sides, so the seeds of a row pair naturally.

A row is a job's tags without the seed arg; its metrics are the headline metrics (those the
suite's tables list). Per row and metric, over the seeds present (and finite) on both sides:

* every pair equal within 1e-12 relative -> ``identical``;
* one pair -> ``changed`` (note ``n=1, no noise estimate``) when the values differ;
* n >= 2 pairs -> an exact two-sided sign-flip permutation test of the per-seed differences (all
  2^n flips for n <= 16, else :data:`MC_FLIPS` seeded random flips) and the t interval
  ``mean ± t_{n-1, 0.975} · sd / sqrt(n)``; ``changed`` when p < alpha and the interval excludes
  0, ``within noise`` otherwise;
* a row (or metric) with results on one side only -> ``only in A`` / ``only in B``; results on
  both sides but no seed in common -> ``no paired seeds``.

``changed``, ``only in A`` and ``only in B`` make the command exit 1 (for CI, a row that appeared
or vanished is a difference too). Everything except :func:`load_side` is pure.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from .collect import ResultRow, collect, invalid_results
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
        """A difference that fails CI: a changed metric, or a row on one side only."""
        return any(c.verdict in EXIT_VERDICTS for c in self.items)

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

def headline_metrics(suite: Suite, rows: list[ResultRow]) -> list[str]:
    """The metrics the suite's tables list, in order; with none listed, every non-baseline
    metric the results have (sorted)."""
    listed = [m for t in suite.tables for m in (t.metrics or [])]
    if listed:
        return list(dict.fromkeys(listed))
    present = {m for r in rows for m in r.metrics}
    return sorted(m for m in present if not m.startswith(f"{BASELINE_PREFIX}/"))


def row_label(job: Job, seed_arg: Optional[str]) -> str:
    """``ckpt=a q=plain``: the job's tags without the seed arg (``all`` for a single row)."""
    return " ".join(f"{k}={v}" for k, v in job.tags.items() if k != seed_arg) or "all"


def _value(row: Optional[ResultRow], metric: str) -> Optional[float]:
    value = row.metrics.get(metric) if row is not None else None
    return None if value is None or math.isnan(value) else value


def _one_side(row: str, metric: str, values: list[float], verdict: str) -> Comparison:
    mean = statistics.fmean(values)
    return Comparison(row=row, metric=metric, verdict=verdict,
                      mean_a=mean if verdict == ONLY_A else None, mean_b=mean if verdict == ONLY_B else None)


def compare_row(row: str, metric: str, jobs: list[Job], side_a: dict[str, ResultRow],
                side_b: dict[str, ResultRow], alpha: float) -> Optional[Comparison]:
    """One row x metric; None when neither side has a value."""
    values = [(_value(side_a.get(j.job_id), metric), _value(side_b.get(j.job_id), metric)) for j in jobs]
    a = [x for x, _ in values if x is not None]
    b = [y for _, y in values if y is not None]
    pairs = [(x, y) for x, y in values if x is not None and y is not None]
    if pairs:
        return paired_verdict(row, metric, pairs, alpha)
    if a and b:
        return Comparison(row=row, metric=metric, verdict=NO_PAIRS, mean_a=statistics.fmean(a),
                          mean_b=statistics.fmean(b), delta=statistics.fmean(b) - statistics.fmean(a))
    if a or b:
        return _one_side(row, metric, a or b, ONLY_A if a else ONLY_B)
    return None


def compare_suite(suite: Suite, jobs: list[Job], side_a: dict[str, ResultRow],
                  side_b: dict[str, ResultRow], alpha: float) -> SuiteComparison:
    """Every row x headline metric of ``suite``; ``side_*``: the valid results by job id."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(row_label(job, suite.seed_arg), []).append(job)
    metrics = headline_metrics(suite, [*side_a.values(), *side_b.values()])
    out = SuiteComparison(suite=suite.name)
    for row, row_jobs in groups.items():
        for metric in metrics:
            item = compare_row(row, metric, row_jobs, side_a, side_b, alpha)
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


def compare_dirs(suite: Suite, dir_a: Path | str, dir_b: Path | str, alpha: float) -> SuiteComparison:
    """:func:`compare_suite` of the results of ``suite`` in two results directories."""
    jobs, side_a, invalid_a = load_side(suite, dir_a)
    _, side_b, invalid_b = load_side(suite, dir_b)
    out = compare_suite(suite, jobs, side_a, side_b, alpha)
    out.invalid_a, out.invalid_b = invalid_a, invalid_b
    return out


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
