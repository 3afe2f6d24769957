"""Report: seed means ± sample std equal a hand computation; deltas, readout, flags, gate, outputs,
protocol block (commands, DVC stage, result files), status, summary.json for ``dvc metrics``."""
from __future__ import annotations

import json

from benchutil import write_suite  # noqa: E402

from benchmark.cli import main  # noqa: E402
from benchmark.expand import expand  # noqa: E402
from benchmark.report import build_report, dvc_stages, fmt_cell, fmt_delta  # noqa: E402
from benchmark.aggregate import Cell  # noqa: E402
from benchmark.runner import run_jobs  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402

# fake_job: score = scale * seed + offset, loss = 10 - score; seeds 1, 2, 3
#   a (scale 1): score 1, 2, 3 -> 2.0000 ± 1.0000;  loss 9, 8, 7 -> 8.0000 ± 1.0000
#   b (scale 2): score 2, 4, 6 -> 4.0000 ± 2.0000;  loss 6.0000 ± 2.0000
#   offset 10 adds 10 to score (col q=shift)
MATRIX = {"ckpt": {"a": {"scale": 1}, "b": {"scale": 2, "flag": "suspicious"}},
          "q": {"plain": {"offset": 0}, "shift": {"offset": 10}}}


def _report(tmp_path, capsys=None, **kw):
    kw.setdefault("matrix", MATRIX)
    kw.setdefault("seeds", {"seed": [1, 2, 3]})
    kw.setdefault("reference", {"ckpt": "a"})
    kw.setdefault("tables", [{"title": "Main", "rows": ["ckpt"], "cols": ["q"], "metrics": ["score", "loss"]}])
    path = write_suite(tmp_path, args={"baseline": True}, **kw)
    suite = load_suite(path, tmp_path / "params.yaml")
    jobs = expand(suite, tmp_path / "results")
    run_jobs(jobs, log=lambda s: None, n_jobs=4)
    return path, suite, jobs


def _rows(md: str, first_cell: str) -> list[list[str]]:
    """Cells of every Markdown table row whose first cell is ``first_cell``."""
    out = []
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            out.append(cells)
    return out


def _header(md: str, first_cell: str) -> list[str]:
    return _rows(md, first_cell)[0]


def test_cell_format():
    """n is said once per table: a cell states it only when it differs from the table's usual n."""
    assert fmt_cell(Cell([1.0, 2.0, 3.0]), 3) == "2.0000 ± 1.0000"
    assert fmt_cell(Cell([1.0, 2.0, 3.0]), 2) == "2.0000 ± 1.0000 (n=3)"
    assert fmt_cell(Cell([5.0]), 1) == "5.0000"
    assert fmt_cell(Cell([5.0]), 3) == "5.0000 (n=1)"
    assert fmt_cell(Cell([])) == "—"
    assert fmt_cell(Cell([0.25, 0.25]), 2) == "0.2500 ± 0.0000"  # n=2, a real zero spread


def test_delta_at_the_precision_of_the_values():
    assert fmt_delta(-4.402e-11, 0.5, 0.5) == "+0.0000"  # a float residue of equal means
    assert fmt_delta(-0.11341, 0.4861, 0.5995) == "-0.1134"
    assert fmt_delta(2e-5, 5e-5, 3e-5) == "+2.000e-05"  # tiny values print tiny differences
    assert fmt_delta(None) == "—"


def test_table_means_stds_n_and_deltas_match_hand_computation(tmp_path, capsys):
    path, suite, jobs = _report(tmp_path)
    out_dir = tmp_path / "reports"
    rc = main(["report", str(path), "--out", str(out_dir), "--results-dir", str(tmp_path / "results"),
               "--params", str(tmp_path / "params.yaml")])
    assert rc == 0, capsys.readouterr()
    md = (out_dir / "demo.md").read_text()
    header = _header(md, "ckpt")
    # a command task knows no direction for "score" (no arrow); "loss" is lower-is-better
    assert header == ["ckpt", "plain score", "plain score [nn]", "plain loss ↓",
                      "shift score", "shift score [nn]", "shift loss ↓", "flags"]
    a, b = _rows(md, "a")[0], _rows(md, "b")[0]
    assert a == ["a", "2.0000 ± 1.0000", "1.0000 ± 0.5000", "8.0000 ± 1.0000",
                 "12.0000 ± 1.0000", "6.0000 ± 0.5000", "-2.0000 ± 1.0000", "—"]
    assert b[:4] == ["b", "4.0000 ± 2.0000", "2.0000 ± 1.0000", "6.0000 ± 2.0000"]
    assert b[-1] == "suspicious (6/6)"  # the row's flags: every result of b carries one
    assert "Cells: mean ± sample std (ddof=1) over `seed`, n=3. ↓ lower is better (no arrow: direction not declared)." in md
    # Δ vs reference table: second row starting with "a"/"b"
    assert _rows(md, "a")[1] == ["a", "ref", "ref", "ref", "ref"]
    assert _rows(md, "b")[1] == ["b", "+2.0000", "-2.0000", "+2.0000", "-2.0000"]
    # status in the lab's words: completed jobs, completion per first-axis row
    assert "- completed jobs: `12 / 12`\n- completion by ckpt:\n  - `a`: `6/6`\n  - `b`: `6/6`\n- missing: none" in md
    # protocol: the commands, one expanded job argv, the result files (glob + count)
    assert f"python -m benchmark run {path}" in md and "--out_json" in md
    assert f"| results    | `{tmp_path / 'results' / 'demo'}/*.json`: 12 of 12 jobs" in md
    # readout: higher score is better (assumed), lower loss is better -> b wins both; flagged
    # winners say so; one short line per column and metric
    assert "- score (↑ assumed), plain: b ⚑ 4.0000 ± 2.0000 (Δ +2.0000); next a 2.0000 ± 1.0000\n" in md
    assert "- loss ↓, plain: b ⚑ 6.0000 ± 2.0000 (Δ -2.0000); next a 8.0000 ± 1.0000\n" in md
    readout = md.split("## Readout", 1)[1].split("\n## ", 1)[0]
    assert all(len(line) <= 120 for line in readout.splitlines())
    # flags are listed with their jobs
    assert "**suspicious** (result; 6 job(s)): ckpt=b q=plain seed=1" in md
    # summary.json (for dvc metrics): counts, flag counts, {metric: {"row/col": mean}}
    summary = json.loads((out_dir / "summary.json").read_text())["demo"]
    assert summary["complete"] == 12 and summary["total"] == 12 and summary["flagged"] == 6
    assert summary["flags"] == {"suspicious": 6}
    assert summary["score"]["b/shift"] == 14.0 and summary["loss"]["a/plain"] == 8.0
    assert summary["baseline/nn/score"]["a/plain"] == 1.0
    csv_lines = (out_dir / "demo.csv").read_text().splitlines()
    assert len(csv_lines) == 13 and csv_lines[0].startswith("suite,job_id,ckpt,q,seed,score,loss,hit@1")
    # deterministic bytes
    main(["report", str(path), "--out", str(out_dir), "--results-dir", str(tmp_path / "results"),
          "--params", str(tmp_path / "params.yaml")])
    assert (out_dir / "demo.md").read_text() == md


def test_vs_baseline_companion_is_paired_by_seed(tmp_path):
    """fake_job's baseline nn is score / 2 from the same result, so score - nn = score / 2 per seed:
    a plain 0.5, 1, 1.5 -> 1.0000 ± 0.5000; a shift (11, 12, 13) / 2 -> 6.0000 ± 0.5000;
    b plain 1, 2, 3 -> 2.0000 ± 1.0000; b shift (12, 14, 16) / 2 -> 7.0000 ± 1.0000. Higher score is
    better and every difference is > 0, so every row beats the baseline on 3/3 seeds. (A difference
    of the two columns' means would be right here, its std would not: paired std 0.5 against the
    score column's 1.0.)"""
    _, suite, jobs = _report(tmp_path)
    md = build_report(suite, jobs, results_dir=tmp_path / "results").markdown
    assert "### Main: vs baseline, paired by seed" in md
    paired = [r for r in _rows(md, "a") + _rows(md, "b") if len(r) == 3]
    assert paired == [["a", "1.0000 ± 0.5000, better 3/3", "6.0000 ± 0.5000, better 3/3"],
                      ["b", "2.0000 ± 1.0000, better 3/3", "7.0000 ± 1.0000, better 3/3"]]
    headers = [h for h in (_rows(md, "ckpt")) if len(h) == 3]
    assert headers == [["ckpt", "plain score − nn", "shift score − nn"]]


def test_vs_baseline_counts_lower_is_better(tmp_path):
    """For a lower-is-better metric the count is of seeds where row < baseline. Hand case:
    mae 5, 2, 7 against baseline 4, 4, 4 -> differences +1, -2, +3 (mean 0.6667, sample std
    2.5166) -> better 1/3. A result whose baseline is NaN is skipped."""
    from types import SimpleNamespace

    from benchmark.aggregate import baseline_columns, build_table
    from benchmark.report_tables import _render_vs_baseline

    path = write_suite(tmp_path, args={}, matrix={"ckpt": {"a": {}}}, seeds={"seed": [1, 2, 3, 4]},
                       tables=[{"rows": ["ckpt"], "cols": [], "metrics": ["mae"]}])
    suite = load_suite(path, tmp_path / "params.yaml")
    rows = [SimpleNamespace(tags={"ckpt": "a", "seed": i}, segregation=(), flags=[],
                            metrics={"mae": float(v), "baseline/nn_copy/mae": b})
            for i, v, b in ((1, 5, 4.0), (2, 2, 4.0), (3, 7, 4.0), (4, 1, float("nan")))]
    t = build_table(suite, 0, rows)
    assert [c.metric for c in baseline_columns(t)] == ["baseline/nn_copy/mae"]
    md = "\n".join(_render_vs_baseline(t, ["ckpt"], lambda m: "min"))
    assert _rows(md, "a") == [["a", "0.6667 ± 2.5166, better 1/3"]]
    assert _rows(md, "ckpt") == [["ckpt", "mae − nn_copy"]]


def test_single_seed_and_missing_results(tmp_path):
    path, suite, jobs = _report(tmp_path, seeds={"seed": [5, 7]})
    missing = [j for j in jobs if j.tags == {"ckpt": "a", "q": "plain", "seed": 7}][0]
    missing.out_json.unlink()
    rep = build_report(suite, jobs)
    assert not rep.problems
    md = rep.markdown
    assert "- completed jobs: `7 / 8`" in md and "  - `a`: `3/4`" in md
    assert f"- missing (1):\n  - ckpt=a q=plain seed=7 (`{missing.job_id}`): pending" in md
    a = _rows(md, "a")[0]
    # n differs across cells: the usual n (2) once in the caption, the odd cell says its own
    assert "over `seed`, n=2 unless a cell says `(n=k)`" in md
    assert a[1] == "5.0000 (n=1)" and "± 0" not in a[1]
    assert a[4] == "16.0000 ± 1.4142"  # 15, 17


def test_promote_gate(tmp_path):
    _, suite, jobs = _report(tmp_path, promote={"candidate": {"ckpt": "b"},
                                                "require": {"score": ">= ref + 1.5", "loss": "<= ref"}})
    rep = build_report(suite, jobs)
    assert rep.gate.decision == "PROMOTE"
    assert "**PROMOTE**" in rep.markdown and "q=plain: score 4.0000 >= ref 2.0000 + 1.5 = 3.5000" in rep.markdown
    strict = tmp_path / "strict"
    strict.mkdir()
    _, suite, jobs = _report(strict, promote={"candidate": {"ckpt": "b"}, "require": {"score": ">= ref + 2.5"}})
    rep = build_report(suite, jobs)
    assert rep.gate.decision == "REJECT"
    assert any("score 4.0000 >= ref 2.0000 + 2.5 = 4.5000 fails" in r for r in rep.gate.reasons)


def test_where_filter_and_metrics_as_columns(tmp_path):
    _, suite, jobs = _report(tmp_path, tables=[{"rows": ["ckpt"], "where": {"q": "shift"},
                                                 "metrics": ["score", "near/score"]}])
    md = build_report(suite, jobs).markdown
    assert _header(md, "ckpt") == ["ckpt", "score", "score [nn]", "near/score", "flags"]
    assert _rows(md, "a")[0] == ["a", "12.0000 ± 1.0000", "6.0000 ± 0.5000", "6.0000 ± 0.5000", "—"]
    assert "Restricted to q=shift." in md


def test_readout_compares_rows_within_the_other_axes(tmp_path):
    """Rows compete only across the reference axis (methods at one K, as the M1 table is read: "best
    per K"); ties are shown as ties."""
    matrix = {"ckpt": {"a": {"scale": 1}, "b": {"scale": 2}, "c": {"scale": 1, "tag": "copy"}},
              "q": {"lo": {"offset": 0}, "hi": {"offset": 100}}}
    _, suite, jobs = _report(tmp_path, matrix=matrix, tables=[{"rows": ["q", "ckpt"], "metrics": ["score"]}])
    md = build_report(suite, jobs).markdown
    # q=lo: a 2, b 4, c 2 -> b best, then the tie a = c; q=hi: 102, 104, 102. "hi" beats "lo" but never competes
    assert "- score (↑ assumed), q=lo: b 4.0000 ± 2.0000 (Δ +2.0000); next a 2.0000 ± 1.0000\n" in md
    assert "- score (↑ assumed), q=hi: b 104.0000 ± 2.0000 (Δ +2.0000); next a 102.0000 ± 1.0000\n" in md
    lows = [r for r in _rows(md, "lo")]
    assert [r[1] for r in lows[:3]] == ["a", "b", "c"]
    tie = tmp_path / "tie"
    tie.mkdir()
    _, suite, jobs = _report(tie, matrix={"ckpt": {"a": {"scale": 1}, "c": {"scale": 1, "tag": "copy"}}},
                             tables=[{"rows": ["ckpt"], "metrics": ["score"]}])
    md = build_report(suite, jobs).markdown
    assert "- score (↑ assumed): a = c (tie) 2.0000 ± 1.0000 (ref)\n" in md


def test_dvc_stage_hint(tmp_path):
    path, suite, jobs = _report(tmp_path)
    doc = {"stages": {"suite_demo": {"cmd": f"python -m benchmark run {path.name} --jobs ${{bench.jobs}}"},
                      "other": {"cmd": "python -m benchmark run other.yaml"},
                      "report": {"cmd": ["echo hi", f"python -m benchmark report other.yaml {path.name} --out reports"]},
                      "all": {"cmd": f"python -m benchmark run {tmp_path} && echo done {path.name}"}}}
    assert dvc_stages(path, doc, tmp_path) == {"run": ["suite_demo", "all"], "report": ["report"]}
    import yaml

    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    md = build_report(suite, jobs).markdown
    assert ("With DVC: `dvc repro suite_demo` (runs the suite); `dvc repro all` (runs the suite); "
            "`dvc repro report` (writes this report).") in md
