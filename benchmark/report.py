"""Generated reports: ``reports/<suite>.md``, ``reports/<suite>.csv`` and ``reports/summary.json``.

Everything in a report comes from the suite and its result JSONs; nothing is typed by hand, and
the content is deterministic (no timestamps) so that an unchanged benchmark gives unchanged bytes.
"""
from __future__ import annotations

import csv
import io
import json
import shlex
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from tabulate import tabulate

from .aggregate import Cell, TableData, build_table, gate_comparisons
from .atomic import atomic_write_json, atomic_write_text
from .collect import Collected, collect
from .expand import Job, command_of
from .promote import GateResult, evaluate_gate
from .suite import Suite

DASH = "—"


# --- number formatting ----------------------------------------------------------------------

def fmt_num(x: Optional[float]) -> str:
    """4 decimals (``2.0000``); tiny non-zero values in scientific notation."""
    if x is None:
        return DASH
    if x != 0 and abs(x) < 1e-3:
        return f"{x:.3e}"
    return f"{x:.4f}"


def fmt_cell(cell: Cell) -> str:
    """``mean ± std`` (sample std); ``mean (n=1)`` for a single seed; ``—`` when empty."""
    if cell.n == 0:
        return DASH
    if cell.n == 1:
        return f"{fmt_num(cell.mean)} (n=1)"
    return f"{fmt_num(cell.mean)} ± {fmt_num(cell.std)}"


def fmt_delta(x: Optional[float]) -> str:
    if x is None:
        return DASH
    if x != 0 and abs(x) < 1e-3:
        return f"{x:+.3e}"
    return f"{x:+.4f}"


def _md(rows: list[list[str]], headers: list[str]) -> str:
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True)


def _portable_argv(argv: list[str]) -> str:
    return shlex.join(["python" if a == sys.executable else a for a in argv])


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


def _column_header(t: TableData, col) -> str:
    label = t.col_label(col.key)
    name = f"{label} {col.base_metric}" if label else col.base_metric
    return f"{name} [{col.baseline}]" if col.baseline else name


def _n_text(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}–{hi}"


def render_table(t: TableData, seed_arg: Optional[str]) -> list[str]:
    """Markdown lines of one table and its Δ-vs-reference companion."""
    out = [f"## {t.title}", ""]
    over = f"over `{seed_arg}`" if seed_arg else "(no seed axis)"
    where = "; ".join(f"{a}={v}" for a, v in t.spec.where.items())
    out.append(f"Cells: mean ± sample std (ddof=1) {over}; `(n=1)` marks a single seed."
               + (f" Restricted to {where}." if where else ""))
    out.append("")
    row_headers = list(t.row_axes) or ["rows"]
    headers = [*row_headers, "n(seed)", *(_column_header(t, c) for c in t.columns)]
    body = []
    for rk in t.row_keys:
        lo, hi = t.n_range(rk)
        body.append([*(map(str, rk) if rk else ["all"]), _n_text(lo, hi),
                     *(fmt_cell(t.cell(rk, c.key, c.metric)) for c in t.columns)])
    out += [_md(body, headers), ""]

    main_cols = [c for c in t.columns if c.baseline is None]
    refs = {(rk, c.key): t.reference_of(rk, c.key) for rk in t.row_keys for c in main_cols}
    if t.reference and any(v is not None for v in refs.values()):
        ref_text = " ".join(f"{a}={v}" for a, v in t.reference.items())
        out += [f"### {t.title}: Δ vs reference ({ref_text})", "",
                "Difference of seed means, this row minus the reference in the same column.", ""]
        body = []
        for rk in t.row_keys:
            cells = []
            for c in main_cols:
                ref = refs[(rk, c.key)]
                if ref is None:
                    cells.append(DASH)
                elif ref == (rk, c.key):
                    cells.append("ref")
                else:
                    mine, theirs = t.cell(rk, c.key, c.metric).mean, t.cell(*ref, c.metric).mean
                    cells.append(fmt_delta(None if mine is None or theirs is None else mine - theirs))
            body.append([*(map(str, rk) if rk else ["all"]), *cells])
        out += [_md(body, [*row_headers, *(f"Δ {_column_header(t, c)}" for c in main_cols)]), ""]
    return out


def readout_rows(t: TableData, direction: Callable[[str], str]) -> list[list[str]]:
    """Best (and runner-up) row per column and metric, by the metric's direction."""
    rows = []
    for c in t.columns:
        if c.baseline is not None:
            continue
        scored = [(t.cell(rk, c.key, c.metric), rk) for rk in t.row_keys]
        scored = [(cell, rk) for cell, rk in scored if cell.n]
        if not scored:
            continue
        d = direction(c.metric)
        scored.sort(key=lambda x: x[0].mean if d == "min" else -x[0].mean)
        best = scored[0]
        second = scored[1] if len(scored) > 1 else None
        rows.append([t.title, t.col_label(c.key) or DASH, c.metric, "lower" if d == "min" else "higher",
                     t.row_label(best[1]), fmt_cell(best[0]),
                     t.row_label(second[1]) if second else DASH, fmt_cell(second[0]) if second else DASH])
    return rows


def _protocol(suite: Suite, col: Collected, results_dir: Optional[Path]) -> list[str]:
    cmd = command_of(suite)
    what = f"python -m {cmd['module']}" if "module" in cmd else shlex.join(cmd["program"])
    dims = [f"{a} ({len(suite.matrix[a])})" for a in suite.axes]
    if suite.seed_arg:
        dims.append(f"{suite.seed_arg} ({len(suite.seed_values)})")
    params = ", ".join(f"`{k}`={json.dumps(v)}" for k, v in suite.params_used.items())
    table = [
        ["task", f"`{suite.task}`: {suite.kind.description}".rstrip(": ")],
        ["command", f"`{what}`"],
        ["suite file", f"`{suite.source}` (sha256 `{suite.source_sha256[:12]}`)"],
        ["params", f"`{suite.params_path}`: {params}" if params else "(no params references)"],
        ["matrix", " × ".join(dims) + f" = {len(col.jobs)} jobs" if dims else f"{len(col.jobs)} job(s)"],
        ["reference", " ".join(f"{a}={v}" for a, v in suite.reference.items()) or DASH],
        ["inputs", ", ".join(f"`{name}`" for name in suite.inputs) + " (content fingerprinted; a change re-runs)"
         if suite.inputs else DASH],
        ["results", f"`{col.jobs[0].out_json.parent}/`" if col.jobs else DASH],
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
    if col.jobs:
        job = col.jobs[0]
        out += [f"Example job ({job.label}):", "", "```bash", _portable_argv(job.argv), "```", ""]
    return out


def _provenance(col: Collected) -> list[str]:
    if not col.rows:
        return []
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
    ]
    if versions:
        lines.append("- versions: " + ", ".join(f"{k} {'/'.join(sorted(v))}" for k, v in sorted(versions.items())))
    lines.append(f"- total job wall time: {wall:.1f} s")
    return ["Provenance of the results:", "", *lines, ""]


def _flags(col: Collected) -> list[str]:
    out = ["## Flags", ""]
    jobs_by_flag: dict[str, list[str]] = {}
    source: dict[str, set] = {}
    for r in col.rows:
        own = set(r.envelope.flags)
        for f in r.flags:
            jobs_by_flag.setdefault(f, []).append(f"{r.job.label} (`{r.job.job_id}`)")
            source.setdefault(f, set()).add("result" if f in own else "benchmark guard")
    if not jobs_by_flag:
        return out + [f"No flags raised by {len(col.rows)} result(s).", ""]
    for flag in sorted(jobs_by_flag):
        jobs = jobs_by_flag[flag]
        out.append(f"- **{flag}** ({', '.join(sorted(source[flag]))}; {len(jobs)} job(s)): " + "; ".join(jobs))
    return out + [""]


def build_report(suite: Suite, jobs: list[Job], *, results_dir: Optional[Path] = None) -> SuiteReport:
    """Collect, validate and render one suite. If ``problems`` is non-empty, nothing is rendered."""
    col = collect(suite, jobs)
    rep = SuiteReport(suite=suite, collected=col)
    rep.problems = col.problems()
    if rep.problems:
        return rep

    kind = suite.kind
    lines = [f"# {suite.name}", ""]
    if suite.description:
        lines += [suite.description.strip(), ""]
    lines += _protocol(suite, col, results_dir)
    lines += [f"status: {len(col.rows)}/{len(jobs)} jobs complete", ""]
    if col.missing:
        lines += ["Missing:", ""] + [f"- {j.label} (`{j.job_id}`)" for j in col.missing] + [""]
    lines += _provenance(col)

    tables = [build_table(suite, i, col.rows) for i in range(len(suite.tables))]
    for t in tables:
        lines += render_table(t, suite.seed_arg)

    lines += ["## Readout", "", "Best row per column and metric (by seed mean).", ""]
    readout = [row for t in tables for row in readout_rows(t, kind.direction)]
    if readout:
        lines += [_md(readout, ["table", "column", "metric", "better", "best", "value", "runner-up", "value"]), ""]
    else:
        lines += ["No complete results yet.", ""]

    lines += _flags(col)

    if suite.promote is not None:
        gate = evaluate_gate(suite.requirements, gate_comparisons(suite, col.rows), fmt=fmt_num)
        rep.gate = gate
        cand = " ".join(f"{a}={v}" for a, v in suite.promote.candidate.items())
        ref = " ".join(f"{a}={v}" for a, v in suite.reference.items())
        reqs = ", ".join(f"`{r.metric} {r.text}`" for r in suite.requirements)
        lines += ["## Promotion gate", "", f"**{gate.decision}**: candidate {cand} vs reference {ref}; "
                  f"requires {reqs} (seed means).", ""]
        lines += [f"- {c}" for c in gate.checks] + [""]

    rep.markdown = "\n".join(lines).rstrip() + "\n"
    rep.csv_text = _csv(col)
    rep.summary = _summary(suite, col, tables, rep.gate)
    return rep


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


def _summary(suite: Suite, col: Collected, tables: list[TableData], gate: Optional[GateResult]) -> dict:
    out: dict[str, Any] = {"complete": len(col.rows), "total": len(col.jobs)}
    for t in tables:
        entry: dict[str, Any] = {}
        for rk in t.row_keys:
            row: dict[str, Any] = {}
            for c in t.columns:
                mean = t.cell(rk, c.key, c.metric).mean
                if mean is None:
                    continue
                label = t.col_label(c.key)
                (row.setdefault(label, {}) if label else row)[c.metric] = mean
            if row:
                entry[t.row_label(rk)] = row
        out[t.spec.title or f"table{t.index + 1}"] = entry
    if gate is not None:
        out["promote"] = int(gate.decision == "PROMOTE")
    return out


def write_report(rep: SuiteReport, out_dir: Path | str) -> list[Path]:
    """Write ``<suite>.md`` and ``<suite>.csv`` and merge the suite into ``summary.json``."""
    out_dir = Path(out_dir)
    md = out_dir / f"{rep.suite.name}.md"
    csv_path = out_dir / f"{rep.suite.name}.csv"
    atomic_write_text(md, rep.markdown)
    atomic_write_text(csv_path, rep.csv_text)
    summary_path = out_dir / "summary.json"
    try:
        summary = json.loads(summary_path.read_text())
        if not isinstance(summary, dict):
            summary = {}
    except (OSError, ValueError):
        summary = {}
    summary[rep.suite.name] = rep.summary
    atomic_write_json(summary_path, summary)
    return [md, csv_path, summary_path]
