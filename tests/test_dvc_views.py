"""The DVC views of a suite stage and a report stage wired as dvc.yaml wires them (a fake suite
instead of 3D jobs): a targeted `dvc exp run -S ... suite_<name>` shows the new numbers next to
the new parameter (the stage writes its own metrics/<suite>.json), `dvc metrics diff` names the
moved means, and a failing `dvc repro -s report` leaves the persisted reports byte-identical."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchutil import write_suite  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

DVC_YAML = {"stages": {
    "suite_demo": {
        "cmd": "python -m benchmark run demo.yaml --no-mlflow --metrics metrics",
        "deps": ["demo.yaml"], "params": ["demo"],
        "outs": [{"results/demo": {"cache": False, "persist": True}}],  # demo.seeds.json: git's
        "metrics": [{"metrics/demo.json": {"cache": False}}]},
    "report": {
        "cmd": "python -m benchmark report demo.yaml --out reports --summary summary.json",
        "deps": ["demo.yaml", "results/demo"],
        "outs": [{f"reports/{f}": {"cache": False, "persist": True}}
                 for f in ("demo.md", "demo.csv", "demo.tex", "summary.json")]}}}


def _sh(cmd: list[str], cwd: Path, env: dict, ok: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if ok:
        assert r.returncode == 0, f"{' '.join(cmd)}:\n{r.stdout}{r.stderr}"
    return r


@pytest.mark.slow
def test_targeted_experiment_shows_its_own_metrics_and_a_failed_report_keeps_the_reports(tmp_path):
    work = tmp_path / "proj"
    work.mkdir()
    (work / "params.yaml").write_text(yaml.safe_dump({"demo": {"offset": 0}}))
    write_suite(work, name="demo", args={"offset": "${demo.offset}"},
                matrix={"ckpt": {"a": {"scale": 1}, "b": {"scale": 2}}}, seeds={"seed": [1, 2]},
                tables=[{"rows": ["ckpt"], "metrics": ["score"]}])
    (work / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    bindir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ["PATH"], PYTHONPATH=str(REPO),
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t",
               DVC_NO_ANALYTICS="1")
    dvc = shutil.which("dvc", path=bindir) or "dvc"
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"], [dvc, "repro"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "base"]):
        _sh(cmd, work, env)
    means = json.loads((work / "metrics" / "demo.json").read_text())
    # fake_job: score = scale * seed + offset -> a: 1, 2; b: 2, 4
    assert means == {"ckpt=a": {"score": {"mean": 1.5, "std": 0.707107, "n": 2}},
                     "ckpt=b": {"score": {"mean": 3.0, "std": 1.41421, "n": 2}}}
    assert json.loads((work / "metrics" / "demo.seeds.json").read_text())["rows"]["ckpt=b"] == {
        "score": {"1": 2.0, "2": 4.0}}

    # a targeted experiment: only the suite stage runs, and its metrics are the new ones
    out = _sh([dvc, "exp", "run", "-S", "demo.offset=10", "suite_demo"], work, env).stdout
    assert "Running stage 'suite_demo'" in out and "Running stage 'report'" not in out
    shown = json.loads(_sh([dvc, "exp", "show", "--json"], work, env).stdout)
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    data = [run["data"] for e in exps for run in e["revs"]]
    assert [d["params"]["params.yaml"]["data"]["demo"]["offset"] for d in data] == [10]
    assert data[0]["metrics"]["metrics/demo.json"]["data"]["ckpt=a"]["score"]["mean"] == 11.5
    diff = json.loads(_sh([dvc, "metrics", "diff", "--json"], work, env).stdout)
    assert diff["metrics/demo.json"]["ckpt=a.score.mean"] == {"old": 1.5, "new": 11.5, "diff": 10.0}
    assert "ckpt=a.score.std" not in diff["metrics/demo.json"]  # unchanged: not listed
    # `dvc exp diff`: the moved parameter and the moved numbers, one line each, in long form
    exp_diff = json.loads(_sh([dvc, "exp", "diff", "--json"], work, env).stdout)
    assert exp_diff["params"]["params.yaml"]["demo.offset"] == {"old": 0, "new": 10, "diff": 10}
    assert set(exp_diff["metrics"]["metrics/demo.json"]) == {"ckpt=a.score.mean", "ckpt=b.score.mean"}
    text = _sh([dvc, "exp", "diff"], work, env).stdout.splitlines()
    assert len(text) <= 8 and max(map(len, text)) <= 100, text

    # the report stage fails (an invalid result): DVC does not delete the persisted reports
    # first and `benchmark report` replaces none of them
    before = {p.name: p.read_bytes() for p in (work / "reports").iterdir()}
    assert set(before) == {"demo.md", "demo.csv", "demo.tex", "summary.json"}
    for result in (work / "results" / "demo").glob("*.json"):
        if not result.name.endswith(".job.json"):
            result.write_text('{"not": "an envelope"}')
    r = _sh([dvc, "repro", "-s", "report"], work, env, ok=False)
    assert r.returncode != 0 and "invalid results" in r.stdout + r.stderr
    assert {p.name: p.read_bytes() for p in (work / "reports").iterdir()} == before
