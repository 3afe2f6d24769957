"""The report's sections around the tables: protocol (command, code, suite file, params,
matrix, cache, results, how to reproduce), status (completed and missing jobs), provenance of the
results, flags (per result and per table) and the promotion gate (its verdict vetoed by blocking
flags, mixed classes or mixed code).

Pure rendering of collected results; the DVC stages arrive as data (:mod:`benchmark.dvc_lookup`).
"""
from __future__ import annotations

import json
import shlex
from collections import Counter
from pathlib import Path
from typing import Optional

from .aggregate import TableData, gate_comparisons, gate_rows
from .code_identity import Checkout, code_versions, job_module, mixed_code, short, versions_text
from .collect import Collected, ResultRow
from .expand import Job, command_of
from .guards import describe, is_blocking, mixed_flags
from .plugins import report_lines
from .promote import GateResult, evaluate_gate
from .report_format import DASH, fmt_num, _md, _portable_argv, _tags
from .report_tables import _pairs, _seg_text, corpus_text
from .suite import Suite


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
              checkout: Optional[Checkout] = None, stages: Optional[dict[str, list[str]]] = None) -> list[str]:
    """The protocol section; ``stages``: the DVC stages that run and report this suite
    (:func:`benchmark.dvc_lookup.find_dvc_stages`), none if None."""
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
    stages = stages or {}
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
