"""Jobs of one run that read what other jobs write wait for them: order, failures, staleness, cycles."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchutil import write_suite  # noqa: E402

from benchmark.errors import SuiteError  # noqa: E402
from benchmark.expand import Job, expand  # noqa: E402
from benchmark.locks import JobLock  # noqa: E402
from benchmark.runner import check_dependencies, find_cycle, job_dependencies, run_jobs  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402

TABLES = [{"rows": ["stage"], "metrics": ["score"]}]

# A stage of a training chain: notes "start NAME" / "end NAME" in --events, reads --resume (a file
# another stage wrote), writes "<name> run <k> (from <what it read>)" to <save_dir>/last.pt (k counts
# this stage's runs, so a re-run writes new content) and a result whose args carry what it read.
# It exits 1 when a file fail-NAME lies next to --events.
STAGE = '''
import json, os, sys, time
argv = sys.argv[1:]
a = dict(zip(argv[0::2], argv[1::2]))
name, events, out = a["--name"], a["--events"], a["--out_json"]

def event(what):
    with open(events, "a") as fh:
        fh.write(f"{what} {name}\\n")

event("start")
runs = open(events).read().splitlines().count(f"start {name}")
if os.path.exists(os.path.join(os.path.dirname(events), f"fail-{name}")):
    sys.exit(1)
read = open(a["--resume"]).read() if "--resume" in a else None
time.sleep(float(a.get("--sleep", 0)))
if "--save_dir" in a:
    os.makedirs(a["--save_dir"], exist_ok=True)
    with open(os.path.join(a["--save_dir"], "last.pt"), "w") as fh:
        fh.write(f"{name} run {runs} (from {read})")
env = {"schema_version": 1, "task": "command", "args": {"name": name, "read": read},
       "metrics": {"score": 1.0}, "provenance": {"git_rev": None, "started": "2024-01-01T00:00:00Z",
                                                 "wall_s": 0.0}}
with open(out, "w") as fh:
    json.dump(env, fh)
event("end")
'''


def _stage(tmp_path: Path, name: str, resume: str | None = None, sleep: float = 0.0) -> dict:
    """A matrix row: stage ``name`` saves into runs/<name>, resumes from runs/<resume>/last.pt."""
    row: dict = {"name": name, "save_dir": str(tmp_path / "runs" / name), "sleep": sleep}
    if resume is not None:
        row["resume"] = str(tmp_path / "runs" / resume / "last.pt")
    return row


def _jobs(tmp_path: Path, rows: dict[str, dict]) -> dict[str, Job]:
    """The suite's jobs by stage name (suite order kept by the dict)."""
    program = tmp_path / "stage.py"
    program.write_text(STAGE)
    path = write_suite(tmp_path, program=["python", str(program)], args={"events": str(tmp_path / "events.txt")},
                       matrix={"stage": rows}, tables=TABLES, inputs=["resume"], outputs=["save_dir"])
    jobs = expand(load_suite(path, tmp_path / "params.yaml"), tmp_path / "results")
    return {j.tags["stage"]: j for j in jobs}


def _run(jobs: dict[str, Job], n_jobs: int = 2) -> dict[str, str]:
    summary = run_jobs(list(jobs.values()), n_jobs=n_jobs, log=lambda s: None)
    assert [o.job.tags["stage"] for o in summary.outcomes] == list(jobs)  # suite order
    return {o.job.tags["stage"]: o for o in summary.outcomes}


def _events(tmp_path: Path) -> list[str]:
    path = tmp_path / "events.txt"
    return path.read_text().splitlines() if path.exists() else []


def _read(job: Job):
    return json.loads(job.out_json.read_text())["args"]["read"]


def _chain(tmp_path: Path) -> dict[str, Job]:
    """a -> b -> c (each resumes from the previous one's save_dir) and an unrelated, slower d."""
    return _jobs(tmp_path, {"a": _stage(tmp_path, "a", sleep=0.2), "b": _stage(tmp_path, "b", "a", sleep=0.1),
                            "c": _stage(tmp_path, "c", "b"), "d": _stage(tmp_path, "d", sleep=0.8)})


def test_consumer_starts_after_its_producer_and_reads_its_output(tmp_path):
    jobs = _jobs(tmp_path, {"producer": _stage(tmp_path, "producer", sleep=0.3),
                            "consumer": _stage(tmp_path, "consumer", "producer")})
    out = _run(jobs, n_jobs=2)
    assert {k: o.status for k, o in out.items()} == {"producer": "done", "consumer": "done"}
    events = _events(tmp_path)
    assert events.index("end producer") < events.index("start consumer")
    assert _read(jobs["consumer"]) == "producer run 1 (from None)"


def test_three_deep_chain_and_an_independent_job(tmp_path):
    jobs = _chain(tmp_path)
    out = _run(jobs, n_jobs=2)
    assert {k: o.status for k, o in out.items()} == dict.fromkeys("abcd", "done")
    ev = _events(tmp_path)
    assert ev.index("end a") < ev.index("start b") and ev.index("end b") < ev.index("start c")
    assert ev.index("start d") < ev.index("end a")  # runs beside the chain
    assert ev.index("start b") < ev.index("end d")  # b starts once a is done, not after a "wave"
    assert _read(jobs["c"]) == "b run 1 (from a run 1 (from None))"


def test_a_failed_producer_fails_its_dependents_without_touching_them(tmp_path):
    jobs = _chain(tmp_path)
    _run(jobs)
    before = {k: jobs[k].out_json.read_bytes() for k in "bc"}
    jobs["a"].out_json.unlink()
    (tmp_path / "fail-a").touch()
    out = _run(jobs)
    assert {k: o.status for k, o in out.items()} == {"a": "failed", "b": "failed", "c": "failed", "d": "skipped"}
    a, b = jobs["a"], jobs["b"]
    assert out["b"].detail == (f"not run: its input resume ({b.args['resume']}) comes from job {a.job_id} "
                               f"(stage=a), which failed")
    assert f"comes from job {b.job_id} (stage=b), which failed" in out["c"].detail
    assert {k: jobs[k].out_json.read_bytes() for k in "bc"} == before  # left as they were
    assert not list((tmp_path / "results" / "demo").glob("*.json.*-*"))  # nothing moved aside
    assert _events(tmp_path).count("start b") == 1


def test_a_rerun_producer_makes_its_consumers_stale(tmp_path):
    jobs = _chain(tmp_path)
    _run(jobs)
    assert {k: o.status for k, o in _run(jobs).items()} == dict.fromkeys("abcd", "skipped")
    jobs["a"].out_json.unlink()  # a runs again and writes new content ("a run 2")
    out = _run(jobs)
    assert {k: o.status for k, o in out.items()} == {"a": "done", "b": "done", "c": "done", "d": "skipped"}
    assert "input changed since it ran: resume" in out["b"].moved_why
    for k in "bc":
        assert len(list(jobs[k].out_json.parent.glob(f"{jobs[k].job_id}.json.stale-*"))) == 1
    assert _read(jobs["c"]) == "b run 2 (from a run 2 (from None))"
    assert _events(tmp_path).count("start d") == 1


def test_a_producer_running_elsewhere_leaves_its_consumer_locked(tmp_path):
    jobs = _jobs(tmp_path, {"a": _stage(tmp_path, "a"), "b": _stage(tmp_path, "b", "a")})
    lock = JobLock(jobs["a"].lock)
    assert lock.acquire() is None
    try:
        out = _run(jobs)
    finally:
        lock.release()
    assert {k: o.status for k, o in out.items()} == {"a": "locked", "b": "locked"}
    assert f"comes from job {jobs['a'].job_id} (stage=a), which is running elsewhere" in out["b"].detail
    assert _events(tmp_path) == []


def test_a_cycle_is_refused_before_anything_runs(tmp_path):
    jobs = _jobs(tmp_path, {"a": _stage(tmp_path, "a", "b"), "b": _stage(tmp_path, "b", "a")})
    with pytest.raises(SuiteError, match="cycle") as err:
        run_jobs(list(jobs.values()), log=lambda s: None)
    for job in jobs.values():
        assert f"{job.label} ({job.job_id})" in str(err.value)
    assert not (tmp_path / "results").exists() and not (tmp_path / "events.txt").exists()


def _job(n: int, inputs: dict | None = None, outputs: dict | None = None, **other) -> Job:
    """A hand-made job ``j<n>`` passing ``inputs`` / ``outputs`` as declared args, ``other`` undeclared."""
    args = {**(inputs or {}), **(outputs or {}), **other}
    return Job(suite="s", job_id=f"j{n}", tags={"n": n}, argv=[], out_json=Path(f"r/j{n}.json"),
               log=Path(f"r/j{n}.log"), args=args, inputs=tuple(inputs or {}), outputs=tuple(outputs or {}))


def test_dependencies_compare_whole_normalised_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    producer = _job(0, outputs={"save_dir": "runs/a"})
    cases = [
        (_job(1, inputs={"resume": "runs/a"}), {1: {0}}),  # the path itself
        (_job(1, inputs={"resume": "runs/a/deep/last.pt"}), {1: {0}}),  # under it
        (_job(1, inputs={"resume": "./runs/x/../a/last.pt"}), {1: {0}}),  # another spelling
        (_job(1, inputs={"resume": str(tmp_path / "runs/a/last.pt")}), {1: {0}}),  # absolute
        (_job(1, inputs={"resume": "runs/ab/x.pt"}), {}),  # a sibling with a common prefix
        (_job(1, inputs={"resume": "runs"}), {}),  # above it
        (_job(1, other={"resume": "runs/a/last.pt"}), {}),  # not a declared input
        (_job(1, inputs={"resume": None, "flag": True}), {}),  # not passed / not a path
    ]
    for consumer, expected in cases:
        assert job_dependencies([producer, consumer]) == expected, consumer.args
    assert job_dependencies([_job(0, other={"save_dir": "runs/a"}), _job(1, inputs={"r": "runs/a/x"})]) == {}
    # a job reading its own output is no dependency; one input may have two producers
    assert job_dependencies([_job(0, {"r": "runs/a/x"}, {"o": "runs/a"})]) == {}
    assert job_dependencies([_job(0, outputs={"o": "runs"}), _job(1, outputs={"o": "runs/a"}),
                             _job(2, inputs={"r": "runs/a/x"})]) == {2: {0, 1}}


def test_cycles_are_found_and_named():
    assert find_cycle({1: {0}, 2: {1}}) is None
    assert find_cycle({0: {1}, 1: {2}, 2: {0}}) == [0, 1, 2, 0]
    assert find_cycle({3: {0}, 0: {1}, 1: {0}}) == [0, 1, 0]
    jobs = [_job(0, {"r": "b/x"}, {"o": "a"}), _job(1, {"r": "a/x"}, {"o": "b"}), _job(2, {"r": "a/y"})]
    with pytest.raises(SuiteError, match=r"s: jobs depend on each other in a cycle .*: "
                                         r"n=0 \(j0\) -> n=1 \(j1\) -> n=0 \(j0\)"):
        check_dependencies(jobs)
