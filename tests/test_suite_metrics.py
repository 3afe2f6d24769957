"""Per-suite dvc metrics files (`python -m benchmark metrics`, `run --metrics DIR`): the format
`metrics/<suite>.json` {row: {metric: {mean, std, n}}} (6 significant digits) and
`metrics/<suite>.seeds.json` (every seed at full precision), rows as benchmark.compare labels
them, checked against hand computations; invalid results are left out as compare leaves them."""
from __future__ import annotations

import json
from pathlib import Path

from benchutil import envelope, write_json, write_suite  # noqa: E402

from benchmark.cli import main  # noqa: E402
from benchmark.compare import row_label  # noqa: E402
from benchmark.expand import expand  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402
from benchmark.suite_metrics import round_sig  # noqa: E402


def _suite(tmp_path: Path, seeds=(1, 2, 3)):
    path = write_suite(tmp_path, name="met", matrix={"ckpt": {"a": {"scale": 1}, "b": {"scale": 2}, "c": {"scale": 3}},
                                                     "q": {"plain": {"offset": 0}}},
                       seeds={"seed": list(seeds)} if seeds else None,
                       tables=[{"rows": ["ckpt"], "cols": ["q"], "metrics": ["score", "loss"]}])
    return path, load_suite(path, tmp_path / "params.yaml")


def _metrics(tmp_path: Path, path: Path, *extra: str) -> tuple[dict, dict]:
    rc = main(["metrics", str(path), "--out", str(tmp_path / "metrics"), "--results-dir", str(tmp_path / "results"),
               "--params", str(tmp_path / "params.yaml"), *extra])
    assert rc == 0
    return (json.loads((tmp_path / "metrics" / "met.json").read_text()),
            json.loads((tmp_path / "metrics" / "met.seeds.json").read_text()))


def test_means_stds_n_and_seeds_match_hand_computation(tmp_path, capsys):
    path, suite = _suite(tmp_path)
    scores = {"a": [1 / 3, 2 / 3, 1.0], "b": [2.0, 4.0, None], "c": [7.0, None, None]}
    jobs = expand(suite, tmp_path / "results")
    for job in jobs:
        score = scores[job.tags["ckpt"]][job.tags["seed"] - 1]
        if score is not None:
            write_json(job.out_json, envelope(metrics={"score": score, "loss": 10 - score, "other": 1.0},
                                              args=job.args))
    bad = next(j for j in jobs if j.tags["ckpt"] == "c" and j.tags["seed"] == 2)
    write_json(bad.out_json, {"not": "an envelope"})  # invalid: left out, as compare leaves it out
    means, seeds = _metrics(tmp_path, path)
    assert [row_label(j, "seed") for j in jobs][:1] == ["ckpt=a q=plain"]
    assert means == {
        # mean 2/3, sample std 1/3, rounded to 6 significant digits
        "ckpt=a q=plain": {"score": {"mean": 0.666667, "std": 0.333333, "n": 3},
                           "loss": {"mean": 9.33333, "std": 0.333333, "n": 3}},
        "ckpt=b q=plain": {"score": {"mean": 3.0, "std": 1.41421, "n": 2},  # sqrt(2)
                           "loss": {"mean": 7.0, "std": 1.41421, "n": 2}},
        "ckpt=c q=plain": {"score": {"mean": 7.0, "std": None, "n": 1},  # one seed: no std
                           "loss": {"mean": 3.0, "std": None, "n": 1}},
    }  # only the tables' metrics ("other" is not a headline metric)
    assert seeds == {"suite": "met", "seed_arg": "seed", "rows": {
        "ckpt=a q=plain": {"score": {"1": 1 / 3, "2": 2 / 3, "3": 1.0},  # full precision
                           "loss": {"1": 10 - 1 / 3, "2": 10 - 2 / 3, "3": 9.0}},
        "ckpt=b q=plain": {"score": {"1": 2.0, "2": 4.0}, "loss": {"1": 8.0, "2": 6.0}},
        "ckpt=c q=plain": {"score": {"1": 7.0}, "loss": {"1": 3.0}}}}
    out = capsys.readouterr()
    assert "met: metrics -> " in out.out and "(3 rows; 1 invalid result(s) left out)" in out.out
    assert str(bad.out_json) in out.err
    # stable bytes: key-sorted, indented; a second run writes the same file
    before = (tmp_path / "metrics" / "met.json").read_bytes()
    _metrics(tmp_path, path)
    assert (tmp_path / "metrics" / "met.json").read_bytes() == before
    assert before.decode().splitlines()[1] == '  "ckpt=a q=plain": {'


def test_round_sig():
    assert round_sig(0.123456789) == 0.123457 and round_sig(123456789.0) == 123457000.0
    assert round_sig(1.0000004e-7) == 1e-7 and round_sig(0.0) == 0.0 and round_sig(-2 / 3) == -0.666667


def test_no_seed_arg_one_job_a_row_keyed_null(tmp_path):
    path, suite = _suite(tmp_path, seeds=None)
    for job in expand(suite, tmp_path / "results"):
        write_json(job.out_json, envelope(metrics={"score": 1.5, "loss": 8.5}, args=job.args))
    means, seeds = _metrics(tmp_path, path)
    assert means["ckpt=b q=plain"] == {"score": {"mean": 1.5, "std": None, "n": 1},
                                       "loss": {"mean": 8.5, "std": None, "n": 1}}
    assert seeds["seed_arg"] is None and seeds["rows"]["ckpt=a q=plain"]["score"] == {"null": 1.5}


def test_no_results_writes_empty_files(tmp_path):
    """An empty results folder: empty files (no results folder at all: nothing written, exit 1,
    tests/test_engine_bad_inputs.py)."""
    path, _ = _suite(tmp_path)
    (tmp_path / "results" / "met").mkdir(parents=True)
    means, seeds = _metrics(tmp_path, path)
    assert means == {} and seeds == {"suite": "met", "seed_arg": "seed", "rows": {}}


def test_run_writes_the_metrics_files_of_all_results(tmp_path, capsys):
    """`run --metrics DIR` writes what `metrics` writes, from all of the suite's results (also
    with --only: the files describe the suite, not the jobs this run ran)."""
    path, suite = _suite(tmp_path, seeds=(1, 2))
    common = ["--results-dir", str(tmp_path / "results"), "--params", str(tmp_path / "params.yaml")]
    assert main(["run", str(path), "--no-mlflow", "--jobs", "2", *common]) == 0
    assert main(["run", str(path), "--no-mlflow", "--only", "ckpt=a", "--metrics", str(tmp_path / "m"),
                 *common]) == 0
    assert "met: metrics -> " in capsys.readouterr().out
    means, _ = _metrics(tmp_path, path)
    assert json.loads((tmp_path / "m" / "met.json").read_text()) == means
    assert (tmp_path / "m" / "met.seeds.json").read_bytes() == (tmp_path / "metrics" / "met.seeds.json").read_bytes()
    # fake_job: score = scale * seed -> ckpt c: 3, 6
    assert means["ckpt=c q=plain"]["score"] == {"mean": 4.5, "std": 2.12132, "n": 2}


def test_unfinished_run_leaves_the_metrics_files_as_they_were(tmp_path, capsys):
    """A run with a failed job writes no metrics: the last good files stay byte for byte (a
    partial table used to replace them, and `dvc metrics diff` showed rows vanishing)."""
    common = ["--results-dir", str(tmp_path / "results"), "--params", str(tmp_path / "params.yaml"),
              "--no-mlflow", "--metrics", str(tmp_path / "m")]
    path, _ = _suite(tmp_path, seeds=(1,))
    assert main(["run", str(path), *common]) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}
    assert set(before) == {"met.json", "met.seeds.json"}
    path = write_suite(tmp_path, name="met", matrix={"ckpt": {"a": {"scale": 1}, "z": {"fail": True}},
                                                     "q": {"plain": {"offset": 0}}}, seeds={"seed": [1]},
                       tables=[{"rows": ["ckpt"], "cols": ["q"], "metrics": ["score", "loss"]}])
    capsys.readouterr()
    assert main(["run", str(path), *common]) == 1
    assert {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()} == before
    assert "left as it was" in capsys.readouterr().out
