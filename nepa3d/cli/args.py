"""Command-line values checked at the edge: ``type=`` helpers for argparse and a parser whose
errors are one line.

    p = make_parser("nepa3d.train.pretrain", __doc__)  # usage: python -m nepa3d.train.pretrain
    p.add_argument("--batch", type=positive_int)      # 1, 2, ...
    p.add_argument("--val_ratio", type=unit_float)    # [0, 1]
    p.add_argument("--max_len", type=positive_or_auto)  # -1 (auto) or 1, 2, ...

A value out of range exits with status 2 and a single stderr line naming the flag and the
allowed range, e.g. ``python -m nepa3d.train.pretrain: error: argument --batch: must be an
integer >= 1 (got '0')``. ``--help`` shows every flag's default (:class:`DefaultsHelpFormatter`).
Checks that need several arguments call :func:`usage_error` (same status, one line).
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, NoReturn

from nepa3d.token.ordering import DEFAULT_ORDER_DTYPE, ORDER_DTYPES

#: Exit status of a command line that cannot be run (argparse's own convention).
USAGE_EXIT = 2


def cli_prog(module_name: str) -> str:
    """The program name every research CLI shows: ``python -m <module_name>``."""
    return f"python -m {module_name}"


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each flag's default appended, ``(default: X)``, except where the text
    already says it (it contains "default"), for switches (``store_true``) and for ``None``
    defaults (the text says what an omitted flag means). An empty-string default reads
    ``(default: "")``."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text.lower() or default is None or default is argparse.SUPPRESS
                or action.nargs == 0 or not action.option_strings):
            return text
        return text + (' (default: "")' if default == "" else " (default: %(default)s)")


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one stderr line (no usage block) and exit 2; its
    ``--help`` shows defaults (:class:`DefaultsHelpFormatter`). Build one with
    :func:`make_parser` so that ``prog`` names the module."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_EXIT, f"{self.prog}: error: {' '.join(message.split())}\n")


def make_parser(module_name: str, description: str | None = None, *,
                parser_class: type[argparse.ArgumentParser] = OneLineParser,
                **kwargs) -> argparse.ArgumentParser:
    """The parser of research CLI ``module_name`` (``python -m module_name``): usage names the
    module, errors are one line, ``--help`` shows defaults. ``description``: the module
    docstring (its first paragraph is used)."""
    kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
    first = (description or "").strip().split("\n\n")[0]
    return parser_class(prog=cli_prog(module_name), description=first or None, **kwargs)


def one_line(message: object) -> str:
    """``message`` with its line breaks and runs of spaces made single spaces (one output line)."""
    return " ".join(str(message).split())


def fail(prog: str, message: object, code: int = USAGE_EXIT) -> int:
    """Print ``[prog] error: message`` (one line) to stderr; returns ``code`` for ``main``."""
    print(f"[{prog}] error: {one_line(message)}", file=sys.stderr)
    return code


def usage_error(message: str) -> NoReturn:
    """Print ``error: <message>`` as one stderr line and exit with :data:`USAGE_EXIT`."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(USAGE_EXIT)


def _refuse(allowed: str, text: str) -> NoReturn:
    raise argparse.ArgumentTypeError(f"must be {allowed} (got {text!r})")


def _parse_int(text: str, allowed: str) -> int:
    try:
        return int(text)
    except ValueError:
        _refuse(allowed, text)


def _parse_float(text: str, allowed: str) -> float:
    try:
        value = float(text)
    except ValueError:
        _refuse(allowed, text)
    if not math.isfinite(value):
        _refuse(allowed, text)
    return value


def int_at_least(low: int) -> Callable[[str], int]:
    """argparse type: an integer >= ``low``."""
    allowed = f"an integer >= {low}"

    def parse(text: str) -> int:
        value = _parse_int(text, allowed)
        if value < low:
            _refuse(allowed, text)
        return value
    parse.__name__ = f"int_at_least_{low}"
    return parse


def int_in(low: int, high: int) -> Callable[[str], int]:
    """argparse type: an integer in ``[low, high]``."""
    allowed = f"an integer in [{low}, {high}]"

    def parse(text: str) -> int:
        value = _parse_int(text, allowed)
        if not low <= value <= high:
            _refuse(allowed, text)
        return value
    parse.__name__ = f"int_in_{low}_{high}"
    return parse


def float_in(low: float, high: float = math.inf, *, high_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number in ``[low, high]`` (``[low, high)`` with ``high_open``)."""
    if high == math.inf:
        allowed = f"a number >= {low:g}"
    else:
        allowed = f"a number in [{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        value = _parse_float(text, allowed)
        if value < low or value > high or (high_open and value == high):
            _refuse(allowed, text)
        return value
    parse.__name__ = f"float_in_{low:g}_{high:g}"
    return parse


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    allowed = "a number > 0"
    value = _parse_float(text, allowed)
    if value <= 0:
        _refuse(allowed, text)
    return value


def positive_or_auto(text: str) -> int:
    """argparse type: -1 (auto: resolved by the program) or an integer >= 1."""
    allowed = "-1 (auto) or an integer >= 1"
    value = _parse_int(text, allowed)
    if value != -1 and value < 1:
        _refuse(allowed, text)
    return value


positive_int = int_at_least(1)
nonneg_int = int_at_least(0)
#: a fraction or probability: [0, 1]
unit_float = float_in(0.0, 1.0)
nonneg_float = float_in(0.0)
#: A 0/1 switch (``choices=``); TRI_STATE adds -1 (= take it from the checkpoint). A CLI's typed
#: configuration holds a 0/1 switch as a ``bool`` (:func:`nepa3d.cli.config.parse_switch`) and
#: records it as the int 0/1 again.
SWITCH = (0, 1)
TRI_STATE = (-1, 0, 1)


#: Name of the token-order flag (:func:`add_order_dtype_arg`) and its value in runs recorded
#: before the flag existed (they all ordered in float64).
ORDER_DTYPE_ARG = "order_dtype"


def add_order_dtype_arg(parser) -> None:
    """``--order_dtype {float64,float32}``: the arithmetic of the Morton and ray orders of every
    token sequence a CLI builds (:mod:`nepa3d.token.ordering`). One definition for every CLI
    that tokenises; it changes results, so it is recorded with them."""
    parser.add_argument(
        "--" + ORDER_DTYPE_ARG, default=DEFAULT_ORDER_DTYPE, choices=ORDER_DTYPES,
        help="token order arithmetic: float64 (default; stable sort) or float32 (the original "
             "code's order bit for bit: float32 quantisation and ray angles, uint32 Morton "
             "codes, numpy's default unstable argsort)")


def with_order_dtype(saved_args: dict) -> dict:
    """Recorded args with ``order_dtype`` filled in for runs made before the flag existed
    (float64, the only order then), so that comparing them with a current run's args does not
    count the new flag as a difference."""
    return {ORDER_DTYPE_ARG: DEFAULT_ORDER_DTYPE, **saved_args}
