"""Precision-aware number text for differences of metric values (pure functions).

A metric value is printed with a fixed number of decimals (``0.8123``) or, when it is tiny, in
scientific notation with a few mantissa decimals (``2.345e-05``); see :func:`quantum`. A difference
of two such values carries no more precision than its operands: :func:`fmt_delta` prints it at the
finer of the two operands' last printed digits, and a difference smaller than half that digit (float
noise such as ``-4.402e-11`` between two runs of one computation) prints as zero (``+0.0000``)::

    >>> fmt_diff(0.8123, 0.8123 + 4.4e-11)
    '+0.0000'
    >>> fmt_diff(0.8123, 0.8011)
    '+0.0112'
    >>> fmt_diff(2.50e-05, 2.00e-05)
    '+5.00e-06'
"""
from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from typing import Optional

#: Decimals of a metric value printed in fixed notation.
DECIMALS = 4
#: Non-zero values below this magnitude are printed in scientific notation ...
SCI_BELOW = 1e-3
#: ... with this many mantissa decimals.
SCI_DIGITS = 3
DASH = "—"


def _exponent(x: float) -> int:
    """The decimal exponent of ``x`` as Python's ``e`` format prints it (``9.9996e-4`` -> -3)."""
    return int(f"{x:e}".split("e")[1])


def quantum(x: Optional[float], decimals: int = DECIMALS, sci_below: float = SCI_BELOW,
            sci_digits: int = SCI_DIGITS) -> Optional[float]:
    """The value of the last digit that the metric formatter prints for ``x``: ``10**-decimals`` in
    fixed notation; in scientific notation (``0 < |x| < sci_below``) ``10**(e - sci_digits)``, ``e``
    the printed exponent. None for None or a non-finite ``x``."""
    if x is None or not math.isfinite(x):
        return None
    if x != 0 and abs(x) < sci_below:
        return 10.0 ** (_exponent(x) - sci_digits)
    return 10.0 ** -decimals


def fmt_delta(delta: Optional[float], q: float = 10.0 ** -DECIMALS) -> str:
    """``delta`` printed at the precision ``q`` (the value of the last digit to print).

    ``|delta| < q / 2`` prints as zero (``+0.0000`` for ``q = 1e-4``, ``+0`` for a ``q`` below
    ``10**-DECIMALS``); otherwise fixed notation
    with the decimals of ``q`` while ``q >= 10**-DECIMALS`` (``+0.0112``), else scientific notation
    with the mantissa decimals down to ``q`` (``+5.00e-06`` for ``q = 1e-8``). Always signed; ``—`` for None; ``nan``/``inf`` as such."""
    if delta is None:
        return DASH
    if not math.isfinite(delta):
        return f"{delta:+}"
    if not (q > 0 and math.isfinite(q)):
        raise ValueError(f"precision must be a positive number; got {q!r}")
    qexp = math.floor(math.log10(q) + 1e-9)  # 1e-4 -> -4 (robust to 1e-4 being 0.00010000000000000002)
    # round to the quantum in decimal (half away from zero) first: the exponent of the *rounded*
    # value decides the layout
    rounded = float(Decimal(repr(delta)).quantize(Decimal(1).scaleb(qexp), rounding=ROUND_HALF_UP))
    if abs(delta) < q / 2 or rounded == 0:
        return f"+{0:.{-qexp}f}" if -qexp <= DECIMALS else "+0"
    exp = _exponent(rounded)
    if -qexp <= DECIMALS:
        return f"{rounded:+.{max(0, -qexp)}f}"
    return f"{rounded:+.{max(0, exp - qexp)}e}"


def delta_quantum(a: Optional[float], b: Optional[float], **kw) -> Optional[float]:
    """The precision of ``a - b``: the finer of the operands' :func:`quantum` (None if neither has one)."""
    qs = [q for q in (quantum(a, **kw), quantum(b, **kw)) if q is not None]
    return min(qs) if qs else None


def fmt_diff(a: Optional[float], b: Optional[float], **kw) -> str:
    """``a - b`` at the precision the two printed values carry (``—`` when either is missing)."""
    if a is None or b is None:
        return DASH
    q = delta_quantum(a, b, **kw)
    if q is None:  # both non-finite
        return fmt_delta(a - b)
    return fmt_delta(a - b, q)
