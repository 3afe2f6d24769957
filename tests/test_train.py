"""Pretraining resume determinism, few-shot splits and fine-tuning on planted caches."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nepa3d.train import finetune_cls, pretrain
from nepa3d.train.fewshot import stratified_kshot, stratified_train_val_split
from nepa3d.train.schedule import ScheduleError, parse_schedule, value_at
from nepa3d.utils.ckpt import load_checkpoint
from planted import write_planted

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--batch", "4", "--n_point", "16", "--n_ray", "8", "--d_model", "32", "--layers", "2",
         "--heads", "2", "--num_workers", "0", "--qa_tokens", "1", "--dual_mask_near", "0.4",
         "--dual_mask_far", "0.1", "--dual_mask_window", "4", "--seed", "3"]


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("caches")
    write_planted(root / "shapes", "train", 10, seed=0)
    write_planted(root / "scan", "train", 12, seed=1, scan=True)
    write_planted(root / "scan", "test", 6, seed=2, scan=True)
    return root


def test_schedule_parsing():
    s = parse_schedule("10:512, 0:256")
    assert s == [(0, 256), (10, 512)]
    assert [value_at(s, e, 64) for e in (0, 9, 10, 50)] == [256, 256, 512, 512]
    assert value_at([], 3, 64) == 64
    with pytest.raises(ScheduleError):
        parse_schedule("256")


def test_fewshot_splits_counts_and_disjointness():
    paths = [f"c{c}/s{i:02d}" for c in range(3) for i in range(10 + c)]
    labels = [p.split("/")[0] for p in paths]
    train, val = stratified_train_val_split(paths, labels, 0.1, seed=0)
    assert not set(train) & set(val) and sorted(train + val) == sorted(paths)
    assert sorted(p.split("/")[0] for p in val) == ["c0", "c1", "c2"]  # floor(1.0..1.2) = 1 each
    k = stratified_kshot(train, [p.split("/")[0] for p in train], 5, seed=1)
    assert [sum(p.startswith(c) for p in k) for c in ("c0", "c1", "c2")] == [5, 5, 5]
    assert stratified_kshot(train, [p.split("/")[0] for p in train], 5, seed=2) != k
    assert stratified_kshot(train, [p[:2] for p in train], 0, seed=1) == sorted(train)


def _state(path):
    return load_checkpoint(path)["model"]


@pytest.mark.slow
def test_killed_pretrain_resumes_to_identical_weights(caches, tmp_path):
    base = [sys.executable, "-m", "nepa3d.train.pretrain", "--cache_root", str(caches / "shapes"),
            "--epochs", "4", *SMALL]
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONPATH=str(REPO))
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run(base + ["--save_dir", str(full)], check=True, env=env, cwd=REPO, capture_output=True)
    proc = subprocess.Popen(base + ["--save_dir", str(cut), "--save_every", "1"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (cut / "ckpt_ep001.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.05)  # somewhere inside epoch 2 (or later)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "ckpt_ep003.pt").exists(), "run finished before the kill; make it longer"
    subprocess.run(base + ["--save_dir", str(cut), "--auto_resume", "1"], check=True, env=env,
                   cwd=REPO, capture_output=True)
    a, b = _state(full / "last.pt"), _state(cut / "last.pt")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), k
    log = [json.loads(l) for l in (cut / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["epoch"] == 3


def test_pretrain_then_finetune_end_to_end(caches, tmp_path):
    run = tmp_path / "pre"
    assert pretrain.main(["--cache_root", str(caches / "shapes"), "--epochs", "2", *SMALL,
                          "--save_dir", str(run), "--objective", "mae"]) == 0
    ck = load_checkpoint(run / "last.pt")
    assert ck["epoch"] == 1 and ck["args"]["max_len"] == 1 + 2 * (16 + 8) + 1
    out = tmp_path / "cls.json"
    argv = ["--cache_root", str(caches / "scan"), "--backend", "pointcloud_noray", "--ckpt",
            str(run / "last.pt"), "--epochs", "3", "--batch", "8", "--num_workers", "0",
            "--fewshot_k", "5", "--mc_eval_k_test", "2", "--save_dir", str(tmp_path / "ft"),
            "--out_json", str(out)]
    assert finetune_cls.main(argv) == 0
    res = json.loads(out.read_text())
    assert res["task"] == "cls" and res["schema_version"] == 1
    m = res["metrics"]
    assert m["n_train"] == 10 and m["n_test"] == 12 and m["n_classes"] == 2
    assert m["test_majority_rate"] == pytest.approx(0.5)
    assert 0 <= m["test_acc"] <= 1
    # per-epoch history in the result (MLflow series) and curves next to the checkpoints
    assert [r["epoch"] for r in res["history"]] == [0, 1, 2]
    assert all({"train_loss", "train_acc", "val_acc"} <= set(r) for r in res["history"])
    png = (tmp_path / "ft" / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    # a finished save_dir is not trained again and gives the same answer
    out2 = tmp_path / "cls2.json"
    assert finetune_cls.main(argv[:-1] + [str(out2)]) == 0
    again = json.loads(out2.read_text())
    assert again["metrics"] == m and again["history"] == res["history"]


def test_missing_checkpoint_is_one_clear_error(caches, tmp_path, capsys):
    out = tmp_path / "x.json"
    rc = finetune_cls.main(["--cache_root", str(caches / "scan"), "--ckpt", str(tmp_path / "nope.pt"),
                            "--out_json", str(out)])
    assert rc == 2 and not out.exists()
    assert "nope.pt" in capsys.readouterr().err


def test_epochs_after_resume_counts_from_the_checkpoint_and_a_new_run_clears_old_epochs(caches, tmp_path):
    """A continuation trains N epochs past its base, whatever the base's length; re-running it
    into the same folder from a different base leaves no epoch file or log line of the earlier run."""
    shapes = ["--cache_root", str(caches / "shapes"), *SMALL, "--auto_resume", "0"]
    base = tmp_path / "base"
    assert pretrain.main([*shapes, "--epochs", "2", "--save_dir", str(base)]) == 0
    cont = tmp_path / "cont"
    argv = [*shapes, "--resume", str(base / "last.pt"), "--save_dir", str(cont), "--save_every", "1"]
    assert pretrain.main([*argv, "--epochs_after_resume", "3"]) == 0
    assert load_checkpoint(cont / "last.pt")["epoch"] == 4  # base ended at epoch 1 (0-based)
    assert sorted(p.name for p in cont.glob("ckpt_ep*.pt")) == ["ckpt_ep002.pt", "ckpt_ep003.pt", "ckpt_ep004.pt"]
    # same folder, a base one epoch long, one epoch after it: epochs 2..4 of the earlier run go
    short = tmp_path / "short"
    assert pretrain.main([*shapes, "--epochs", "1", "--save_dir", str(short)]) == 0
    argv = [*shapes, "--resume", str(short / "last.pt"), "--save_dir", str(cont), "--save_every", "1"]
    assert pretrain.main([*argv, "--epochs_after_resume", "1"]) == 0
    assert sorted(p.name for p in cont.glob("ckpt_ep*.pt")) == ["ckpt_ep001.pt"]
    assert [json.loads(l)["epoch"] for l in (cont / "train_log.jsonl").read_text().splitlines()] == [1]
    assert load_checkpoint(cont / "last.pt")["args"]["epochs"] == 2


@pytest.mark.parametrize("argv, message", [
    (["--epochs_after_resume", "2"], "--epochs_after_resume needs --resume"),
    (["--epochs_after_resume", "-1"], "--epochs_after_resume: must be an integer >= 0 (got '-1')"),
])
def test_epochs_after_resume_bad_values(caches, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        pretrain.main(["--cache_root", str(caches / "shapes"), *SMALL, "--save_dir", str(tmp_path / "x"), *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err
