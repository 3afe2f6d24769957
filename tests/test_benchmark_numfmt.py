"""Deltas print at the precision of the values they compare: float noise is zero, real
differences keep the operands' last printed digit (hand-written expectations)."""
from __future__ import annotations

import math

import pytest

from benchmark.numfmt import delta_quantum, fmt_delta, fmt_diff, quantum


@pytest.mark.parametrize("x, q", [
    (0.8123, 1e-4), (12.5, 1e-4), (0.0, 1e-4), (-0.002, 1e-4),   # fixed notation: 4 decimals
    (2.345e-05, 1e-8), (-9.1e-4, 1e-7), (1e-4, 1e-7),               # 2.345e-05: last digit 0.001e-05
    (None, None), (math.nan, None),
])
def test_quantum_is_the_last_printed_digit(x, q):
    got = quantum(x)
    assert got == q if q is None else got == pytest.approx(q, rel=1e-12)


@pytest.mark.parametrize("delta, q, text", [
    (-4.402e-11, 1e-4, "+0.0000"),   # the reported Delta column: float noise is zero
    (4.9e-5, 1e-4, "+0.0000"),       # below half the last digit
    (5e-5, 1e-4, "+0.0001"),         # half rounds away from zero
    (-5e-5, 1e-4, "-0.0001"),
    (0.01123, 1e-4, "+0.0112"),
    (-0.25, 1e-4, "-0.2500"),
    (0.0, 1e-4, "+0.0000"),
    (-0.0, 1e-4, "+0.0000"),
    (5e-6, 1e-8, "+5.00e-06"),       # tiny metrics: scientific, mantissa down to the quantum
    (-1.234567e-7, 1e-9, "-1.23e-07"),
    (3e-12, 1e-8, "+0"),
    (None, 1e-4, "—"),
])
def test_fmt_delta(delta, q, text):
    assert fmt_delta(delta, q) == text


def test_fmt_delta_rejects_a_bad_precision():
    with pytest.raises(ValueError):
        fmt_delta(0.1, 0.0)


def test_fmt_diff_uses_the_finer_operand():
    assert fmt_diff(0.8123, 0.8123 + 4.4e-11) == "+0.0000"
    assert fmt_diff(0.8123, 0.8011) == "+0.0112"
    assert fmt_diff(0.50004, 0.5) == "+0.0000"       # both print as 0.5000
    assert delta_quantum(2.5e-5, 0.5) == pytest.approx(1e-8)
    assert fmt_diff(2.5e-5, 2.0e-5) == "+5.00e-06"
    assert fmt_diff(None, 1.0) == "—" and fmt_diff(1.0, None) == "—"
