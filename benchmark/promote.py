"""Promotion gates: ``require: {"iou@0.03": ">= ref + 0.01", mae: "<= ref"}``.

Grammar of one requirement: ``OP ref``, ``OP ref + X``, ``OP ref - X`` or ``OP X`` (absolute),
with OP one of ``>= <= > < ==``. The candidate row's seed-mean is compared with the reference
row's seed-mean in every combination of the other matrix axes; all must pass to PROMOTE.
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from typing import Callable

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_GRAMMAR = re.compile(rf"^\s*(>=|<=|==|>|<)\s*(?:(ref)\s*(?:([+-])\s*({_NUM}))?|({_NUM}))\s*$")


@dataclass(frozen=True)
class Requirement:
    """One parsed gate: ``candidate OP (ref + offset)`` or ``candidate OP threshold``."""

    metric: str
    op: str
    uses_ref: bool
    value: float  # offset if uses_ref, else the absolute threshold
    text: str

    def threshold(self, ref: float | None) -> float | None:
        if not self.uses_ref:
            return self.value
        return None if ref is None else ref + self.value

    def passes(self, candidate: float, ref: float | None) -> bool | None:
        bound = self.threshold(ref)
        return None if bound is None else _OPS[self.op](candidate, bound)


def parse_requirement(metric: str, text: str) -> Requirement:
    """Parse ``text``; ``ValueError`` with the expected grammar if it does not parse."""
    m = _GRAMMAR.match(str(text))
    if not m:
        raise ValueError(f"cannot parse {text!r}; expected 'OP ref', 'OP ref + X', 'OP ref - X' or "
                         "'OP X' with OP one of >=, <=, >, <, ==")
    op, ref, sign, offset, absolute = m.groups()
    if ref:
        value = float(offset) * (-1 if sign == "-" else 1) if offset else 0.0
        return Requirement(metric, op, True, value, str(text).strip())
    return Requirement(metric, op, False, float(absolute), str(text).strip())


@dataclass
class GateResult:
    """Decision of a promotion gate with one line per comparison made."""

    decision: str  # "PROMOTE" | "REJECT"
    reasons: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)


def evaluate_gate(requirements: list[Requirement],
                  comparisons: list[tuple[str, dict[str, float | None], dict[str, float | None]]],
                  fmt: Callable[[float], str] = lambda x: f"{x:.4f}") -> GateResult:
    """Apply ``requirements`` to ``comparisons`` = [(label, candidate means, reference means)].

    Means are per metric (``None`` when the results are missing). Missing data rejects.
    """
    checks: list[str] = []
    reasons: list[str] = []
    if not comparisons:
        reasons.append("no candidate rows to compare")
    for label, cand, ref in comparisons:
        where = f"{label}: " if label else ""
        for req in requirements:
            c, r = cand.get(req.metric), ref.get(req.metric)
            if c is None or (req.uses_ref and r is None):
                missing = "candidate" if c is None else "reference"
                line = f"{where}{req.metric}: missing {missing} results"
                reasons.append(line)
                checks.append(f"✗ {line}")
                continue
            bound = req.threshold(r)
            ok = req.passes(c, r)
            rhs = (f"ref {fmt(r)}" + (f" {'+' if req.value >= 0 else '-'} {abs(req.value):g}" if req.value else "")
                   + (f" = {fmt(bound)}" if req.value else "")) if req.uses_ref else f"{req.value:g}"
            line = f"{where}{req.metric} {fmt(c)} {req.op} {rhs}"
            checks.append(f"{'✓' if ok else '✗'} {line}")
            if not ok:
                reasons.append(line + " fails")
    return GateResult("REJECT" if reasons else "PROMOTE", reasons, checks)
