"""A job stopped by SIGTERM/SIGINT is INTERRUPTED (not "FAILED exit -15") in the runner's lines,
its record and ``status``; the run exits non-zero. Finish lines carry the suite's ETA; the
console script names itself."""
from __future__ import annotations

import json
from pathlib import Path

from benchutil import FAKE_JOB, write_suite  # noqa: E402

from benchmark.cli import build_parser, main, prog_name  # noqa: E402
from benchmark.expand import expand  # noqa: E402
from benchmark.runner import _judge, suite_eta  # noqa: E402
from benchmark.status import status_lines  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402

TABLES = [{"rows": ["ckpt"], "metrics": ["score"]}]

#: fake_job.py, except that ``--term`` makes the job's process send itself SIGTERM
TERM_JOB = f"""import os, signal, sys
if "--term" in sys.argv:
    os.kill(os.getpid(), signal.SIGTERM)
exec(compile(open({str(FAKE_JOB)!r}).read(), {str(FAKE_JOB)!r}, "exec"))
"""


def test_sigterm_job_is_interrupted_and_the_run_exits_1(tmp_path, capsys):
    script = tmp_path / "term_job.py"
    script.write_text(TERM_JOB)
    path = write_suite(tmp_path, matrix={"ckpt": {"a": {"scale": 1}, "b": {"scale": 2, "term": True}}},
                       tables=TABLES)
    doc = path.read_text().replace(str(FAKE_JOB), str(script))
    path.write_text(doc)
    args = ["--no-mlflow", "--results-dir", str(tmp_path / "results"), "--params", str(tmp_path / "params.yaml")]
    rc = main(["run", str(path), *args])
    out, err = capsys.readouterr()
    assert rc == 1
    lines = out.splitlines()
    interrupted = [line for line in lines if "INTERRUPTED" in line]
    assert len(interrupted) == 1 and "SIGTERM (exit -15)" in interrupted[0], out
    assert "FAILED" not in out and "exit -15" not in out.replace("SIGTERM (exit -15)", "")
    assert "interrupted=1" in out and "failed=0" in out
    assert "1 interrupted" in err
    suite = load_suite(path, tmp_path / "params.yaml")
    jobs = expand(suite, tmp_path / "results")
    term = next(j for j in jobs if j.tags.get("ckpt") == "b")
    record = json.loads(term.job_json.read_text())
    assert record["status"] == "interrupted" and record["returncode"] == -15
    assert not term.lock.exists()
    text = "\n".join(status_lines(suite, jobs, limit=None))
    assert "interrupted: SIGTERM (exit -15)" in text, text


def test_interrupt_exit_statuses():
    for rc, name in ((-15, "SIGTERM"), (-2, "SIGINT"), (143, "SIGTERM"), (130, "SIGINT")):
        status, detail, _ = _judge(None, rc, None)
        assert (status, detail) == ("interrupted", f"{name} (exit {rc})")


def test_suite_eta():
    assert suite_eta([], 5, 1) == ""
    assert suite_eta([60.0], 0, 1) == ""
    assert suite_eta([30.0, 90.0], 10, 2) == "~5m"  # mean 60 s x 10 left / 2 slots
    assert suite_eta([10.0], 3, 1) == "~30s"
    assert suite_eta([3600.0], 4, 1) == "~4.0h"


def test_finish_lines_carry_done_total_and_eta(tmp_path, capsys):
    path = write_suite(tmp_path, matrix={"ckpt": {"a": {"scale": 1}, "b": {"scale": 2}}},
                       seeds={"seed": [1, 2]}, tables=TABLES)
    assert main(["run", str(path), "--no-mlflow", "--results-dir", str(tmp_path / "results"),
                 "--params", str(tmp_path / "params.yaml")]) == 0
    done = [line for line in capsys.readouterr().out.splitlines() if " done " in line]
    assert [line.split("]")[0] for line in done] == ["[1/4", "[2/4", "[3/4", "[4/4"]
    assert all("  ETA ~" in line for line in done[:3]) and "ETA" not in done[3]


def test_console_script_names_itself():
    assert prog_name("/venv/bin/nepa3d-bench") == "nepa3d-bench"
    assert prog_name("/repo/benchmark/__main__.py") == "python -m benchmark"
    assert build_parser().prog in ("python -m benchmark", "nepa3d-bench")
    scripts = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert 'nepa3d-bench = "benchmark.cli:main"' in scripts
