"""Per-suite DVC metrics: ``<dir>/<suite>.json`` (seed mean, std, n per row and headline metric)
and ``<dir>/<suite>.seeds.json`` (every seed's value, for comparisons seed by seed).

Written by the stage that runs the suite (``python -m benchmark run SUITE.yaml --metrics DIR``)
or on their own (``python -m benchmark metrics SUITE.yaml --out DIR``), from the results as they
are on disk: the same rows, metrics and valid results as ``benchmark compare``
(:func:`benchmark.compare.load_side`, :func:`~benchmark.compare.row_label`,
:func:`~benchmark.compare.headline_metrics`), so the two files and ``compare`` agree.

* ``<suite>.json`` (declared as the stage's dvc ``metrics``)::

      {"<row label>": {"<metric>": {"mean": float, "std": float | null, "n": int}}}

  ``n``: the seeds with a finite value; ``std``: their sample std (ddof 1), null for n = 1; mean
  and std rounded to 6 significant digits (stable, readable files). A row or metric without a
  finite value is left out.
* ``<suite>.seeds.json``::

      {"suite": "<name>", "seed_arg": "<seed arg or null>",
       "rows": {"<row label>": {"<metric>": {"<seed value as text>": float}}}}

  full precision; the seed value is the job's seed tag (the replicate index for derived seeds);
  ``"null"`` when the suite has no seed arg (one job a row).

Both files are written atomically, as key-sorted JSON. Everything except :func:`write_metrics`
is pure.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Optional

from .collect import ResultRow
from .expand import Job
from .suite import Suite

DIGITS = 6  # significant digits of the means and stds in <suite>.json
NO_SEED = "null"  # the seed key of a suite without a seed arg


def round_sig(x: float, digits: int = DIGITS) -> float:
    """``x`` rounded to ``digits`` significant digits."""
    return float(f"{x:.{digits}g}")


def seed_values(suite: Suite, jobs: list[Job], valid: dict[str, ResultRow]) -> dict[str, dict[str, dict[str, float]]]:
    """``{row label: {metric: {seed text: value}}}`` over the valid results' finite headline
    metrics, rows in suite order, metrics in table order."""
    from .compare import headline_metrics, row_label

    metrics = headline_metrics(suite, list(valid.values()))
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for job in jobs:
        result = valid.get(job.job_id)
        if result is None:
            continue
        seed = str(job.tags.get(suite.seed_arg)) if suite.seed_arg else NO_SEED
        row = rows.setdefault(row_label(job, suite.seed_arg), {})
        for metric in metrics:
            value = result.metrics.get(metric)
            if value is not None and math.isfinite(value):
                row.setdefault(metric, {})[seed] = float(value)
    return {label: row for label, row in rows.items() if row}


def summarize_seeds(rows: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{row: {metric: {"mean", "std", "n"}}}`` of :func:`seed_values`' output (rounded)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for label, row in rows.items():
        for metric, by_seed in row.items():
            values = list(by_seed.values())
            std: Optional[float] = round_sig(statistics.stdev(values)) if len(values) > 1 else None
            out.setdefault(label, {})[metric] = {"mean": round_sig(statistics.fmean(values)), "std": std,
                                                 "n": len(values)}
    return out


def metrics_docs(suite: Suite, jobs: list[Job], valid: dict[str, ResultRow]) -> tuple[dict, dict]:
    """The contents of ``<suite>.json`` and ``<suite>.seeds.json``."""
    rows = seed_values(suite, jobs, valid)
    return summarize_seeds(rows), {"suite": suite.name, "seed_arg": suite.seed_arg, "rows": rows}


def metrics_paths(suite_name: str, out_dir: Path | str) -> tuple[Path, Path]:
    """``(<out_dir>/<suite>.json, <out_dir>/<suite>.seeds.json)``."""
    out_dir = Path(out_dir)
    return out_dir / f"{suite_name}.json", out_dir / f"{suite_name}.seeds.json"


def write_metrics(suite: Suite, results_dir: Path | str, out_dir: Path | str) -> tuple[Path, Path, int, list[str]]:
    """Read the suite's results in ``results_dir`` and write its two metrics files into
    ``out_dir``. Returns both paths, the number of rows written and one line per invalid result
    left out."""
    from .atomic import atomic_write_json
    from .compare import load_side

    jobs, valid, invalid = load_side(suite, results_dir)
    means, seeds = metrics_docs(suite, jobs, valid)
    path, seeds_path = metrics_paths(suite.name, out_dir)
    atomic_write_json(seeds_path, seeds)
    atomic_write_json(path, means)
    return path, seeds_path, len(means), invalid
