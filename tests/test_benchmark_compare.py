"""`python -m benchmark compare`: two planted results directories, paired by job id (seed); verdicts,
sign-flip p and t interval checked against hand computations; exit codes 0 / 1 / 2."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchutil import envelope, write_json, write_suite  # noqa: E402

from benchmark.cli import main  # noqa: E402
from benchmark.compare import sign_flip_p, t_interval  # noqa: E402
from benchmark.expand import expand  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
T_975 = {3: 3.182446305284263, 4: 2.7764451051977987, 5: 2.5705818366147395}  # t_{dof, 0.975}, tables


def _suite(tmp_path: Path, n_seeds: int, name: str = "cmp"):
    """Two rows (ckpt a, b) x seeds 1..n_seeds; table metrics score and loss."""
    path = write_suite(tmp_path, name=name, matrix={"ckpt": {"a": {"scale": 1}, "b": {"scale": 2}}},
                       seeds={"seed": list(range(1, n_seeds + 1))},
                       tables=[{"rows": ["ckpt"], "metrics": ["score", "loss"]}])
    return path, load_suite(path, tmp_path / "params.yaml")


def _plant(suite, root: Path, scores: dict[str, list[float]]) -> None:
    """Write a valid result for every (row, seed) in ``scores`` (score; loss = 10 - score) at the
    path expand() gives under ``root``; rows absent from ``scores`` get no result."""
    for job in expand(suite, root):
        values = scores.get(job.tags["ckpt"])
        if values is not None:
            score = values[job.tags["seed"] - 1]
            write_json(job.out_json, envelope(metrics={"score": score, "loss": 10 - score}, args=job.args))


def _compare(tmp_path: Path, path: Path, *extra: str) -> tuple[int, dict]:
    out = tmp_path / "cmp.json"
    rc = main(["compare", str(path), "--a", str(tmp_path / "A"), "--b", str(tmp_path / "B"),
               "--params", str(tmp_path / "params.yaml"), "--json", str(out), *extra])
    doc = json.loads(out.read_text())
    return rc, {(i["row"], i["metric"]): i for i in doc["suites"]["cmp"]["items"]}


BASE = {"a": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "b": [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]}


def _shifted(n: int, shift: float) -> dict[str, list[float]]:
    return {"a": [v + shift for v in BASE["a"][:n]], "b": BASE["b"][:n]}


def test_identical_directories_exit_0_every_verdict_identical(tmp_path, capsys):
    path, suite = _suite(tmp_path, 3)
    _plant(suite, tmp_path / "A", BASE)
    _plant(suite, tmp_path / "B", BASE)
    rc, items = _compare(tmp_path, path)
    assert rc == 0
    assert set(items) == {("ckpt=a", "score"), ("ckpt=a", "loss"), ("ckpt=b", "score"), ("ckpt=b", "loss")}
    assert {i["verdict"] for i in items.values()} == {"identical"}
    assert items[("ckpt=b", "score")]["mean_a"] == 4.0 and items[("ckpt=b", "score")]["n"] == 3
    assert "4 identical" in capsys.readouterr().out


def test_constant_shift_five_seeds_exact_p_2_of_32_within_noise_at_005(tmp_path, capsys):
    """B = A + 0.5 on every seed of row a: all 5 differences positive, so only the all-plus and
    all-minus sign vectors reach the observed |sum|: p = 2/32 = 0.0625 >= 0.05 -> within noise,
    although sd = 0 makes the interval [0.5, 0.5]; at alpha 0.1 the same row is changed."""
    path, suite = _suite(tmp_path, 5)
    _plant(suite, tmp_path / "A", _shifted(5, 0.0))
    _plant(suite, tmp_path / "B", _shifted(5, 0.5))
    rc, items = _compare(tmp_path, path)
    score = items[("ckpt=a", "score")]
    assert score["p"] == 2 / 32 and score["n"] == 5
    assert score["mean_a"] == 3.0 and score["mean_b"] == 3.5 and score["delta"] == pytest.approx(0.5)
    assert score["low"] == pytest.approx(0.5) and score["high"] == pytest.approx(0.5)
    assert score["verdict"] == "within noise"
    assert items[("ckpt=a", "loss")]["verdict"] == "within noise"  # loss moved by -0.5, same p
    assert items[("ckpt=b", "score")]["verdict"] == "identical"
    assert rc == 0
    md = capsys.readouterr().out
    assert "| ckpt=a | score    | 3.0000   | 3.5000   | +0.5000   | [+0.5000, +0.5000] | 0.0625 | 5   | within noise |" in md
    rc, items = _compare(tmp_path, path, "--alpha", "0.1")
    assert rc == 1 and items[("ckpt=a", "score")]["verdict"] == "changed"


def test_constant_shift_six_seeds_p_2_of_64_changed_exit_1(tmp_path):
    path, suite = _suite(tmp_path, 6)
    _plant(suite, tmp_path / "A", _shifted(6, 0.0))
    _plant(suite, tmp_path / "B", _shifted(6, 0.5))
    rc, items = _compare(tmp_path, path)
    assert rc == 1
    assert items[("ckpt=a", "score")]["p"] == 2 / 64 == 0.03125
    assert items[("ckpt=a", "score")]["verdict"] == "changed"
    assert items[("ckpt=a", "loss")]["verdict"] == "changed" and items[("ckpt=a", "loss")]["delta"] == pytest.approx(-0.5)
    assert items[("ckpt=b", "score")]["verdict"] == "identical"


def test_noisy_difference_is_within_noise_with_textbook_interval(tmp_path):
    """Differences +0.1, -0.1, ... (n = 6): mean 0, so every sign vector reaches |sum| = 0: p = 1;
    interval 0 ± t_{5,0.975} · sd / sqrt(6) with sd = sqrt(6 · 0.01 / 5)."""
    path, suite = _suite(tmp_path, 6)
    noise = [0.1, -0.1, 0.1, -0.1, 0.1, -0.1]
    _plant(suite, tmp_path / "A", BASE)
    _plant(suite, tmp_path / "B", {"a": [v + d for v, d in zip(BASE["a"], noise)], "b": BASE["b"]})
    rc, items = _compare(tmp_path, path)
    score = items[("ckpt=a", "score")]
    half = T_975[5] * math.sqrt(6 * 0.01 / 5) / math.sqrt(6)
    assert rc == 0 and score["verdict"] == "within noise" and score["p"] == 1.0
    # the planted differences are +-0.1 up to float rounding (1.1 - 1.0 != 0.1)
    assert score["low"] == pytest.approx(-half, rel=1e-8) and score["high"] == pytest.approx(half, rel=1e-8)


def test_t_interval_matches_textbook_formula():
    diffs = [0.3, 0.5, 0.4, 0.6, 0.2]  # mean 0.4; squared deviations 0.01+0.01+0+0.04+0.04 = 0.1
    sd = math.sqrt(0.1 / 4)
    low, high = t_interval(diffs)
    assert low == pytest.approx(0.4 - T_975[4] * sd / math.sqrt(5), rel=1e-12)
    assert high == pytest.approx(0.4 + T_975[4] * sd / math.sqrt(5), rel=1e-12)


def test_sign_flip_p_exact_and_monte_carlo():
    # [1, 2, -0.5]: observed |sum| 2.5; the 8 signed sums are ±2.5, ±3.5, ±1.5, ±0.5 -> 4/8 reach it
    assert sign_flip_p([1.0, 2.0, -0.5]) == 0.5
    assert sign_flip_p([0.5] * 5) == 2 / 32
    # n = 20 > 16: seeded Monte Carlo, (1 + hits) / (1 + 10000); exact p is 2 / 2^20
    p = sign_flip_p([0.5] * 20)
    assert p == sign_flip_p([0.5] * 20) and 1 / 10001 <= p <= 3 / 10001


def test_row_missing_from_b_is_only_in_a_and_exit_1(tmp_path, capsys):
    path, suite = _suite(tmp_path, 3)
    _plant(suite, tmp_path / "A", BASE)
    _plant(suite, tmp_path / "B", {"a": BASE["a"]})
    rc, items = _compare(tmp_path, path)
    assert rc == 1  # a vanished row fails CI like a changed number
    assert items[("ckpt=b", "score")]["verdict"] == "only in A"
    assert items[("ckpt=b", "score")]["mean_a"] == 4.0 and items[("ckpt=b", "score")]["mean_b"] is None
    assert items[("ckpt=a", "score")]["verdict"] == "identical"
    assert "2 only in A" in capsys.readouterr().out


def test_one_seed_differs_is_changed_without_noise_estimate(tmp_path, capsys):
    path, suite = _suite(tmp_path, 1)
    _plant(suite, tmp_path / "A", {"a": [1.0], "b": [2.0]})
    _plant(suite, tmp_path / "B", {"a": [1.0], "b": [2.0 + 1e-6]})
    rc, items = _compare(tmp_path, path)
    assert rc == 1
    assert items[("ckpt=b", "score")]["verdict"] == "changed"
    assert items[("ckpt=b", "score")]["note"] == "n=1, no noise estimate"
    assert items[("ckpt=a", "score")]["verdict"] == "identical"
    assert "changed (n=1, no noise estimate)" in capsys.readouterr().out


def test_bad_input_exit_2_one_line(tmp_path, capsys):
    path, suite = _suite(tmp_path, 2)
    _plant(suite, tmp_path / "A", BASE)
    args = ["compare", str(path), "--params", str(tmp_path / "params.yaml"), "--a", str(tmp_path / "A")]
    assert main([*args, "--b", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"error: --b {tmp_path / 'nowhere'}: not a results directory, git revision "
                           "or DVC experiment name")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntask: command\nprogram: [python, x.py]\nbogus: 1\n")
    assert main(["compare", str(bad), "--a", str(tmp_path / "A"), "--b", str(tmp_path / "A"),
                 "--params", str(tmp_path / "params.yaml")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "bogus" in err and "Traceback" not in err
    assert main([*args, "--b", str(tmp_path / "A"), "--alpha", "1.5"]) == 2


def test_cli_subprocess_exit_1_when_changed(tmp_path):
    """`python -m benchmark compare` end to end (exit 0 and 2 are checked through main() above)."""
    path, suite = _suite(tmp_path, 6)
    _plant(suite, tmp_path / "A", _shifted(6, 0.0))
    _plant(suite, tmp_path / "B", _shifted(6, 0.5))
    base = [sys.executable, "-m", "benchmark", "compare", str(path), "--params", str(tmp_path / "params.yaml")]
    changed = subprocess.run([*base, "--a", str(tmp_path / "A"), "--b", str(tmp_path / "B")],
                             cwd=ROOT, capture_output=True, text=True)
    assert changed.returncode == 1, changed.stderr
    assert "| changed" in changed.stdout and "2 changed, 2 identical" in changed.stdout
