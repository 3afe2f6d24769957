"""Two concurrent `python -m benchmark run` of the same suite run every job exactly once."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchutil import write_suite  # noqa: E402

from benchmark.expand import expand  # noqa: E402
from benchmark.results import load_result  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_concurrent_runners_run_each_job_once(tmp_path):
    shared = tmp_path / "ran.txt"
    path = write_suite(tmp_path, args={"append": str(shared), "sleep": 0.2},
                       matrix={"ckpt": {"a": {"scale": 1}, "b": {"scale": 2}, "c": {"scale": 3}}},
                       seeds={"seed": [1, 2, 3]}, tables=[{"rows": ["ckpt"], "metrics": ["score"]}])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "benchmark", "run", str(path), "--no-mlflow", "--jobs", "3",
           "--params", str(tmp_path / "params.yaml")]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    # a runner that ends while the other still runs some jobs exits 3 (holes: running elsewhere)
    assert sorted(p.returncode for p in procs)[0] == 0, outs
    assert all(p.returncode == 0 or "running elsewhere (held by live locks" in o for p, o in zip(procs, outs)), outs
    jobs = expand(load_suite(path, tmp_path / "params.yaml"), tmp_path / "results")
    ran = shared.read_text().split()
    assert sorted(ran) == sorted(j.job_id for j in jobs)  # every job exactly once
    for job in jobs:
        load_result(job.out_json, "command")
        assert not job.lock.exists()
    done = sum(int(line.split("done=")[1].split()[0]) for o in outs for line in o.splitlines()
               if line.startswith("demo: done="))
    assert done == len(jobs)
