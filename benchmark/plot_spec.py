"""A suite's ``plots`` entries as data: the spec (:class:`PlotSpec`), how its x axis places the
rows of a matrix axis (:func:`x_axis`: numeric or categorical, tick labels, the args that split
lines), the plot's file stem, and the checks run when a suite loads (:func:`plot_problems`).

The piece both :mod:`benchmark.suite` (validation) and :mod:`benchmark.plots` (aggregation and
drawing) need; it reads a suite through :class:`SuiteAxes` and imports neither of them. The rules
are described in :mod:`benchmark.plots`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

from pydantic import BaseModel, ConfigDict

_MISSING = object()


class PlotSpec(BaseModel):
    """A PNG plot: metric ``y`` vs the matrix axis ``x`` (numeric, or categorical: evenly spaced
    labelled ticks), one line per row of ``series`` (error bars: sample std over seeds). See
    :mod:`benchmark.plots`."""

    model_config = ConfigDict(extra="forbid")
    x: str
    y: str
    series: Optional[str] = None
    x_arg: Optional[str] = None  # the arg holding x when the axis rows are mappings
    where: dict[str, str] = {}
    logx: Optional[bool] = None  # None: log x when positive values span a decade or more
    title: Optional[str] = None
    categorical: Optional[bool] = None  # None: categorical when the x values are not all numbers
    labels: dict[str, str] = {}  # x row -> tick label on a categorical axis ({"0": full})
    split_by: Optional[list[str]] = None  # args of the x rows that split lines (x rows sharing an x)
    resolution: Optional[float] = None  # the y axis spans >= 10 x this (default 1e-3 x max |y|)


class SuiteAxes(Protocol):
    """What the plot checks read of a suite (:class:`benchmark.suite.Suite` provides it)."""

    name: str
    args: dict[str, Any]
    matrix: dict[str, dict[str, Any]]
    plots: list[PlotSpec]

    @property
    def axes(self) -> list[str]: ...

    @property
    def seed_arg(self) -> Optional[str]: ...


@dataclass
class XAxis:
    """How a plot's x axis places its rows."""

    categorical: bool
    rows: list[str]  # matrix order
    pos: dict[str, float]  # row -> position
    label: dict[str, str]  # row -> x value as text (tick label)
    split: dict[str, tuple]  # row -> ((arg, value), ...): the args that split lines
    split_args: list[str] = field(default_factory=list)

    @property
    def categories(self) -> list[tuple[float, str]]:
        """``[(position, tick label)]`` of a categorical axis (every x row, matrix order)."""
        return [(self.pos[r], self.label[r]) for r in self.rows]



def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9@.+-]+", "_", str(text)).strip("_") or "x"


def plot_stem(suite_name: str, spec: PlotSpec) -> str:
    """``<suite>_<y>_vs_<x>`` (plus the ``where`` rows), safe as a file name."""
    stem = f"{suite_name}_{_slug(spec.y)}_vs_{_slug(spec.x)}"
    if spec.where:
        stem += "_" + "_".join(_slug(v) for v in spec.where.values())
    return stem


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            x = float(value)
        except ValueError:
            return None
        return x if math.isfinite(x) else None
    return None


def _raw(suite: SuiteAxes, spec: PlotSpec, row: str) -> Any:
    """A row's x value: the scalar row, or its arg ``x_arg`` (default: the axis name); _MISSING."""
    value = suite.matrix[spec.x][row]
    if isinstance(value, dict):
        return value.get(spec.x_arg or spec.x, _MISSING)
    return value if spec.x_arg is None else _MISSING


def axis_value(suite: SuiteAxes, spec: PlotSpec, row: str) -> Optional[float]:
    """The number a row of ``spec.x`` stands for (None when it is not a number)."""
    value = _raw(suite, spec, row)
    return None if value is _MISSING else _number(value)


def _text(value: Any) -> str:
    x = _number(value)
    return _fmt(x) if x is not None and not isinstance(value, str) else str(value)


def _arg(suite: SuiteAxes, spec: PlotSpec, row: str, arg: str) -> Any:
    value = suite.matrix[spec.x][row]
    if isinstance(value, dict) and arg in value:
        return value[arg]
    return suite.args.get(arg, _MISSING)


def x_axis(suite: SuiteAxes, spec: PlotSpec) -> tuple[XAxis, list[tuple[str, str]]]:
    """How ``spec.x`` places its rows, and ``[(key, problem)]`` (checked when the suite loads)."""
    problems: list[tuple[str, str]] = []
    rows = [str(r) for r in suite.matrix[spec.x]]
    raw = {r: _raw(suite, spec, r) for r in rows}
    if spec.x_arg is not None:
        for r in rows:
            if raw[r] is _MISSING:
                problems.append(("x_arg", f"axis {spec.x!r} row {r!r} has no {spec.x_arg!r}: give every row "
                                          f"a value under {spec.x_arg!r} (or drop x_arg: row names as categories)"))
                break
    numeric = {r: (None if raw[r] is _MISSING else _number(raw[r])) for r in rows}
    all_numeric = all(v is not None for v in numeric.values())
    categorical = (not all_numeric) if spec.categorical is None else bool(spec.categorical)
    if spec.categorical is False and not all_numeric:
        bad = next(r for r in rows if numeric[r] is None)
        arg = spec.x_arg or spec.x
        problems.append(("categorical", f"axis {spec.x!r} row {bad!r} has no numeric value: give the axis numeric "
                                        f"rows ({bad}: 5) or mappings with a number under {arg!r} (or set x_arg), "
                                        "or drop `categorical: false`"))
    label = {r: (r if raw[r] is _MISSING or isinstance(raw[r], (dict, list)) else _text(raw[r])) for r in rows}
    if spec.labels:
        if not categorical:
            problems.append(("labels", "tick labels need a categorical axis: add `categorical: true`"))
        for r, text in spec.labels.items():
            if r not in rows:
                problems.append((f"labels.{r}", f"unknown row {r!r}; expected one of: {', '.join(rows)}"))
            else:
                label[r] = str(text)
    if categorical and spec.logx:
        problems.append(("logx", "a categorical axis has no log scale"))
    pos = ({r: float(i) for i, r in enumerate(rows)} if categorical
           else {r: numeric[r] if numeric[r] is not None else float(i) for i, r in enumerate(rows)})

    def keys(args: list[str]) -> dict[str, tuple]:
        return {r: tuple((a, _arg(suite, spec, r, a)) for a in args) for r in rows}

    def collisions(split: dict[str, tuple]) -> list[list[str]]:
        if categorical:
            return []
        groups: dict[tuple, list[str]] = {}
        for r in rows:
            groups.setdefault((split[r], pos[r]), []).append(r)
        return [g for g in groups.values() if len(g) > 1]

    if spec.split_by is not None:
        args = list(spec.split_by)
        for a in args:
            if all(_arg(suite, spec, r, a) is _MISSING for r in rows):
                problems.append(("split_by", f"arg {a!r} is in no row of axis {spec.x!r} nor in the suite's args"))
        split = keys(args)
        for group in collisions(split):
            problems.append(("split_by", f"axis {spec.x!r} rows {', '.join(map(repr, group))} share x={_fmt(pos[group[0]])} "
                                         f"and the split_by values; add an arg that tells them apart"))
            break
    else:  # auto: the first args that tell rows sharing an x apart (the row name as a last resort)
        args = []
        split = keys(args)
        groups = collisions(split)
        if groups:
            candidates: list[str] = []
            for g in groups:
                for r in g:
                    value = suite.matrix[spec.x][r]
                    for a in (value if isinstance(value, dict) else {}):
                        if a not in candidates and a != (spec.x_arg or spec.x) \
                                and len({repr(_arg(suite, spec, r2, a)) for r2 in g}) > 1:
                            candidates.append(a)
            for k in range(1, len(candidates) + 1):
                if not collisions(keys(candidates[:k])):
                    args = candidates[:k]
                    break
            else:
                args = [spec.x]
            split = keys(args) if args != [spec.x] else {r: ((spec.x, r),) for r in rows}
    split = {r: tuple((a, v) for a, v in s if v is not _MISSING) for r, s in split.items()}
    return XAxis(categorical, rows, pos, label, split, args), problems


def plot_problems(suite: SuiteAxes) -> list[tuple[str, str]]:
    """``[(key, what is wrong)]`` for the suite's ``plots`` (checked when the suite loads)."""
    out: list[tuple[str, str]] = []
    axes = suite.axes
    stems: dict[str, int] = {}
    for i, spec in enumerate(suite.plots):
        key = f"plots[{i}]"
        if spec.x not in axes:
            hint = " (the seed axis is averaged over, it cannot be plotted)" if spec.x == suite.seed_arg else ""
            out.append((f"{key}.x", f"unknown axis {spec.x!r}{hint}; expected one of: {', '.join(axes) or '(no matrix)'}"))
            continue
        if spec.series is not None and (spec.series not in axes or spec.series == spec.x):
            out.append((f"{key}.series", f"expected a matrix axis other than x ({', '.join(a for a in axes if a != spec.x)}); "
                                         f"got {spec.series!r}"))
        for axis, row in spec.where.items():
            if axis not in axes or axis in (spec.x, spec.series):
                out.append((f"{key}.where.{axis}", "expected a matrix axis other than x and series"))
            elif row not in suite.matrix[axis]:
                out.append((f"{key}.where.{axis}", f"unknown row {row!r}; expected one of: {', '.join(suite.matrix[axis])}"))
        if spec.resolution is not None and not (spec.resolution > 0 and math.isfinite(spec.resolution)):
            out.append((f"{key}.resolution", f"expected a number > 0; got {spec.resolution}"))
        out += [(f"{key}.{k}", text) for k, text in x_axis(suite, spec)[1]]
        stem = plot_stem(suite.name, spec)
        if stem in stems:
            out.append((key, f"writes the same file as plots[{stems[stem]}] ({stem}.png); give it another y, x or where"))
        stems.setdefault(stem, i)
    return out



def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)

