"""Plots a suite declares: series means ± sample std equal a hand computation, the dvc CSV is
exact, PNGs are written deterministically and linked from the Markdown, bad specs are refused."""
from __future__ import annotations


import pytest

from benchutil import write_suite  # noqa: E402

from benchmark.cli import main  # noqa: E402
from benchmark.collect import collect  # noqa: E402
from benchmark.errors import SuiteError  # noqa: E402
from benchmark.expand import expand  # noqa: E402
from benchmark.plots import RES_SPAN, auto_logx, figure, plot_csv, plot_data, x_axis, y_limits  # noqa: E402
from benchmark.runner import run_jobs  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402

# fake_job: score = scale * seed + offset; seeds 1, 2, 3
#   method a (scale 1): 2 ± 1 + offset;  method b (scale 2): 4 ± 2 + offset
#   K rows carry offset = K (so the curve rises with K) and the number itself under "k"
MATRIX = {"method": {"a": {"scale": 1}, "b": {"scale": 2, "flag": "odd"}},
          "k": {"k1": {"k": 1, "offset": 1}, "k10": {"k": 10, "offset": 10}, "k100": {"k": 100, "offset": 100}}}
PLOT = {"x": "k", "y": "score", "series": "method"}


def _suite(tmp_path, plots=(PLOT,), matrix=MATRIX, run=True, tables=None, reference=None, **kw):
    tables = tables or [{"rows": list(matrix), "metrics": ["score"]}]
    path = write_suite(tmp_path, matrix=matrix, seeds={"seed": [1, 2, 3]}, reference=reference or {"method": "a"},
                       tables=tables, plots=list(plots), **kw)
    suite = load_suite(path, tmp_path / "params.yaml")
    jobs = expand(suite, tmp_path / "results")
    if run:
        run_jobs(jobs, log=lambda s: None, n_jobs=4)
    return path, suite, jobs


def test_series_means_and_std_match_hand_computation(tmp_path):
    _, suite, jobs = _suite(tmp_path)
    data = plot_data(suite, suite.plots[0], collect(suite, jobs).rows)
    got = {s.name: [(p.x, p.row, p.mean, p.std, p.n) for p in s.points] for s in data.series}
    assert got == {"a": [(1.0, "k1", 3.0, 1.0, 3), (10.0, "k10", 12.0, 1.0, 3), (100.0, "k100", 102.0, 1.0, 3)],
                   "b": [(1.0, "k1", 5.0, 2.0, 3), (10.0, "k10", 14.0, 2.0, 3), (100.0, "k100", 104.0, 2.0, 3)]}
    assert data.logx  # 1 .. 100 spans two decades
    assert [bool(p.flags) for s in data.series for p in s.points] == [False] * 3 + [True] * 3
    assert plot_csv(data) == ("series,row,pos,k,score,std,n,lo,hi\n"
                              "a,k1,1,1,3.0,1.0,3,2.0,4.0\n"
                              "a,k10,10,10,12.0,1.0,3,11.0,13.0\n"
                              "a,k100,100,100,102.0,1.0,3,101.0,103.0\n"
                              "b,k1,1,1,5.0,2.0,3,3.0,7.0\n"
                              "b,k10,10,10,14.0,2.0,3,12.0,16.0\n"
                              "b,k100,100,100,104.0,2.0,3,102.0,106.0\n")


def test_auto_logx():
    assert auto_logx([1, 5, 10]) and auto_logx([100, 1000])
    assert not auto_logx([5, 10]) and not auto_logx([0, 1, 100]) and not auto_logx([])


def test_extra_axes_split_series_and_where_fixes_them(tmp_path):
    matrix = {**MATRIX, "q": {"plain": {"tag": "p"}, "hard": {"tag": "h"}}}
    _, suite, jobs = _suite(tmp_path, plots=[PLOT, {**PLOT, "where": {"q": "hard"}, "logx": False}],
                            matrix=matrix)
    rows = collect(suite, jobs).rows
    split, fixed = (plot_data(suite, spec, rows) for spec in suite.plots)
    assert [s.name for s in split.series] == ["a/plain", "a/hard", "b/plain", "b/hard"]
    assert [s.name for s in fixed.series] == ["a", "b"] and not fixed.logx
    assert fixed.stem == "demo_score_vs_k_hard"


def test_single_seed_points_have_no_std(tmp_path):
    _, suite, jobs = _suite(tmp_path)
    for job in jobs:
        if job.tags["seed"] != 2:
            job.out_json.unlink()
    data = plot_data(suite, suite.plots[0], collect(suite, jobs).rows)
    assert [(p.mean, p.std, p.n) for p in data.series[0].points] == [(3.0, None, 1), (12.0, None, 1), (102.0, None, 1)]
    assert plot_csv(data).splitlines()[1] == "a,k1,1,1,3.0,,1,,"  # no std, no bar


def test_report_writes_linked_png_and_dvc_csv(tmp_path, capsys):
    path, suite, jobs = _suite(tmp_path)
    out = tmp_path / "reports"
    argv = ["report", str(path), "--out", str(out), "--results-dir", str(tmp_path / "results"),
            "--params", str(tmp_path / "params.yaml")]
    assert main(argv) == 0
    assert "1 plot(s)" in capsys.readouterr().out
    png, csv_path = out / "demo_score_vs_k.png", out / "plots" / "demo_score_vs_k.csv"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert csv_path.read_text().startswith("series,row,pos,k,score,std,n,lo,hi\na,k1,1,1,3.0,1.0,3,2.0,4.0\n")
    md = (out / "demo.md").read_text()
    assert "![demo: score vs k](demo_score_vs_k.png)" in md
    assert "Data: `plots/demo_score_vs_k.csv` (2 series; error bars: sample std over seeds; log x)." in md
    first = png.read_bytes()
    assert main(argv) == 0
    assert png.read_bytes() == first  # deterministic bytes: unchanged results, unchanged files


@pytest.mark.parametrize("spec, message", [
    ({"x": "kk", "y": "score"}, "plots[0].x: unknown axis 'kk'; expected one of: method, k"),
    ({"x": "seed", "y": "score"}, "plots[0].x: unknown axis 'seed' (the seed axis is averaged over"),
    ({"x": "method", "y": "score", "categorical": False},
     "plots[0].categorical: axis 'method' row 'a' has no numeric value"),
    ({"x": "k", "y": "score", "labels": {"k1": "one"}}, "plots[0].labels: tick labels need a categorical axis"),
    ({"x": "k", "y": "score", "categorical": True, "labels": {"k2": "two"}}, "plots[0].labels.k2: unknown row 'k2'"),
    ({"x": "k", "y": "score", "categorical": True, "logx": True}, "plots[0].logx: a categorical axis has no log"),
    ({"x": "k", "y": "score", "resolution": 0}, "plots[0].resolution: expected a number > 0; got 0"),
    ({"x": "k", "x_arg": "kk", "y": "score"}, "plots[0].x_arg: axis 'k' row 'k1' has no 'kk'"),
    ({"x": "k", "y": "score", "split_by": ["nope"]}, "plots[0].split_by: arg 'nope' is in no row of axis 'k'"),
    ({"x": "k", "y": "score", "series": "k"}, "plots[0].series: expected a matrix axis other than x (method)"),
    ({"x": "k", "y": "score", "colour": "red"}, "plots[0].colour: unknown key; expected one of: x, y, series, x_arg"),
    ({"x": "k", "y": "score", "where": {"method": "zz"}}, "plots[0].where.method: unknown row 'zz'"),
])
def test_bad_plot_specs_name_file_and_key(tmp_path, spec, message):
    with pytest.raises(SuiteError) as err:
        _suite(tmp_path, plots=[spec], run=False)
    assert f"{tmp_path / 'demo.yaml'}: {message}" in str(err.value)


def test_x_arg_and_duplicate_stems(tmp_path):
    matrix = {"method": MATRIX["method"], "size": {"s1": {"n": 1, "offset": 0}, "s2": {"n": 2, "offset": 0}}}
    with pytest.raises(SuiteError, match=r"plots\[0\].categorical: axis 'size' row 's1' has no numeric value"):
        _suite(tmp_path, plots=[{"x": "size", "y": "score", "categorical": False}], matrix=matrix, run=False)
    # without x_arg the rows hold no value under 'size': the row names become categories
    _, suite, _ = _suite(tmp_path, plots=[{"x": "size", "y": "score"}], matrix=matrix, run=False)
    assert x_axis(suite, suite.plots[0])[0].categories == [(0.0, "s1"), (1.0, "s2")]
    _, suite, _ = _suite(tmp_path, plots=[{"x": "size", "x_arg": "n", "y": "score"}], matrix=matrix, run=False)
    assert suite.plots[0].x_arg == "n"
    with pytest.raises(SuiteError, match=r"plots\[1\]: writes the same file as plots\[0\]"):
        _suite(tmp_path, plots=[PLOT, {**PLOT, "logx": True}], run=False)


def test_plot_metric_absent_from_results_is_a_problem(tmp_path):
    _, suite, jobs = _suite(tmp_path, plots=[{"x": "k", "y": "scroe"}])
    problems = collect(suite, jobs).problems()
    assert any("plots[0].y: 'scroe' is in no result" in p for p in problems)


# --- issue 15: row identity, categorical axes, error bars, y resolution ----------------------

# the B-1 sweep's shape: two pair counts at lambda = 1e-3 (scores: offset + seed, seeds 1, 2, 3)
LAM = {"lam": {"l0": {"lam": 0.0, "pairs": 1024, "offset": 0},
               "l1": {"lam": 0.001, "pairs": 1024, "offset": 10},
               "l1_big": {"lam": 0.001, "pairs": 16384, "offset": 20}}}


@pytest.mark.parametrize("split_by", [None, ["pairs"]])
def test_rows_sharing_an_x_value_are_two_series(tmp_path, split_by):
    plot = {"x": "lam", "y": "score", "logx": False, **({"split_by": split_by} if split_by else {})}
    _, suite, jobs = _suite(tmp_path, plots=[plot], matrix=LAM, reference={"lam": "l0"},
                            tables=[{"rows": ["lam"], "metrics": ["score"]}])
    data = plot_data(suite, suite.plots[0], collect(suite, jobs).rows)
    got = {s.name: [(p.x, p.row, p.mean) for p in s.points] for s in data.series}
    assert got == {"pairs=1024": [(0.0, "l0", 2.0), (0.001, "l1", 12.0)],
                   "pairs=16384": [(0.001, "l1_big", 22.0)]}
    lines = plot_csv(data).splitlines()
    assert lines[0] == "series,row,pos,lam,score,std,n,lo,hi"
    assert lines[1:] == ["pairs=1024,l0,0,0,2.0,1.0,3,1.0,3.0",
                         "pairs=1024,l1,0.001,0.001,12.0,1.0,3,11.0,13.0",
                         "pairs=16384,l1_big,0.001,0.001,22.0,1.0,3,21.0,23.0"]
    fig = figure(data)
    lines = {ln.get_label(): ln.get_xydata().tolist() for ln in fig.axes[0].get_lines()
             if not ln.get_label().startswith("_")}
    assert lines == {"pairs=1024": [[0.0, 2.0], [0.001, 12.0]], "pairs=16384": [[0.001, 22.0]]}  # no vertical segment


def test_rows_sharing_an_x_value_and_every_split_value_are_refused(tmp_path):
    matrix = {"lam": {**LAM["lam"], "l1_again": {"lam": 0.001, "pairs": 1024, "offset": 30}}}
    with pytest.raises(SuiteError, match=r"plots\[0\].split_by: axis 'lam' rows 'l1', 'l1_again' share x=0.001"):
        _suite(tmp_path, plots=[{"x": "lam", "y": "score", "split_by": ["pairs"]}], matrix=matrix,
               reference={"lam": "l0"}, tables=[{"rows": ["lam"], "metrics": ["score"]}], run=False)


# few-shot: K = 0 is the full data set
KS = {"method": MATRIX["method"],
      "K": {"0": {"fewshot_k": 0, "offset": 50}, "1": {"fewshot_k": 1, "offset": 10},
            "5": {"fewshot_k": 5, "offset": 20}, "20": {"fewshot_k": 20, "offset": 30}}}
FEW = {"x": "K", "x_arg": "fewshot_k", "y": "score", "series": "method", "categorical": True, "labels": {"0": "full"}}


def test_categorical_k_axis_puts_full_in_its_own_category(tmp_path):
    _, suite, jobs = _suite(tmp_path, plots=[FEW], matrix=KS, tables=[{"rows": ["method", "K"], "metrics": ["score"]}])
    data = plot_data(suite, suite.plots[0], collect(suite, jobs).rows)
    assert data.categorical and not data.logx and data.x_scale == "categorical"
    assert data.axis.categories == [(0.0, "full"), (1.0, "1"), (2.0, "5"), (3.0, "20")]  # evenly spaced
    assert [(p.x, p.label, p.mean) for p in data.series[0].points] == [(0.0, "full", 52.0), (1.0, "1", 12.0),
                                                                       (2.0, "5", 22.0), (3.0, "20", 32.0)]
    assert plot_csv(data).splitlines()[1:3] == ["a,0,0,full,52.0,1.0,3,51.0,53.0", "a,1,1,1,12.0,1.0,3,11.0,13.0"]
    ax = figure(data).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["full", "1", "5", "20"]
    assert list(ax.get_xticks()) == [0, 1, 2, 3]
    series_lines = [ln for ln in ax.get_lines() if ln.get_label() in ("a", "b")]
    assert [ln.get_linestyle() for ln in series_lines] == ["None", "None"]  # 'full' is not joined to K=1


def test_non_numeric_axis_is_categorical_and_numeric_axis_is_not(tmp_path):
    _, suite, _ = _suite(tmp_path, plots=[{"x": "method", "y": "score"}, PLOT], run=False)
    method, k = (x_axis(suite, spec)[0] for spec in suite.plots)
    assert method.categorical and method.categories == [(0.0, "a"), (1.0, "b")]
    assert not k.categorical and k.pos == {"k1": 1.0, "k10": 10.0, "k100": 100.0}


def test_error_bars_equal_the_std_column(tmp_path):
    _, suite, jobs = _suite(tmp_path)
    for job in jobs:  # b at k100: one seed left -> no bar
        if job.tags["method"] == "b" and job.tags["k"] == "k100" and job.tags["seed"] != 2:
            job.out_json.unlink()
    data = plot_data(suite, suite.plots[0], collect(suite, jobs).rows)
    bars = {c.get_label(): c for c in figure(data).axes[0].containers}
    segments = {name: [seg.tolist() for seg in c.lines[2][0].get_segments()] for name, c in bars.items()}
    # a: 3 ± 1, 12 ± 1, 102 ± 1; b: 5 ± 2, 14 ± 2, 104 (n=1, no bar)
    assert segments == {"_std a": [[[1, 2], [1, 4]], [[10, 11], [10, 13]], [[100, 101], [100, 103]]],
                        "_std b": [[[1, 3], [1, 7]], [[10, 12], [10, 16]]]}
    rows = [line.split(",") for line in plot_csv(data).splitlines()[1:]]
    assert [(r[0], r[1], r[5], r[7], r[8]) for r in rows if r[0] == "b"] == [
        ("b", "k1", "2.0", "3.0", "7.0"), ("b", "k10", "2.0", "12.0", "16.0"), ("b", "k100", "", "", "")]


FLAT = {"method": {"a": {"scale": 0}},
        "k": {"k1": {"k": 1, "offset": 0.5}, "k2": {"k": 2, "offset": 0.5001}}}


@pytest.mark.parametrize("resolution, lo, hi", [
    (None, 0.50005 - 0.0025005, 0.50005 + 0.0025005),  # 10 x (1e-3 x 0.5001) wide, about the middle
    (0.01, 0.50005 - 0.05, 0.50005 + 0.05),
])
def test_y_axis_is_at_least_ten_resolutions_wide(tmp_path, resolution, lo, hi):
    plot = {**PLOT, **({"resolution": resolution} if resolution else {})}
    _, suite, jobs = _suite(tmp_path, plots=[plot], matrix=FLAT)
    data = plot_data(suite, suite.plots[0], collect(suite, jobs).rows)
    assert [p.mean for p in data.series[0].points] == [0.5, 0.5001]  # a 1e-4 'effect'
    assert y_limits(data) == pytest.approx((lo, hi), abs=1e-12)
    fig = figure(data)
    got = fig.axes[0].get_ylim()
    assert got == pytest.approx((lo, hi), abs=1e-12) and got[1] - got[0] >= RES_SPAN * data.resolution - 1e-15
    assert "resolution" in fig.axes[0].get_title() and "resolution" in data.caption


def test_y_axis_wider_than_the_resolution_keeps_the_data_range(tmp_path):
    _, suite, jobs = _suite(tmp_path)
    data = plot_data(suite, suite.plots[0], collect(suite, jobs).rows)
    # a: 2..103, b: 3..106 -> 2..106 plus 5 % of 104 on each side; resolution 0.106 -> 1.06 < 104
    assert y_limits(data) == pytest.approx((2 - 5.2, 106 + 5.2))
