"""Bad inputs the tables of ``test_edges.py`` and ``test_train_integrity.py`` do not hold (issue:
fault injection against the research CLIs): never a wrong number with exit 0, never a traceback.

1. Checkpoints that load (valid pickles) but are not usable: a ``model`` that is no state dict of
   tensors, required tensors missing, ``args`` / ``model_config`` of the wrong type, a config
   whose heads do not divide the width, NaN/inf weights (before: r@1 = 1.0 with exit 0), a
   folder given as the checkpoint. Every CLI that reads a checkpoint refuses them with exit 2
   and one line naming the file and the cause, and writes nothing.
2. Pretraining whose outputs cannot be written (``--out_json`` is a folder or under a file,
   ``--save_dir`` under a file): refused before training (before: a traceback after it).
3. SIGTERM / SIGINT mid-run: one line and exit 128 + N (before: a KeyboardInterrupt traceback,
   or a silent death by SIGTERM that could leave a checkpoint's temp file), the earlier result
   untouched, pretraining's last.pt whole and resumable.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nepa3d.analysis import completion_cpac_udf as cpac
from nepa3d.analysis import qualitative_cpac_marching_cubes as qmc
from nepa3d.analysis import retrieval_ucpr as ucpr
from nepa3d.train import finetune_cls, pretrain
from nepa3d.utils.ckpt import CheckpointError, load_backbone_checkpoint, load_checkpoint
from planted import tiny_checkpoint, write_planted

REPO = Path(__file__).resolve().parents[1]
#: an earlier run's result in the output location: must stay byte-identical
EARLIER = b'{"task": "earlier", "metrics": {"r@1": 0.25}}\n'


def _with(ckpt: dict, **changes) -> dict:
    return {**ckpt, **changes}


def _model_with(ckpt: dict, key: str, value: float) -> dict:
    sd = {k: v.clone() for k, v in ckpt["model"].items()}
    sd[key].view(-1)[0] = value
    return _with(ckpt, model=sd)


#: (id, what torch.save writes given the good checkpoint dict, words the error line must hold)
BAD_CKPTS = [
    ("model-is-tensor", lambda c: _with(c, model=torch.zeros(3)), "no 'model' state dict"),
    ("model-is-list", lambda c: _with(c, model=[1, 2]), "no 'model' state dict"),
    ("model-empty", lambda c: _with(c, model={}), "'model' has no pos_emb"),
    ("model-entry-not-tensor", lambda c: _with(c, model={**c["model"], "extra": 3}),
     "'extra' is not a tensor but int"),
    ("no-type-emb", lambda c: _with(c, model={k: v for k, v in c["model"].items()
                                              if k != "type_emb.weight"}), "no type_emb.weight"),
    ("pos-emb-2d", lambda c: _with(c, model={**c["model"], "pos_emb": c["model"]["pos_emb"][0]}),
     "pos_emb", "expected 3-d"),
    ("args-is-list", lambda c: _with(c, args=[1, 2]), "'args' is a list, not a dict"),
    ("config-is-str", lambda c: _with(c, model_config="d_model=32"), "'model_config' is a str"),
    ("nan-weight", lambda c: _model_with(c, "token_mlp.0.weight", float("nan")),
     "token_mlp.0.weight", "NaN or inf"),
    ("inf-pos-emb", lambda c: _model_with(c, "pos_emb", float("inf")), "pos_emb", "NaN or inf"),
    ("epoch-str", lambda c: _with(c, epoch="3"), "'epoch' is '3', not an integer"),
]
#: usable as a dict, but no model can be built from its config (load_backbone's CLIs)
BAD_CONFIGS = [
    ("config-unknown-field", lambda c: _with(c, model_config={**c["model_config"], "bogus": 1}),
     "unusable model config", "bogus"),
    ("config-heads-3", lambda c: _with(c, model_config={**c["model_config"], "nhead": 3}),
     "unusable model config", "nhead 3 does not divide d_model 32"),
    ("config-layers-0", lambda c: _with(c, model_config={**c["model_config"], "num_layers": 0}),
     "num_layers 0"),
    ("n-point-str", lambda c: _with(c, args={**c["args"], "n_point": "many"}),
     "unusable token settings", "'many'"),
    ("old-ckpt-heads-5", lambda c: {k: v for k, v in c.items() if k != "model_config"} | {
        "args": {**c["args"], "heads": 5}}, "nhead 5 does not divide d_model 32"),
]


BAD_CKPTS = [(c[0], c[1], c[2:]) for c in BAD_CKPTS]
BAD_CONFIGS = [(c[0], c[1], c[2:]) for c in BAD_CONFIGS]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("bad_inputs")
    write_planted(d / "shapes", "eval", 2, seed=0)
    write_planted(d / "shapes", "train_udf", 2, seed=1, first=2)
    write_planted(d / "scan", "train", 3, seed=2, scan=True)
    write_planted(d / "scan", "test", 2, seed=3, scan=True, first=3)
    good = load_checkpoint(tiny_checkpoint(d / "good.pt"))
    paths = {}
    for id_, make, _ in BAD_CKPTS + BAD_CONFIGS:
        torch.save(make(good), d / f"{id_}.pt")  # plain torch.save: what a foreign tool writes
        paths[id_] = str(d / f"{id_}.pt")
    (d / "folder.pt").mkdir()
    return {"root": d, **paths}


def _argv(cli: str, inputs: dict, ckpt: str, out: Path) -> tuple:
    shapes, scan = str(inputs["root"] / "shapes"), str(inputs["root"] / "scan")
    common = ["--device", "cpu", "--ckpt", ckpt]
    if cli == "ucpr":
        return ucpr.main, ["--cache_root", shapes, *common, "--query_backend", "mesh",
                           "--gallery_backend", "udfgrid", "--out_json", str(out / "result.json")]
    if cli == "cpac":
        return cpac.main, ["--cache_root", shapes, *common, "--n_context", "16", "--n_query", "16",
                           "--out_json", str(out / "result.json")]
    if cli == "qmc":
        return qmc.main, ["--cache_root", shapes, *common, "--grid_res", "8", "--n_context", "16",
                          "--n_query_probe", "16", "--max_shapes", "1", "--save_png", "0",
                          "--out_dir", str(out / "qmc")]
    if cli == "finetune":
        return finetune_cls.main, ["--cache_root", scan, *common, "--backend", "pointcloud_noray",
                                   "--epochs", "1", "--batch", "4", "--num_workers", "0",
                                   "--n_ray", "0", "--save_dir", str(out / "ft"),
                                   "--out_json", str(out / "result.json")]
    return pretrain.main, ["--cache_root", shapes, "--split", "eval", "--resume", ckpt,
                           "--batch", "4", "--n_point", "16", "--n_ray", "8", "--d_model", "32",
                           "--layers", "1", "--heads", "2", "--num_workers", "0",
                           "--qa_tokens", "1", "--epochs", "2", "--device", "cpu",
                           "--save_dir", str(out / "pre"), "--out_json", str(out / "result.json")]


def _exit_code(main, argv) -> int:
    try:
        ret = main(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return 0 if isinstance(ret, dict) else int(ret or 0)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _refused(main, argv, out: Path, capsys, *needles: str) -> str:
    """Run ``main``; assert exit 2, one stderr line holding ``needles``, ``out`` unchanged."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_bytes(EARLIER)
    before = _files(out)
    code = _exit_code(main, argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("[ckpt] resizing")]
    assert code == 2, (code, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "error:" in lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert _files(out) == before  # the earlier result intact, nothing added
    return lines[0]


@pytest.mark.parametrize("id_, make, needles", BAD_CKPTS, ids=[c[0] for c in BAD_CKPTS])
def test_unusable_checkpoint_is_refused_by_the_loader(inputs, id_, make, needles):
    with pytest.raises(CheckpointError) as e:
        load_backbone_checkpoint(inputs[id_])
    assert e.value.path == inputs[id_]
    for needle in needles:
        assert needle in str(e.value)


@pytest.mark.parametrize("id_, make, needles", BAD_CKPTS + BAD_CONFIGS,
                         ids=[c[0] for c in BAD_CKPTS + BAD_CONFIGS])
def test_unusable_checkpoint_is_one_line_exit_2_in_retrieval(inputs, tmp_path, capsys, id_, make,
                                                              needles):
    main, argv = _argv("ucpr", inputs, inputs[id_], tmp_path / "out")
    _refused(main, argv, tmp_path / "out", capsys, inputs[id_], *needles)


@pytest.mark.parametrize("cli", ["cpac", "qmc", "finetune", "pretrain"])
@pytest.mark.parametrize("id_", ["nan-weight", "model-is-tensor", "args-is-list"])
def test_every_checkpoint_reader_refuses_it(inputs, tmp_path, capsys, cli, id_):
    main, argv = _argv(cli, inputs, inputs[id_], tmp_path / "out")
    _refused(main, argv, tmp_path / "out", capsys, inputs[id_])
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["result.json"]  # no empty folders


@pytest.mark.parametrize("cli", ["ucpr", "cpac", "qmc", "finetune", "pretrain"])
def test_folder_given_as_checkpoint(inputs, tmp_path, capsys, cli):
    main, argv = _argv(cli, inputs, str(inputs["root"] / "folder.pt"), tmp_path / "out")
    _refused(main, argv, tmp_path / "out", capsys, "folder.pt", "is a folder, not a checkpoint file")


@pytest.mark.parametrize("cli", ["cpac", "qmc", "finetune"])
def test_config_that_builds_no_model(inputs, tmp_path, capsys, cli):
    main, argv = _argv(cli, inputs, inputs["config-heads-3"], tmp_path / "out")
    _refused(main, argv, tmp_path / "out", capsys, "config-heads-3.pt", "nhead 3")


# ------------------------------------------------------------- 2. pretrain output locations

@pytest.mark.parametrize("flag, where, needle", [
    ("--out_json", "{out}", "is a folder, not a file"),
    ("--out_json", "{blocker}/r.json", "{blocker} is a file, not a folder"),
    ("--save_dir", "{blocker}/run", "{blocker} is a file, not a folder"),
])
def test_pretrain_output_blocked_is_refused_before_training(inputs, tmp_path, capsys, flag, where,
                                                            needle):
    out, blocker = tmp_path / "out", tmp_path / "blocker"
    blocker.write_bytes(b"a file where a folder goes\n")
    main, argv = _argv("pretrain", inputs, "", out)
    argv = argv[:argv.index("--resume")] + argv[argv.index("--resume") + 2:]  # no --resume
    fields = {"out": str(out), "blocker": str(blocker)}
    argv += [flag, where.format(**fields)]
    line = _refused(main, argv, out, capsys, flag, needle.format(**fields))
    assert not (out / "pre").exists() and blocker.read_bytes() == b"a file where a folder goes\n", line


# ------------------------------------------------------------------------ 3. interruption

def _kill_self_during(monkeypatch, module, name: str, signum=signal.SIGTERM) -> None:
    """Make ``module.name`` send this process ``signum`` when it is called (mid-run)."""
    real = getattr(module, name)

    def interrupted(*a, **kw):
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler raises before this ends
        return real(*a, **kw)
    monkeypatch.setattr(module, name, interrupted)


@pytest.mark.parametrize("cli, module, name", [
    ("ucpr", ucpr, "embed_all"),
    ("cpac", cpac, "build_result"),
    ("finetune", finetune_cls, "build_result"),
])
def test_sigterm_mid_run_is_one_line_exit_143_and_keeps_the_earlier_result(
        inputs, tmp_path, capsys, monkeypatch, cli, module, name):
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.json").write_bytes(EARLIER)
    main, argv = _argv(cli, inputs, str(inputs["root"] / "good.pt"), out)
    _kill_self_during(monkeypatch, module, name)
    before = signal.getsignal(signal.SIGTERM)
    code = _exit_code(main, argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if "error:" in ln]
    assert code == 128 + signal.SIGTERM, err
    assert len(lines) == 1 and "interrupted by SIGTERM" in lines[0] and "Traceback" not in err
    assert (out / "result.json").read_bytes() == EARLIER
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp")]  # no temp file left
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is the caller's again


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_pretrain_stopped_by_a_signal_leaves_a_resumable_last_pt(inputs, tmp_path, signum):
    """A real process: stopped after its first saved epoch, it exits 128 + N with one line,
    writes no summary or result, and its last.pt is whole (loadable, a finished epoch)."""
    save, out = tmp_path / "pre", tmp_path / "result.json"
    _, argv = _argv("pretrain", inputs, "", tmp_path)
    argv = argv[:argv.index("--resume")] + argv[argv.index("--resume") + 2:]
    argv = [*argv, "--epochs", "100000", "--save_every", "0", "--save_dir", str(save),
            "--out_json", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "nepa3d.train.pretrain", *argv], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO), TQDM_DISABLE="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while not (save / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signum)
    err = proc.communicate(timeout=60)[1]
    lines = err.strip().splitlines()
    assert proc.returncode == 128 + signum, err
    assert len(lines) == 1 and f"interrupted by {signal.Signals(signum).name}" in lines[0], err
    assert "last.pt" in lines[0]
    assert not out.exists() and not (save / "pretrain_summary.json").exists()
    assert not [p for p in save.iterdir() if p.name.startswith(".tmp")]
    assert load_checkpoint(save / "last.pt")["epoch"] >= 0


# -------------------------------------------------------------- 4. a write the disk refuses

def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("cli, module, name, target", [
    ("pretrain", pretrain, "write_json_atomic", "pre/pretrain_summary.json"),
    ("pretrain", pretrain, "append_log", "pre/train_log.jsonl"),
    ("finetune", finetune_cls, "save_checkpoint", "ft/last.pt"),
])
def test_disk_full_in_training_is_one_line_exit_1(inputs, tmp_path, capsys, monkeypatch, cli,
                                                  module, name, target):
    """Before: an OSError traceback with no file named (the writer's temp name at best)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.json").write_bytes(EARLIER)
    main, argv = _argv(cli, inputs, str(inputs["root"] / "good.pt"), out)
    if cli == "pretrain":
        argv = argv[:argv.index("--resume")] + argv[argv.index("--resume") + 2:]
    monkeypatch.setattr(module, name, _enospc)
    code = _exit_code(main, argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert code == 1 and "Traceback" not in err, err
    assert len(lines) == 1 and f"{out / target}: cannot write (no space left on device)" in lines[0]
    assert (out / "result.json").read_bytes() == EARLIER


# ------------------------------------------------------------ 5. pretrain's --mix_config file

@pytest.mark.parametrize("text, needle", [
    ("datasets: [1, 2\n", "not a readable YAML file"),
    ("- 1\n- 2\n", "must be a mapping with 'datasets', not a list"),
    ("datasets:\n  - {cache_root: x, weight: heavy}\n", "could not convert string to float"),
    ("datasets:\n  - {cache_root: x}\nmix_num_samples: many\n", "invalid literal for int()"),
    (None, "is a folder, not a mix config file"),
])
def test_pretrain_mix_config_that_cannot_be_read(inputs, tmp_path, capsys, text, needle):
    """Before: a yaml ScannerError / AttributeError / ValueError traceback."""
    mix = tmp_path / "mix.yaml"
    if text is None:
        mix.mkdir()
    else:
        mix.write_text(text)
    main, argv = _argv("pretrain", inputs, "", tmp_path / "out")
    argv = argv[:argv.index("--resume")] + argv[argv.index("--resume") + 2:]
    _refused(main, [*argv, "--mix_config", str(mix)], tmp_path / "out", capsys, str(mix), needle)


def test_finetune_save_dir_holding_a_torn_last_pt_is_one_line(inputs, tmp_path, capsys):
    """torch's multi-line load error was printed as it came (4 lines)."""
    out = tmp_path / "out"
    (out / "ft").mkdir(parents=True)
    (out / "ft" / "last.pt").write_bytes(b"garbage\n")
    main, argv = _argv("finetune", inputs, str(inputs["root"] / "good.pt"), out)
    _refused(main, argv, out, capsys, str(out / "ft" / "last.pt"), "cannot be loaded")


# ------------------------------------------------------------ 6. the data CLIs in this sweep

def test_migrate_that_finds_no_cache_files_is_not_a_success(tmp_path, capsys):
    """Before: a mistyped --cache_root or split printed 'done: ... total=0' and exited 0."""
    from nepa3d.data import migrate_add_pt_dist_pc_pool as migrate

    write_planted(tmp_path / "c", "train", 1, seed=0)
    for argv, needles in [(["--cache_root", str(tmp_path / "nope")], ["nope", "no .npz files"]),
                          (["--cache_root", str(tmp_path / "c"), "--splits", "tets"],
                           ["no .npz files", "splits tets"]),
                          (["--cache_root", str(tmp_path / "c"), "--chunk", "0"],
                           ["--chunk", "integer >= 1"])]:
        before = _files(tmp_path)
        _refused(migrate.main, argv, tmp_path / "out", capsys, *needles)
        assert _files(tmp_path) == before | {"out/result.json": EARLIER}


def test_synthetic_out_root_under_a_file_is_refused(tmp_path, capsys):
    """Before: a NotADirectoryError traceback."""
    from nepa3d.data import synthetic

    (tmp_path / "blocker").write_bytes(b"x")
    _refused(synthetic.main, ["--out_root", str(tmp_path / "blocker" / "s"), "--n_per_class", "1"],
             tmp_path / "out", capsys, "--out_root", f"{tmp_path / 'blocker'} is a file, not a folder")


def test_finetune_with_one_training_class_is_refused(inputs, tmp_path, capsys):
    """Before: finetune_cls trained a 1-way classifier and reported test_acc 1.0 with exit 0
    (baseline_cls refused it; the check now lives once, in the shared file selection)."""
    main, argv = _argv("finetune", inputs, str(inputs["root"] / "good.pt"), tmp_path / "out")
    _refused(main, [*argv, "--fewshot_n_way", "1"], tmp_path / "out", capsys,
             str(inputs["root"] / "scan"), "at least 2 classes", "--fewshot_n_way 1")


def test_finetune_with_more_ways_than_classes_is_refused(inputs, tmp_path, capsys):
    """Before: --fewshot_n_way above the class count quietly kept every class (the original's
    draw without replacement fails there), so the result claimed an N-way it was not."""
    main, argv = _argv("finetune", inputs, str(inputs["root"] / "good.pt"), tmp_path / "out")
    _refused(main, [*argv, "--fewshot_n_way", "99"], tmp_path / "out", capsys,
             "--fewshot_n_way 99: more than the", str(inputs["root"] / "scan" / "train"))


# ------------------------------------------------- 7. pretraining run again when it is done

def _pretrain_argv(inputs, save_dir: Path, *extra: str) -> list[str]:
    _, argv = _argv("pretrain", inputs, "", save_dir.parent)
    argv = argv[:argv.index("--resume")] + argv[argv.index("--resume") + 2:]
    argv = [a for a in argv if a != str(save_dir.parent / "result.json")]
    argv = argv[:argv.index("--out_json")] + argv[argv.index("--out_json") + 1:]
    return [*argv, "--save_dir", str(save_dir), *extra]


def test_pretrain_finished_run_again_keeps_its_summary_and_refuses_contradictions(
        inputs, tmp_path, capsys):
    """Before: running a finished pretraining command again (what DVC or a launcher does)
    rewrote pretrain_summary.json with final_loss null; --resume of a checkpoint trained for
    more epochs than --epochs, or a finished one of another folder, exited 0 with a summary
    claiming --epochs and (other folder) no checkpoint at all."""
    from nepa3d.train import pretrain

    run = tmp_path / "run"
    assert pretrain.main(_pretrain_argv(inputs, run)) == 0  # 2 epochs
    summary = json.loads((run / "pretrain_summary.json").read_text())["metrics"]
    assert isinstance(summary["final_loss"], float)
    assert pretrain.main(_pretrain_argv(inputs, run)) == 0  # again: nothing to train
    again = json.loads((run / "pretrain_summary.json").read_text())["metrics"]
    assert again == summary
    capsys.readouterr()
    last = str(run / "last.pt")
    for save_dir, epochs, needle in [(run, "1", "trained 2 epochs, more than --epochs 1"),
                                     (tmp_path / "other", "1", "more than --epochs 1"),
                                     (tmp_path / "other", "2", "nothing to train into --save_dir")]:
        before = _files(tmp_path)
        _refused(pretrain.main, _pretrain_argv(inputs, save_dir, "--epochs", epochs, "--resume",
                                               last), tmp_path / "out", capsys, last, needle)
        assert _files(tmp_path) == before | {"out/result.json": EARLIER}


def test_pretrain_that_diverges_is_a_failed_run_in_one_line(inputs, tmp_path, capsys,
                                                              monkeypatch):
    """Before: a non-finite loss ended pretraining in a FloatingPointError traceback."""
    import torch

    from nepa3d.train import pretrain

    real = pretrain.nepa_terms

    def diverging(*a, **kw):
        loss, terms = real(*a, **kw)
        return loss * torch.tensor(float("inf")), terms

    monkeypatch.setattr(pretrain, "nepa_terms", diverging)
    run = tmp_path / "run"
    capsys.readouterr()
    code = _exit_code(pretrain.main, _pretrain_argv(inputs, run))
    text = capsys.readouterr().err
    err = [ln for ln in text.splitlines() if "error:" in ln]  # the progress bar shares stderr
    assert code == 1 and len(err) == 1 and "Traceback" not in text, text
    assert "error: non-finite loss at epoch 0 step 0" in err[0] and "diverged" in err[0]
    assert not (run / "pretrain_summary.json").exists()


def test_a_test_class_without_training_shapes_is_refused(inputs, tmp_path, capsys):
    """Before: finetune_cls and baseline_cls dropped its test shapes silently (n_test shrank,
    exit 0)."""
    import shutil

    from nepa3d.analysis import baseline_cls

    scan = tmp_path / "scan"
    shutil.copytree(inputs["root"] / "scan", scan)
    first = sorted((scan / "test").iterdir())[0]
    shutil.copytree(first, scan / "test" / "zz_unseen")
    main, argv = _argv("finetune", inputs, str(inputs["root"] / "good.pt"), tmp_path / "out")
    argv[argv.index("--cache_root") + 1] = str(scan)
    _refused(main, argv, tmp_path / "out", capsys, str(scan / "test"), "no training shapes",
             "zz_unseen")
    _refused(baseline_cls.main, ["--cache_root", str(scan), "--backend", "pointcloud_noray",
                                 "--n_point", "16", "--out_json", str(tmp_path / "out" / "r.json")],
             tmp_path / "out", capsys, "zz_unseen")
