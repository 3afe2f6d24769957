"""The wide (paper) form of a suite table and what both renderers (Markdown, LaTeX) share.

A table's ``pivot: {rows: [method], cols: [K], metrics: [test_acc]}`` rearranges the table's own
cells: the pivot's rows down, one column per (cols key × metric), e.g. method × K. It is
aggregated exactly like the long table (:func:`benchmark.aggregate.build_table` with the pivot as
the layout), so its cells are the same seed means.

Pure data and header text; no number formatting here (see :mod:`benchmark.report`).
"""
from __future__ import annotations

from typing import Callable, Optional

from .aggregate import Column, Key, TableData, build_table, readout
from .collect import ResultRow
from .suite import Suite, TableSpec

ARROWS = {"max": "↑", "min": "↓"}

#: direction of a metric where the engine knows it, else None (see aggregate.known_direction)
Known = Callable[[str], Optional[str]]


def pivot_table(suite: Suite, index: int, rows: list[ResultRow]) -> Optional[TableData]:
    """Table ``index`` laid out as its pivot, or None if it declares none."""
    spec = suite.tables[index]
    if spec.pivot is None:
        return None
    p = spec.pivot
    wide = TableSpec(title=spec.title, rows=list(p.rows), cols=list(p.cols),
                     metrics=list(p.metrics or spec.metrics or []), where=dict(spec.where))
    return build_table(suite, index, rows, spec=wide)


def arrow(known: Known, metric: str) -> str:
    """`` ↑`` / `` ↓`` after a metric name when its direction is known, else ""."""
    d = known(metric)
    return f" {ARROWS[d]}" if d in ARROWS else ""


def metric_text(col: Column, known: Known) -> str:
    """``mae [copy] ↓``: the metric, the baseline it belongs to, the direction."""
    base = f"{col.base_metric} [{col.baseline}]" if col.baseline else col.base_metric
    return base + arrow(known, col.base_metric)


def key_text(t: TableData, key: Key) -> str:
    """``K=0``, ``pair=a2b, query=pool``; "" for a table without column axes."""
    return ", ".join(f"{a}={v}" for a, v in zip(t.col_axes, key))


def one_metric(t: TableData) -> bool:
    """True if every column shows the same metric (no baselines): the metric goes into the
    caption or a spanning header and the columns are named by their key alone."""
    return bool(t.col_axes) and len({(c.metric, c.baseline) for c in t.columns}) == 1


def header_parts(t: TableData, col: Column, known: Known) -> tuple[str, str]:
    """(group, leaf) header of a wide column: (metric, key) for a one-metric table, else
    (key, metric). The group row spans consecutive equal groups (LaTeX)."""
    if one_metric(t):
        return metric_text(col, known), key_text(t, col.key)
    return key_text(t, col.key), metric_text(col, known)


def flat_header(t: TableData, col: Column, known: Known) -> str:
    """One-row header (Markdown): the key alone in a one-metric table, else key and metric."""
    if one_metric(t):
        return key_text(t, col.key)
    return " ".join(p for p in (key_text(t, col.key), metric_text(col, known)) if p)


def row_cells(t: TableData, rk: Key) -> list[str]:
    return [str(v) for v in rk] if rk else ["all"]


def best_cells(t: TableData, direction: Callable[[str], str], known: Known) -> set[tuple[Key, Key, str]]:
    """``(row, column key, metric)`` of the cells holding the best seed mean of their column, for
    metrics whose direction is known. "Best" is the readout's: among the rows that compete
    (:func:`benchmark.aggregate.competing_axes`), same segregation class, rows at chance level
    not ranked, ties all best. Baseline columns are not ranked."""
    out = set()
    for r in readout(t, direction):
        if known(r.column.metric) is None or not r.ranked:
            continue
        top = r.ranked[0][1].mean
        out |= {(rk, r.column.key, r.column.metric) for rk, cell in r.ranked if cell.mean == top}
    return out
