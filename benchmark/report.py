"""Generated results logs: ``reports/<suite>.md`` (+ ``.csv``, ``.tex``, plots) and ``reports/summary.json``.

The Markdown reads like a lab's results section (protocol descriptions: docs/protocols.md): protocol (the exact commands to reproduce,
one expanded job command line, the DVC stage, the result files), status (completed jobs, per first
axis row, missing jobs by id), tables of mean ± sample std with n(seed) and Δ vs the reference
row, the wide (pivot) form of a table where its suite declares one, plots, a readout of the best
row per metric (one short line each, by the task's metric direction), the flags the guards raised
and the promotion gate's verdict. ``<suite>.tex`` holds every table in LaTeX (booktabs; see
:mod:`benchmark.render_latex`). Citations of the lab notes link ``docs/protocols.md#<suite>``.

Everything comes from the suite and its result JSONs; nothing is typed by hand, and the content is
deterministic (no timestamps) so that an unchanged benchmark gives unchanged bytes. Rendering is
pure (:func:`build_report`, assembling the sections of :mod:`benchmark.report_sections` and the
tables of :mod:`benchmark.report_tables`); :func:`benchmark.report_write.write_report` does the file IO,
and :mod:`benchmark.dvc_lookup` finds the DVC stages (the only lookup outside the results).
"""
from __future__ import annotations

import csv
import io
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .aggregate import Cell, TableData, build_table, known_direction
from .code_identity import Checkout
from .collect import Collected, collect
from .dvc_lookup import dvc_stages, find_dvc_stages  # noqa: F401  (dvc_stages: public path kept)
from .expand import Job
from .pivot import pivot_table
from .plots import PlotData, plot_data
from .promote import GateResult
from .render_latex import latex_document
from .report_format import DASH, _md, _protocol_link, _tags, fmt_cell, fmt_delta
from .report_format import fmt_num  # noqa: F401  (public path kept: benchmark.report.fmt_num)
from .report_sections import _flags, _gate_lines, _protocol, _provenance, _status, guarded_gate
from .report_tables import latex_of, readout_lines, render_table, render_wide
from .sensitivity import DETECTED, sensitivity_checks
from .suite import Suite


# --- report content -------------------------------------------------------------------------

@dataclass
class SuiteReport:
    """A rendered suite report (or the problems that prevented it)."""

    suite: Suite
    collected: Collected
    markdown: str = ""
    csv_text: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    gate: Optional[GateResult] = None
    tables: list[TableData] = field(default_factory=list)
    wide: list[Optional[TableData]] = field(default_factory=list)  # each table's pivot, if declared
    latex: str = ""  # <suite>.tex: every table in booktabs (the wide form where declared)
    plots: list[PlotData] = field(default_factory=list)
    sensitivity: list = field(default_factory=list)  # benchmark.sensitivity.Check



# --- the whole report ---------------------------------------------------------------------------

def build_report(suite: Suite, jobs: list[Job], *, results_dir: Optional[Path] = None,
                 live_cache_check: bool = True) -> SuiteReport:
    """Collect, validate and render one suite. If ``problems`` is non-empty, nothing is rendered."""
    col = collect(suite, jobs, live_cache_check=live_cache_check)
    rep = SuiteReport(suite=suite, collected=col)
    rep.problems = col.problems()
    if rep.problems:
        return rep

    lines = [f"# {suite.name}", ""]
    if suite.description:
        lines += [suite.description.strip(), ""]
    lines += _protocol_link(suite.name)
    checkout = Checkout()
    lines += _protocol(suite, col, results_dir, checkout, find_dvc_stages(suite))
    lines += _status(suite, col)
    lines += _provenance(col, checkout)

    def known(metric: str) -> Optional[str]:
        return known_direction(suite, metric)

    rep.tables = [build_table(suite, i, col.rows) for i in range(len(suite.tables))]
    rep.wide = [pivot_table(suite, i, col.rows) for i in range(len(suite.tables))]
    for t, wide in zip(rep.tables, rep.wide):
        table_lines = render_table(t, suite.seed_arg, suite.kind.direction, checkout, known)
        lines += table_lines
        if wide is not None:
            lines += render_wide(wide, suite.seed_arg, suite.kind.direction, known, f"{suite.name}.tex")
    rep.latex = latex_document(suite.name, str(suite.source), [
        latex_of(wide or t, suite.seed_arg, suite.kind.direction, known, f"tab:{suite.name}:{i + 1}")
        for i, (t, wide) in enumerate(zip(rep.tables, rep.wide))])

    rep.plots = [plot_data(suite, spec, col.rows) for spec in suite.plots]
    if rep.plots:
        lines += ["## Plots", ""]
        for p in rep.plots:
            lines += [f"![{p.title}]({p.stem}.png)", "",
                      f"Data: `plots/{p.stem}.csv` ({len(p.series)} series; error bars: sample std over seeds; "
                      f"{p.x_scale} x). {p.caption}".rstrip(), ""]

    lines += ["## Readout", "", "Best row per column and metric by seed mean, among rows that differ only in the",
              "reference axes (other rows are held fixed); Δ vs the reference row; `next`: the runner-up;",
              "⚑: the row carries flags (see Flags).", ""]
    any_readout = False
    for t in rep.tables:
        found = readout_lines(t, suite.kind.direction, known)
        if found and len(rep.tables) > 1:  # several tables: each one's lines under its title
            found = [f"{t.title}:", "", *found]
        lines += [*found, ""] if found else []
        any_readout = any_readout or bool(found)
    if not any_readout:
        lines += ["No complete results yet.", ""]

    lines += _flags(col, rep.tables, checkout)

    if suite.promote is not None:
        rep.gate, notes = guarded_gate(suite, col, checkout)
        lines += _gate_lines(suite, rep.gate, notes)
    rep.sensitivity = sensitivity_checks(suite, col.rows)
    if suite.sensitivity is not None:
        lines += _sensitivity_lines(suite, rep.sensitivity)

    rep.markdown = "\n".join(lines).rstrip() + "\n"
    rep.csv_text = _csv(col)
    rep.summary = summarize(col, rep.tables, rep.gate)
    if rep.sensitivity:
        rep.summary["sensitivity"] = {c.label: {"moved_std": c.moved if c.moved is not None and math.isfinite(c.moved)
                                                else None, "detected": int(c.verdict == DETECTED)}
                                      for c in rep.sensitivity}
    return rep


def _sensitivity_lines(suite: Suite, checks: list) -> list[str]:
    spec = suite.sensitivity
    lines = ["## Sensitivity check", "",
             f"Each defect row must move `{spec.metric}` by more than {spec.min_std:g} seed standard "
             f"deviations from the reference ({_tags(suite.reference)}): |Δ| / σ with σ the larger "
             "sample std of the two rows. Planted-defect results are flagged and never real numbers.", ""]
    body = []
    for c in checks:
        ref = Cell(list(c.ref))
        dfc = Cell(list(c.defect))
        moved = DASH if c.moved is None else ("inf" if math.isinf(c.moved) else f"{c.moved:.1f}")
        body.append([c.label, fmt_cell(ref), fmt_cell(dfc), fmt_delta(c.delta, ref.mean, dfc.mean), moved,
                     f"**{c.verdict}**"])
    if body:
        lines += [_md(body, ["defect", f"reference {spec.metric}", f"defect {spec.metric}", "Δ",
                             "|Δ| / σ", "verdict"]), ""]
    else:
        lines += ["No defect rows.", ""]
    return lines


def _csv(col: Collected) -> str:
    tag_cols: list[str] = []
    metric_cols: list[str] = []
    for r in col.rows:
        for k in r.tags:
            if k not in tag_cols:
                tag_cols.append(k)
        for k in r.metrics:
            if k not in metric_cols:
                metric_cols.append(k)
    fields = ["suite", "job_id", *tag_cols, *metric_cols, "flags", "file"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in col.rows:
        writer.writerow({"suite": r.job.suite, "job_id": r.job.job_id, **r.tags,
                         **{k: repr(v) for k, v in r.metrics.items()},
                         "flags": ";".join(r.flags), "file": str(r.job.out_json)})
    return buf.getvalue()


def summarize(col: Collected, tables: list[TableData], gate: Optional[GateResult]) -> dict:
    """The suite's entry of ``summary.json`` (for ``dvc metrics show/diff``): counts, flag counts,
    and ``{metric: {"<where>/<row>/<col>": seed mean}}`` (numbers only, three levels at most)."""
    out: dict[str, Any] = {"complete": len(col.rows), "total": len(col.jobs),
                           "flagged": sum(bool(r.flags) for r in col.rows)}
    flags = Counter(f for r in col.rows for f in r.flags)
    if flags:
        out["flags"] = dict(sorted(flags.items()))
    for t in tables:
        where = [str(v) for v in t.spec.where.values()]
        for c in t.columns:
            for rk in t.row_keys:
                mean = t.cell(rk, c.key, c.metric).mean
                if mean is not None:
                    key = "/".join([*where, *map(str, rk), *map(str, c.key)]) or "all"
                    out.setdefault(c.metric, {})[key] = mean
    if gate is not None:
        out["promote"] = int(gate.decision == "PROMOTE")
    return out

