"""Sensitivity checks (planted defects must move the metric beyond seed noise), on planted
results against hand-computed |Δ| / σ."""
from __future__ import annotations

import math
import statistics

import pytest

from planted_results import cells, plant  # noqa: E402

from benchmark.errors import SuiteError  # noqa: E402
from benchmark.report import build_report  # noqa: E402

# seeds 0, 1, 2 -> per-row values
VALUES = {"intact": [0.60, 0.62, 0.64],      # mean 0.62, std 0.02
          "shuffled": [0.08, 0.09, 0.10],    # moves 0.53 = 26.5 sigma
          "subtle": [0.63, 0.66, 0.69],      # moves 0.04, sigma = max(0.02, 0.03) -> 1.33
          "flat": [0.62, 0.62, 0.62]}


def _suite(tmp_path, rows=VALUES, **kw):
    spec = {name: {"metrics": (lambda v: (lambda job: {"test_acc": v[job.tags["seed"]],
                                                       "test_majority_rate": 0.08}))(vals)}
            for name, vals in rows.items()}
    return plant(tmp_path, "cls", spec, seeds=(0, 1, 2), reference={"row": "intact"},
                 sensitivity={"metric": "test_acc", "min_std": 3}, **kw)


def test_verdicts_match_hand_computation(tmp_path):
    suite, jobs = _suite(tmp_path)
    rep = build_report(suite, jobs)
    by_label = {c.label: c for c in rep.sensitivity}
    shuffled = by_label["row=shuffled"]
    assert math.isclose(shuffled.delta, 0.09 - 0.62)
    assert math.isclose(shuffled.sigma, statistics.stdev([0.60, 0.62, 0.64]))
    assert math.isclose(shuffled.moved, 0.53 / 0.02) and shuffled.verdict == "DETECTED"
    assert math.isclose(by_label["row=subtle"].moved, 0.04 / 0.03) and by_label["row=subtle"].verdict == "MISSED"
    assert by_label["row=flat"].moved == 0.0 and by_label["row=flat"].verdict == "MISSED"
    md = rep.markdown
    assert "## Sensitivity check" in md
    assert cells(md, "row=shuffled")[0][-1] == "**DETECTED**"
    assert rep.summary["sensitivity"]["row=shuffled"]["detected"] == 1
    assert rep.summary["sensitivity"]["row=subtle"]["detected"] == 0


def test_zero_noise_counts_any_move(tmp_path):
    suite, jobs = _suite(tmp_path, rows={"intact": [0.5, 0.5, 0.5], "moved": [0.4, 0.4, 0.4]})
    [check] = build_report(suite, jobs).sensitivity
    assert math.isinf(check.moved) and check.verdict == "DETECTED"


def test_missing_defect_results_are_missed(tmp_path):
    suite, jobs = _suite(tmp_path, rows={"intact": [0.5, 0.6, 0.7], "gone": [0.1, 0.1, 0.1]},
                         write=lambda job: job.tags["row"] != "gone")
    [check] = build_report(suite, jobs).sensitivity
    assert check.moved is None and check.verdict == "MISSED"


@pytest.mark.parametrize("kw, message", [
    ({"reference": {}}, "sensitivity: needs a `reference` row"),
    ({"seeds": (0,)}, "sensitivity: needs at least two seeds"),
])
def test_sensitivity_is_validated(tmp_path, kw, message):
    with pytest.raises(SuiteError, match=message):
        plant(tmp_path, "cls", {"a": {}, "b": {}}, **{"seeds": (0, 1), "reference": {"row": "a"},
                                                      "sensitivity": {"metric": "test_acc"}, **kw})
