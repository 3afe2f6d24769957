"""`python -m benchmark compare A B` where a side is a git revision or a DVC experiment name: a tiny
git repository whose commits hold hand-written metrics/demo.seeds.json files, a faked experiment
ref (refs/exps/<2>/<rest>/<name>), verdicts checked against hand computations, exit codes 0/1/2
and the one-line errors; and a results directory against a revision (the same per-seed form)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchutil import envelope, write_json, write_suite  # noqa: E402

from benchmark.cli import main  # noqa: E402
from benchmark.expand import expand  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402

T5_975 = 2.570582  # t_{5, 0.975} to 7 digits (R: qt(0.975, 5))

# base commit: row a = 1..6, row b = 2, 4, ..., 12 over seeds 1..6
BASE = {"ckpt=a": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "ckpt=b": [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]}
# next commit: row a + 0.5 on every seed (6 positive differences: p = 2/64 < 0.05, interval
# [0.5, 0.5] -> changed); row b +-0.5 alternating (sum 0: p = 1 -> within noise)
NEXT = {"ckpt=a": [1.5, 2.5, 3.5, 4.5, 5.5, 6.5], "ckpt=b": [2.5, 3.5, 6.5, 7.5, 10.5, 11.5]}
# row b's interval: 0 ± t_{5,0.975} · sd / sqrt(6), sd = sqrt(6 · 0.25 / 5)
HALF_B = T5_975 * math.sqrt(6 * 0.25 / 5) / math.sqrt(6)


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@localhost", "-C", str(repo), *args],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _seeds_doc(rows: dict[str, list[float]], *, reverse: bool = False) -> dict:
    seeds = [str(s) for s in range(1, 7)]
    order = list(zip(seeds, range(6)))[::-1] if reverse else list(zip(seeds, range(6)))
    return {"suite": "demo", "seed_arg": "seed",
            "rows": {row: {"score": {s: values[i] for s, i in order}} for row, values in rows.items()}}


def _commit(repo: Path, rows: dict[str, list[float]] | None, message: str, **kw) -> str:
    if rows is not None:
        write_json(repo / "metrics" / "demo.seeds.json", _seeds_doc(rows, **kw))
        (repo / "metrics" / "demo.json").write_text("{}")  # the summary: not read by compare
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    """c0 (no metrics) -> c1 (BASE, tag v1) -> c2 (NEXT) on main; experiment ``myexp`` = a commit
    off c1 (not on any branch) with row a = BASE (seed keys in reverse order) and row b = NEXT."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "README").write_text("demo\n")
    _commit(repo, None, "c0: no metrics yet")
    c1 = _commit(repo, BASE, "c1")
    _git(repo, "tag", "v1")
    _git(repo, "checkout", "-q", "-b", "side")
    exp = _commit(repo, {"ckpt=a": BASE["ckpt=a"], "ckpt=b": NEXT["ckpt=b"]}, "exp", reverse=True)
    _git(repo, "checkout", "-q", "main")
    _git(repo, "branch", "-q", "-D", "side")
    _git(repo, "update-ref", f"refs/exps/{c1[:2]}/{c1[2:]}/myexp", exp)
    _commit(repo, NEXT, "c2")
    return repo


def _run(repo: Path, tmp_path: Path, *argv: str) -> tuple[int, dict]:
    out = tmp_path / "cmp.json"
    if out.exists():
        out.unlink()
    rc = main(["compare", *argv, "--repo", str(repo), "--json", str(out)])
    doc = json.loads(out.read_text()) if out.exists() else {}
    items = {(i["row"], i["metric"]): i for s in doc.get("suites", {}).values() for i in s["items"]}
    return rc, items


def _check_base_vs_next(items: dict) -> None:
    a, b = items[("ckpt=a", "score")], items[("ckpt=b", "score")]
    assert a["verdict"] == "changed" and a["n"] == 6 and a["p"] == 2 / 64
    assert a["mean_a"] == 3.5 and a["mean_b"] == 4.0 and a["delta"] == pytest.approx(0.5)
    assert a["low"] == pytest.approx(0.5) and a["high"] == pytest.approx(0.5)
    assert b["verdict"] == "within noise" and b["p"] == 1.0 and b["delta"] == 0.0
    assert b["low"] == pytest.approx(-HALF_B, rel=1e-6) and b["high"] == pytest.approx(HALF_B, rel=1e-6)


def test_two_commits_one_row_changed_one_within_noise_exit_1(repo, tmp_path, capsys):
    rc, items = _run(repo, tmp_path, "HEAD~1", "HEAD")
    assert rc == 1
    assert set(items) == {("ckpt=a", "score"), ("ckpt=b", "score")}
    _check_base_vs_next(items)
    md = capsys.readouterr().out
    assert md.startswith("## demo\n") and "1 changed, 1 within noise" in md
    # a tag and --a/--b name the same sides
    rc, again = _run(repo, tmp_path, "--a", "v1", "--b", "main")
    assert rc == 1 and again == items


def test_experiment_name_paired_by_seed_value_exit_0(repo, tmp_path):
    """myexp: row a equal to c1 seed by seed (its keys written in reverse order), row b = c2's."""
    rc, items = _run(repo, tmp_path, "HEAD~1", "myexp")
    assert rc == 0
    assert items[("ckpt=a", "score")]["verdict"] == "identical" and items[("ckpt=a", "score")]["n"] == 6
    assert items[("ckpt=b", "score")]["verdict"] == "within noise"
    assert json.loads((tmp_path / "cmp.json").read_text())["b"] == "myexp"
    rc, items = _run(repo, tmp_path, "myexp", "HEAD")  # row a moved by +0.5 against the experiment
    assert rc == 1 and items[("ckpt=a", "score")]["verdict"] == "changed"
    assert items[("ckpt=b", "score")]["verdict"] == "identical"


def test_vanished_row_is_only_in_a_exit_1(repo, tmp_path):
    _commit(repo, {"ckpt=a": NEXT["ckpt=a"]}, "c3: row b gone")
    rc, items = _run(repo, tmp_path, "HEAD~1", "HEAD")
    assert rc == 1
    assert items[("ckpt=a", "score")]["verdict"] == "identical"
    assert items[("ckpt=b", "score")]["verdict"] == "only in A" and items[("ckpt=b", "score")]["mean_a"] == 7.0


def test_unknown_revision_and_revision_without_metrics_exit_2_one_line(repo, tmp_path, capsys):
    rc, _ = _run(repo, tmp_path, "HEAD", "nosuch")
    err = capsys.readouterr().err
    assert rc == 2 and err == "error: B nosuch: not a results directory, git revision or DVC experiment name\n"
    rc, _ = _run(repo, tmp_path, "--a", "HEAD~1", "--b", "HEAD~9")
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: --b HEAD~9: not a results directory") and err.count("\n") == 1
    c0 = _git(repo, "rev-parse", "HEAD~2")
    rc, _ = _run(repo, tmp_path, "HEAD~2", "HEAD")
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: HEAD~2 (git revision, {c0[:10]}): no metrics/*.seeds.json at that revision")


def test_ambiguous_experiment_name_exit_2(repo, tmp_path, capsys):
    head = _git(repo, "rev-parse", "HEAD")
    _git(repo, "update-ref", "refs/exps/ab/cdef/dup", head)
    _git(repo, "update-ref", "refs/exps/12/3456/dup", head)
    rc, _ = _run(repo, tmp_path, "HEAD", "dup")
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "several baselines" in err and "refs/exps/ab/cdef/dup" in err
    _git(repo, "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/dup", head)  # one based on HEAD wins
    rc, items = _run(repo, tmp_path, "HEAD", "dup")
    assert rc == 0 and {i["verdict"] for i in items.values()} == {"identical"}


def test_results_directory_against_a_revision(repo, tmp_path, capsys):
    """A: a results directory holding c1's numbers (its job ids are whatever expand gives); B: c2."""
    path = write_suite(tmp_path, name="demo", matrix={"ckpt": {"a": {"scale": 1}, "b": {"scale": 2}}},
                       seeds={"seed": list(range(1, 7))}, tables=[{"rows": ["ckpt"], "metrics": ["score"]}])
    suite = load_suite(path, tmp_path / "params.yaml")
    for job in expand(suite, tmp_path / "A"):
        score = BASE[f"ckpt={job.tags['ckpt']}"][job.tags["seed"] - 1]
        write_json(job.out_json, envelope(metrics={"score": score}, args=job.args))
    params = ["--params", str(tmp_path / "params.yaml")]
    rc, items = _run(repo, tmp_path, str(path), str(tmp_path / "A"), "HEAD", *params)
    assert rc == 1
    _check_base_vs_next(items)
    rc, items = _run(repo, tmp_path, str(path), str(tmp_path / "A"), "v1", *params)
    assert rc == 0 and {i["verdict"] for i in items.values()} == {"identical"}
    # a results directory needs the suite files
    capsys.readouterr()
    rc, _ = _run(repo, tmp_path, str(tmp_path / "A"), "HEAD")
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "needs the suite files" in err


def test_cli_subprocess_positional_revisions_in_the_repository(repo):
    """`python -m benchmark compare HEAD~1 HEAD` run inside the repository (no --repo, no suite)."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "benchmark", "compare", "HEAD~1", "HEAD"], cwd=repo,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 1, done.stderr
    assert "| ckpt=a | score    | 3.5000   | 4.0000   | +0.5000   | [+0.5000, +0.5000] | 0.03125 | 6   | changed" \
        in done.stdout


def test_no_seed_axis_pairs_the_single_values_and_bad_file_is_one_line(repo, tmp_path, capsys):
    """seed_arg null: one value per row on each side, paired whatever its key; a malformed
    seeds file is a one-line error naming revision and path."""
    write_json(repo / "metrics" / "demo.seeds.json",
               {"suite": "demo", "seed_arg": None, "rows": {"all": {"score": {"null": 1.0}}}})
    _commit(repo, None, "c3: no seed axis")
    write_json(repo / "metrics" / "demo.seeds.json",
               {"suite": "demo", "seed_arg": None, "rows": {"all": {"score": {"": 1.25}}}})
    _commit(repo, None, "c4")
    rc, items = _run(repo, tmp_path, "HEAD~1", "HEAD")
    assert rc == 1 and items[("all", "score")]["verdict"] == "changed" and items[("all", "score")]["delta"] == 0.25
    assert items[("all", "score")]["note"] == "n=1, no noise estimate"
    write_json(repo / "metrics" / "demo.seeds.json", {"suite": "demo", "rows": [1, 2]})
    _commit(repo, None, "c5: malformed")
    rc, _ = _run(repo, tmp_path, "HEAD~1", "HEAD")
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: HEAD:metrics/demo.seeds.json: expected")
