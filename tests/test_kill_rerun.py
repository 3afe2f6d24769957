"""kill -9 at random moments, then the same command again: the result is the uninterrupted run's.

For (a) ``finetune_cls`` (with ``--save_dir``) and (b) the CPAC evaluator, on tiny planted data:
an uninterrupted run gives the reference result and its timeline; the command is then started
afresh in the same places and killed (SIGKILL) at seeded random moments inside the measured
work window (from the process's first output line, imports done, to the moment its result file
appeared), each kill followed by the same command again, and the last run finishes. After every
kill a result file present must be the whole reference result (a half-written file that parses,
or one that does not, fails); at the end the result JSON equals the reference apart from
wall-clock timings (provenance ``started`` / ``wall_s``, per-epoch ``seconds``), and the
fine-tuned weights are ``torch.equal`` to the reference's. Pretraining, preprocessing and the
benchmark runner have their own kill tests (test_train, test_preprocess,
test_benchmark_integrity).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nepa3d.utils.ckpt import load_checkpoint
from planted import tiny_checkpoint, write_planted

REPO = Path(__file__).resolve().parents[1]
SEED = 13
KILLS = 2
#: wall-clock fields: the only ones an interrupted and an uninterrupted run may differ in
TIMINGS = ("started", "wall_s")
ENV = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_DISABLE="1", PYTHONPATH=str(REPO))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("kill_data")
    write_planted(d / "scan", "train", 12, seed=1, scan=True)
    write_planted(d / "scan", "test", 6, seed=2, scan=True, first=12)
    write_planted(d / "shapes", "eval", 16, seed=3)
    write_planted(d / "shapes", "train_udf", 16, seed=4, first=16)
    tiny_checkpoint(d / "ckpt.pt")
    return d


def comparable(result: dict) -> str:
    """The result JSON without its wall-clock timings, as canonical text."""
    out = json.loads(json.dumps(result))
    for key in TIMINGS:
        out["provenance"].pop(key, None)
    for rec in out.get("history", []):
        rec.pop("seconds", None)
    return json.dumps(out, sort_keys=True)


def start(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as fh:
        return subprocess.Popen([sys.executable, "-m", *argv], cwd=REPO, env=ENV, stdout=fh,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def timed_run(argv: list[str], log: Path, out_json: Path) -> tuple[float, float]:
    """Run to the end (exit 0). -> seconds from the start to its first output line and to the
    moment ``out_json`` appeared: the window in which it works"""
    log.unlink(missing_ok=True)
    t0, first, written = time.time(), None, None
    proc = start(argv, log)
    while proc.poll() is None:
        now = time.time() - t0
        if first is None and log.stat().st_size > 0:
            first = now
        if written is None and out_json.exists():
            written = now
        time.sleep(0.005)
    assert proc.returncode == 0, log.read_text()[-2000:]
    end = time.time() - t0
    written = end if written is None else written
    return min(written, end if first is None else first), written


def run_killed(argv: list[str], log: Path, delay: float) -> bool:
    """Start the command and SIGKILL it ``delay`` s later; False if it had ended by then."""
    proc = start(argv, log)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def kill_moments(start_s: float, end_s: float) -> list[float]:
    """KILLS seeded random moments in the reference's work window [start_s, end_s]."""
    rng = random.Random(SEED)
    return sorted(rng.uniform(start_s, end_s) for _ in range(KILLS))


def assert_whole_or_absent(out_json: Path, reference: str) -> bool:
    """A result file left by a killed run is the whole reference result. -> whether one exists"""
    if not out_json.exists():
        return False
    assert comparable(json.loads(out_json.read_text())) == reference, "a partial result survived"
    return True


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def kill_and_rerun(argv: list[str], out_json: Path, outputs: list[Path], log: Path,
                   check_state=lambda ref=None: None) -> tuple[str, list[tuple[float, bool, bool]]]:
    """Reference run, then fresh outputs, KILLS kills each followed by a rerun, a final run.
    -> (reference comparable text, [(delay, killed, result present after the kill)])"""
    first, written = timed_run(argv, log, out_json)
    reference = comparable(json.loads(out_json.read_text()))
    ref_state = check_state()
    for p in outputs:
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    trail = []
    for delay in kill_moments(first, written):
        killed = run_killed(argv, log, delay)
        trail.append((round(delay, 2), killed, assert_whole_or_absent(out_json, reference)))
        check_state(ref_state)
    print(f"[kill] work window {first:.2f}-{written:.2f} s; "
          f"(delay, killed, result present): {trail}")
    timed_run(argv, log, out_json)
    assert comparable(json.loads(out_json.read_text())) == reference
    return ref_state, trail


@pytest.mark.slow
def test_finetune_cls_killed_and_rerun_gives_the_same_result_and_weights(data, tmp_path):
    save_dir, out_json = tmp_path / "ft", tmp_path / "cls.json"
    argv = ["nepa3d.train.finetune_cls", "--cache_root", str(data / "scan"), "--backend",
            "pointcloud_noray", "--ckpt", str(data / "ckpt.pt"), "--n_ray", "0", "--epochs", "20",
            "--batch", "8", "--num_workers", "0", "--fewshot_k", "5", "--mc_eval_k_test", "2",
            "--device", "cpu", "--seed", "1", "--save_dir", str(save_dir),
            "--out_json", str(out_json)]

    def check_state(ref=None):
        """The reference weights (first call); later: a last.pt present holds exactly them."""
        last = save_dir / "last.pt"
        if ref is None:
            return weights(last)
        if last.exists():
            assert_same_weights(weights(last), ref)
        return ref

    ref, _ = kill_and_rerun(argv, out_json, [save_dir, out_json], tmp_path / "ft.log", check_state)
    assert_same_weights(weights(save_dir / "last.pt"), ref)


@pytest.mark.slow
def test_cpac_killed_and_rerun_gives_the_same_result(data, tmp_path):
    out_json = tmp_path / "cpac.json"
    argv = ["nepa3d.analysis.completion_cpac_udf", "--cache_root", str(data / "shapes"), "--ckpt",
            str(data / "ckpt.pt"), "--device", "cpu", "--n_context", "48", "--n_query", "32",
            "--batch", "8", "--baseline", "nn_copy", "--query_source", "hybrid",
            "--out_json", str(out_json)]
    kill_and_rerun(argv, out_json, [out_json], tmp_path / "cpac.log")
