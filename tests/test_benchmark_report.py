"""Report: seed means ± sample std equal a hand computation; deltas, readout, flags, gate, outputs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "benchmark"))
from benchutil import write_suite  # noqa: E402

from benchmark.cli import main  # noqa: E402
from benchmark.expand import expand  # noqa: E402
from benchmark.report import build_report, fmt_cell  # noqa: E402
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
    assert fmt_cell(Cell([1.0, 2.0, 3.0])) == "2.0000 ± 1.0000"
    assert fmt_cell(Cell([5.0])) == "5.0000 (n=1)"
    assert fmt_cell(Cell([])) == "—"
    assert fmt_cell(Cell([0.25, 0.25])) == "0.2500 ± 0.0000"  # n=2, a real zero spread


def test_table_means_stds_n_and_deltas_match_hand_computation(tmp_path, capsys):
    path, suite, jobs = _report(tmp_path)
    out_dir = tmp_path / "reports"
    rc = main(["report", str(path), "--out", str(out_dir), "--results-dir", str(tmp_path / "results"),
               "--params", str(tmp_path / "params.yaml")])
    assert rc == 0, capsys.readouterr()
    md = (out_dir / "demo.md").read_text()
    header = _header(md, "ckpt")
    assert header == ["ckpt", "n(seed)", "plain score", "plain score [nn]", "plain loss",
                      "shift score", "shift score [nn]", "shift loss"]
    a, b = _rows(md, "a")[0], _rows(md, "b")[0]
    assert a == ["a", "3", "2.0000 ± 1.0000", "1.0000 ± 0.5000", "8.0000 ± 1.0000",
                 "12.0000 ± 1.0000", "6.0000 ± 0.5000", "-2.0000 ± 1.0000"]
    assert b[:5] == ["b", "3", "4.0000 ± 2.0000", "2.0000 ± 1.0000", "6.0000 ± 2.0000"]
    # Δ vs reference table: second row starting with "a"/"b"
    assert _rows(md, "a")[1] == ["a", "ref", "ref", "ref", "ref"]
    assert _rows(md, "b")[1] == ["b", "+2.0000", "-2.0000", "+2.0000", "-2.0000"]
    assert "status: 12/12 jobs complete" in md
    assert f"python -m benchmark run {path}" in md and "--out_json" in md
    # readout: higher score is better, lower loss is better -> b wins both
    readout = {(r[1], r[2]): r for r in _rows(md, "Main")}
    assert readout[("plain", "score")][3:6] == ["higher", "ckpt=b", "4.0000 ± 2.0000"]
    assert readout[("plain", "loss")][3:6] == ["lower", "ckpt=b", "6.0000 ± 2.0000"]
    # flags are listed with their jobs
    assert "**suspicious** (result; 6 job(s))" in md and "ckpt=b q=plain seed=1" in md
    # summary.json (for dvc metrics) and the CSV
    summary = json.loads((out_dir / "summary.json").read_text())["demo"]
    assert summary["complete"] == 12 and summary["Main"]["ckpt=b"]["shift"]["score"] == 14.0
    csv_lines = (out_dir / "demo.csv").read_text().splitlines()
    assert len(csv_lines) == 13 and csv_lines[0].startswith("suite,job_id,ckpt,q,seed,score,loss,hit@1")
    # deterministic bytes
    main(["report", str(path), "--out", str(out_dir), "--results-dir", str(tmp_path / "results"),
          "--params", str(tmp_path / "params.yaml")])
    assert (out_dir / "demo.md").read_text() == md


def test_single_seed_and_missing_results(tmp_path):
    path, suite, jobs = _report(tmp_path, seeds={"seed": [5, 7]})
    missing = [j for j in jobs if j.tags == {"ckpt": "a", "q": "plain", "seed": 7}][0]
    missing.out_json.unlink()
    rep = build_report(suite, jobs)
    assert not rep.problems
    md = rep.markdown
    assert "status: 7/8 jobs complete" in md
    assert "- ckpt=a q=plain seed=7" in md
    a = _rows(md, "a")[0]
    assert a[1] == "1–2"  # n(seed) differs across the row's columns
    assert a[2] == "5.0000 (n=1)" and "± 0" not in a[2]
    assert a[5] == "16.0000 ± 1.4142"  # 15, 17


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
    assert _header(md, "ckpt") == ["ckpt", "n(seed)", "score", "score [nn]", "near/score"]
    assert _rows(md, "a")[0] == ["a", "3", "12.0000 ± 1.0000", "6.0000 ± 0.5000", "6.0000 ± 0.5000"]
    assert "Restricted to q=shift." in md
