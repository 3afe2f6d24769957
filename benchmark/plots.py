"""Plots a suite declares: a metric vs a numeric matrix axis, one line per series, error bars =
sample std over seeds (seed sweeps such as test_acc vs K; scaling curves, log-x when the axis spans
a decade or more)::

    plots:
      - {x: fewshot_k, y: test_acc, series: method}
      - {x: scale, x_arg: max_shapes, y: "iou@0.03", series: ckpt, where: {query: pool}, logx: true}

``x``: a matrix axis whose rows are numbers (``k5: 5``) or mappings holding a number under
``x_arg`` (default: the axis name). ``series``: an axis, one line per row; other axes with several
rows that are neither ``x``, ``series`` nor fixed by ``where`` split the lines further. Results of
another segregation class (e.g. a target transform) get their own line, never a shared one.

Outputs per plot (``<stem>`` = ``<suite>_<y>_vs_<x>``): ``<out>/<stem>.png`` (matplotlib, Agg)
and ``<out>/plots/<stem>.csv`` for ``dvc plots`` (wide: the x column, then per series the mean,
``<series>_std`` and ``<series>_n``). Aggregation is pure; file IO is in :func:`write_plots`.
"""
from __future__ import annotations

import csv
import io
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

if TYPE_CHECKING:  # pragma: no cover
    from .collect import ResultRow
    from .suite import PlotSpec, Suite

#: An axis whose positive values span at least this ratio is drawn with a log x axis (auto mode).
LOGX_RATIO = 10.0


@dataclass
class Point:
    """One x position of one series: the metric over the seeds there."""

    x: float
    row: str  # the x axis row name
    values: list[float] = field(default_factory=list)
    flags: set = field(default_factory=set)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> Optional[float]:
        """Sample std (ddof=1); None for a single seed."""
        return statistics.stdev(self.values) if self.n >= 2 else None


@dataclass
class Series:
    name: str
    points: list[Point]


@dataclass
class PlotData:
    """Everything one plot shows (pure data)."""

    suite: str
    spec: "PlotSpec"
    series: list[Series]
    logx: bool
    seed_arg: Optional[str] = None

    @property
    def stem(self) -> str:
        return plot_stem(self.suite, self.spec)

    @property
    def title(self) -> str:
        where = ", ".join(f"{a}={v}" for a, v in self.spec.where.items())
        return self.spec.title or f"{self.suite}: {self.spec.y} vs {self.spec.x}" + (f" ({where})" if where else "")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9@.+-]+", "_", str(text)).strip("_") or "x"


def plot_stem(suite_name: str, spec: "PlotSpec") -> str:
    """``<suite>_<y>_vs_<x>`` (plus the ``where`` rows), safe as a file name."""
    stem = f"{suite_name}_{_slug(spec.y)}_vs_{_slug(spec.x)}"
    if spec.where:
        stem += "_" + "_".join(_slug(v) for v in spec.where.values())
    return stem


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def axis_value(suite: "Suite", spec: "PlotSpec", row: str) -> Optional[float]:
    """The number a row of ``spec.x`` stands for: the row's scalar value, or its arg ``x_arg``."""
    value = suite.matrix[spec.x][row]
    if isinstance(value, dict):
        return _number(value.get(spec.x_arg or spec.x))
    return _number(value)


def plot_problems(suite: "Suite") -> list[tuple[str, str]]:
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
        for row in suite.matrix[spec.x]:
            if axis_value(suite, spec, row) is None:
                arg = spec.x_arg or spec.x
                out.append((f"{key}.x", f"axis {spec.x!r} row {row!r} has no numeric value: give the axis numeric "
                                        f"rows ({row}: 5) or mappings with a number under {arg!r} (or set x_arg)"))
                break
        stem = plot_stem(suite.name, spec)
        if stem in stems:
            out.append((key, f"writes the same file as plots[{stems[stem]}] ({stem}.png); give it another y, x or where"))
        stems.setdefault(stem, i)
    return out


def auto_logx(xs: Iterable[float]) -> bool:
    """Log x when every x is positive and they span at least :data:`LOGX_RATIO`."""
    xs = list(xs)
    return bool(xs) and min(xs) > 0 and max(xs) / min(xs) >= LOGX_RATIO


def _series_axes(suite: "Suite", spec: "PlotSpec") -> list[str]:
    extra = [a for a in suite.axes if a not in (spec.x, spec.series) and a not in spec.where
             and len(suite.matrix[a]) > 1]
    return ([spec.series] if spec.series else []) + extra


def _seg_label(seg: tuple) -> str:
    return " ".join(f"{a}={v}" for a, v in seg)


def plot_data(suite: "Suite", spec: "PlotSpec", rows: list["ResultRow"]) -> PlotData:
    """Aggregate complete results into one plot's series (suite order; points sorted by x)."""
    series_axes = _series_axes(suite, spec)
    x_of = {row: axis_value(suite, spec, row) for row in suite.matrix[spec.x]}
    found: dict[tuple, dict[str, Point]] = {}
    for r in rows:
        if any(str(r.tags.get(a)) != str(v) for a, v in spec.where.items()):
            continue
        value = r.metrics.get(spec.y)
        if value is None or math.isnan(value):
            continue
        xrow = r.tags[spec.x]
        skey = (tuple(r.tags[a] for a in series_axes), tuple(getattr(r, "segregation", ())))
        point = found.setdefault(skey, {}).setdefault(xrow, Point(x_of[xrow], str(xrow)))
        point.values.append(value)
        point.flags.update(r.flags)
    order = {key: i for i, key in enumerate(_series_order(suite, series_axes))}
    series = []
    for (names, seg), points in sorted(found.items(), key=lambda kv: (order.get(kv[0][0], 0), str(kv[0][1]))):
        name = "/".join(map(str, names)) or spec.y
        if seg:
            name += f" [{_seg_label(seg)}]"
        series.append(Series(name, sorted(points.values(), key=lambda p: p.x)))
    xs = [p.x for s in series for p in s.points]
    logx = auto_logx(xs) if spec.logx is None else bool(spec.logx)
    return PlotData(suite=suite.name, spec=spec, series=series, logx=logx, seed_arg=suite.seed_arg)


def _series_order(suite: "Suite", axes: list[str]) -> list[tuple]:
    import itertools

    return [tuple(k) for k in itertools.product(*(list(suite.matrix[a]) for a in axes))]


def plot_csv(data: PlotData) -> str:
    """Wide CSV for ``dvc plots``: x, x row name, then per series mean, std and n."""
    x, xrow = data.spec.x, f"{data.spec.x}_row"
    rows: dict[float, dict[str, Any]] = {}
    fields = [x, xrow]
    for s in data.series:
        fields += [s.name, f"{s.name}_std", f"{s.name}_n"]
        for p in s.points:
            rec = rows.setdefault(p.x, {x: _fmt(p.x), xrow: p.row})
            rec[s.name] = repr(p.mean)
            rec[f"{s.name}_std"] = "" if p.std is None else repr(p.std)
            rec[f"{s.name}_n"] = str(p.n)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", restval="")
    writer.writeheader()
    for key in sorted(rows):
        writer.writerow(rows[key])
    return buf.getvalue()


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def render_png(data: PlotData, path: Path | str) -> None:
    """Draw ``data`` with matplotlib (Agg) to ``path``: error bars = sample std over seeds;
    single-seed points hollow and without a bar; points from flagged results ringed in red."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    from matplotlib.transforms import offset_copy

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    any_single = any_flagged = False
    k = len(data.series)
    for i, s in enumerate(data.series):
        xs = [p.x for p in s.points]
        ys = [p.mean for p in s.points]
        err = [p.std or 0.0 for p in s.points]
        bars = ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=s.name)
        color = bars[0].get_color()
        artists = [bars[0], *bars[1], *bars[2]]
        single = [p for p in s.points if p.n == 1]
        if single:
            any_single = True
            artists += ax.plot([p.x for p in single], [p.mean for p in single], "o", color=color, mfc="white",
                               zorder=3)
        flagged = [p for p in s.points if p.flags]
        if flagged:
            any_flagged = True
            artists += ax.plot([p.x for p in flagged], [p.mean for p in flagged], "o", ms=12, mfc="none",
                               mec="red", mew=1.5, zorder=4)
        # dodge the series sideways by a few points so that their error bars do not overlap (the
        # axis limits were already computed from the undodged data)
        shift = offset_copy(ax.transData, fig=fig, x=4.0 * (i - (k - 1) / 2), y=0.0, units="points")
        for artist in artists:
            artist.set_transform(shift)
    if data.logx:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    xs = sorted({p.x for s in data.series for p in s.points})
    if xs and len(xs) <= 12:
        ax.set_xticks(xs)
        ax.set_xticklabels([_fmt(x) for x in xs])
    over = f" over {data.seed_arg}" if data.seed_arg else ""
    ax.set_xlabel(data.spec.x + (f" ({data.spec.x_arg})" if data.spec.x_arg else ""))
    ax.set_ylabel(f"{data.spec.y} (mean ± sample std{over})")
    notes = (["hollow: single seed"] if any_single else []) + (["red ring: flagged result"] if any_flagged else [])
    ax.set_title(data.title + (f"\n{'; '.join(notes)}" if notes else ""), fontsize=10)
    ax.grid(True, alpha=0.3)
    if data.series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)


def write_plots(datas: list[PlotData], out_dir: Path | str) -> list[tuple[Path, Path]]:
    """Write each plot's PNG and dvc CSV (atomically); return ``[(png, csv)]``."""
    import os
    import tempfile

    from .atomic import atomic_write_text

    out_dir = Path(out_dir)
    written = []
    for data in datas:
        png, csv_path = out_dir / f"{data.stem}.png", out_dir / "plots" / f"{data.stem}.csv"
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{png.name}.", suffix=".png", dir=out_dir)
        os.close(fd)
        try:
            render_png(data, tmp)
            os.replace(tmp, png)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        atomic_write_text(csv_path, plot_csv(data))
        written.append((png, csv_path))
    return written
