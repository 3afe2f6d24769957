"""The one mapping from the reports' metric names to MLflow's (benchmark/mlflow_names.py)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from benchmark.mlflow_names import ENGINE_TAGS, axis_tag, metric_name, report_name

REPO = Path(__file__).resolve().parents[1]


def _report_columns() -> set[str]:
    """Every column of the committed reports' CSVs and every metric key of reports/summary.json."""
    cols: set[str] = set()
    for path in sorted((REPO / "reports").rglob("*.csv")):
        with path.open(newline="") as fh:
            cols.update(next(csv.reader(fh), []))

    def keys(node):
        if isinstance(node, dict):
            for k, v in node.items():
                cols.add(str(k))
                keys(v)
        elif isinstance(node, list):
            for v in node:
                keys(v)

    summary = REPO / "reports" / "summary.json"
    if summary.exists():
        keys(json.loads(summary.read_text()))
    return cols


def _mlflow_accepts(name: str) -> bool:
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_metric_name

    try:
        _validate_metric_name(name)
    except MlflowException:
        return False
    return True


@pytest.mark.parametrize("report, mlflow", [
    ("mae", "mae"), ("iou@0.03", "iou_at_0.03"), ("near@0.05/iou@0.03", "near_at_0.05/iou_at_0.03"),
    ("baseline/nn_copy/rmse", "baseline/nn_copy/rmse"), ("r@10", "r_at_10"), ("a:b", "a_x3a_b"),
    ("a(b)", "a_x28_b_x29_"), ("x y-z.w", "x y-z.w"),
])
def test_metric_name_and_back(report, mlflow):
    assert metric_name(report) == mlflow
    assert report_name(mlflow) == report


def test_every_report_column_maps_one_to_one_to_a_name_mlflow_accepts():
    cols = {c for c in _report_columns() if c}
    assert "iou@0.03" in cols and "near@0.05/mae" in cols  # the reports were read
    mapped = {c: metric_name(c) for c in cols}
    assert len(set(mapped.values())) == len(cols)  # one-to-one
    for col, name in mapped.items():
        assert report_name(name) == col
        if "//" not in col and not col.endswith("/") and not col.startswith("/"):
            assert _mlflow_accepts(name), (col, name)
        if _mlflow_accepts(col) and ":" not in col:
            assert name == col  # a name MLflow takes is kept as it is


def test_axis_tags():
    assert axis_tag("ckpt") == "ckpt" and axis_tag("eval_seed") == "eval_seed"
    assert axis_tag("task") == "matrix.task" and axis_tag("job_id") == "matrix.job_id"
    assert axis_tag("mlflow.runName") == "matrix.mlflow.runName"
    assert all(axis_tag(t).startswith("matrix.") for t in ENGINE_TAGS)
