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
pure (:func:`build_report`); :func:`write_report` does the file IO.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shlex
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

from tabulate import tabulate

from . import numfmt
from .aggregate import (Cell, Column, Readout, TableData, baseline_columns, build_table, competing_axes,
                        gate_comparisons, gate_rows, known_direction, paired_baseline_cell, readout)
from .code_identity import Checkout, code_versions, job_module, mixed_code, short, versions_text
from .collect import Collected, ResultRow, collect
from .expand import Job, command_of
from .guards import describe, is_blocking, mixed_flags
from .pivot import Known, arrow, best_cells, flat_header, metric_text, one_metric, pivot_table, row_cells
from .plots import PlotData, plot_data
from .plugins import report_lines
from .promote import GateResult, evaluate_gate
from .render_latex import latex_document, latex_table
from .sensitivity import DETECTED, sensitivity_checks
from .suite import Suite
from .tasks import CHANCE_MARGIN_SE

DASH = "—"
MARKS = "†‡§¶"  # footnote marks of segregated (non-default) classes in a mixed table


# --- number formatting ----------------------------------------------------------------------

def fmt_num(x: Optional[float]) -> str:
    """4 decimals (``2.0000``); tiny non-zero values in scientific notation."""
    if x is None:
        return DASH
    if x != 0 and abs(x) < 1e-3:
        return f"{x:.3e}"
    return f"{x:.4f}"


def fmt_cell(cell: Cell, usual_n: Optional[int] = None) -> str:
    """``mean ± std`` (sample std); the value alone for a single seed (not a mean); ``—`` if
    empty. The seed count is said once per table (:meth:`TableData.usual_n`, in the caption), so
    a cell adds `` (n=k)`` only when its n differs from ``usual_n`` (always, if None)."""
    if cell.n == 0:
        return DASH
    text = fmt_num(cell.mean) if cell.n == 1 else f"{fmt_num(cell.mean)} ± {fmt_num(cell.std)}"
    return text if cell.n == usual_n else f"{text} (n={cell.n})"


def fmt_delta(x: Optional[float], *like: Optional[float]) -> str:
    """A signed difference at the precision its operands ``like`` are printed with (the finer
    of their last printed digits, :func:`benchmark.numfmt.quantum`); float noise below half that
    digit prints as zero. Without operands, at :func:`fmt_num`'s 4 decimals."""
    qs = [q for q in (numfmt.quantum(v) for v in like) if q is not None]
    return numfmt.fmt_delta(x, min(qs) if qs else 10.0 ** -numfmt.DECIMALS)


#: where each suite's protocol is written down: one ``## <suite-name>`` heading per suite
PROTOCOLS_DOC = "docs/protocols.md"
#: the link's target as written into the Markdown: relative to ``reports/`` (see write_report)
_PROTOCOLS_HREF = "../" + PROTOCOLS_DOC
def _protocol_link(suite_name: str) -> list[str]:
    """A link to the suite's section of :data:`PROTOCOLS_DOC` when that file (in the working
    directory) has a ``## <suite-name>`` heading; nothing otherwise (no dead links)."""
    doc = Path(PROTOCOLS_DOC)
    try:
        headings = {ln[3:].strip() for ln in doc.read_text(encoding="utf-8").splitlines()
                    if ln.startswith("## ")}
    except OSError:
        return []
    if suite_name not in headings:
        return []
    return [f"Protocol: [{PROTOCOLS_DOC}#{suite_name}]({_PROTOCOLS_HREF}#{suite_name})", ""]


def _md(rows: list[list[str]], headers: list[str]) -> str:
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True)


def _portable_argv(argv: list[str]) -> str:
    return shlex.join(["python" if a == sys.executable else a for a in argv])


def _tags(tags: dict[str, Any]) -> str:
    return " ".join(f"{a}={v}" for a, v in tags.items())


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


# --- protocol and status ----------------------------------------------------------------------

def dvc_stages(suite_path: Path, dvc_doc: dict, base: Path) -> dict[str, list[str]]:
    """``{"run": [stage, ...], "report": [...]}``: stages of a dvc.yaml (loaded as ``dvc_doc``,
    located in ``base``) whose command runs ``python -m benchmark run|report`` on this suite (by
    file or by its directory)."""
    target = Path(suite_path).resolve()
    out: dict[str, list[str]] = {"run": [], "report": []}
    for name, stage in (dvc_doc.get("stages") or {}).items():
        cmds = stage.get("cmd") if isinstance(stage, dict) else None
        for cmd in ([cmds] if isinstance(cmds, str) else cmds or []):
            try:
                tokens = shlex.split(str(cmd))
            except ValueError:
                continue
            for i, tok in enumerate(tokens[:-1]):
                if tok != "benchmark" or tokens[i + 1] not in out:
                    continue
                for arg in tokens[i + 2:]:
                    if arg in ("&&", ";", "|"):
                        break
                    p = (base / arg).resolve()
                    if (p == target or p == target.parent) and name not in out[tokens[i + 1]]:
                        out[tokens[i + 1]].append(name)
    return out


def _find_dvc_stages(suite: Suite) -> dict[str, list[str]]:
    """Search dvc.yaml upwards from the suite file; ``{}`` if there is none (or it does not parse)."""
    import yaml

    try:
        start = Path(suite.source).resolve().parent
    except OSError:
        return {}
    for d in (start, *start.parents):
        f = d / "dvc.yaml"
        if f.is_file():
            try:
                doc = yaml.safe_load(f.read_text()) or {}
            except (OSError, yaml.YAMLError):
                return {}
            return dvc_stages(Path(suite.source), doc, d) if isinstance(doc, dict) else {}
    return {}


def _code_line(col: Collected, checkout: Checkout) -> str:
    """Each module's protocol version and code digest in this checkout."""
    parts = []
    for module in sorted({job_module(j) for j in col.jobs} - {"(program)"}):
        code = checkout(module)
        if code is not None:
            parts.append(f"`{module}` protocol version {code['protocol_version']}, digest "
                         f"`{short(code['sha256'])}` ({len(code['files'])} files)")
    return "; ".join(parts) + " in this checkout" if parts else DASH


def _protocol(suite: Suite, col: Collected, results_dir: Optional[Path],
              checkout: Optional[Checkout] = None) -> list[str]:
    checkout = checkout or Checkout()
    cmd = command_of(suite)
    what = f"python -m {cmd['module']}" if "module" in cmd else shlex.join(cmd["program"])
    dims = [f"{a} ({len(suite.matrix[a])})" for a in suite.axes]
    if suite.seed_arg:
        dims.append(f"{suite.seed_arg} ({len(suite.seed_values)})")
    params = ", ".join(f"`{k}`={json.dumps(v)}" for k, v in suite.params_used.items())
    base_dir = col.jobs[0].out_json.parent if col.jobs else None
    others = sorted({(j.argv[2], label) for j in col.jobs for label in [_row_module_label(suite, j)]
                     if label and len(j.argv) > 2 and j.argv[1] == "-m"})
    if others:
        what += "`; " + "; ".join(f"rows {label}: `python -m {m}" for m, label in others)
    table = [
        ["task", f"`{suite.task}`: {suite.kind.description}".rstrip(": ")],
        ["corpus", corpus_text(col.rows) or "(not recorded by the results)"],
        ["command", f"`{what}`"],
        ["code", _code_line(col, checkout)],
        ["suite file", f"`{suite.source}` (sha256 `{suite.source_sha256[:12]}`)"],
        ["params", f"`{suite.params_path}`: {params}" if params else "(no params references)"],
        ["matrix", " × ".join(dims) + f" = {len(col.jobs)} jobs" if dims else f"{len(col.jobs)} job(s)"],
        ["reference", _tags(suite.reference) or DASH],
        ["inputs", ", ".join(f"`{name}`" for name in suite.inputs) + " (content fingerprinted; a change re-runs)"
         if suite.inputs else DASH],
        *([label, text] for label, text in report_lines(col)),  # the plugins' rows
        ["results", f"`{base_dir}/*.json`: {len(col.rows)} of {len(col.jobs)} jobs (one file per job id; "
                    f"job -> file in `{suite.name}.csv`)" if base_dir else DASH],
    ]
    opts = ""
    if suite.params_used and suite.params_path and suite.params_path != Path("params.yaml"):
        opts += f" --params {shlex.quote(str(suite.params_path))}"
    if results_dir is not None and Path(results_dir) != Path("results"):
        opts += f" --results-dir {shlex.quote(str(results_dir))}"
    src = shlex.quote(str(suite.source))
    out = ["## Protocol", "", _md(table, ["", ""]), "", "Reproduce:", "", "```bash",
           f"python -m benchmark run {src}{opts}",
           f"python -m benchmark report {src}{opts} --out reports/", "```", ""]
    stages = _find_dvc_stages(suite)
    if stages.get("run") or stages.get("report"):
        hints = [f"`dvc repro {s}` (runs the suite)" for s in stages.get("run", [])]
        hints += [f"`dvc repro {s}` (writes this report)" for s in stages.get("report", [])]
        out += ["With DVC: " + "; ".join(hints) + ".", ""]
    if col.jobs:
        job = col.jobs[0]
        out += [f"Example job ({job.label}):", "", "```bash", _portable_argv(job.argv), "```", ""]
    return out


def _row_module_label(suite: Suite, job: Job) -> str:
    """``method=shape_features`` when one of the job's rows runs another module, else ""."""
    from .suite import ROW_MODULE_KEY

    return " ".join(f"{a}={job.tags[a]}" for a in suite.axes
                    if isinstance(suite.matrix[a].get(job.tags[a]), dict)
                    and ROW_MODULE_KEY in suite.matrix[a][job.tags[a]])


def _status(suite: Suite, col: Collected) -> list[str]:
    from .status import job_state

    lines = ["## Status", "", f"- completed jobs: `{len(col.rows)} / {len(col.jobs)}`"]
    if suite.axes:
        axis = suite.axes[0]
        done = Counter(str(r.tags.get(axis)) for r in col.rows)
        total = Counter(str(j.tags.get(axis)) for j in col.jobs)
        lines.append(f"- completion by {axis}:")
        lines += [f"  - `{row}`: `{done[str(row)]}/{total[str(row)]}`" for row in suite.matrix[axis]]
    if col.missing:
        lines.append(f"- missing ({len(col.missing)}):")
        for job in col.missing:
            state = job_state(job)
            detail = f"{state.state}" + (f": {state.detail}" if state.detail else "")
            lines.append(f"  - {job.label} (`{job.job_id}`): {detail}")
    else:
        lines.append("- missing: none")
    return lines + [""]


def _provenance(col: Collected, checkout: Optional[Checkout] = None) -> list[str]:
    if not col.rows:
        return []
    code = code_versions((r.job, r.envelope) for r in col.rows)
    revs = Counter((r.envelope.provenance.git_rev or "unknown")[:12] for r in col.rows)
    dirty = sum(bool(r.envelope.provenance.dirty) for r in col.rows)
    devices = Counter(r.envelope.provenance.device or "unknown" for r in col.rows)
    versions: dict[str, set] = {}
    for r in col.rows:
        for k, v in r.envelope.provenance.versions.items():
            versions.setdefault(k, set()).add(str(v))
    wall = sum(r.envelope.provenance.wall_s for r in col.rows)
    lines = [
        "- git rev: " + ", ".join(f"`{k}` ({v})" for k, v in sorted(revs.items())),
        f"- dirty worktree: {dirty} of {len(col.rows)}",
        "- device: " + ", ".join(f"{k} ({v})" for k, v in sorted(devices.items())),
        "- code digest: " + "; ".join(versions_text(m, c, checkout) for m, c in sorted(code.items())),
    ]
    if versions:
        lines.append("- versions: " + ", ".join(f"{k} {'/'.join(sorted(v))}" for k, v in sorted(versions.items())))
    lines.append(f"- total job wall time: {wall:.1f} s")
    return ["Provenance of the results:", "", *lines, ""]


# --- flags ------------------------------------------------------------------------------------

def table_flags(tables: list[TableData], checkout: Optional[Checkout] = None) -> list[tuple[str, str, list[str]]]:
    """``[(flag, table title, [row labels])]`` raised per table: single-seed rows, mixed classes,
    results of one module computed by different code."""
    out = []
    for t in tables:
        single = t.single_seed_rows()
        if single:
            out.append(("single_seed", t.title, [t.row_label(rk) for rk in single]))
        if t.mixed:
            rows = sorted({t.row_label(rk) for (rk, _, _), cell in t.cells.items() if cell.n and cell.segregation})
            out += [(flag, t.title, [f"{', '.join(rows)} under {'; '.join(_seg_text(s) for s in t.segregations() if s)}"])
                    for flag in mixed_flags(t.segregations())]
        mixed = mixed_code(_pairs(t), checkout)
        if mixed:
            out.append(("mixed_code", t.title, mixed))
    return out


def _flags(col: Collected, tables: list[TableData], checkout: Optional[Checkout] = None) -> list[str]:
    out = ["## Flags", ""]
    jobs_by_flag: dict[str, list[ResultRow]] = {}
    source: dict[str, set] = {}
    for r in col.rows:
        own = set(r.envelope.flags)
        for f in r.flags:
            jobs_by_flag.setdefault(f, []).append(r)
            source.setdefault(f, set()).add("result" if f in own else "benchmark guard")
    per_table = table_flags(tables, checkout)
    if not jobs_by_flag and not per_table:
        return out + [f"No flags raised by {len(col.rows)} result(s); no table guard fired.", ""]
    for flag in sorted(jobs_by_flag):
        rows = jobs_by_flag[flag]
        severity = "; blocks promotion" if is_blocking(flag) else ""
        out.append(f"- **{flag}** ({', '.join(sorted(source[flag]))}; {len(rows)} job(s){severity}): "
                   + "; ".join(f"{r.job.label} (`{r.job.job_id}`)" for r in sorted(rows, key=lambda r: r.job.label)))
        if describe(flag):
            out.append(f"  - means: {describe(flag)}")
        reasons = {r.job.job_id: r.reasons[flag] for r in rows if r.reasons.get(flag)}
        if len(set(reasons.values())) == 1 and len(reasons) > 1:
            out.append(f"  - all {len(reasons)}: {next(iter(reasons.values()))}")
        else:
            out += [f"  - `{job_id}`: {reason}" for job_id, reason in reasons.items()]
    for flag, title, rows in per_table:
        out.append(f"- **{flag}** (table guard; {title}): " + "; ".join(rows))
        if describe(flag):
            out.append(f"  - means: {describe(flag)}")
    return out + [""]


# --- promotion gate ---------------------------------------------------------------------------

def guarded_gate(suite: Suite, col: Collected,
                 checkout: Optional[Checkout] = None) -> tuple[GateResult, list[str]]:
    """The gate's verdict on seed means, then vetoed by blocking flags on the compared results, by
    candidate and reference of different segregation classes, or by compared results of one module
    computed by different code. Returns (result, advisory notes)."""
    gate = evaluate_gate(suite.requirements, gate_comparisons(suite, col.rows), fmt=fmt_num)
    cand, ref = gate_rows(suite, col.rows)
    reasons, notes = list(gate.reasons), []
    for who, rows in (("candidate", cand), ("reference", ref)):
        counts = Counter(f for r in rows for f in r.flags)
        for flag, n in sorted(counts.items()):
            line = f"{n} {who} result(s) carry `{flag}`"
            (reasons if is_blocking(flag) else notes).append(line + (" (blocking)" if is_blocking(flag) else ""))
    for text in mixed_code([(r.job, r.envelope) for r in (*cand, *ref)], checkout):
        reasons.append(f"candidate and reference come from different code: {text}")
    segs_c, segs_r = {r.segregation for r in cand}, {r.segregation for r in ref}
    if cand and ref and segs_c != segs_r:
        reasons.append(f"candidate ({'; '.join(_seg_text(s) or 'default' for s in sorted(segs_c))}) and reference "
                       f"({'; '.join(_seg_text(s) or 'default' for s in sorted(segs_r))}) are not comparable")
    single = [who for who, rows in (("candidate", cand), ("reference", ref))
              if rows and max(Counter(_other_tags(suite, r) for r in rows).values()) == 1]
    if single:
        notes.append(f"single-seed evidence ({', '.join(single)}): means of one seed")
    checks = gate.checks + [f"✗ {r}" for r in reasons[len(gate.reasons):]]
    return GateResult("REJECT" if reasons else "PROMOTE", reasons, checks), notes


def _other_tags(suite: Suite, r: ResultRow) -> tuple:
    return tuple(str(r.tags.get(a)) for a in suite.axes)


def _gate_lines(suite: Suite, gate: GateResult, notes: list[str]) -> list[str]:
    cand = _tags(suite.promote.candidate)
    reqs = ", ".join(f"`{r.metric} {r.text}`" for r in suite.requirements)
    lines = ["## Promotion gate", "", f"**{gate.decision}**: candidate {cand} vs reference {_tags(suite.reference)}; "
             f"requires {reqs} (seed means) and no blocking flag on the compared results.", ""]
    lines += [f"- {c}" for c in gate.checks]
    lines += [f"- ⚠ {n}" for n in notes]
    if gate.reasons:
        lines += ["", "Reasons: " + "; ".join(gate.reasons) + "."]
    return lines + [""]


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
    lines += _protocol(suite, col, results_dir, checkout)
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


def write_report(rep: SuiteReport, out_dir: Path | str, summary_name: str = "summary.json") -> list[Path]:
    """Write ``<suite>.md``, ``<suite>.csv``, ``<suite>.tex`` (LaTeX, booktabs), the plots (PNG +
    ``plots/*.csv``) and merge the suite into ``<out_dir>/<summary_name>``. Returns the paths
    written (Markdown first, then the CSV). All or nothing: see :func:`write_reports`."""
    return write_reports([rep], out_dir, summary_name)[0]


def write_reports(reps: list[SuiteReport], out_dir: Path | str,
                  summary_name: str = "summary.json") -> list[list[Path]]:
    """:func:`write_report` of several suites at once, all or nothing: every file (each suite's
    Markdown, CSV, LaTeX, plot PNGs and CSVs, and the merged summary) is first written in full to
    a temp file beside its target; only when all of them are written are they renamed over the
    targets. If anything fails before that (a plot that does not render, a full disk), the temp
    files are removed and no existing report file is touched. Returns each suite's paths."""
    from .plots import plot_csv, render_png

    out_dir = Path(out_dir)
    staged: list[tuple[str, Path]] = []  # (temp file, target)

    def stage(target: Path, write: Callable[[str], None]) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + target.suffix, dir=target.parent)
        os.close(fd)
        staged.append((tmp, target))
        write(tmp)
        return target

    def text(content: str) -> Callable[[str], None]:
        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                fh.write(content.encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
        return write

    summary_path = out_dir / summary_name
    try:
        summary = json.loads(summary_path.read_text())
        if not isinstance(summary, dict):
            summary = {}
    except (OSError, ValueError):
        summary = {}
    written: list[list[Path]] = []
    try:
        for rep in reps:
            name = rep.suite.name
            paths = [stage(out_dir / f"{name}.md", text(_relink(rep.markdown, out_dir))),
                     stage(out_dir / f"{name}.csv", text(rep.csv_text)),
                     stage(out_dir / f"{name}.tex", text(rep.latex))]
            for data in rep.plots:
                paths.append(stage(out_dir / f"{data.stem}.png", lambda tmp, d=data: render_png(d, tmp)))
                paths.append(stage(out_dir / "plots" / f"{data.stem}.csv", text(plot_csv(data))))
            summary[name] = rep.summary
            written.append(paths + [summary_path])
        stage(summary_path, text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n"))
    except BaseException:
        for tmp, _ in staged:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        raise
    for tmp, target in staged:
        os.replace(tmp, target)
    return written


def _relink(markdown: str, out_dir: Path) -> str:
    """The protocol links rendered for ``reports/`` pointed from ``out_dir`` instead (relative to
    the working directory, the repository root when DVC runs the report)."""
    href = Path(os.path.relpath(Path.cwd() / PROTOCOLS_DOC, Path(out_dir).resolve())).as_posix()
    return markdown if href == _PROTOCOLS_HREF else markdown.replace(f"]({_PROTOCOLS_HREF}#", f"]({href}#")
