"""suites/external_scorer_example.yaml: another lab's scorer as a `command` task, with a gate.

The predictions files hold, per model, split and training seed, 10 binary predictions (5 positive
labels, 5 negative). Correct predictions (true positives, true negatives) by seed 0, 1, 2:

    lab_baseline  dev (3,4) (4,3) (3,3) -> accuracy .7 .7 .6  mean 2.0/3; recall .6 .8 .6  mean 2.0/3
                  test (3,4) (3,4) (4,4) -> accuracy .7 .7 .8  mean 2.2/3; recall .6 .6 .8  mean 2.0/3
    new_head      dev (4,4) (4,5) (5,4) -> accuracy .8 .9 .9  mean 2.6/3; recall .8 .8 1.  mean 2.6/3
                  test (4,4) (3,5) (4,5) -> accuracy .8 .8 .9  mean 2.5/3; recall .8 .6 .8  mean 2.2/3

Gate ``accuracy >= ref + 0.05`` and ``recall >= ref + 0.05`` on both splits:
dev .8667 >= .7167 and .8667 >= .7167; test .8333 >= .7833 and .7333 >= .7167 -> PROMOTE.
With ``accuracy >= ref + 0.15``: test .8333 < .7333 + .15 = .8833 -> REJECT (dev still passes).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.expand import expand
from benchmark.results import load_result
from benchmark.suite import load_suite

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "suites" / "external_scorer_example.yaml"

HAND = {  # (model, split) -> per seed 0, 1, 2: (accuracy, recall)
    ("lab_baseline", "dev"): [(0.7, 0.6), (0.7, 0.8), (0.6, 0.6)],
    ("lab_baseline", "test"): [(0.7, 0.6), (0.7, 0.6), (0.8, 0.8)],
    ("new_head", "dev"): [(0.8, 0.8), (0.9, 0.8), (0.9, 1.0)],
    ("new_head", "test"): [(0.8, 0.8), (0.8, 0.6), (0.9, 0.8)],
}


@pytest.fixture()
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # the suite names its program and inputs relative to the repository


def _common(tmp_path) -> list[str]:
    return ["--results-dir", str(tmp_path / "results")]


def test_example_runs_reports_and_promotes(tmp_path, in_repo, capsys):
    assert main(["run", "suites/external_scorer_example.yaml", "--no-mlflow", "--jobs", "2", *_common(tmp_path)]) == 0
    assert "external_scorer_example: done=12 skipped=0 failed=0 total=12" in capsys.readouterr().out
    out_dir = tmp_path / "reports"
    assert main(["report", "suites/external_scorer_example.yaml", "--out", str(out_dir), *_common(tmp_path)]) == 0
    assert "gate: PROMOTE" in capsys.readouterr().out
    summary = json.loads((out_dir / "summary.json").read_text())["external_scorer_example"]
    assert summary["promote"] == 1 and (summary["complete"], summary["total"]) == (12, 12)
    jobs = expand(load_suite(SUITE), tmp_path / "results")
    assert len(jobs) == 12
    for job in jobs:  # every score is the hand-counted one
        acc, rec = HAND[(job.tags["model"], job.tags["split"])][job.tags["seed"]]
        metrics = load_result(job.out_json, "command").metrics
        assert metrics == {"accuracy": pytest.approx(acc, abs=1e-12), "recall": pytest.approx(rec, abs=1e-12)}
    md = (out_dir / "external_scorer_example.md").read_text()
    assert "**PROMOTE**" in md
    # seed mean ± sample std of the hand values, e.g. dev accuracy (.8, .9, .9) -> 0.8667 ± 0.0577
    row = next(line for line in md.splitlines() if line.startswith("| new_head "))
    assert [c.strip() for c in row.strip("|").split("|")][-4:] == [
        "0.8667 ± 0.0577", "0.8667 ± 0.1155", "0.8333 ± 0.0577", "0.7333 ± 0.1155"]
    assert "✓ split=test: accuracy 0.8333 >= ref 0.7333 + 0.05 = 0.7833" in md
    # a second run re-scores nothing
    assert main(["run", "suites/external_scorer_example.yaml", "--no-mlflow", *_common(tmp_path)]) == 0
    assert "done=0 skipped=12 failed=0" in capsys.readouterr().out


def test_stricter_gate_rejects_with_the_failing_comparison(tmp_path, in_repo, capsys):
    strict = tmp_path / "strict.yaml"
    text = SUITE.read_text()
    assert 'accuracy: ">= ref + 0.05"' in text
    strict.write_text(text.replace('accuracy: ">= ref + 0.05"', 'accuracy: ">= ref + 0.15"'))
    assert main(["run", str(strict), "--no-mlflow", *_common(tmp_path)]) == 0
    out_dir = tmp_path / "reports"
    assert main(["report", str(strict), "--out", str(out_dir), *_common(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "gate: REJECT" in out
    assert "  split=test: accuracy 0.8333 >= ref 0.7333 + 0.15 = 0.8833 fails" in out.splitlines()
    assert "split=dev: accuracy" not in out  # dev passes: .8667 >= .8167
    md = (out_dir / "external_scorer_example.md").read_text()
    assert "**REJECT**" in md and "✓ split=dev: accuracy 0.8667 >= ref 0.6667 + 0.15 = 0.8167" in md
    assert json.loads((out_dir / "summary.json").read_text())["external_scorer_example"]["promote"] == 0


def test_scorer_rejects_a_bad_split_with_a_clear_message(tmp_path, in_repo):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "examples/external_scorer/score.py", "--predictions",
                           "examples/external_scorer/predictions/new_head.csv", "--split", "val", "--seed", "0",
                           "--out_json", str(tmp_path / "x.json")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "new_head.csv: no rows with split='val' and seed='0'" in proc.stderr
    assert not (tmp_path / "x.json").exists()
