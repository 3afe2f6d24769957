"""`python -m benchmark status`: the lab's completion lines, state counts, missing jobs."""
from __future__ import annotations

import json

from benchutil import envelope, write_json, write_suite  # noqa: E402

from benchmark.cli import main  # noqa: E402
from benchmark.expand import expand  # noqa: E402
from benchmark.locks import JobLock  # noqa: E402
from benchmark.status import status_lines  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402


def _setup(tmp_path):
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"v1")
    path = write_suite(tmp_path, name="fewshot",
                       matrix={"method": {"scratch": {"ckpt": "none"}, "nepa": {"ckpt": str(ckpt)}},
                               "k": {"k5": 5, "k10": 10}},
                       seeds={"seed": [0, 1]}, inputs=["ckpt"],
                       tables=[{"rows": ["method", "k"], "metrics": ["score"]}])
    suite = load_suite(path, tmp_path / "params.yaml")
    return path, suite, expand(suite, tmp_path / "results"), ckpt


def _done(job, inputs=None):
    write_json(job.out_json, envelope())
    write_json(job.job_json, {"status": "done", "inputs": inputs or {}})


def test_status_counts_every_state_and_lists_missing_jobs(tmp_path):
    _, suite, jobs, ckpt = _setup(tmp_path)
    by = {(j.tags["method"], j.tags["k"], j.tags["seed"]): j for j in jobs}
    assert len(jobs) == 8
    for key in [("scratch", "k5", 0), ("scratch", "k5", 1), ("scratch", "k10", 0), ("scratch", "k10", 1),
                ("nepa", "k5", 0)]:
        _done(by[key])
    # nepa k5 seed 1: finished, but its checkpoint changed since (recorded fingerprint differs)
    _done(by[("nepa", "k5", 1)], {"ckpt": {"path": str(ckpt), "fingerprint": "sha256:old"}})
    # nepa k10 seed 0: failed last time; nepa k10 seed 1: running (lock held by this live process)
    write_json(by[("nepa", "k10", 0)].job_json, {"status": "failed", "detail": "exit 3"})
    lock = JobLock(by[("nepa", "k10", 1)].lock)
    assert lock.acquire() is None
    try:
        lines = status_lines(suite, jobs)
    finally:
        lock.release()
    stale, failed, running = by[("nepa", "k5", 1)], by[("nepa", "k10", 0)], by[("nepa", "k10", 1)]
    assert lines == [
        "fewshot: completed jobs: 5 / 8 (running/locked: 1, failed: 1, stale: 1)",
        "  completion by method:",
        "    scratch: 4/4",
        "    nepa: 1/4",
        "  completion by k:",
        "    k5: 3/4",
        "    k10: 2/4",
        "  missing jobs (3):",
        f"    stale    method=nepa k=k5 seed=1  {stale.job_id}  input changed since it ran: ckpt (re-run by the next run)",
        f"    failed   method=nepa k=k10 seed=0  {failed.job_id}  exit 3",
        f"    running  method=nepa k=k10 seed=1  {running.job_id}",
    ]
    # the list is capped; the cap says how many it left out
    capped = status_lines(suite, jobs, limit=1)
    assert capped[-2:] == [f"    stale    method=nepa k=k5 seed=1  {stale.job_id}  input changed since it ran: "
                           "ckpt (re-run by the next run)", "    ... and 2 more (`status --all` lists every one)"]


def test_status_cli_all_complete_and_nothing_run(tmp_path, capsys):
    path, suite, jobs, _ = _setup(tmp_path)
    common = ["--results-dir", str(tmp_path / "results"), "--params", str(tmp_path / "params.yaml")]
    assert main(["status", str(path), *common]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "fewshot: completed jobs: 0 / 8 (running/locked: 0, failed: 0, stale: 0)"
    assert out[1:4] == ["  completion by method:", "    scratch: 0/4", "    nepa: 0/4"]
    assert out[7] == "  missing jobs (8):" and len(out) == 16
    assert all(line.startswith("    pending  method=") for line in out[8:])
    for job in jobs:
        _done(job)
    assert main(["status", str(path), "--only", "method=nepa", *common]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["fewshot: completed jobs: 4 / 4 (running/locked: 0, failed: 0, stale: 0)",
                   "  completion by method:", "    nepa: 4/4",
                   "  completion by k:", "    k5: 2/2", "    k10: 2/2",
                   "  missing jobs (0)"]
    assert not list((tmp_path / "results").rglob("*.lock"))
    assert json.loads(jobs[0].job_json.read_text())["status"] == "done"  # status wrote nothing
