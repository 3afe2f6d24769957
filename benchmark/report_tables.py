"""Rendering of one table: the Markdown table (mean ± std, Δ vs the reference row or the
paired baseline, chance columns, footnote marks of segregated classes), its caption and notes, the
wide (pivot) form, its LaTeX, and the readout lines (best row per column and metric).

Pure: :class:`~benchmark.aggregate.TableData` in, lines of text out.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any, Callable, Optional

from .aggregate import (Column, Readout, TableData, baseline_columns, competing_axes,
                        paired_baseline_cell, readout)
from .code_identity import Checkout, mixed_code
from .collect import ResultRow
from .expand import Job
from .guards import mixed_flags
from .pivot import Known, arrow, best_cells, flat_header, metric_text, one_metric, row_cells
from .render_latex import latex_table
from .report_format import DASH, MARKS, _md, _tags, fmt_cell, fmt_delta, fmt_num
from .tasks import CHANCE_MARGIN_SE


def _column_header(t: TableData, col, known: Optional[Known] = None) -> str:
    """``plain score [nn] ↑``: column key, metric, baseline and (with ``known``) the metric's
    direction where the engine knows it."""
    label = t.col_label(col.key)
    name = f"{label} {col.base_metric}" if label else col.base_metric
    name = f"{name} [{col.baseline}]" if col.baseline else name
    return name + (arrow(known, col.base_metric) if known else "")


def _no_direction(metric: str) -> Optional[str]:
    return None


def _seg_text(seg: tuple) -> str:
    return " ".join(f"{a}={v}" for a, v in seg)


def _marks(t: TableData) -> dict[tuple, str]:
    """Footnote mark per non-default segregation class, if the table mixes classes."""
    if not t.mixed:
        return {}
    others = [s for s in t.segregations() if s != ()]
    return {seg: MARKS[i % len(MARKS)] * (1 + i // len(MARKS)) for i, seg in enumerate(others)}


def _row_flags_text(t: TableData, rk) -> str:
    total = len(t.results.get(rk, []))
    flags = t.row_flags(rk)
    return ", ".join(f"{f} ({n}/{total})" for f, n in sorted(flags.items())) or DASH


def n_caption(t: TableData, seed_arg: Optional[str]) -> str:
    """The table's seed count, said once: ``n=1`` (single seed: values, not means), ``n=3``, or
    ``n=3 unless a cell says (n=k)`` when counts differ across cells."""
    over = f"over `{seed_arg}`" if seed_arg else "(no seed axis)"
    counts = t.seed_counts()
    usual = t.usual_n()
    if usual is None:
        return "No results yet."
    if set(counts) == {1}:
        return "Single seed, n=1: each cell is one result's value, not a mean; no std (guard `single_seed`)."
    text = f"Cells: mean ± sample std (ddof=1) {over}, n={usual}"
    if len(counts) > 1:
        text += " unless a cell says `(n=k)` (a cell with n=1 is one value, not a mean)"
    return text + "."


def _direction_note(t: TableData, known: Known) -> str:
    arrows = sorted({known(c.base_metric) for c in t.columns} - {None})
    if not arrows:
        return ""
    words = {"max": "↑ higher is better", "min": "↓ lower is better"}
    unknown = any(known(c.base_metric) is None for c in t.columns)
    return " " + ", ".join(words[a] for a in arrows) + (" (no arrow: direction not declared)" if unknown else "") + "."


def _seed_note(t: TableData, seed_arg: Optional[str], known: Known = _no_direction) -> str:
    text = n_caption(t, seed_arg)
    if any(t.n_range(rk) == (0, 0) for rk in t.row_keys) and t.usual_n() is not None:
        text += " Rows without results show —."
    text += _direction_note(t, known)
    where = "; ".join(f"{a}={v}" for a, v in t.spec.where.items())
    text += f" Restricted to {where}." if where else ""
    chance = [c.base_metric for c in t.main_columns if t.has_chance(c.metric)]
    if chance:
        text += (f" `chance`: what a no-skill method scores on the same evaluation set (from each "
                 f"result: {', '.join(dict.fromkeys(chance))}); a row within {CHANCE_MARGIN_SE:g} "
                 "standard errors of it is not ranked in the readout.")
    corpus = corpus_text([r for rows in t.results.values() for r in rows])
    return text + (f" Corpus: {corpus}." if corpus else "")


def corpus_text(rows: list[ResultRow]) -> str:
    """Which data produced these results, from each result's ``provenance.corpus`` (written by
    the data stage): ``"<name> (synthetic: generated data, not a real data set)"``; "" if no
    result says. Several corpora are listed with their counts."""
    names: Counter = Counter()
    for r in rows:
        corpus = (r.envelope.provenance.model_extra or {}).get("corpus")
        if isinstance(corpus, dict) and corpus.get("name"):
            synthetic = " (synthetic: generated data, not a real data set)" if corpus.get("synthetic") else ""
            names[f"{corpus['name']}{synthetic}"] += 1
    if len(names) <= 1:
        return next(iter(names), "")
    return "; ".join(f"{name}: {n} results" for name, n in sorted(names.items()))


def _with_chance_columns(t: TableData) -> list[tuple[Column, bool]]:
    """The table's columns, each main column whose metric has a chance level followed by a
    ``<metric> chance`` column: ``[(column, is_chance_column)]``."""
    out = []
    for c in t.columns:
        out.append((c, False))
        if c.baseline is None and t.has_chance(c.metric):
            out.append((c, True))
    return out


def _chance_text(t: TableData, rk, c: Column) -> str:
    level = t.chance_level(rk, c.key, c.metric)
    return DASH if level is None else fmt_num(level[0])


def _pairs(t: TableData) -> list[tuple[Job, Any]]:
    return [(r.job, r.envelope) for rows in t.results.values() for r in rows]


def code_note(t: TableData, checkout: Optional[Checkout] = None) -> str:
    """The table's warning when results of one module come from different code ("" if none)."""
    mixed = mixed_code(_pairs(t), checkout)
    if not mixed:
        return ""
    return ("⚠ Code: this table mixes results computed by different code (guard `mixed_code`; "
            "digests of each module's import closure, results per digest): " + "; ".join(mixed)
            + ". Rows flagged `code_changed` were not computed by the checkout's code.")


def cell_texter(t: TableData) -> Callable[[Any, Column], str]:
    """``(row, column) -> text`` of a table's cells: :func:`fmt_cell` at the table's usual n,
    with the footnote mark of a segregated class."""
    marks, usual = _marks(t), t.usual_n()

    def cell_text(rk, c) -> str:
        cell = t.cell(rk, c.key, c.metric)
        mark = marks.get(cell.segregation, "") if cell.n else ""
        return fmt_cell(cell, usual) + (f" {mark}" if mark else "")

    return cell_text


def render_table(t: TableData, seed_arg: Optional[str], direction: Callable[[str], str],
                 checkout: Optional[Checkout] = None, known: Known = _no_direction) -> list[str]:
    """Markdown lines of one table, its Δ-vs-reference companion and, when the results carry
    baselines, the paired row-minus-baseline companion (``direction``: the task's metric
    direction, "min" or "max", for ranking; ``known``: the direction where the engine knows it,
    for the ↑/↓ of the headers). The seed count is said once, in the caption. A table whose
    results of one module come from different code says so under its title (:func:`code_note`)."""
    out = [f"## {t.title}", "", _seed_note(t, seed_arg, known), ""]
    note = code_note(t, checkout)
    if note:
        out += [note, ""]
    marks = _marks(t)
    cell_text = cell_texter(t)

    row_headers = list(t.row_axes) or ["rows"]
    with_flags = any(t.row_flags(rk) for rk in t.row_keys)
    shown = _with_chance_columns(t)
    headers = [*row_headers,
               *(f"{_column_header(t, c)} chance" if chance else _column_header(t, c, known) for c, chance in shown)]
    body = []
    for rk in t.row_keys:
        body.append([*(map(str, rk) if rk else ["all"]),
                     *(_chance_text(t, rk, c) if chance else cell_text(rk, c) for c, chance in shown)]
                    + ([_row_flags_text(t, rk)] if with_flags else []))
    out += [_md(body, headers + (["flags"] if with_flags else [])), ""]
    if marks:
        out += [f"{mark} {_seg_text(seg)}: metrics of another protocol; not comparable with unmarked cells "
                f"(guard {', '.join(f'`{f}`' for f in mixed_flags([seg]))}): Δ shows `n/c`, the readout ranks them apart."
                for seg, mark in marks.items()] + [""]

    refs = {(rk, c.key): t.reference_of(rk, c.key) for rk in t.row_keys for c in t.main_columns}
    if t.reference and any(v is not None for v in refs.values()):
        ref_text = _tags(t.reference)
        out += [f"### {t.title}: Δ vs reference ({ref_text})", "",
                "Difference of seed means, this row minus the reference in the same column.", ""]
        body = []
        for rk in t.row_keys:
            body.append([*(map(str, rk) if rk else ["all"]),
                         *(_delta_text(t, rk, c, refs[(rk, c.key)]) for c in t.main_columns)])
        out += [_md(body, [*row_headers, *(f"Δ {_column_header(t, c, known)}" for c in t.main_columns)]), ""]
    out += _render_vs_baseline(t, row_headers, direction)
    return out


def render_wide(t: TableData, seed_arg: Optional[str], direction: Callable[[str], str], known: Known,
                tex_name: Optional[str] = None) -> list[str]:
    """Markdown lines of a table's wide form (its ``pivot``; :mod:`benchmark.pivot`): the same
    seed means, the pivot's rows down and one column per key × metric; the best cell of each
    column in bold where the direction is known (as in the LaTeX)."""
    down = " × ".join(t.row_axes) or "all"
    across = " × ".join(t.col_axes)
    metrics = ", ".join(dict.fromkeys(f"{c.base_metric}{arrow(known, c.base_metric)}" for c in t.main_columns))
    text = (f"The table above, wide: {down} down, {across} across; {metrics}. {n_caption(t, seed_arg)} "
            "Bold: best per column where the metric's direction is known (rows at chance level not ranked).")
    if tex_name:
        text += f" LaTeX (booktabs): `{tex_name}`."
    out = [f"### {t.title}: {down} × {across}", "", text, ""]
    cell_text, best = cell_texter(t), best_cells(t, direction, known)
    body = []
    for rk in t.row_keys:
        cells = []
        for c in t.columns:
            cell = cell_text(rk, c)
            cells.append(f"**{cell}**" if (rk, c.key, c.metric) in best else cell)
        body.append([*row_cells(t, rk), *cells])
    return out + [_md(body, [*(t.row_axes or ["rows"]), *(flat_header(t, c, known) for c in t.columns)]), ""]


def latex_of(t: TableData, seed_arg: Optional[str], direction: Callable[[str], str], known: Known,
             label: str) -> str:
    """The booktabs float of one table (long or wide, as given), captioned with its title and n."""
    caption = f"{t.title}. {n_caption(t, seed_arg)}".replace("`", "")
    if t.spec.where:
        caption += " Restricted to " + "; ".join(f"{a}={v}" for a, v in t.spec.where.items()) + "."
    if one_metric(t):
        caption += f" Metric: {metric_text(t.columns[0], known)}."
    if any(known(c.base_metric) for c in t.main_columns):
        caption += " Bold: best per column."
    return latex_table(t, caption=caption, label=label, known=known, cell_text=cell_texter(t),
                       best=best_cells(t, direction, known))


def _render_vs_baseline(t: TableData, row_headers: list[str], direction: Callable[[str], str]) -> list[str]:
    """The companion table "vs baseline, paired by seed": mean ± std of per-result differences
    and on how many results the row is better than the baseline (metric direction from the task)."""
    cols = baseline_columns(t)
    if not cols:
        return []
    out = [f"### {t.title}: vs baseline, paired by seed", "",
           "Each result carries its baseline on the same queries: cells are mean ± sample std of the "
           "per-seed differences (row minus baseline) and `better k/n` counts the seeds where the row "
           "beats the baseline.", ""]
    body = []
    for rk in t.row_keys:
        cells = []
        for c in cols:
            cell = paired_baseline_cell(t, rk, c)
            lower = direction(c.base_metric) == "min"
            better = sum((d < 0) if lower else (d > 0) for d in cell.values)
            cells.append(f"{fmt_cell(cell, cell.n)}, better {better}/{cell.n}" if cell.n else DASH)
        body.append([*(map(str, rk) if rk else ["all"]), *cells])
    headers = [*row_headers, *(f"{_column_header(t, replace(c, baseline=None))} − {c.baseline}"
                               for c in cols)]
    out += [_md(body, headers), ""]
    return out


def _delta_text(t: TableData, rk, c, ref) -> str:
    if ref is None:
        return DASH
    if ref == (rk, c.key):
        return "ref"
    mine, theirs = t.cell(rk, c.key, c.metric), t.cell(*ref, c.metric)
    if mine.n and theirs.n and mine.segregation != theirs.segregation:
        return "n/c"
    return fmt_delta(None if mine.mean is None or theirs.mean is None else mine.mean - theirs.mean,
                     mine.mean, theirs.mean)


def _within(t: TableData, r: Readout) -> str:
    parts = [t.col_label(r.column.key)] if r.column.key else []
    parts += [f"{a}={v}" for a, v in r.fixed]
    text = ", ".join(p for p in parts if p) or DASH
    return text + (f" [{_seg_text(r.segregation)}]" if r.segregation else "")


def _compete_label(t: TableData, rk) -> str:
    """A row's label in the readout: its competing axes only (the others are in "within")."""
    axes = competing_axes(t)
    if not axes:
        return t.row_label(rk)
    if len(axes) == 1:  # the rows differ in this axis only: its value says it
        return str(rk[t.row_axes.index(axes[0])])
    return " ".join(f"{a}={rk[t.row_axes.index(a)]}" for a in axes)


def _flag_mark(t: TableData, rk) -> str:
    return " ⚑" if t.row_flags(rk) else ""


#: a readout line lists the rows at chance level by name while it stays this short, else counts them
READOUT_WIDTH = 120


def readout_lines(t: TableData, direction: Callable[[str], str], known: Known = _no_direction) -> list[str]:
    """One short line per column, metric and group: the best competing row by the metric's
    direction (one place: the task kind's ``direction``), its Δ vs the reference and the
    runner-up. ``⚑``: the row carries flags (listed under Flags). A metric whose direction the
    engine does not know says which way it was ranked (``↑ assumed``)."""
    lines = []
    usual = t.usual_n()
    for r in readout(t, direction):
        within = _within(t, r)
        metric = r.column.metric + (arrow(known, r.column.metric)
                                    or f" ({'↓' if r.direction == 'min' else '↑'} assumed)")
        head = f"- {metric}" + (f", {within}" if within != DASH else "") + ": "
        if not r.ranked:
            lines.append(head + "every row at chance level, not ranked")
            continue
        top = [(rk, cell) for rk, cell in r.ranked if cell.mean == r.ranked[0][1].mean]
        rest = r.ranked[len(top):]
        best_rk, best = top[0]
        text = head + " = ".join(_compete_label(t, rk) + _flag_mark(t, rk) for rk, _ in top)
        text += (" (tie)" if len(top) > 1 else "") + f" {fmt_cell(best, usual)}"
        delta = _delta_text(t, best_rk, r.column, t.reference_of(best_rk, r.column.key))
        text += " (ref)" if delta == "ref" else (f" (Δ {delta})" if delta != DASH else "")
        if rest:
            second_rk, second = rest[0]
            text += f"; next {_compete_label(t, second_rk)}{_flag_mark(t, second_rk)} {fmt_cell(second, usual)}"
        if r.at_chance:
            named = f"; at chance, not ranked: {', '.join(_compete_label(t, rk) for rk in r.at_chance)}"
            text += named if len(text + named) <= READOUT_WIDTH else f"; {len(r.at_chance)} at chance"
        lines.append(text)
    return lines
