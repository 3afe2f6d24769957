"""Canary checks on the default profile: the three planted defects of suites/canary_*.yaml
(shuffled training labels, random weights in place of the pretrained checkpoint, the distance
channel zeroed in the tokens) each move their protocol's headline metric by more than 3 seed
standard deviations.

Everything runs as `make repro` runs it, at the default sizes of params.yaml: the data stages'
commands are rendered from dvc.yaml, the one pretraining root the CPAC canary needs is trained
by the pretrain suite, and the canary suites run through the engine (persistent workers,
adoption by job id, the sensitivity check). Only the stages the canaries do not need are left
out, so the shifts equal those in reports/canary_*.md after `make repro` (about 2 minutes).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc_render import render

REPO = Path(__file__).resolve().parents[1]
CANARIES = ("canary_cls", "canary_cpac", "canary_ucpr")
DATA_STAGES = ("synthesize", "preprocess_shapenet", "unpaired_split", "preprocess_scanobjectnn")


def run(cmd, cwd: Path, env: dict) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900,
                       shell=isinstance(cmd, str))
    assert r.returncode == 0, f"{cmd} failed:\n{(r.stdout + r.stderr)[-4000:]}"
    return r.stdout + r.stderr


@pytest.mark.slow
def test_each_planted_defect_moves_its_protocol_on_the_default(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name in ("params.yaml", "suites", "nepa3d"):  # mix configs are read relative to the cwd
        (tmp_path / name).symlink_to(REPO / name)
    env = dict(os.environ, PYTHONPATH=str(REPO), TQDM_DISABLE="1",
               PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    for name in DATA_STAGES:
        run(render(stages[name]["cmd"], params), tmp_path, env)
    for cmd in stages["scratch"]["cmd"]:  # the random-init checkpoints (runs/scratch, runs/scratch_qa)
        run(render(cmd, params), tmp_path, env)
    run(["python", "-m", "benchmark", "run", "suites/pretrain.yaml", "--only", "variant=shapenet_mix_nepa",
         "--executor", "pool", "--jobs", "2", "--no-mlflow"], tmp_path, env)

    suites = [f"suites/{n}.yaml" for n in CANARIES]
    run(["python", "-m", "benchmark", "run", *suites, "--executor", "pool", "--jobs", "2", "--no-mlflow"],
        tmp_path, env)
    run(["python", "-m", "benchmark", "report", *suites, "--out", "reports"], tmp_path, env)
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    checks = {n: summary[n]["sensitivity"] for n in CANARIES}
    assert all(len(c) == 1 for c in checks.values()), checks  # one defect row per protocol
    moved = {n: next(iter(c.values())) for n, c in checks.items()}
    report = "\n".join((tmp_path / "reports" / f"{n}.md").read_text().split("## Sensitivity check")[1]
                       for n in CANARIES)
    assert all(v["detected"] == 1 and (v["moved_std"] is None or v["moved_std"] > 3)  # None: sigma 0
               for v in moved.values()), f"{moved}\n{report}"
