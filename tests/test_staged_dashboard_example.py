"""suites/staged_dashboard_example.yaml: a lab's per-stage metrics CSVs ingested with no wrapper.

The expected numbers come from the CSVs through the csv module and ``statistics`` alone. The
promotion gate (candidate splat_v2 at stage3 vs baseline_3dgs at stage3), by hand from
examples/staged_dashboard/stage3.csv:

    splat_v2       SSIM (.251 + .249 + .256) / 3 = .2520 >= .245         passes by .007
                   LPIPS (.501 + .512 + .497) / 3 = .50333 <= .52        passes by .01667
                   PSNR (21.42 + 21.37 + 21.51) / 3 = 21.43333 >= 20.93667 + .3 = 21.23667: passes
    baseline_3dgs  SSIM (.241 + .238 + .244) / 3 = .2410 < .245          fails by .004
    (swapped in)   LPIPS (.515 + .522 + .518) / 3 = .51833 <= .52        passes by .00167
                   PSNR 20.93667 < 21.43333 + .3 = 21.73333              fails

Each test works on a copy of examples/staged_dashboard/ in a temporary directory (the suite's
paths are relative to the working directory), so editing a cell never touches the repository.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import statistics
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.expand import expand
from benchmark.results import load_result
from benchmark.suite import load_suite

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "suites" / "staged_dashboard_example.yaml"
DATA = Path("examples") / "staged_dashboard"
METRICS = ["PSNR", "SSIM", "LPIPS", "FPS", "gpu_mem_gb"]
MODELS = ["baseline_3dgs", "splat_v2"]
STAGES = ["stage1", "stage2", "stage3"]
NAME = "staged_dashboard_example"


@pytest.fixture()
def lab(tmp_path, monkeypatch):
    """A working directory holding a copy of the example's CSVs; jobs import this checkout."""
    shutil.copytree(REPO / DATA, tmp_path / DATA)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return tmp_path


def _common(lab: Path) -> list[str]:
    return ["--results-dir", str(lab / "results"), "--params", str(REPO / "params.yaml")]


def _run(lab: Path, suite: Path = SUITE) -> int:
    return main(["run", str(suite), "--no-mlflow", "--executor", "pool", "--jobs", "2", *_common(lab)])


def _report(lab: Path, suite: Path = SUITE) -> dict:
    assert main(["report", str(suite), "--out", str(lab / "reports"), *_common(lab)]) == 0
    return json.loads((lab / "reports" / "summary.json").read_text())[NAME]


def _expected(lab: Path) -> dict[tuple[str, str, str], list[float]]:
    """(model, stage, metric) -> the values of seeds 0, 1, 2, read with the csv module."""
    out: dict[tuple[str, str, str], list[float]] = {}
    for stage in STAGES:
        with open(lab / DATA / f"{stage}.csv", newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r["run"] in MODELS]
        for model in MODELS:
            mine = sorted((r for r in rows if r["run"] == model), key=lambda r: int(r["seed"]))
            assert [r["seed"] for r in mine] == ["0", "1", "2"]
            for metric in METRICS:
                out[(model, stage, metric)] = [float(r[metric]) for r in mine]
    return out


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def test_dashboard_runs_reports_promotes_and_reingests_only_changed_rows(lab, capsys):
    assert _run(lab) == 0
    assert f"{NAME}: done=18 skipped=0 failed=0 total=18" in capsys.readouterr().out
    summary = _report(lab)
    assert "gate: PROMOTE" in capsys.readouterr().out
    assert summary["promote"] == 1 and (summary["complete"], summary["total"]) == (18, 18)
    expected = _expected(lab)
    for (model, stage, metric), values in expected.items():
        assert summary[metric][f"{model}/{stage}"] == pytest.approx(statistics.mean(values), abs=1e-12)
    md = (lab / "reports" / f"{NAME}.md").read_text()
    # cells: mean ± sample std; directions from the suite (LPIPS, gpu_mem_gb lower is better)
    header = next(line for line in md.splitlines() if line.startswith("| model ") and "stage1 PSNR" in line)
    assert "stage1 PSNR ↑" in header and "stage1 SSIM ↑" in header and "stage1 LPIPS ↓" in header
    assert "stage1 gpu_mem_gb ↓" in md and "stage1 FPS ↑" in md
    ssim = expected[("splat_v2", "stage3", "SSIM")]
    assert f"{statistics.mean(ssim):.4f} ± {statistics.stdev(ssim):.4f}" == "0.2520 ± 0.0036"
    row = next(line for line in md.splitlines() if line.startswith("| splat_v2 ") and "±" in line)
    assert "0.2520 ± 0.0036" in row
    for line in ("✓ SSIM 0.2520 >= 0.245", "✓ LPIPS 0.5033 <= 0.52",
                 "✓ PSNR 21.4333 >= ref 20.9367 + 0.3 = 21.2367"):
        assert f"- {line}" in md.splitlines()
    # provenance: the source file, its sha256 and the row, checked against the file itself
    jobs = {(j.tags["model"], j.tags["stage"], j.tags["seed"]): j
            for j in expand(load_suite(SUITE), lab / "results")}
    job = jobs[("splat_v2", "stage3", 1)]
    env = load_result(job.out_json, "command")
    src = lab / DATA / "stage3.csv"
    lines = src.read_text().splitlines()
    assert env.metrics == {m: pytest.approx(v) for m, v in zip(METRICS, (21.37, 0.249, 0.512, 122.0, 6.8))}
    source = env.provenance.model_extra["source"]
    assert source["path"] == str(DATA / "stage3.csv") and source["format"] == "csv"
    assert source["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert lines[source["row"] - 1].startswith("splat_v2,garden,1,")
    assert env.provenance.model_extra["code"]["module"] == "benchmark.ingest"

    # a second run ingests nothing
    assert _run(lab) == 0
    assert "done=0 skipped=18 failed=0" in capsys.readouterr().out
    # one changed cell re-ingests its row's job only; a row added for another run changes nothing
    _edit(lab / DATA / "stage2.csv", "splat_v2,garden,1,20.66,0.239,", "splat_v2,garden,1,20.66,0.299,")
    with open(lab / DATA / "stage1.csv", "a") as fh:
        fh.write("splat_v3_wip,garden,0,19.5,0.215,0.590,150,5.1\n")
    assert _run(lab) == 0
    out = capsys.readouterr().out
    assert "done=1 skipped=17 failed=0" in out
    assert [line.split()[2:5] for line in out.splitlines() if " done " in line] == [
        ["model=splat_v2", "stage=stage2", "seed=1"]]
    summary = _report(lab)
    assert summary["SSIM"]["splat_v2/stage2"] == pytest.approx(statistics.mean([0.236, 0.299, 0.233]), abs=1e-12)
    assert summary["SSIM"]["splat_v2/stage1"] == pytest.approx(statistics.mean([0.209, 0.212, 0.206]), abs=1e-12)


def test_swapped_candidate_fails_the_absolute_ssim_gate(lab, capsys):
    """baseline_3dgs as the candidate (splat_v2 the reference): SSIM .2410 misses .245 by .004."""
    swapped = lab / "swapped.yaml"
    text = SUITE.read_text()
    for old, new in (("reference: {model: baseline_3dgs}", "reference: {model: splat_v2}"),
                     ("candidate: {model: splat_v2, stage: stage3}",
                      "candidate: {model: baseline_3dgs, stage: stage3}")):
        assert text.count(old) == 1
        text = text.replace(old, new)
    swapped.write_text(text)
    assert _run(lab, swapped) == 0
    summary = _report(lab, swapped)
    out = capsys.readouterr().out
    assert "gate: REJECT" in out and summary["promote"] == 0
    lines = out.splitlines()
    assert "  SSIM 0.2410 >= 0.245 fails" in lines
    assert "  PSNR 20.9367 >= ref 21.4333 + 0.3 = 21.7333 fails" in lines
    assert not any(line.startswith("  LPIPS") for line in lines)  # .5183 <= .52 passes
    assert "- ✓ LPIPS 0.5183 <= 0.52" in (lab / "reports" / f"{NAME}.md").read_text().splitlines()


S1 = DATA / "stage1.csv"
BAD = {  # case -> (file edit or suite edit, the one line on stderr)
    "missing_file": (lambda lab: (lab / DATA / "stage2.csv").unlink(),
                     f"{DATA}/stage2.csv: metrics file not found (ingest of {SUITE}, job model=baseline_3dgs "
                     "stage=stage2 seed=0)"),
    "no_row": (lambda lab: _edit(lab / S1, "splat_v2,garden,2,19.02,0.206,0.601,155,5.2\n", ""),
               f"{S1}: no row with run=splat_v2, seed=2 (5 rows read) (ingest of {SUITE}, job model=splat_v2 "
               "stage=stage1 seed=2)"),
    "two_rows": (lambda lab: _edit(lab / S1, "baseline_3dgs,garden,1,18.71,0.198,0.618,139,5.9\n",
                                   "baseline_3dgs,garden,1,18.71,0.198,0.618,139,5.9\n"
                                   "baseline_3dgs,garden,1,18.80,0.199,0.615,140,5.9\n"),
                 f"{S1}: 2 rows match run=baseline_3dgs, seed=1 (line 3, line 4); expected exactly one"),
    "non_numeric": (lambda lab: _edit(lab / S1, "18.62,0.201,", "18.62,0.2O1,"),
                    f"{S1}:2: column 'SSIM': '0.2O1' is not a number"),
    "empty_cell": (lambda lab: _edit(lab / S1, "0.209,0.596,151", "0.209,,151"),
                   f"{S1}:5: column 'LPIPS': empty cell (missing value)"),
    "nan": (lambda lab: _edit(lab / S1, "19.24,", "NaN,"), f"{S1}:6: column 'PSNR': 'NaN' is not a finite number"),
    "inf": (lambda lab: _edit(lab / S1, ",155,", ",inf,"), f"{S1}:7: column 'FPS': 'inf' is not a finite number"),
    "duplicate_header": (lambda lab: _edit(lab / S1, "FPS,gpu_mem_gb\n", "FPS,PSNR\n"),
                         f"{S1}:1: duplicate column 'PSNR' (columns 4 and 8)"),
    "unknown_metric": ("metrics: [PSNR, SSIMM, LPIPS, FPS, gpu_mem_gb]",
                       f"{S1}:1: no column 'SSIMM' (ingest.metrics); the header has: run, scene, seed, PSNR, "
                       "SSIM, LPIPS, FPS, gpu_mem_gb"),
    "unknown_select_column": ('select: {run: "{model}", sed: "{seed}"}',
                              f"{S1}:1: no column 'sed' (ingest.select); the header has: run, scene, seed, "
                              "PSNR, SSIM, LPIPS, FPS, gpu_mem_gb"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_with_one_line(case, lab, capsys):
    edit, message = BAD[case]
    suite = SUITE
    if isinstance(edit, str):  # a suite edit: the ingest key's line with that key replaced
        key = edit.split(":")[0]
        text = SUITE.read_text()
        old = next(line for line in text.splitlines() if line.strip().startswith(f"{key}:"))
        suite = lab / f"{NAME}.yaml"
        suite.write_text(text.replace(old, f"  {edit}"))
    else:
        edit(lab)
    assert main(["run", str(suite), "--no-mlflow", *_common(lab)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"error: {message}"), err[0]
    assert not (lab / "results" / NAME).exists()  # nothing ran
