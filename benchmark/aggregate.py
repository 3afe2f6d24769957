"""Aggregation of result rows into tables: seed-mean ± sample std per (row, column, metric).

Pure data: no formatting here (see :mod:`benchmark.report`).
"""
from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Optional

from .collect import ResultRow
from .results import BASELINE_PREFIX
from .suite import Suite, TableSpec

Key = tuple  # values of the row (or column) axes, in axis order


@dataclass
class Cell:
    """Values of one metric over the seed axis."""

    values: list[float] = field(default_factory=list)

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
    metric: str  # flattened name: "mae" or "baseline/nn_copy/mae"
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

    @property
    def title(self) -> str:
        return self.spec.title or f"Table {self.index + 1}"

    def cell(self, row: Key, col: Key, metric: str) -> Cell:
        return self.cells.get((row, col, metric), Cell())

    def row_label(self, row: Key) -> str:
        return " ".join(f"{a}={v}" for a, v in zip(self.row_axes, row)) or "all"

    def col_label(self, col: Key) -> str:
        return "/".join(str(v) for v in col)

    def n_range(self, row: Key) -> tuple[int, int]:
        """(min, max) seed counts over this row's non-baseline cells that have data."""
        ns = [self.cell(row, c.key, c.metric).n for c in self.columns if c.baseline is None]
        ns = [n for n in ns if n] or [0]
        return min(ns), max(ns)

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


def build_table(suite: Suite, index: int, rows: list[ResultRow]) -> TableData:
    """Aggregate ``rows`` (complete results) into table ``index`` of ``suite``."""
    spec = suite.tables[index]
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
    wanted = {c.metric for c in columns}
    for r in chosen:
        rk = tuple(r.tags[a] for a in spec.rows)
        ck = tuple(r.tags[a] for a in spec.cols)
        for metric in wanted:
            value = r.metrics.get(metric)
            if value is not None and not math.isnan(value):
                cells.setdefault((rk, ck, metric), Cell()).values.append(value)
    return TableData(index=index, spec=spec, row_axes=list(spec.rows), col_axes=list(spec.cols),
                     row_keys=_keys(suite, spec.rows), col_keys=col_keys, columns=columns, cells=cells,
                     reference=dict(suite.reference))


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
