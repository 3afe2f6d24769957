"""Result integrity of the training CLIs (issue 13): never a wrong number with exit 0.

Each problem is reproduced as reported and checked against an independent expectation (a fresh
run in a new folder, hand-built checkpoints, the flag's documented range), not the code's output:

1. fine-tuning again into a finished --save_dir with another seed / epoch count / checkpoint file /
   cache reuses the old metrics -> it trains again and equals a fresh run;
2. pretraining logged an epoch before saving its checkpoint -> a failing save leaves no record
   without a checkpoint, and a resumed log has each epoch once;
3. --auto_resume resumed a last.pt trained with other settings -> it starts fresh and equals a
   fresh run;
4. a checkpoint whose tensors do not fit the model -> one line naming the file, key and shapes;
5. out-of-range flags -> exit 2, one stderr line naming the flag and the allowed range.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nepa3d.analysis.features import load_eval_model
from nepa3d.models.query_nepa import ModelConfig, QueryNepa
from nepa3d.train import finetune_cls, pretrain
from nepa3d.utils.ckpt import CheckpointError, load_checkpoint, save_checkpoint
from planted import tiny_checkpoint, write_planted

REPO = Path(__file__).resolve().parents[1]
TINY = ["--batch", "4", "--n_point", "16", "--n_ray", "8", "--d_model", "32", "--layers", "1",
        "--heads", "2", "--num_workers", "0", "--qa_tokens", "1", "--dual_mask_near", "0.4",
        "--dual_mask_far", "0.1", "--dual_mask_window", "4", "--seed", "3", "--save_every", "1"]
FT = ["--backend", "pointcloud_noray", "--epochs", "2", "--batch", "8", "--num_workers", "0",
      "--n_ray", "0", "--device", "cpu", "--mc_eval_k_test", "2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    write_planted(root / "shapes", "train", 3, seed=0)  # 6 shapes: 2 steps an epoch at batch 4
    write_planted(root / "scan", "train", 6, seed=1, scan=True)
    write_planted(root / "scan", "test", 3, seed=2, scan=True)
    return root


def _pre(data, save_dir, *extra) -> list[str]:
    return ["--cache_root", str(data / "shapes"), *TINY, "--save_dir", str(save_dir), *extra]


def _weights(path) -> dict:
    return load_checkpoint(path)["model"]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _log_epochs(save_dir) -> list[int]:
    return [json.loads(l)["epoch"] for l in (Path(save_dir) / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def fresh3(data, tmp_path_factory):
    """An uninterrupted 3-epoch pretraining run: the reference of the resume tests."""
    d = tmp_path_factory.mktemp("fresh3")
    assert pretrain.main(_pre(data, d, "--epochs", "3")) == 0
    return d


# ------------------------------------------------------------------ 1. finetune save_dir reuse

def _ft(data, ckpt, save_dir, out, *extra) -> dict:
    argv = ["--cache_root", str(data / "scan"), "--ckpt", str(ckpt), *FT, "--save_dir", str(save_dir),
            "--out_json", str(out), *extra]
    assert finetune_cls.main(argv) == 0
    return json.loads(Path(out).read_text())


def _series(res: dict) -> list[dict]:
    """The per-epoch history without wall times."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in res["history"]]


@pytest.mark.parametrize("first, second", [
    (["--seed", "0"], ["--seed", "1"]),
    (["--epochs", "2"], ["--epochs", "3"]),
])
def test_finetune_rerun_with_other_args_trains_again(data, tmp_path, capsys, first, second):
    ckpt = tiny_checkpoint(tmp_path / "pre.pt")
    old = _ft(data, ckpt, tmp_path / "ft", tmp_path / "a.json", *first)
    again = _ft(data, ckpt, tmp_path / "ft", tmp_path / "b.json", *second)
    assert f"it was trained with {second[0]}" in capsys.readouterr().out
    fresh = _ft(data, ckpt, tmp_path / "new", tmp_path / "c.json", *second)
    assert again["metrics"] == fresh["metrics"] and _series(again) == _series(fresh)
    assert _series(again) != _series(old)  # the old run's numbers are not what came back
    assert _same(_weights(tmp_path / "ft" / "last.pt"), _weights(tmp_path / "new" / "last.pt"))
    assert again["args"][second[0][2:]] == fresh["args"][second[0][2:]]


def test_finetune_rerun_with_a_changed_checkpoint_file_or_cache_trains_again(data, tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "pre.pt", seed=0)
    old = _ft(data, ckpt, tmp_path / "ft", tmp_path / "a.json")
    tiny_checkpoint(ckpt, seed=1)  # same path, other weights
    again = _ft(data, ckpt, tmp_path / "ft", tmp_path / "b.json")
    assert "its ckpt_sha256 differs" in capsys.readouterr().out
    fresh = _ft(data, ckpt, tmp_path / "new", tmp_path / "c.json")
    assert _series(again) == _series(fresh) != _series(old)
    # a rewritten cache file: the listing fingerprint changes, the run trains again
    victim = next((data / "scan" / "test").rglob("*.npz"))
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    try:
        _ft(data, ckpt, tmp_path / "ft", tmp_path / "d.json")
        assert "its cache_root_listing_sha256 differs" in capsys.readouterr().out
    finally:
        os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_finetune_reuses_a_finished_run_when_only_neutral_args_change(data, tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "pre.pt")
    first = _ft(data, ckpt, tmp_path / "ft", tmp_path / "a.json")
    stamp = (tmp_path / "ft" / "last.pt").stat().st_mtime_ns
    copy = tmp_path / "copy.pt"
    copy.write_bytes(ckpt.read_bytes())  # same contents at another path
    again = _ft(data, copy, tmp_path / "ft", tmp_path / "b.json", "--num_workers", "0")
    assert "not training again" in capsys.readouterr().out
    assert again["metrics"] == first["metrics"] and again["history"] == first["history"]
    assert (tmp_path / "ft" / "last.pt").stat().st_mtime_ns == stamp


# ------------------------------------------------------------------ 2. the pretraining log

def _fail_save_at_epoch(monkeypatch, epoch: int) -> None:
    real = pretrain.save_checkpoint

    def save(state, path):
        if state["epoch"] == epoch:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(state, path)
    monkeypatch.setattr(pretrain, "save_checkpoint", save)


def test_failing_save_leaves_no_log_record_without_checkpoint(data, fresh3, tmp_path, monkeypatch,
                                                            capsys):
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        _fail_save_at_epoch(m, 1)
        assert pretrain.main(_pre(data, run, "--epochs", "3")) == 1  # a failed run, not bad input
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert f"{run}/ckpt_ep001.pt: cannot write (no space left on device)" in line
    assert _log_epochs(run) == [0] and load_checkpoint(run / "last.pt")["epoch"] == 0
    assert not (run / "ckpt_ep001.pt").exists()
    # resumed with the same settings: carries on from epoch 1 and ends where a fresh run does
    assert pretrain.main(_pre(data, run, "--epochs", "3", "--auto_resume", "1")) == 0
    assert _log_epochs(run) == [0, 1, 2]
    assert _same(_weights(run / "last.pt"), _weights(fresh3 / "last.pt"))


def test_resume_drops_log_records_of_the_interrupted_attempt(data, fresh3, tmp_path, monkeypatch):
    """The reported case: a run killed after logging epoch 1 but before saving it (the old
    order), plus a torn line; the resumed log has each epoch once, with the real numbers."""
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        _fail_save_at_epoch(m, 1)
        assert pretrain.main(_pre(data, run, "--epochs", "3")) == 1
    with open(run / "train_log.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 1, "step": 4, "loss": 123.0}) + "\n" + '{"epoch": 2, "lo')
    assert pretrain.main(_pre(data, run, "--epochs", "3")) == 0
    got = [json.loads(l) for l in (run / "train_log.jsonl").read_text().splitlines()]
    want = [json.loads(l) for l in (fresh3 / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in got] == [0, 1, 2]
    assert [r["loss"] for r in got] == [r["loss"] for r in want]


# ------------------------------------------------------------------ 3. auto-resume identity

def test_auto_resume_with_a_changed_lr_starts_fresh(data, tmp_path, capsys):
    run, ref = tmp_path / "run", tmp_path / "ref"
    assert pretrain.main(_pre(data, run, "--epochs", "2", "--lr", "0.0003")) == 0
    capsys.readouterr()
    assert pretrain.main(_pre(data, run, "--epochs", "2", "--lr", "0.001", "--auto_resume", "1")) == 0
    out = capsys.readouterr().out
    assert "it was trained with --lr 0.0003 (now 0.001); starting fresh" in out
    assert pretrain.main(_pre(data, ref, "--epochs", "2", "--lr", "0.001")) == 0
    assert _same(_weights(run / "last.pt"), _weights(ref / "last.pt"))
    assert _same(_weights(run / "ckpt_ep000.pt"), _weights(ref / "ckpt_ep000.pt"))
    assert _log_epochs(run) == [0, 1]
    assert load_checkpoint(run / "last.pt")["args"]["lr"] == 0.001


def test_auto_resume_args_comparison_ignores_only_the_neutral_args():
    args = pretrain.PretrainConfig.parse(["--lr", "0.001"])
    saved = args.record()
    changed = dict(saved, save_every=0, num_workers=7, max_steps=5, device="cpu",
                   out_json="x.json", resume="y.pt")
    assert pretrain.auto_resume_refusal(changed, args) is None
    # a different epoch count is a different run (the dual-mask warm-up scales with it)
    assert "--epochs 99" in pretrain.auto_resume_refusal(dict(saved, epochs=99), args)
    assert "--seed 5 (now 0)" in pretrain.auto_resume_refusal(dict(saved, seed=5), args)
    assert "--d_model" in pretrain.auto_resume_refusal({k: v for k, v in saved.items() if k != "d_model"}, args)


# ------------------------------------------------------------------ 4. checkpoints that do not fit

def _legacy_checkpoint(path: Path, mlp_ratio: float) -> Path:
    """A checkpoint without model_config (as the original code wrote them), trained with
    another mlp_ratio than the default the loader assumes: linear1 is (64, 32), not (128, 32)."""
    cfg = ModelConfig(d_model=32, nhead=2, num_layers=1, max_len=128, mlp_ratio=mlp_ratio)
    save_checkpoint({"model": QueryNepa(cfg).state_dict(),
                     "args": {"qa_tokens": 1, "add_eos": 1, "n_point": 16, "n_ray": 8, "heads": 2}}, path)
    return path


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_finetune_checkpoint_that_does_not_fit_is_one_line(data, tmp_path, capsys):
    ckpt = _legacy_checkpoint(tmp_path / "legacy.pt", mlp_ratio=2.0)
    rc = finetune_cls.main(["--cache_root", str(data / "scan"), "--ckpt", str(ckpt), *FT])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2
    assert line == (f"error: {ckpt}: backbone.enc.layers.0.linear1.weight: checkpoint (64, 32) "
                    f"vs model (128, 32)")
    # the evaluators load through the same function
    with pytest.raises(CheckpointError, match=r"legacy\.pt: backbone\.enc\.layers\.0\.linear1\.weight"):
        load_eval_model(str(ckpt), max_len=-1, qa_tokens=-1, add_eos=-1, device=torch.device("cpu"),
                        seq_len=lambda lb: 10)


def test_pretrain_resume_of_a_checkpoint_that_does_not_fit_is_one_line(data, tmp_path, capsys):
    other = tiny_checkpoint(tmp_path / "d32.pt")  # d_model 32, 1 layer
    argv = _pre(data, tmp_path / "run", "--epochs", "1", "--resume", str(other))
    argv[argv.index("--d_model") + 1] = "48"
    assert pretrain.main(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    # pos_emb's length is resized on purpose (128 -> 50), its width cannot be
    assert line == f"error: {other}: pos_emb: checkpoint (1, 128, 32) vs model (1, 50, 48)"


# ------------------------------------------------------------------ 5. flags out of range

BAD_FLAGS = [
    ("pretrain", "--batch", "0", "an integer >= 1"),
    ("pretrain", "--epochs", "-2", "an integer >= 1"),
    ("pretrain", "--n_point", "0", "an integer >= 1"),
    ("pretrain", "--n_ray", "-1", "an integer >= 0"),
    ("pretrain", "--dual_mask_near", "1.5", "a number in [0, 1]"),
    ("pretrain", "--dual_mask_far", "-0.1", "a number in [0, 1]"),
    ("pretrain", "--mask_ratio", "2", "a number in [0, 1]"),
    ("pretrain", "--drop_ray_prob", "nan", "a number in [0, 1]"),
    ("pretrain", "--lr", "0", "a number > 0"),
    ("pretrain", "--max_len", "0", "-1 (auto) or an integer >= 1"),
    ("pretrain", "--mix_num_samples", "-5", "an integer >= 0"),
    ("pretrain", "--save_every", "-1", "an integer >= 0"),
    ("pretrain", "--epochs_after_resume", "-1", "an integer >= 0"),
    ("pretrain", "--cycle_answer_drop_prob", "1.01", "a number in [0, 1]"),
    ("finetune", "--val_ratio", "1", "a number in [0, 1)"),
    ("finetune", "--val_ratio", "-0.1", "a number in [0, 1)"),
    ("finetune", "--fewshot_k", "-1", "an integer >= 0"),
    ("finetune", "--epochs", "0", "an integer >= 1"),
    ("finetune", "--batch", "x", "an integer >= 1"),
    ("finetune", "--n_point", "0", "an integer >= 1"),
    ("finetune", "--mc_eval_k_test", "0", "-1 (auto) or an integer >= 1"),
    ("finetune", "--drop_ray_prob_train", "-1", "a number in [0, 1]"),
    ("finetune", "--weight_decay", "-0.05", "a number >= 0"),
    ("finetune", "--fewshot_seed", "-2", "an integer >= -1"),
]
MODULES = {"pretrain": pretrain, "finetune": finetune_cls}


@pytest.mark.parametrize("cli, flag, value, allowed", BAD_FLAGS, ids=lambda x: str(x))
def test_bad_flag_is_exit_2_and_one_line(tmp_path, capsys, cli, flag, value, allowed):
    argv = ["--ckpt", str(tmp_path / "x.pt")] if cli == "finetune" else ["--save_dir", str(tmp_path / "r")]
    with pytest.raises(SystemExit) as e:
        MODULES[cli].main([*argv, flag, value])
    line = _one_error_line(capsys.readouterr().err)
    assert e.value.code == 2
    assert f"argument {flag}: must be {allowed} (got '{value}')" in line
    assert not (tmp_path / "r").exists()


def test_bad_flag_from_the_shell_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nepa3d.train.finetune_cls", "--ckpt", "x.pt",
                           "--val_ratio", "1.5"], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 2
    assert _one_error_line(proc.stderr).endswith("argument --val_ratio: must be a number in [0, 1) (got '1.5')")


@pytest.mark.parametrize("cli, argv", [
    ("pretrain", ["--n_ray", "0", "--max_len", "-1", "--save_every", "0", "--mix_num_samples", "0",
                  "--dual_mask_window", "0", "--max_steps", "0", "--dual_mask_near", "1"]),
    ("finetune", ["--ckpt", "x.pt", "--n_ray", "0", "--max_len", "-1", "--fewshot_seed", "-1",
                  "--fewshot_k", "0", "--val_ratio", "0", "--mc_eval_k_val", "-1", "--qa_tokens", "-1"]),
])
def test_legal_special_values_are_accepted(cli, argv):
    MODULES[cli].build_parser().parse_args(argv)


@pytest.mark.parametrize("flag", ["--out_json", "--save_dir"])
def test_finetune_output_blocked_by_a_file_is_refused_before_training(data, tmp_path, capsys, flag):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    target = str(blocker / ("r.json" if flag == "--out_json" else "ft"))
    argv = ["--cache_root", str(data / "scan"), "--ckpt", str(tmp_path / "none.pt"), "--epochs", "1",
            "--save_dir", str(tmp_path / "ft"),
            "--out_json", str(tmp_path / "r.json"), flag, target]
    assert finetune_cls.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0] and "is a file, not a folder" in err[0], err
    assert blocker.read_text() == "not a folder" and not (tmp_path / "ft").exists()
