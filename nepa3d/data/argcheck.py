"""Argument checks at the edge of the data CLIs: ``argparse`` ``type=`` helpers and a parser
whose errors are one line.

A bad value exits 2 with ``[<prog>] error: argument --flag: <what is allowed>, got <value>``
before anything is read or written::

    ap = OneLineParser(prog="preprocess_shapenet")
    ap.add_argument("--pt_pool", type=int_at_least(1), default=20000)
    ap.add_argument("--test_ratio", type=unit_float, default=0.1)
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, NoReturn


def one_line(message: object) -> str:
    """``message`` with its line breaks turned into spaces (one line of output per error)."""
    return " ".join(str(message).splitlines())


class OneLineParser(argparse.ArgumentParser):
    """``ArgumentParser`` that reports a usage error on one line (no usage block), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"[{self.prog}] error: {one_line(message)}\n")


def _parse(kind: Callable, text: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None


def int_at_least(lo: int) -> Callable[[str], int]:
    """``type=`` for an integer ``>= lo``."""

    def check(text: str) -> int:
        v = _parse(int, text)
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {text}")
        return v

    check.__name__ = f"int >= {lo}"
    return check


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """``type=`` for an integer in ``[lo, hi]``."""

    def check(text: str) -> int:
        v = _parse(int, text)
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer in [{lo}, {hi}], got {text}")
        return v

    check.__name__ = f"int in [{lo}, {hi}]"
    return check


def unit_float(text: str) -> float:
    """``type=`` for a finite float in ``[0, 1]`` (a ratio or a fraction)."""
    v = _parse(float, text)
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text}")
    return v


def nonneg_float(text: str) -> float:
    """``type=`` for a finite float ``>= 0``."""
    v = _parse(float, text)
    if not (math.isfinite(v) and v >= 0.0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return v


positive_int = int_at_least(1)
nonneg_int = int_at_least(0)


def fail(prog: str, message: str, code: int = 2) -> int:
    """Print ``[prog] error: message`` (one line) to stderr; returns ``code`` for ``main``."""
    print(f"[{prog}] error: {one_line(message)}", file=sys.stderr)
    return code


__all__ = ["OneLineParser", "fail", "int_at_least", "int_in", "nonneg_float", "nonneg_int",
           "one_line", "positive_int", "unit_float"]
