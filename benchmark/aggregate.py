"""Aggregation of result rows into tables: seed-mean ± sample std per (row, column, metric).

Pure data: no formatting here (see :mod:`benchmark.report`).
"""
from __future__ import annotations

import itertools
import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .collect import ResultRow
from .results import BASELINE_PREFIX
from .suite import Suite, TableSpec
from .tasks import CHANCE_MARGIN_SE, DEFAULT_DIRECTIONS

Key = tuple  # values of the row (or column) axes, in axis order


@dataclass
class Cell:
    """Values of one metric over the seed axis, and the segregation classes of their results
    (``()`` for the default protocol; see :func:`benchmark.guards.segregation_key`)."""

    values: list[float] = field(default_factory=list)
    classes: set = field(default_factory=set)

    @property
    def segregation(self) -> tuple:
        """The cell's class: ``()``, ``(("transform", "log"),)``, or a sorted tuple of
        several classes when its results disagree."""
        if len(self.classes) <= 1:
            return next(iter(self.classes), ())
        return tuple(sorted(self.classes))

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> Optional[float]:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> Optional[float]:
        """Sample standard deviation (ddof=1); None with fewer than two values."""
        return statistics.stdev(self.values) if len(self.values) >= 2 else None


@dataclass(frozen=True)
class Column:
    """One rendered column: a column-axes key and a (possibly baseline) metric."""

    key: Key
    metric: str  # flattened name: "mae" or "baseline/copy/mae"
    base_metric: str  # the table's metric name
    baseline: Optional[str] = None


@dataclass
class TableData:
    """A table's cells; rows and columns keep the suite's axis order."""

    index: int
    spec: TableSpec
    row_axes: list[str]
    col_axes: list[str]
    row_keys: list[Key]
    col_keys: list[Key]
    columns: list[Column]
    cells: dict[tuple[Key, Key, str], Cell]
    reference: dict[str, Any]
    results: dict[Key, list[ResultRow]] = field(default_factory=dict)  # per row key
    # no-skill levels per (row, col, metric): the results' chance values and the largest
    # standard error among them (see benchmark.tasks.Chance)
    chance: dict[tuple[Key, Key, str], tuple[Cell, float]] = field(default_factory=dict)
    diagnostic_metrics: frozenset = frozenset()  # shown, never ranked

    @property
    def title(self) -> str:
        return self.spec.title or f"Table {self.index + 1}"

    def cell(self, row: Key, col: Key, metric: str) -> Cell:
        return self.cells.get((row, col, metric), Cell())

    def chance_level(self, row: Key, col: Key, metric: str) -> Optional[tuple[float, float]]:
        """(mean chance level, largest standard error) of a cell, or None when unknown."""
        entry = self.chance.get((row, col, metric))
        if entry is None or not entry[0].n:
            return None
        return entry[0].mean, entry[1]

    def has_chance(self, metric: str) -> bool:
        """True if some cell of ``metric`` has a chance level."""
        return any(m == metric and cell.n for (_, _, m), (cell, _) in self.chance.items())

    def at_chance(self, row: Key, col: Key, metric: str, direction: str) -> bool:
        """True if the cell's mean is within :data:`~benchmark.tasks.CHANCE_MARGIN_SE` standard
        errors of its chance level, or on the wrong side of it (``direction`` "max" or "min")."""
        level = self.chance_level(row, col, metric)
        cell = self.cell(row, col, metric)
        if level is None or not cell.n:
            return False
        value, se = level
        if direction == "min":
            return cell.mean >= value - CHANCE_MARGIN_SE * se
        return cell.mean <= value + CHANCE_MARGIN_SE * se

    def row_label(self, row: Key) -> str:
        return " ".join(f"{a}={v}" for a, v in zip(self.row_axes, row)) or "all"

    def col_label(self, col: Key) -> str:
        return "/".join(str(v) for v in col)

    def n_range(self, row: Key) -> tuple[int, int]:
        """(min, max) seed counts over this row's non-baseline cells that have data."""
        ns = [self.cell(row, c.key, c.metric).n for c in self.columns if c.baseline is None]
        ns = [n for n in ns if n] or [0]
        return min(ns), max(ns)

    def seed_counts(self) -> Counter:
        """``n -> number of main cells with n seeds`` (cells with data only)."""
        return Counter(self.cell(rk, c.key, c.metric).n for rk in self.row_keys for c in self.main_columns
                       if self.cell(rk, c.key, c.metric).n)

    def usual_n(self) -> Optional[int]:
        """The seed count of most main cells (the larger on a tie); None for an empty table. A
        rendered cell states its n only when it differs from this one."""
        counts = self.seed_counts()
        return max(counts, key=lambda n: (counts[n], n)) if counts else None

    def row_flags(self, row: Key) -> Counter:
        """``flag -> number of this row's results that carry it``."""
        return Counter(f for r in self.results.get(row, []) for f in r.flags)

    @property
    def main_columns(self) -> list[Column]:
        return [c for c in self.columns if c.baseline is None]

    def segregations(self) -> list[tuple]:
        """Distinct classes of the cells that hold data, default class first."""
        seen = {cell.segregation for cell in self.cells.values() if cell.n}
        return sorted(seen, key=lambda k: (k != (), str(k)))

    @property
    def mixed(self) -> bool:
        """True if cells of several segregation classes share this table."""
        return len(self.segregations()) > 1

    def single_seed_rows(self) -> list[Key]:
        """Rows whose every cell with data holds one seed (shown as values, not means)."""
        return [rk for rk in self.row_keys if self.n_range(rk) == (1, 1)]

    def reference_of(self, row: Key, col: Key) -> Optional[tuple[Key, Key]]:
        """The (row, col) holding the reference for this cell, or None if the table cannot say."""
        if not self.reference:
            return None
        r, c = list(row), list(col)
        for axis, ref_row in self.reference.items():
            if axis in self.row_axes:
                r[self.row_axes.index(axis)] = ref_row
            elif axis in self.col_axes:
                c[self.col_axes.index(axis)] = ref_row
            elif str(self.spec.where.get(axis)) != str(ref_row):
                return None
        return tuple(r), tuple(c)


def _keys(suite: Suite, axes: list[str]) -> list[Key]:
    return [tuple(k) for k in itertools.product(*(suite.axis_rows(a) for a in axes))]


def build_table(suite: Suite, index: int, rows: list[ResultRow], spec: Optional[TableSpec] = None) -> TableData:
    """Aggregate ``rows`` (complete results) into table ``index`` of ``suite`` (laid out as
    ``spec`` if given: the table's pivot, see :mod:`benchmark.pivot`)."""
    spec = spec or suite.tables[index]
    metrics = list(spec.metrics or [])
    chosen = [r for r in rows if all(str(r.tags.get(a)) == str(v) for a, v in spec.where.items())]
    baselines: dict[str, list[str]] = {m: [] for m in metrics}
    for r in chosen:
        for name in r.metrics:
            parts = name.split("/", 2)
            if len(parts) == 3 and parts[0] == BASELINE_PREFIX and parts[2] in baselines:
                if parts[1] not in baselines[parts[2]]:
                    baselines[parts[2]].append(parts[1])
    col_keys = _keys(suite, spec.cols)
    columns = []
    for ck in col_keys:
        for m in metrics:
            columns.append(Column(ck, m, m))
            columns += [Column(ck, f"{BASELINE_PREFIX}/{b}/{m}", m, b) for b in baselines[m]]
    cells: dict[tuple[Key, Key, str], Cell] = {}
    chance: dict[tuple[Key, Key, str], tuple[Cell, float]] = {}
    results: dict[Key, list[ResultRow]] = {}
    wanted = {c.metric for c in columns}
    kind = suite.kind
    rules = {m: kind.chance_of(m) for m in metrics if kind.chance_of(m) is not None}
    for r in chosen:
        rk = tuple(r.tags[a] for a in spec.rows)
        ck = tuple(r.tags[a] for a in spec.cols)
        results.setdefault(rk, []).append(r)
        for metric in wanted:
            value = r.metrics.get(metric)
            if value is not None and not math.isnan(value):
                cell = cells.setdefault((rk, ck, metric), Cell())
                cell.values.append(value)
                cell.classes.add(tuple(getattr(r, "segregation", ())))
        for metric, rule in rules.items():
            level = rule.level(r.metrics)
            if level is not None and not math.isnan(level[0]):
                cell, se = chance.get((rk, ck, metric), (Cell(), 0.0))
                cell.values.append(level[0])
                chance[(rk, ck, metric)] = (cell, max(se, level[1]))
    return TableData(index=index, spec=spec, row_axes=list(spec.rows), col_axes=list(spec.cols),
                     row_keys=_keys(suite, spec.rows), col_keys=col_keys, columns=columns, cells=cells,
                     reference=dict(suite.reference), results=results, chance=chance,
                     diagnostic_metrics=frozenset(m for m in metrics if kind.is_diagnostic(m)))


def known_direction(suite: Suite, metric: str) -> Optional[str]:
    """``"max"`` / ``"min"`` where the engine knows which way ``metric`` is better, else None.

    Known: a direction pattern of the task kind or :data:`~benchmark.tasks.DEFAULT_DIRECTIONS`
    matches (losses, errors, ranks: lower), a promotion requirement bounds it (``>= ref``:
    higher), or the task kind declares the metric (a range rule: its accuracies, recalls, IoUs,
    ranked higher-is-better). Diagnostic metrics (never ranked) and metrics the task does not
    know have no direction: no arrow in a header, nothing in bold. The readout still ranks an
    undeclared metric by the kind's default (higher)."""
    kind = suite.kind
    leaf = metric.rsplit("/", 1)[-1]
    if kind.is_diagnostic(metric):
        return None
    for pattern, direction in (*kind.directions, *DEFAULT_DIRECTIONS):
        if re.fullmatch(pattern, metric) or re.fullmatch(pattern, leaf):
            return direction
    for req in suite.requirements:
        if req.metric == metric and req.op != "==":
            return "max" if req.op.startswith(">") else "min"
    if any(rule.matches(metric) or rule.matches(leaf) for rule in kind.metrics):
        return kind.direction(metric)
    return None


def baseline_columns(t: TableData) -> list[Column]:
    """The table's baseline columns (``mae [copy]``), in display order."""
    return [c for c in t.columns if c.baseline is not None]


def paired_baseline_cell(t: TableData, row: Key, col: Column) -> Cell:
    """Per-result differences ``metric - baseline metric`` for one row and baseline column.

    Both numbers come from the same result (same seed, same queries), so the spread is that of
    the paired differences, not of either side. A NaN on either side skips that result.
    """
    cell = Cell()
    for r in t.results.get(row, []):
        if tuple(r.tags[a] for a in t.col_axes) != col.key:
            continue
        mine, base = r.metrics.get(col.base_metric), r.metrics.get(col.metric)
        if mine is None or base is None or math.isnan(mine) or math.isnan(base):
            continue
        cell.values.append(mine - base)
        cell.classes.add(tuple(getattr(r, "segregation", ())))
    return cell


# --- readout: the best row per column, among rows that compete --------------------------------

@dataclass
class Readout:
    """Ranking of competing rows for one column and metric.

    Rows compete when they differ only in the reference axes placed in the table's rows (e.g.
    the methods at one K: "best per K", as the M1 few-shot table is read); with no reference
    axis among the rows every row competes. Cells of different segregation classes never compete.
    """

    column: Column
    fixed: tuple[tuple[str, Any], ...]  # the row axes held fixed within the group
    segregation: tuple
    direction: str  # "min" | "max"
    ranked: list[tuple[Key, Cell]]
    at_chance: list[Key] = field(default_factory=list)  # rows at chance level: not ranked


def competing_axes(t: TableData) -> list[str]:
    """Row axes whose rows compete in the readout: the reference axes among the rows."""
    return [a for a in t.reference if a in t.row_axes]


def readout(t: TableData, direction: Callable[[str], str]) -> list[Readout]:
    """One :class:`Readout` per main column, group of fixed row axes and segregation class.

    Diagnostic metrics (a majority-class rate, an expected random recall) are never ranked, and
    neither are rows at chance level (:meth:`TableData.at_chance`): they are listed apart."""
    compete = competing_axes(t)
    fixed_idx = [i for i, a in enumerate(t.row_axes) if a not in compete] if compete else []
    out = []
    for c in t.main_columns:
        if c.metric in t.diagnostic_metrics:
            continue
        d = direction(c.metric)
        groups: dict[tuple, list[tuple[Key, Cell]]] = {}
        for rk in t.row_keys:
            cell = t.cell(rk, c.key, c.metric)
            if cell.n:
                fixed = tuple((t.row_axes[i], rk[i]) for i in fixed_idx)
                groups.setdefault((fixed, cell.segregation), []).append((rk, cell))
        for (fixed, seg), items in groups.items():
            chance = [rk for rk, _ in items if t.at_chance(rk, c.key, c.metric, d)]
            ranked = [(rk, cell) for rk, cell in items if rk not in chance]
            ranked.sort(key=lambda x: x[1].mean if d == "min" else -x[1].mean)
            out.append(Readout(c, fixed, seg, d, ranked, chance))
    return out


def seed_means(rows: list[ResultRow], tags: dict[str, Any]) -> dict[str, Optional[float]]:
    """Per-metric mean over the results whose tags match ``tags`` (the seed axis varies)."""
    values: dict[str, list[float]] = {}
    for r in rows:
        if all(str(r.tags.get(k)) == str(v) for k, v in tags.items()):
            for name, value in r.metrics.items():
                if not math.isnan(value):
                    values.setdefault(name, []).append(value)
    return {k: statistics.fmean(v) for k, v in values.items()}


def gate_comparisons(suite: Suite, rows: list[ResultRow]) -> list[tuple[str, dict, dict]]:
    """``[(label, candidate means, reference means)]`` for every combination of the other axes."""
    if suite.promote is None:
        return []
    cand, ref = suite.promote.candidate, suite.reference
    others = [a for a in suite.axes if a not in cand]
    out = []
    for combo in itertools.product(*(list(suite.matrix[a]) for a in others)):
        ctags = {**dict(zip(others, combo)), **cand}
        rtags = {**ctags, **ref}
        if rtags == ctags:
            continue
        label = " ".join(f"{a}={v}" for a, v in zip(others, combo))
        out.append((label, seed_means(rows, ctags), seed_means(rows, rtags)))
    return out


def gate_rows(suite: Suite, rows: list[ResultRow]) -> tuple[list[ResultRow], list[ResultRow]]:
    """The results a promotion gate compares: (candidate rows, reference rows)."""
    if suite.promote is None:
        return [], []
    cand, ref = suite.promote.candidate, suite.reference

    def match(r: ResultRow, tags: dict[str, Any]) -> bool:
        return all(str(r.tags.get(k)) == str(v) for k, v in tags.items())

    return ([r for r in rows if match(r, cand)],
            [r for r in rows if match(r, ref) and not match(r, cand)])
