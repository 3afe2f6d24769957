"""Sensitivity checks: does a planted defect move the metric beyond seed noise?

A suite may declare ``sensitivity: {metric: test_acc, min_std: 3}``. Every row of the reference
axes other than the reference row is a defect (shuffled labels, random weights, a zeroed input
channel, ...); for each combination of the other axes the check compares the defect's seed mean
with the reference row's:

    moved = |mean_defect - mean_ref| / sigma,   sigma = max(std_defect, std_ref)  (ddof=1)

and says DETECTED when ``moved > min_std`` (with sigma 0, any difference is detected), MISSED
otherwise (or when either side has fewer than two seeds: no noise level to compare with).
A benchmark whose checks are all DETECTED on its default profile can tell a broken pipeline
from a working one. Pure computation; :mod:`benchmark.report` renders it.
"""
from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass
from typing import Any, Optional

from .collect import ResultRow
from .suite import Suite

DETECTED, MISSED = "DETECTED", "MISSED"


@dataclass(frozen=True)
class Check:
    """One defect row against the reference row, within one combination of the other axes."""

    label: str               # "defect=shuffled_labels" (+ the other axes' rows)
    metric: str
    ref: list[float]         # seed values
    defect: list[float]
    min_std: float

    @property
    def sigma(self) -> Optional[float]:
        if len(self.ref) < 2 or len(self.defect) < 2:
            return None
        return max(statistics.stdev(self.ref), statistics.stdev(self.defect))

    @property
    def delta(self) -> Optional[float]:
        if not self.ref or not self.defect:
            return None
        return statistics.fmean(self.defect) - statistics.fmean(self.ref)

    @property
    def moved(self) -> Optional[float]:
        """|delta| in units of sigma (inf when sigma is 0 and delta is not)."""
        if self.delta is None or self.sigma is None:
            return None
        if self.sigma == 0:
            return math.inf if self.delta != 0 else 0.0
        return abs(self.delta) / self.sigma

    @property
    def verdict(self) -> str:
        return DETECTED if self.moved is not None and self.moved > self.min_std else MISSED


def _values(rows: list[ResultRow], tags: dict[str, Any], metric: str) -> list[float]:
    out = []
    for r in rows:
        if all(str(r.tags.get(k)) == str(v) for k, v in tags.items()):
            value = r.metrics.get(metric)
            if value is not None and not math.isnan(value):
                out.append(value)
    return out


def sensitivity_checks(suite: Suite, rows: list[ResultRow]) -> list[Check]:
    """Every defect row x combination of the other axes, in suite order ([] without the key)."""
    spec = suite.sensitivity
    if spec is None:
        return []
    ref_axes = list(suite.reference)
    others = [a for a in suite.axes if a not in ref_axes]
    checks = []
    for combo in itertools.product(*(list(suite.matrix[a]) for a in others)):
        fixed = dict(zip(others, combo))
        for defect in itertools.product(*(list(suite.matrix[a]) for a in ref_axes)):
            dtags = dict(zip(ref_axes, defect))
            if dtags == {a: str(v) for a, v in suite.reference.items()}:
                continue
            label = " ".join(f"{a}={v}" for a, v in {**dtags, **fixed}.items())
            checks.append(Check(label, spec.metric, _values(rows, {**fixed, **suite.reference}, spec.metric),
                                _values(rows, {**fixed, **dtags}, spec.metric), spec.min_std))
    return checks
