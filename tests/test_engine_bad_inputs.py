"""Bad inputs and faults at the benchmark engine's boundaries, beyond tests/test_benchmark_integrity.py:
output locations blocked by a file, a folder or a device, a disk that refuses a write, suite files
that are not UTF-8 or name too long a folder. Each gets one stderr line naming the flag or file,
a non-zero exit (2 bad input, 1 failed run) and leaves what was written before as it was."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from benchutil import envelope, write_json, write_suite  # noqa: E402

from benchmark.atomic import atomic_write_text  # noqa: E402
from benchmark.cli import main  # noqa: E402
from benchmark.expand import expand  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402

TABLES = [{"rows": ["ckpt"], "metrics": ["score"]}]


def _cli(argv, capsys) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def done(tmp_path):
    """A suite whose four results are on disk (written by hand: no job runs)."""
    path = write_suite(tmp_path, matrix={"ckpt": {"a": {"scale": 1}, "b": {"scale": 2}}},
                       seeds={"seed": [1, 2]}, tables=TABLES)
    (tmp_path / "params.yaml").write_text("{}\n")
    for job in expand(load_suite(path, tmp_path / "params.yaml"), tmp_path / "results"):
        write_json(job.out_json, envelope(metrics={"score": float(job.tags["seed"])}, args=job.args))
    (tmp_path / "afile").write_text("not a folder\n")
    os.mkfifo(tmp_path / "fifo")  # a special file (a device: /dev/full), made where a test may
    common = ["--params", tmp_path / "params.yaml", "--results-dir", tmp_path / "results"]
    return tmp_path, path, common


@pytest.mark.parametrize("argv, flag", [
    (["report", "{suite}", "--out", "{t}/afile"], "--out"),
    (["report", "{suite}", "--out", "{t}/afile/sub"], "--out"),
    (["report", "{suite}", "--out", "{t}/rep", "--summary", ""], "--summary"),
    (["report", "{suite}", "--out", "{t}/rep", "--summary", "../x.json"], "--summary"),
    (["metrics", "{suite}", "--out", "{t}/afile"], "--out"),
    (["run", "{suite}", "--no-mlflow", "--metrics", "{t}/afile"], "--metrics"),
    (["compare", "{suite}", "{t}/results", "{t}/results", "--json", "{t}/results"], "--json"),
    (["compare", "{suite}", "{t}/results", "{t}/results", "--json", "{t}/afile/c.json"], "--json"),
    (["compare", "{suite}", "{t}/results", "{t}/results", "--json", "{t}/fifo"], "--json"),
    (["fingerprint", "{t}/results", "--out", "{t}/fifo"], "--out"),
    (["fingerprint", "{t}/results", "--out", "{t}/results"], "--out"),
    (["fingerprint", "{t}/results", "--out", "{t}/afile/fp.txt"], "--out"),
])
def test_blocked_output_location_is_refused_before_anything_is_written(done, capsys, argv, flag):
    tmp_path, suite, common = done
    before = _snapshot(tmp_path)  # (a fifo is not a regular file: checked below)
    argv = [a.format(t=tmp_path, suite=suite) for a in argv]
    code, _, err = _cli(argv + (common if argv[0] not in ("compare", "fingerprint") else
                                (["--params", tmp_path / "params.yaml"] if argv[0] == "compare" else [])), capsys)
    assert code == 2
    assert _one_line(err).startswith(f"error: {flag}")
    assert _snapshot(tmp_path) == before
    assert (tmp_path / "fifo").is_fifo()


@pytest.mark.parametrize("command", ["run", "status", "validate", "report", "metrics", "accept-code", "unlock"])
def test_results_dir_that_is_a_file_is_refused(tmp_path, capsys, command):
    suite = write_suite(tmp_path, matrix={"ckpt": {"a": {"scale": 1}}}, seeds={"seed": [1]}, tables=TABLES)
    (tmp_path / "params.yaml").write_text("{}\n")
    (tmp_path / "results").write_text("x\n")
    outs = {"report": ["--out", tmp_path / "rep"], "metrics": ["--out", tmp_path / "met"], "run": ["--no-mlflow"]}
    code, _, err = _cli([command, suite, "--params", tmp_path / "params.yaml",
                         "--results-dir", tmp_path / "results", *outs.get(command, [])], capsys)
    assert code == 2 and "--results-dir" in _one_line(err) and "is a file" in err
    assert (tmp_path / "results").read_text() == "x\n"


def test_a_special_file_target_is_never_replaced(tmp_path):
    """The atomic writer refuses a target that is not a regular file (a rename would replace a
    device node such as /dev/full, and its write error never show)."""
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OSError, match="not a file"):
        atomic_write_text(tmp_path / "fifo", "x")
    assert (tmp_path / "fifo").is_fifo()
    (tmp_path / "d").mkdir()
    with pytest.raises(OSError, match="is a folder"):
        atomic_write_text(tmp_path / "d", "x")
    assert list((tmp_path / "d").iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["d", "fifo"]


def test_a_full_disk_while_writing_is_one_line_and_leaves_files(done, capsys, monkeypatch):
    """``report`` meeting ENOSPC: exit 1, one line naming the file and the cause, the old report
    files unchanged and no temp file left."""
    tmp_path, suite, common = done
    out = tmp_path / "rep"
    assert _cli(["report", suite, *common, "--out", out], capsys)[0] == 0
    before = _snapshot(out)

    def full(name):  # the temp file's data reaches the disk at fsync: refused there
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)

    import benchmark.atomic as atomic

    monkeypatch.setattr(atomic, "_fsync_file", full)
    code, _, err = _cli(["report", suite, *common, "--out", out], capsys)
    assert code == 1
    line = _one_line(err)
    assert "no space left on device" in line and str(out) in line
    assert _snapshot(out) == before  # no temp file left either


def test_read_only_results_folder_is_one_line(done, capsys):
    tmp_path, suite, common = done
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        code, _, err = _cli(["metrics", suite, *common, "--out", out], capsys)
    finally:
        out.chmod(0o755)
    assert code == 1 and "permission denied" in _one_line(err)


@pytest.mark.parametrize("content, what", [
    (b"\x00\x01\xff", "not UTF-8"),
    (b"name: \xe9t\xe9\n", "not UTF-8"),
    (b"\x00\x01", "invalid YAML"),
])
def test_suite_or_params_file_that_is_not_text(tmp_path, capsys, content, what):
    good = write_suite(tmp_path, args={"n": "${eval.n}"}, matrix={"ckpt": {"a": {"scale": 1}}}, tables=TABLES)
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    code, _, err = _cli(["validate", bad], capsys)
    assert code == 2 and _one_line(err).startswith(f"error: {bad}: ") and what in err
    code, _, err = _cli(["validate", good, "--params", bad], capsys)
    assert code == 2 and _one_line(err).startswith(f"error: {bad}: ") and what in err


def test_suite_name_too_long_for_a_folder(tmp_path, capsys):
    path = write_suite(tmp_path, name="x" * 300, fname="long.yaml", matrix={"ckpt": {"a": {"scale": 1}}},
                       tables=TABLES)
    for command in ("validate", "run", "report"):
        extra = {"run": ["--no-mlflow"], "report": ["--out", tmp_path / "rep"]}.get(command, [])
        code, _, err = _cli([command, path, "--results-dir", tmp_path / "results", *extra], capsys)
        assert code == 2 and "name" in _one_line(err) and "at most" in err
    assert not (tmp_path / "results").exists()


def _copy_results(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src, dst)


def test_compare_without_results_on_either_side_is_bad_input(done, capsys):
    """Exit 0 would say "nothing changed" of what was never compared: an empty results folder,
    or a suite that has no results in either folder, is exit 2 naming the suite."""
    tmp_path, suite, common = done
    other = write_suite(tmp_path, name="other", matrix={"ckpt": {"a": {"scale": 1}}}, tables=TABLES)
    (tmp_path / "empty").mkdir()
    params = ["--params", tmp_path / "params.yaml"]
    for argv in ([suite, tmp_path / "empty", tmp_path / "empty"],
                 [other, tmp_path / "results", tmp_path / "results"],
                 [suite, other, tmp_path / "results", tmp_path / "results"]):
        code, out, err = _cli(["compare", *argv, *params], capsys)
        assert code == 2 and "nothing to compare" in _one_line(err), (argv, out, err)
    assert _cli(["compare", suite, tmp_path / "results", tmp_path / "results", *params], capsys)[0] == 0


def test_compare_with_a_result_that_became_nan_is_a_change(done, capsys):
    """A metric that became NaN makes the result invalid; left out of the pairs, it must not
    leave the comparison at exit 0 (the remaining seeds are identical)."""
    tmp_path, suite, common = done
    _copy_results(tmp_path / "results", tmp_path / "after")
    bad = sorted(p for p in (tmp_path / "after" / "demo").glob("*.json"))[0]
    bad.write_text(bad.read_text().replace('"score": 1.0', '"score": NaN').replace('"score": 2.0', '"score": NaN'))
    params = ["--params", tmp_path / "params.yaml"]
    code, out, _ = _cli(["compare", suite, tmp_path / "results", tmp_path / "after", *params], capsys)
    assert code == 1 and "invalid result left out" in out and str(bad) in out
    code, _, _ = _cli(["compare", suite, tmp_path / "after", tmp_path / "results", *params], capsys)
    assert code == 1


@pytest.mark.parametrize("kind", ["folder", "symbolic link"])
def test_a_lock_path_that_is_not_a_file_fails_that_job_only(tmp_path, capsys, kind):
    """No runner writes a folder or a link as a lock: the run fails that job naming the path
    (exit 1) and runs the others; unlock/status refuse it (exit 2); nothing removes it. (A
    folder was 'running elsewhere', exit 3, then an unlock traceback; a dangling link failed
    the job as 'its runner elsewhere stopped', for ever, and unlock saw no lock.)"""
    path = write_suite(tmp_path, matrix={"ckpt": {"a": {"scale": 1}, "b": {"scale": 2}}}, seeds={"seed": [1]},
                       tables=TABLES)
    (tmp_path / "params.yaml").write_text("{}\n")
    jobs = expand(load_suite(path, tmp_path / "params.yaml"), tmp_path / "results")
    keep = tmp_path / "keep.txt"
    if kind == "folder":
        jobs[0].lock.mkdir(parents=True)
        keep = jobs[0].lock / "keep.txt"
    else:
        jobs[0].lock.parent.mkdir(parents=True)
        jobs[0].lock.symlink_to(tmp_path / "nowhere" / "x")
    keep.write_text("mine\n")
    common = ["--params", tmp_path / "params.yaml", "--results-dir", tmp_path / "results"]
    code, out, err = _cli(["run", path, "--no-mlflow", *common], capsys)
    assert code == 1 and "Traceback" not in err
    assert "FAILED   ckpt=a" in out and f"{jobs[0].lock}: is a {kind}" in out
    assert not jobs[0].out_json.exists() and jobs[1].out_json.exists()
    for command in ("unlock", "status"):
        code, _, err = _cli([command, path, *common], capsys)
        assert code == 2 and _one_line(err).startswith(f"error: {jobs[0].lock}: is a {kind}")
    assert keep.read_text() == "mine\n" and os.path.lexists(jobs[0].lock)


@pytest.mark.parametrize("gpus", [",", "", "0,,1", " "])
def test_run_gpus_without_ids_is_refused(tmp_path, capsys, gpus):
    path = write_suite(tmp_path, matrix={"ckpt": {"a": {"scale": 1}}}, tables=TABLES)
    code, _, err = _cli(["run", path, "--no-mlflow", "--gpus", gpus, "--results-dir", tmp_path / "results"], capsys)
    assert code == 2 and _one_line(err).startswith("error: --gpus")
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("extra", [
    {"seeds": {"seed": 100_000_000}, "root_seed": 1},  # a typo'd replicate count
    {"matrix": {f"ax{i}": {"a": 1, "b": 2} for i in range(30)}},  # 2**30 points
])
def test_a_suite_of_absurdly_many_jobs_is_refused_before_expanding(tmp_path, capsys, extra):
    """It used to expand every job first (minutes, then out of memory) before any check."""
    path = write_suite(tmp_path, **{"matrix": {"ckpt": {"a": {"scale": 1}}}, **extra},
                       tables=[{"rows": [next(iter(extra.get("matrix", {"ckpt": 0})))], "metrics": ["score"]}])
    code, _, err = _cli(["validate", path, "--results-dir", tmp_path / "results"], capsys)
    assert code == 2 and "jobs (matrix rows x seeds); at most" in _one_line(err)


def test_metrics_of_a_missing_results_folder_replace_nothing(done, capsys):
    """A wrong --results-dir used to write empty metrics ({}) over good ones, exit 0."""
    tmp_path, suite, common = done
    out = tmp_path / "met"
    assert _cli(["metrics", suite, *common, "--out", out], capsys)[0] == 0
    before = _snapshot(out)
    assert before and all(b.strip() != b"{}" for b in before.values())
    code, _, err = _cli(["metrics", suite, "--params", tmp_path / "params.yaml",
                         "--results-dir", tmp_path / "typo", "--out", out], capsys)
    assert code == 1 and str(tmp_path / "typo" / "demo") in _one_line(err)
    assert _snapshot(out) == before


@pytest.mark.parametrize("damage", [b'{"other_suite": {"n_jobs": 4}', b"[1, 2]", b"\xff\xfe"])
def test_a_damaged_report_summary_is_refused_not_started_anew(done, capsys, damage):
    """``summary.json`` holds every reported suite's entry; one that is not a JSON object (cut
    short, a list, not text) is exit 2 naming it, and no report file is written or replaced
    (starting it anew would drop the other suites' entries without a word)."""
    tmp_path, suite, common = done
    out = tmp_path / "rep"
    out.mkdir()
    (out / "summary.json").write_bytes(damage)
    code, _, err = _cli(["report", suite, *common, "--out", out], capsys)
    assert code == 2
    line = _one_line(err)
    assert str(out / "summary.json") in line and "move it aside" in line
    assert _snapshot(out) == {str(out / "summary.json"): damage}


@pytest.mark.parametrize("command", ["validate", "status", "report"])
def test_a_params_flag_naming_no_file_is_refused(done, capsys, command):
    """``--params`` given explicitly but naming nothing is a typo, even for a suite with no
    ``${...}`` reference (where it used to be ignored); left out, params.yaml may be absent."""
    tmp_path, suite, _ = done
    code, _, err = _cli([command, suite, "--params", tmp_path / "nosuch.yaml",
                         "--results-dir", tmp_path / "results", "--out", tmp_path / "rep"]
                        if command == "report" else
                        [command, suite, "--params", tmp_path / "nosuch.yaml",
                         "--results-dir", tmp_path / "results"], capsys)
    assert code == 2 and "--params" in _one_line(err) and "nosuch.yaml" in err
    assert not (tmp_path / "rep").exists()


def test_a_result_edited_after_its_job_wrote_it_is_not_reported_and_is_run_again(tmp_path, capsys):
    """Before: a metric changed by hand in a finished result was skipped as done and went into
    the report with exit 0. The job record keeps the sha256 of the result the engine accepted."""
    import json

    from benchmark.code_identity import accept_code
    from benchmark.records import reaccept_result

    path = write_suite(tmp_path, matrix={"ckpt": {"a": {"scale": 1}, "b": {"scale": 2}}},
                       seeds={"seed": [1, 2]}, tables=TABLES)
    common = ["--params", tmp_path / "params.yaml", "--results-dir", tmp_path / "results", "--no-mlflow"]
    assert _cli(["run", path, *common], capsys)[0] == 0
    jobs = expand(load_suite(path, tmp_path / "params.yaml"), tmp_path / "results")
    job = next(j for j in jobs if j.tags == {"ckpt": "b", "seed": 2})
    doc = json.loads(job.out_json.read_text())
    assert doc["metrics"]["score"] == 4.0  # fake_job: scale * seed
    doc["metrics"]["score"] = 40.0
    job.out_json.write_text(json.dumps(doc, indent=2))

    out = tmp_path / "rep"
    code, _, err = _cli(["report", path, *common[:4], "--out", out], capsys)
    assert code == 1 and "changed since its job wrote it" in err and str(job.out_json) in err
    assert not out.exists()

    code, text, _ = _cli(["run", path, *common], capsys)
    assert code == 0 and "done=1 skipped=3" in text
    assert json.loads(job.out_json.read_text())["metrics"]["score"] == 4.0
    aside = [p for p in job.out_json.parent.iterdir() if p.name.startswith(job.job_id) and "invalid" in p.name]
    assert len(aside) == 1 and json.loads(aside[0].read_text())["metrics"]["score"] == 40.0  # kept

    # the engine's own rewrite (accept-code, then its record) is still a finished result
    [(rewritten, _)] = accept_code([job], checkout=lambda module: {"sha256": "f" * 64, "files": {}})
    reaccept_result(rewritten)
    assert _cli(["run", path, *common], capsys)[1].count("skipped=4") == 1
