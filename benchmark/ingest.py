"""Ingest jobs: a suite whose results are metrics a lab already writes, with no wrapper script.

A suite with an ``ingest:`` key (instead of ``module`` / ``program``) turns one CSV row, or one
flat JSON file, per matrix point x seed into a result envelope::

    ingest:
      format: csv                               # or json: a flat object, or a list of them
      path: runs/{stage}.csv                    # {name}: the job's args (matrix rows, seed)
      select: {run: "{model}", seed: "{seed}"}  # the row whose cells equal these texts
      metrics: [PSNR, SSIM, LPIPS]              # columns copied into the envelope's metrics
      directions: {LPIPS: min}                  # others: higher is better

Expansion (:func:`ingest_args`) reads each source once and finds each job's row, so a missing
file, no row or several rows for a job, a bad header, an empty, non-numeric, NaN or infinite
metric cell is a :class:`~benchmark.errors.SuiteError` naming the file, row and column before
anything runs (``validate``, ``run``, ``status`` and ``report`` alike). A job's args, and so its
id, hold the ``sha256`` of its row (:attr:`benchmark.ingest_read.Record.sha256`): a changed cell
re-ingests that row's job only; rows added to the file re-ingest nothing.

The job itself is ``python -m benchmark.ingest --format csv --path P --select run=a seed=0
--metrics PSNR SSIM --row_sha256 H --task T --out_json OUT`` (:func:`main`): it reads the row
again (refusing a row that changed since expansion), and writes the envelope through
:class:`benchmark.results.Envelope` with ``provenance.source`` = ``{path, format, sha256 (of the
file), row, row_sha256}``. It runs through every executor like any job (skip, locks, MLflow).
"""
from __future__ import annotations

import argparse
import re
import string
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Literal, Mapping, Optional, Protocol, Sequence

from pydantic import BaseModel, ConfigDict, field_validator

from .ingest_read import FORMATS, IngestError, Source, metric_values, read_source
from .tasks import MetricRule, TaskKind

PROTOCOL_VERSION = 1
#: The module every ingest job runs (``python -m benchmark.ingest``).
INGEST_MODULE = "benchmark.ingest"


class IngestSpec(BaseModel):
    """The suite's ``ingest:`` key: where each job's metrics are and which ones to take."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["csv", "json"]
    path: str
    select: dict[str, str] = {}
    metrics: list[str]
    directions: dict[str, Literal["min", "max"]] = {}

    @field_validator("select", mode="before")
    @classmethod
    def _select_texts(cls, value: Any) -> Any:
        """``{seed: 0}`` reads as ``{seed: "0"}``: cells are compared as text."""
        if isinstance(value, dict):
            return {k: v if isinstance(v, str) or not isinstance(v, (int, float)) or isinstance(v, bool)
                    else str(v) for k, v in value.items()}
        return value

    def task_kind(self, base: TaskKind) -> TaskKind:
        """``base`` with the ingested metrics required (and so ranked, with arrows), the
        declared directions first, and the ingested metrics as a table's default metrics."""
        ruled = [m for m in self.metrics if not any(r.matches(m) for r in base.metrics)]
        return replace(base, metrics=(*base.metrics, *(MetricRule(m, required=True) for m in ruled)),
                       default_metrics=base.default_metrics or tuple(self.metrics),
                       directions=(*((re.escape(m), d) for m, d in self.directions.items()), *base.directions))


def _fields(template: str) -> list[str]:
    """Placeholder names of a ``{name}`` template (``ValueError`` on unbalanced braces)."""
    return [re.split(r"[.\[]", name, maxsplit=1)[0]
            for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def spec_problems(spec: IngestSpec, names: set[str]) -> list[tuple[str, str]]:
    """``(key, text)`` for every problem of ``spec`` a suite file alone shows; ``names``: the
    args a template may use (matrix rows, suite args, the seed arg)."""
    out: list[tuple[str, str]] = []
    templates = [("ingest.path", spec.path), *((f"ingest.select.{k}", v) for k, v in spec.select.items())]
    for key, text in templates:
        try:
            unknown = [f for f in _fields(text) if f not in names]
        except ValueError as exc:
            out.append((key, f"bad template {text!r}: {exc} (write {{{{ and }}}} for literal braces)"))
            continue
        if unknown:
            out.append((key, f"unknown placeholder {{{unknown[0]}}}; expected one of: "
                             f"{', '.join(sorted(names)) or '(no args)'}"))
    if not spec.metrics:
        out.append(("ingest.metrics", "expected at least one metric (a column or key of the source)"))
    for i, metric in enumerate(spec.metrics):
        if not metric or "/" in metric:
            out.append((f"ingest.metrics[{i}]", f"expected a metric name without '/'; got {metric!r}"))
        elif metric in spec.metrics[:i]:
            out.append((f"ingest.metrics[{i}]", f"{metric!r} is listed twice"))
    for metric in spec.directions:
        if metric not in spec.metrics:
            out.append((f"ingest.directions.{metric}", f"not an ingested metric; expected one of: "
                                                       f"{', '.join(spec.metrics)}"))
    return out


def render(template: str, args: Mapping[str, Any]) -> str:
    """``template`` with ``{name}`` replaced by the job's arg ``name``."""
    return template.format_map(dict(args))


class IngestSuite(Protocol):
    """What :func:`ingest_args` reads of a suite (:class:`benchmark.suite.Suite` has it; the suite
    imports this module, so this one names no suite type: no import circle)."""

    task: str
    ingest: Optional[IngestSpec]


def ingest_args(suite: IngestSuite, args: Mapping[str, Any], sources: dict[str, Source]) -> dict[str, Any]:
    """The args of the ingest job at a matrix point with ``args``: the rendered source path and
    ``select``, the metrics, the row's sha256 and the suite's task (together: the job id).
    ``sources`` caches parsed files across one expansion. Raises IngestError."""
    spec = suite.ingest
    path = render(spec.path, args)
    if path not in sources:
        sources[path] = read_source(path, spec.format)
    source = sources[path]
    source.check_columns(spec.metrics, "ingest.metrics")
    select = {col: render(text, args) for col, text in spec.select.items()}
    record = source.match(select)
    metric_values(record, spec.metrics)  # judged now: a bad cell stops the suite before it runs
    return {"format": spec.format, "path": path, "select": [f"{k}={v}" for k, v in select.items()],
            "metrics": list(spec.metrics), "row_sha256": record.sha256, "task": suite.task}


# --- the job: python -m benchmark.ingest ----------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmark.ingest",
                                 description="Copy one run's metrics from a CSV row or a flat JSON file "
                                             "into a result envelope (a suite's ingest job).")
    ap.add_argument("--format", required=True, choices=FORMATS)
    ap.add_argument("--path", required=True, help="the metrics file")
    ap.add_argument("--select", nargs="*", default=[], metavar="COLUMN=VALUE",
                    help="the row whose cells equal these texts")
    ap.add_argument("--metrics", nargs="+", required=True)
    ap.add_argument("--row_sha256", default=None, help="refuse the row unless its content has this sha256")
    ap.add_argument("--task", default="command", help="the envelope's task (the suite's)")
    ap.add_argument("--out_json", required=True)
    return ap


def _selection(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        col, eq, value = item.partition("=")
        if not eq or not col:
            raise IngestError(f"--select {item!r}: expected COLUMN=VALUE")
        out[col] = value
    return out


def ingest_one(a: argparse.Namespace, started: str, t0: float) -> dict[str, Any]:
    """The envelope (validated, as a JSON-ready dict) of the row ``a`` names; IngestError."""
    from .code_identity import code_identity
    from .envelope import check_envelope, envelope_dict

    source = read_source(a.path, a.format)
    source.check_columns(a.metrics, "--metrics")
    record = source.match(_selection(a.select))
    if a.row_sha256 and record.sha256 != a.row_sha256:
        raise IngestError(f"{record.where}: the row changed since the suite was expanded (sha256 "
                          f"{record.sha256[:12]}, expected {a.row_sha256[:12]}); run the suite again")
    metrics = metric_values(record, a.metrics)
    args = {"format": a.format, "path": a.path, "select": list(a.select), "metrics": list(a.metrics),
            "row_sha256": a.row_sha256, "task": a.task}
    provenance = {"git_rev": None, "started": started, "wall_s": round(time.time() - t0, 3),
                  "versions": {"python": sys.version.split()[0]},
                  "code": code_identity(INGEST_MODULE),
                  "source": {"path": a.path, "format": a.format, "sha256": source.sha256,
                             "row": record.row, "row_sha256": record.sha256}}
    env = check_envelope(envelope_dict(a.task, args, metrics, provenance), a.path)
    return env.model_dump(mode="json")


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .atomic import atomic_write_json

    t0 = time.time()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    a = build_parser().parse_args(argv)
    try:
        envelope = ingest_one(a, started, t0)
    except IngestError as exc:
        print(f"ingest: error: {exc}", file=sys.stderr)
        return 2
    atomic_write_json(a.out_json, envelope)
    return 0


if __name__ == "__main__":
    sys.exit(main())
