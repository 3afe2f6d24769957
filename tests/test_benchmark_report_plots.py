"""Plots a suite declares: series means ± sample std equal a hand computation, the dvc CSV is
exact, PNGs are written deterministically and linked from the Markdown, bad specs are refused."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "benchmark"))
from benchutil import write_suite  # noqa: E402

from benchmark.cli import main  # noqa: E402
from benchmark.collect import collect  # noqa: E402
from benchmark.errors import SuiteError  # noqa: E402
from benchmark.expand import expand  # noqa: E402
from benchmark.plots import auto_logx, plot_csv, plot_data  # noqa: E402
from benchmark.runner import run_jobs  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402

# fake_job: score = scale * seed + offset; seeds 1, 2, 3
#   method a (scale 1): 2 ± 1 + offset;  method b (scale 2): 4 ± 2 + offset
#   K rows carry offset = K (so the curve rises with K) and the number itself under "k"
MATRIX = {"method": {"a": {"scale": 1}, "b": {"scale": 2, "flag": "odd"}},
          "k": {"k1": {"k": 1, "offset": 1}, "k10": {"k": 10, "offset": 10}, "k100": {"k": 100, "offset": 100}}}
PLOT = {"x": "k", "y": "score", "series": "method"}


def _suite(tmp_path, plots=(PLOT,), matrix=MATRIX, run=True, tables=None, **kw):
    tables = tables or [{"rows": list(matrix), "metrics": ["score"]}]
    path = write_suite(tmp_path, matrix=matrix, seeds={"seed": [1, 2, 3]}, reference={"method": "a"},
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
    assert plot_csv(data) == ("k,k_row,a,a_std,a_n,b,b_std,b_n\n"
                              "1,k1,3.0,1.0,3,5.0,2.0,3\n"
                              "10,k10,12.0,1.0,3,14.0,2.0,3\n"
                              "100,k100,102.0,1.0,3,104.0,2.0,3\n")


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
    assert plot_csv(data).splitlines()[1] == "1,k1,3.0,,1,5.0,,1"


def test_report_writes_linked_png_and_dvc_csv(tmp_path, capsys):
    path, suite, jobs = _suite(tmp_path)
    out = tmp_path / "reports"
    argv = ["report", str(path), "--out", str(out), "--results-dir", str(tmp_path / "results"),
            "--params", str(tmp_path / "params.yaml")]
    assert main(argv) == 0
    assert "1 plot(s)" in capsys.readouterr().out
    png, csv_path = out / "demo_score_vs_k.png", out / "plots" / "demo_score_vs_k.csv"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert csv_path.read_text().startswith("k,k_row,a,a_std,a_n,b,b_std,b_n\n")
    md = (out / "demo.md").read_text()
    assert "![demo: score vs k](demo_score_vs_k.png)" in md
    assert "Data: `plots/demo_score_vs_k.csv` (2 series; error bars: sample std over seeds; log x)." in md
    first = png.read_bytes()
    assert main(argv) == 0
    assert png.read_bytes() == first  # deterministic bytes: unchanged results, unchanged files


@pytest.mark.parametrize("spec, message", [
    ({"x": "kk", "y": "score"}, "plots[0].x: unknown axis 'kk'; expected one of: method, k"),
    ({"x": "seed", "y": "score"}, "plots[0].x: unknown axis 'seed' (the seed axis is averaged over"),
    ({"x": "method", "y": "score"}, "plots[0].x: axis 'method' row 'a' has no numeric value"),
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
    with pytest.raises(SuiteError, match=r"plots\[0\].x: axis 'size' row 's1' has no numeric value"):
        _suite(tmp_path, plots=[{"x": "size", "y": "score"}], matrix=matrix, run=False)
    _, suite, _ = _suite(tmp_path, plots=[{"x": "size", "x_arg": "n", "y": "score"}], matrix=matrix, run=False)
    assert suite.plots[0].x_arg == "n"
    with pytest.raises(SuiteError, match=r"plots\[1\]: writes the same file as plots\[0\]"):
        _suite(tmp_path, plots=[PLOT, {**PLOT, "logx": True}], run=False)


def test_plot_metric_absent_from_results_is_a_problem(tmp_path):
    _, suite, jobs = _suite(tmp_path, plots=[{"x": "k", "y": "scroe"}])
    problems = collect(suite, jobs).problems()
    assert any("plots[0].y: 'scroe' is in no result" in p for p in problems)
