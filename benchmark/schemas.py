"""pandera schemas of flattened result rows, one per task kind (built from :mod:`benchmark.tasks`).

Rows are validated together (a suite at a time) in a frame whose index is the result file path, so
that every failure case names its file.
"""
from __future__ import annotations

import re
from typing import Iterable

from .errors import ResultError
from .results import BASELINE_PREFIX
from .tasks import MetricRule, TaskKind


def _checks(rule: MetricRule) -> list:
    import pandera.pandas as pa

    if rule.min is not None and rule.max is not None:
        return [pa.Check.in_range(rule.min, rule.max)]
    if rule.min is not None:
        return [pa.Check.ge(rule.min)]
    if rule.max is not None:
        return [pa.Check.le(rule.max)]
    return []


def baseline_prefixes(columns: Iterable[str]) -> list[str]:
    """``["baseline/copy/", ...]`` present among ``columns``, in first-seen order."""
    out: list[str] = []
    for col in columns:
        parts = col.split("/")
        if len(parts) >= 3 and parts[0] == BASELINE_PREFIX:
            prefix = f"{parts[0]}/{parts[1]}/"
            if prefix not in out:
                out.append(prefix)
    return out


def build_schema(kind: TaskKind, columns: Iterable[str]):
    """DataFrameSchema for ``kind`` given the metric ``columns`` of the frame to validate."""
    import pandera.pandas as pa

    columns = list(columns)
    schema_cols: dict[str, pa.Column] = {
        # every metric column is a number (coerced to float); missing values are allowed unless a
        # rule below requires the column
        r"^.*$": pa.Column(float, regex=True, required=False, nullable=True, coerce=True),
    }
    for rule in kind.metrics:
        body = rule.pattern if rule.regex else re.escape(rule.pattern)
        if rule.regex or not rule.required:
            schema_cols[f"^(?:{body})$"] = pa.Column(float, _checks(rule), regex=True, required=False,
                                                     nullable=True, coerce=True)
        else:
            schema_cols[rule.pattern] = pa.Column(float, _checks(rule), required=True, nullable=False,
                                                  coerce=True)
        schema_cols[f"^{BASELINE_PREFIX}/[^/]+/(?:{body})$"] = pa.Column(
            float, _checks(rule), regex=True, required=False, nullable=True, coerce=True)

    frame_checks = []
    for check in kind.row_checks:
        for prefix in ["", *baseline_prefixes(columns)]:
            cols = [prefix + c for c in check.columns]
            if all(c in columns for c in cols):
                frame_checks.append(pa.Check(_row_check(check.fn, cols), name=f"{prefix}{check.name}"))
    return pa.DataFrameSchema(schema_cols, checks=frame_checks, name=f"task:{kind.name}")


def _row_check(fn, cols: list[str]):
    def check(df):
        missing = df[cols].isna().any(axis=1)
        return fn(*(df[c] for c in cols)) | missing

    return check


def schema_failures(frame, kind: TaskKind) -> dict[str, list[str]]:
    """Validate ``frame`` (index = result file, columns = flattened metrics) against ``kind``.

    Returns ``{file: [problem, ...]}`` for the files that fail; empty if the frame passes.
    """
    import pandera.pandas as pa

    if frame.empty:
        return {}
    schema = build_schema(kind, frame.columns)
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        return _describe_failures(exc.failure_cases, frame, kind)
    return {}


def schema_problems(frame, kind: TaskKind) -> list[str]:
    """Like :func:`schema_failures`, as sorted ``"<file>: <problem>"`` lines."""
    return sorted(f"{file}: {msg}" for file, msgs in schema_failures(frame, kind).items() for msg in msgs)


def _describe_failures(cases, frame, kind: TaskKind) -> dict[str, list[str]]:
    row_checks = {c.name: c for c in kind.row_checks}
    out: dict[str, set[str]] = {}

    def add(file, msg: str) -> None:
        out.setdefault(str(file), set()).add(msg)

    for rec in cases.to_dict("records"):
        ctx, col, check, case, idx = (rec.get("schema_context"), rec.get("column"), str(rec.get("check")),
                                      rec.get("failure_case"), rec.get("index"))
        if check == "column_in_dataframe":
            for file in frame.index:
                add(file, f"metric {case!r} required by task {kind.name!r} is missing")
        elif idx is None:
            for file in frame.index:
                add(file, f"metric {col!r} failed {check}: got {case!r}")
        elif check == "not_nullable":
            add(idx, f"metric {col!r} required by task {kind.name!r} is missing or NaN")
        elif check.startswith("coerce_dtype") or check.startswith("dtype"):
            add(idx, f"metric {col!r} is not a number: {case!r}")
        elif ctx == "DataFrameSchema":
            base = check.split("/")[-1]
            prefix = check[: len(check) - len(base)]
            cols = [prefix + c for c in row_checks[base].columns] if base in row_checks else []
            values = ", ".join(f"{c}={frame.at[idx, c]:g}" for c in cols if c in frame.columns)
            add(idx, f"check {check!r} failed ({values})")
        else:
            add(idx, f"metric {col!r} failed {check}: got {case!r}")
    return {file: sorted(msgs) for file, msgs in out.items()}


def validate_rows(frame, kind: TaskKind) -> None:
    """Raise :class:`ResultError` with every problem if ``frame`` fails ``kind``'s schema."""
    problems = schema_problems(frame, kind)
    if problems:
        raise ResultError("\n".join(problems))
