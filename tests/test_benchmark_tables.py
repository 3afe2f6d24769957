"""Paper-ready tables: the pivot schema, the wide form, the LaTeX (booktabs) rendering, citations."""
from __future__ import annotations


import pytest

from benchutil import write_suite  # noqa: E402

from benchmark.errors import SuiteError  # noqa: E402
from benchmark.expand import expand  # noqa: E402
from benchmark.render_latex import escape  # noqa: E402
from benchmark.report import _protocol_link, build_report  # noqa: E402
from benchmark.report_write import write_report  # noqa: E402
from benchmark.runner import run_jobs  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402

# fake_job: score = scale * seed + offset, loss = 10 - score; seeds 1, 2, 3 (see test_benchmark_report)
#   a: score 2 (plain), 12 (shift); b: 4, 14; c (scale 0.5): 1, 11.  loss = 10 - score.
MATRIX = {"ckpt": {"a": {"scale": 1}, "b": {"scale": 2}, "c": {"scale": 0.5}},
          "q": {"plain": {"offset": 0}, "shift": {"offset": 10}}}
LONG = {"title": "Main_50% & more", "rows": ["ckpt", "q"], "metrics": ["score", "loss"]}


def _suite(tmp_path, table, run=True, **kw):
    path = write_suite(tmp_path, args={}, matrix=MATRIX, seeds={"seed": [1, 2, 3]}, reference={"ckpt": "a"},
                       tables=[table], **kw)
    suite = load_suite(path, tmp_path / "params.yaml")
    jobs = expand(suite, tmp_path / "results")
    if run:
        run_jobs(jobs, log=lambda s: None, n_jobs=2)
    return suite, jobs


@pytest.mark.parametrize("pivot, key, expected", [
    ({"rows": ["ckpt"], "cols": ["zz"]}, "tables[0].pivot.cols", "axis 'zz' is not a row or column of the table"),
    ({"rows": ["ckpt"], "cols": []}, "tables[0].pivot.cols", "at least one axis across"),
    ({"rows": [], "cols": ["q"]}, "tables[0].pivot", "axis 'ckpt' of the table is not placed"),
    ({"rows": ["ckpt"], "cols": ["q", "ckpt"]}, "tables[0].pivot.cols", "placed twice"),
    ({"rows": ["ckpt"], "cols": ["q"], "metrics": ["acc"]}, "tables[0].pivot.metrics", "'acc' is not a metric"),
    ({"rows": ["ckpt"], "cols": ["q"], "colour": 1}, "tables[0].pivot.colour", "unknown key; expected one of: rows"),
])
def test_pivot_errors_name_the_file_and_field(tmp_path, pivot, key, expected):
    path = write_suite(tmp_path, args={}, matrix=MATRIX, seeds={"seed": [1]}, tables=[{**LONG, "pivot": pivot}])
    with pytest.raises(SuiteError) as info:
        load_suite(path, tmp_path / "params.yaml")
    msg = str(info.value)
    assert msg.startswith(f"{path}: {key}: ") and "\n" not in msg, msg
    assert expected in msg


def test_pivot_shorthand_and_default_metrics(tmp_path):
    suite, _ = _suite(tmp_path, {**LONG, "pivot": {"rows": "ckpt", "cols": "q"}}, run=False)
    p = suite.tables[0].pivot
    assert (p.rows, p.cols, p.metrics) == (["ckpt"], ["q"], ["score", "loss"])


def test_wide_markdown_and_latex(tmp_path):
    """ckpt × q, metric loss (lower is better): plain a 8, b 6, c 9 -> b best; shift a -2, b -4,
    c -1 -> b best. One metric: columns named by their key, the metric (with ↓) in the spanning
    header. score has no known direction (a command task): no arrow and nothing bold."""
    suite, jobs = _suite(tmp_path, {**LONG, "pivot": {"rows": ["ckpt"], "cols": ["q"], "metrics": ["loss"]}})
    rep = build_report(suite, jobs)
    md = rep.markdown
    assert "### Main_50% & more: ckpt × q" in md
    assert "| ckpt   | q=plain             | q=shift              |" in md
    assert "| b      | **6.0000 ± 2.0000** | **-4.0000 ± 2.0000** |" in md
    assert "| a      | 8.0000 ± 1.0000     | -2.0000 ± 1.0000     |" in md

    tex = rep.latex
    assert tex.count("\\begin{table}") == 1
    body = tex.split("\\begin{tabular}", 1)[1]
    assert body.index("\\toprule") < body.index("\\midrule") < body.index("\\bottomrule")
    assert "{lrr}" in tex
    assert "\\caption{Main\\_50\\% \\& more. Cells: mean $\\pm$ sample std (ddof=1) over seed, n=3." in tex
    assert " & \\multicolumn{2}{c}{loss $\\downarrow$} \\\\\n\\cmidrule(lr){2-3}\nckpt & q=plain & q=shift \\\\" in tex
    rows = [ln for ln in body.split("\\midrule", 1)[1].splitlines() if ln.endswith("\\\\")]
    assert rows == ["a & 8.0000 $\\pm$ 1.0000 & -2.0000 $\\pm$ 1.0000 \\\\",
                    "b & \\textbf{6.0000 $\\pm$ 2.0000} & \\textbf{-4.0000 $\\pm$ 2.0000} \\\\",
                    "c & 9.0000 $\\pm$ 0.5000 & -1.0000 $\\pm$ 0.5000 \\\\"]

    out = tmp_path / "reports"
    paths = write_report(rep, out)
    assert (out / "demo.tex").read_text() == tex and out / "demo.tex" in paths
    assert "LaTeX (booktabs): `demo.tex`" in md


def test_long_latex_bolds_the_best_of_each_group(tmp_path):
    """No pivot: the long table. Rows compete within q (the reference axis is ckpt): loss is
    lower-better, so b is bold in both q groups; score (no known direction) is never bold."""
    suite, jobs = _suite(tmp_path, LONG)
    tex = build_report(suite, jobs).latex
    assert "ckpt & q & score & loss $\\downarrow$ \\\\" in tex
    rows = [ln for ln in tex.split("\\midrule", 1)[1].splitlines() if ln.endswith("\\\\")]
    bold = [ln.split(" & ")[:2] for ln in rows if "textbf" in ln]
    assert bold == [["b", "plain"], ["b", "shift"]]
    assert all(ln.count("textbf") == 1 for ln in rows if "textbf" in ln)


def test_escape():
    assert escape("a_b & 50% #1 $x$ {y} ~^\\") == (
        "a\\_b \\& 50\\% \\#1 \\$x\\$ \\{y\\} \\textasciitilde{}\\textasciicircum{}\\textbackslash{}")
    assert escape("0.5 ± 0.1 ↑ —") == "0.5 $\\pm$ 0.1 $\\uparrow$ --"


def test_report_links_the_protocol_section_only_when_it_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _protocol_link("cpac_main") == []                       # no docs/protocols.md here
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "protocols.md").write_text("# CPAC\n\n## cpac_main\n\ntext\n")
    assert _protocol_link("cpac_main") == [
        "Protocol: [docs/protocols.md#cpac_main](../docs/protocols.md#cpac_main)", ""]
    assert _protocol_link("cpac") == []                            # a heading, not a prefix


def test_report_is_deterministic_with_tex(tmp_path):
    suite, jobs = _suite(tmp_path, {**LONG, "pivot": {"rows": ["ckpt"], "cols": ["q"]}})
    a, b = build_report(suite, jobs), build_report(suite, jobs)
    assert (a.markdown, a.latex) == (b.markdown, b.latex)
