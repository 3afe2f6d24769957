"""A suite's `depends_on` files (not args) make its results stale when their contents change; a job
re-run because its inputs changed starts from clean outputs (the earlier ones moved aside), while a
job that never finished keeps its outputs (a resumable program carries on from them)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from benchutil import write_suite  # noqa: E402

from benchmark.expand import expand  # noqa: E402
from benchmark.runner import run_jobs  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402

# A resumable trainer: counts "epochs" in <save_dir>/state.txt, carrying on from what it finds
# there; --crash_at N exits 1 after writing epoch N (an interrupted run: no result JSON).
TRAIN = '''
import json, os, sys
a = dict(zip(sys.argv[1::2], sys.argv[2::2]))
os.makedirs(a["--save_dir"], exist_ok=True)
state = os.path.join(a["--save_dir"], "state.txt")
done = open(state).read().split() if os.path.exists(state) else []
corpus = open(a["--corpus"]).read().strip()
for epoch in range(len(done), int(a["--epochs"])):
    done.append(f"{epoch}:{corpus}")
    open(state, "w").write(" ".join(done))
    if str(epoch) == a.get("--crash_at"):
        sys.exit(1)
env = {"schema_version": 1, "task": "command", "args": {}, "metrics": {"score": float(len(done))},
       "provenance": {"git_rev": None, "started": "2024-01-01T00:00:00Z", "wall_s": 0.0}}
json.dump(env, open(a["--out_json"], "w"))
'''


def _suite(tmp_path: Path, corpus: Path, crash_at: int | None = None):
    program = tmp_path / "train.py"
    program.write_text(TRAIN)
    args = {"epochs": 3, "save_dir": str(tmp_path / "runs" / "root"), "corpus": str(corpus)}
    if crash_at is not None:
        args["crash_at"] = crash_at
    path = write_suite(tmp_path, name="roots", program=["python", str(program)], args=args,
                       outputs=["save_dir"], depends_on=[str(corpus)],
                       tables=[{"rows": [], "metrics": ["score"]}])
    return expand(load_suite(path, tmp_path / "params.yaml"), tmp_path / "results")


def _state(tmp_path: Path) -> str:
    return (tmp_path / "runs" / "root" / "state.txt").read_text()


def test_changed_dependency_reruns_from_clean_outputs_and_keeps_the_old_ones_aside(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("v1")
    jobs = _suite(tmp_path, corpus)
    assert [o.status for o in run_jobs(jobs, log=lambda s: None).outcomes] == ["done"]
    assert _state(tmp_path) == "0:v1 1:v1 2:v1"
    assert [o.status for o in run_jobs(jobs, log=lambda s: None).outcomes] == ["skipped"]
    corpus.write_text("v1")  # rewritten with the same bytes: still up to date
    assert [o.status for o in run_jobs(jobs, log=lambda s: None).outcomes] == ["skipped"]
    corpus.write_text("v2")
    [outcome] = run_jobs(jobs, log=lambda s: None).outcomes
    assert outcome.status == "done" and f"file:{corpus}" in outcome.moved_why
    assert _state(tmp_path) == "0:v2 1:v2 2:v2"  # trained from scratch, not "resumed" on v1 epochs
    [aside] = (tmp_path / "runs").glob("root.stale-*")
    assert (aside / "state.txt").read_text() == "0:v1 1:v1 2:v1"  # moved, never deleted
    assert len(list((tmp_path / "results" / "roots").glob("*.json.stale-*"))) == 1


def test_unfinished_job_keeps_its_outputs_and_resumes(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("v1")
    [outcome] = run_jobs(_suite(tmp_path, corpus, crash_at=1), log=lambda s: None).outcomes
    assert outcome.status == "failed" and _state(tmp_path) == "0:v1 1:v1"
    jobs = _suite(tmp_path, corpus)  # the same run without the crash (another job id, same folder)
    [outcome] = run_jobs(jobs, log=lambda s: None).outcomes
    assert outcome.status == "done" and _state(tmp_path) == "0:v1 1:v1 2:v1"
    assert not list((tmp_path / "runs").glob("root.stale-*"))
    result = json.loads(jobs[0].out_json.read_text())
    assert result["metrics"]["score"] == 3.0


def test_a_dependency_declared_later_makes_earlier_results_stale(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("v1")
    jobs = _suite(tmp_path, corpus)
    no_dep = [j.__class__(**{**j.__dict__, "depends_on": ()}) for j in jobs]
    assert [o.status for o in run_jobs(no_dep, log=lambda s: None).outcomes] == ["done"]
    [outcome] = run_jobs(jobs, log=lambda s: None).outcomes  # now it depends on the corpus
    assert outcome.status == "done" and f"file:{corpus}" in outcome.moved_why


def test_a_damaged_output_reruns_the_job_from_a_clean_folder_and_keeps_the_damaged_one(tmp_path):
    """Before: a declared output truncated after its job finished (a checkpoint cut short) was
    skipped as done, and its stage passed; the record now holds the sha256 of every file the
    outputs held when the result was accepted."""
    from benchmark.collect import collect

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("v1")
    jobs = _suite(tmp_path, corpus)
    assert [o.status for o in run_jobs(jobs, log=lambda s: None).outcomes] == ["done"]
    record = json.loads(jobs[0].job_json.read_text())
    state = tmp_path / "runs" / "root" / "state.txt"
    assert record["outputs_sha256"] == {
        "save_dir": {str(state): hashlib.sha256(b"0:v1 1:v1 2:v1").hexdigest()}}
    (tmp_path / "runs" / "root" / "plot.png").write_bytes(b"added later")  # new files: fine
    assert [o.status for o in run_jobs(jobs, log=lambda s: None).outcomes] == ["skipped"]

    state.write_text("0:v1 1:v1")  # cut short
    suite = load_suite(tmp_path / "roots.yaml", tmp_path / "params.yaml")
    [row] = collect(suite, jobs).rows
    assert "changed_output:save_dir" in row.flags
    [outcome] = run_jobs(jobs, log=lambda s: None).outcomes
    assert outcome.status == "done" and "output changed since the job wrote it: save_dir" in outcome.moved_why
    assert _state(tmp_path) == "0:v1 1:v1 2:v1"  # trained again from a clean folder
    [aside] = (tmp_path / "runs").glob("root.stale-*")
    assert (aside / "state.txt").read_text() == "0:v1 1:v1"  # the damaged one kept, never deleted
    assert [o.status for o in run_jobs(jobs, log=lambda s: None).outcomes] == ["skipped"]
