"""Planted results for tests: a suite with one matrix row per entry and hand-written result
envelopes (:func:`plant`), the rows' derived flags (:func:`flags_by_row`) and the cells of a rendered
Markdown table (:func:`cells`). Planted caches: :mod:`planted`."""
from __future__ import annotations

from benchutil import envelope, write_json, write_suite

from benchmark.collect import collect
from benchmark.expand import expand
from benchmark.suite import load_suite

UCPR = {"r@1": 0.2, "r@5": 0.5, "r@10": 0.7, "mAP": 0.3, "mean_rank": 4.0}
CPAC = {"mae": 0.1, "rmse": 0.2, "iou@0.03": 0.5}


def plant(tmp_path, task, rows, *, seeds=(0,), args=None, tables=None, write=None, **suite_kw):
    """A suite with one matrix row per entry of ``rows`` and hand-written results.

    ``rows``: ``{row: {"args": {...}, "metrics": {...}, "extra": {...}, "baselines": {...},
    "provenance": {...}}}``;
    each result records the job's own args updated with the row's ``args`` (a planted deviation).
    ``write(job)`` may return False to leave a job's result missing.
    """
    matrix = {"row": {name: {"variant": name} for name in rows}}
    path = write_suite(tmp_path, task=task, args=args or {}, matrix=matrix, seeds={"seed": list(seeds)},
                       tables=tables or [{"rows": ["row"]}], **suite_kw)
    suite = load_suite(path, tmp_path / "params.yaml")
    jobs = expand(suite, tmp_path / "results")
    for job in jobs:
        spec = rows[job.tags["row"]]
        if write is not None and write(job) is False:
            continue
        metrics = spec.get("metrics", {"cls": {"test_acc": 0.5}, "ucpr": UCPR}.get(task, CPAC))
        if callable(metrics):
            metrics = metrics(job)
        doc = envelope(task=task, metrics=metrics, args={**job.args, **spec.get("args", {})})
        doc["provenance"].update(spec.get("provenance", {}))
        for block in ("extra", "baselines"):
            if block in spec:
                doc[block] = spec[block]
        write_json(job.out_json, doc)
    return suite, jobs


def flags_by_row(suite, jobs, **kw):
    return {r.tags["row"]: r for r in collect(suite, jobs, **kw).rows}


def cells(md: str, first_cell: str) -> list[list[str]]:
    """Cells of every Markdown table row whose first cell is ``first_cell`` (in order)."""
    out = []
    for line in md.splitlines():
        row = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and row[0] == first_cell:
            out.append(row)
    return out
