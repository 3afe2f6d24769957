"""Plots a suite declares: a metric vs a matrix axis, one line per series, error bars = sample std
over seeds (seed sweeps such as test_acc vs K; scaling curves, log-x when the axis spans a decade or
more)::

    plots:
      - {x: K, x_arg: fewshot_k, y: test_acc, series: method, categorical: true, labels: {"0": full}}
      - {x: scale, x_arg: max_shapes, y: "iou@0.03", series: ckpt, where: {query: pool}, logx: true}
      - {x: lipschitz, x_arg: ridge_lipschitz_lambda, y: mae, split_by: [ridge_lipschitz_pairs]}

``x``: a matrix axis; a row's x value is the row's scalar value or, for a mapping row, its arg
``x_arg`` (default: the axis name).

*Numeric or categorical.* The axis is **categorical** when the spec says ``categorical: true``, or
when its x values are not all numbers (``categorical: false`` then is an error). A categorical axis
puts the x rows, in matrix order, at evenly spaced ticks labelled with the x value (or ``labels``,
keyed by row: ``{"0": full}``), and never joins points by lines (a line from 'full' to K=1 would
read as a trend); a numeric axis places points at their value (log x when ``logx`` or, auto, when
positive values span a decade) and joins each series' points by one line.

*Row identity.* Points are keyed by (series, x row), never by the x value alone. ``series``: an
axis, one line per row; other axes with several rows that are neither ``x``, ``series`` nor fixed by
``where`` split the lines further; results of another segregation class get their own line. When
several x rows share one x value on a numeric axis (the B-1 sweep: two pair counts at lambda=1e-3),
the args named in ``split_by`` (read from the rows, else the suite's ``args``) split them into
separate lines labelled ``arg=value``; without ``split_by`` the first args whose values tell the
colliding rows apart are used (the row name as a last resort), so one line never has two points at
one x.

*Resolution.* The y axis spans at least :data:`RES_SPAN` times the plot's resolution: ``resolution``
from the spec, else :data:`DEFAULT_RESOLUTION` times the largest ``|mean ± std|`` plotted; so float
noise far below it cannot fill the axis. The rule and the value are stated in the plot's title.

Outputs per plot (``<stem>`` = ``<suite>_<y>_vs_<x>``): ``<out>/<stem>.png`` (matplotlib, Agg)
and ``<out>/plots/<stem>.csv`` for ``dvc plots`` (long: one line per point, see
:data:`CSV_FIELDS`; drawn with error bars by the templates in ``.dvc/plots/``). Aggregation is
pure; file IO is in :func:`write_plots`. The spec, the x-axis placement and the checks run when a
suite loads are in :mod:`benchmark.plot_spec`.
"""
from __future__ import annotations

import csv
import io
import itertools
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional

from .plot_spec import PlotSpec, XAxis, _fmt, _text, plot_stem, x_axis
from .plot_spec import plot_problems  # noqa: F401  (public path kept: benchmark.plots.plot_problems)

if TYPE_CHECKING:  # pragma: no cover
    from .collect import ResultRow
    from .suite import Suite

#: An axis whose positive values span at least this ratio is drawn with a log x axis (auto mode).
LOGX_RATIO = 10.0
#: The y axis spans at least this many resolutions.
RES_SPAN = 10.0
#: The default resolution, as a fraction of the largest ``|mean ± std|`` plotted.
DEFAULT_RESOLUTION = 1e-3
#: The dvc CSV's columns besides ``<x>`` (x value or category label) and ``<y>`` (the seed mean):
#: ``series`` (line label), ``row`` (x row), ``pos`` (x position: the value, or the category's
#: index), ``std`` (sample std over seeds; empty for one seed), ``n`` (seeds), ``lo``/``hi``
#: (mean ∓ std; empty for one seed).
CSV_FIELDS = ("series", "row", "pos", "{x}", "{y}", "std", "n", "lo", "hi")



@dataclass
class Point:
    """One x row of one series: the metric over the seeds there."""

    x: float  # the x position: the value on a numeric axis, the category index on a categorical one
    row: str  # the x axis row name
    values: list[float] = field(default_factory=list)
    flags: set = field(default_factory=set)
    label: str = ""  # the x value as text (the tick label on a categorical axis)

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
    spec: PlotSpec
    series: list[Series]
    logx: bool
    seed_arg: Optional[str] = None
    axis: Optional[XAxis] = None

    @property
    def stem(self) -> str:
        return plot_stem(self.suite, self.spec)

    @property
    def categorical(self) -> bool:
        return bool(self.axis and self.axis.categorical)

    @property
    def x_scale(self) -> str:
        """``categorical``, ``log`` or ``linear``."""
        return "categorical" if self.categorical else "log" if self.logx else "linear"

    @property
    def title(self) -> str:
        where = ", ".join(f"{a}={v}" for a, v in self.spec.where.items())
        return self.spec.title or f"{self.suite}: {self.spec.y} vs {self.spec.x}" + (f" ({where})" if where else "")

    @property
    def resolution(self) -> Optional[float]:
        """The declared resolution, else :data:`DEFAULT_RESOLUTION` x the largest ``|mean ± std|``
        plotted (None when nothing is plotted or everything is 0)."""
        if self.spec.resolution is not None:
            return float(self.spec.resolution)
        scale = max((abs(v) for p in _points(self) for v in _extent(p)), default=0.0)
        return DEFAULT_RESOLUTION * scale if scale > 0 else None

    @property
    def caption(self) -> str:
        """The y-range rule, stated under the title (and for the report's text)."""
        res = self.resolution
        if res is None:
            return ""
        how = "declared" if self.spec.resolution is not None else f"{DEFAULT_RESOLUTION:g} × max |y|"
        return f"y axis spans ≥ {RES_SPAN:g} × resolution {res:.2g} ({how})"


def _points(data: PlotData) -> list[Point]:
    return [p for s in data.series for p in s.points]


def _extent(p: Point) -> tuple[float, float]:
    std = p.std or 0.0
    return p.mean - std, p.mean + std


def y_limits(data: PlotData) -> Optional[tuple[float, float]]:
    """The y axis range: the points' ``mean ± std`` plus 5 % margins, widened about its centre to
    :data:`RES_SPAN` x :attr:`PlotData.resolution` when narrower. None when nothing is plotted."""
    ext = [v for p in _points(data) for v in _extent(p)]
    if not ext:
        return None
    lo, hi = min(ext), max(ext)
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    res = data.resolution
    need = RES_SPAN * res if res else 0.0
    if hi - lo < need:
        mid = (lo + hi) / 2
        lo, hi = mid - need / 2, mid + need / 2
    if hi == lo:  # all zero and no resolution: let the axis show something
        lo, hi = lo - 1.0, hi + 1.0
    return lo, hi



def auto_logx(xs: Iterable[float]) -> bool:
    """Log x when every x is positive and they span at least :data:`LOGX_RATIO`."""
    xs = list(xs)
    return bool(xs) and min(xs) > 0 and max(xs) / min(xs) >= LOGX_RATIO


def _series_axes(suite: "Suite", spec: PlotSpec) -> list[str]:
    extra = [a for a in suite.axes if a not in (spec.x, spec.series) and a not in spec.where
             and len(suite.matrix[a]) > 1]
    return ([spec.series] if spec.series else []) + extra


def _seg_label(seg: tuple) -> str:
    return " ".join(f"{a}={v}" for a, v in seg)


def _split_label(split: tuple) -> str:
    return ",".join(f"{a}={_text(v)}" for a, v in split)


def plot_data(suite: "Suite", spec: PlotSpec, rows: list["ResultRow"]) -> PlotData:
    """Aggregate complete results into one plot's series (suite order; points sorted by x).
    A point is keyed by (series axes, split args, segregation class, x row)."""
    series_axes = _series_axes(suite, spec)
    axis, _ = x_axis(suite, spec)
    found: dict[tuple, dict[str, Point]] = {}
    for r in rows:
        if any(str(r.tags.get(a)) != str(v) for a, v in spec.where.items()):
            continue
        value = r.metrics.get(spec.y)
        if value is None or math.isnan(value):
            continue
        xrow = str(r.tags[spec.x])
        skey = (tuple(r.tags[a] for a in series_axes), axis.split[xrow], tuple(getattr(r, "segregation", ())))
        point = found.setdefault(skey, {}).setdefault(xrow, Point(axis.pos[xrow], xrow, label=axis.label[xrow]))
        point.values.append(value)
        point.flags.update(r.flags)
    order = {key: i for i, key in enumerate(_series_order(suite, series_axes))}
    split_order: dict[tuple, int] = {}
    for r in axis.rows:
        split_order.setdefault(axis.split[r], len(split_order))
    series = []
    for (names, split, seg), points in sorted(found.items(), key=lambda kv: (order.get(kv[0][0], 0),
                                                                              split_order[kv[0][1]], str(kv[0][2]))):
        name = "/".join([*map(str, names), *([_split_label(split)] if split else [])]) or spec.y
        if seg:
            name += f" [{_seg_label(seg)}]"
        series.append(Series(name, sorted(points.values(), key=lambda p: p.x)))
    xs = [p.x for s in series for p in s.points]
    if axis.categorical:
        logx = False
    else:
        logx = auto_logx(xs) if spec.logx is None else bool(spec.logx)
    return PlotData(suite=suite.name, spec=spec, series=series, logx=logx, seed_arg=suite.seed_arg, axis=axis)


def _series_order(suite: "Suite", axes: list[str]) -> list[tuple]:
    return [tuple(k) for k in itertools.product(*(list(suite.matrix[a]) for a in axes))]


def csv_fields(spec: PlotSpec) -> list[str]:
    """The dvc CSV's header for ``spec`` (see :data:`CSV_FIELDS`)."""
    return [f.format(x=spec.x, y=spec.y) for f in CSV_FIELDS]


def plot_csv(data: PlotData) -> str:
    """Long CSV for ``dvc plots``: one line per (series, x row) with mean, std, n and mean ∓ std."""
    fields = csv_fields(data.spec)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(fields)
    for s in data.series:
        for p in s.points:
            std = p.std
            x_text = p.label if data.categorical else _fmt(p.x)
            writer.writerow([s.name, p.row, _fmt(p.x), x_text, repr(p.mean),
                             "" if std is None else repr(std), str(p.n),
                             "" if std is None else repr(p.mean - std), "" if std is None else repr(p.mean + std)])
    return buf.getvalue()



def figure(data: PlotData):
    """Draw ``data`` with matplotlib (Agg); return the figure. Error bars = sample std over seeds
    (one :class:`~matplotlib.container.ErrorbarContainer` labelled ``_std <series>`` per series,
    points with a single seed have none and are hollow); points from flagged results ringed in red;
    numeric axes join a series' points by one line, categorical axes do not."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    from matplotlib.transforms import offset_copy

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    any_single = any_flagged = False
    k = len(data.series)
    style = "none" if data.categorical else "-"
    for i, s in enumerate(data.series):
        xs = [p.x for p in s.points]
        ys = [p.mean for p in s.points]
        (line,) = ax.plot(xs, ys, marker="o", linestyle=style, label=s.name)
        color = line.get_color()
        artists = [line]
        with_std = [p for p in s.points if p.std is not None]
        if with_std:
            bars = ax.errorbar([p.x for p in with_std], [p.mean for p in with_std],
                               yerr=[p.std for p in with_std], fmt="none", ecolor=color, capsize=3,
                               label=f"_std {s.name}")
            artists += [*bars[1], *bars[2]]
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
    if data.categorical:
        cats = data.axis.categories
        ax.set_xticks([c[0] for c in cats])
        ax.set_xticklabels([c[1] for c in cats])
        ax.set_xlim(-0.5, len(cats) - 0.5)
    else:
        if data.logx:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        xs = sorted({p.x for s in data.series for p in s.points})
        if xs and len(xs) <= 12:
            ax.set_xticks(xs)
            ax.set_xticklabels([_fmt(x) for x in xs])
    limits = y_limits(data)
    if limits:
        ax.set_ylim(*limits)
    over = f" over {data.seed_arg}" if data.seed_arg else ""
    ax.set_xlabel(data.spec.x + (f" ({data.spec.x_arg})" if data.spec.x_arg else "")
                  + (" [categories]" if data.categorical else ""))
    ax.set_ylabel(f"{data.spec.y} (mean ± sample std{over})")
    notes = (["hollow: single seed"] if any_single else []) + (["red ring: flagged result"] if any_flagged else [])
    lines = [data.title] + ([data.caption] if data.caption else []) + (["; ".join(notes)] if notes else [])
    ax.set_title("\n".join(lines), fontsize=9)
    ax.grid(True, alpha=0.3)
    if data.series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def render_png(data: PlotData, path: Path | str) -> None:
    """Draw ``data`` (:func:`figure`) to the PNG ``path``."""
    import matplotlib.pyplot as plt

    fig = figure(data)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)


def write_plots(datas: list[PlotData], out_dir: Path | str) -> list[tuple[Path, Path]]:
    """Write each plot's PNG and dvc CSV (atomically); return ``[(png, csv)]``."""
    from .atomic import atomic_write_file, atomic_write_text

    out_dir = Path(out_dir)
    written = []
    for data in datas:
        png, csv_path = out_dir / f"{data.stem}.png", out_dir / "plots" / f"{data.stem}.csv"
        atomic_write_file(png, lambda tmp: render_png(data, tmp), suffix=".png")
        atomic_write_text(csv_path, plot_csv(data))
        written.append((png, csv_path))
    return written
