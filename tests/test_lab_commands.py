"""Every ``python -m nepa3d...`` command line the lab recorded runs as written.

The commands (``tests/fixtures/lab_commands.sh``, verbatim from the notes) run in-process in a
sandbox laid out like the lab's working tree: ``data/shapenet_cache_v0`` (planted analytic
shapes), ``data/ScanObjectNN/h5_files/main_split`` (h5 with ``data``/``label``/``mask``) and
``nepa3d/configs``. They run in the lab's order, so the data commands build
``data/shapenet_unpaired_cache_v1``, the pretraining commands write the ``runs/.../ckpt_epNNN.pt``
that later commands resume from, and the evaluators read those. Only sizes and output paths
change (``lab_commands.shrink``). A checkpoint the notes use but never show being trained (the
M1-era ``eccv_upmix_{nepa,mae}_s0``) is trained here by a tiny pretraining run of the same
objective and epoch count, and the test says so in its output.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from filelock import FileLock

import lab_commands as L
from planted import write_planted

REPO = Path(__file__).resolve().parents[1]
NOTES_DIR = REPO.parent / "shared" / "lab-notes"
GRID = 16
COMMANDS = L.load_commands()
DATA_MODULES = ("nepa3d.data.preprocess_scanobjectnn", "nepa3d.data.shapenet_unpaired_split",
                "nepa3d.data.preprocess_shapenet_unpaired", "nepa3d.data.migrate_add_pt_dist_pc_pool")
PRETRAIN = "nepa3d.train.pretrain"
EVALUATORS = ("nepa3d.analysis.retrieval_ucpr", "nepa3d.analysis.completion_cpac_udf")
_CKPT = re.compile(r"^runs/(?P<run>[^/]+)/ckpt_ep(?P<ep>\d+)\.pt$")


def _main(module: str):
    return importlib.import_module(module).main


def _write_scan_h5(path: Path, n: int, seed: int, n_pts: int = 96) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["data"] = rng.normal(size=(n, n_pts, 3)).astype(np.float32)
        f["label"] = rng.integers(0, 15, size=(n,)).astype(np.int64)
        f["mask"] = (rng.random((n, n_pts)) < 0.3).astype(np.int64)


def _pretrain_fallback(ckpt: str) -> list[str]:
    """A tiny pretraining run that leaves ``runs/<run>/ckpt_epNNN.pt`` for a checkpoint the
    notes evaluate but do not show being trained (objective and Q/A layout from its name)."""
    m = _CKPT.match(ckpt)
    assert m, f"cannot derive a training run for checkpoint {ckpt!r}"
    run, ep = m["run"], int(m["ep"])
    return ["--mix_config", "nepa3d/configs/shapenet_unpaired_mix.yaml", "--mix_num_samples", "4",
            "--objective", "mae" if "_mae" in run else "nepa",
            "--qa_tokens", "1" if "_qa" in run else "0", "--epochs", str(ep + 1), "--batch", "4",
            "--n_point", "16", "--n_ray", "16", "--num_workers", "0", "--save_every", "1",
            "--save_dir", f"runs/{run}", "--seed", "0", *L.TINY_MODEL]


def _ok(ret) -> bool:
    """A CLI's success: exit code 0 / None, or the result dict the evaluators return."""
    return ret in (0, None) or isinstance(ret, dict)


@pytest.fixture(scope="module")
def lab_tree(tmp_path_factory):
    """The sandbox after the data and pretraining commands: (root, {origin: outcome}). Built once
    per test session: under xdist the workers share it (a file lock; the first builds it, the
    others read its outcomes), since worksteal can split this module over both workers."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    root, done = shared / "lab_tree", shared / "lab_tree.outcome.json"
    with FileLock(str(shared / "lab_tree.lock")):
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)  # a build that raised earlier in this session
            root.mkdir()
            done.write_text(json.dumps(_build_lab_tree(root)))
    return root, json.loads(done.read_text())


def _build_lab_tree(root: Path) -> dict[str, str]:
    """Run the lab's data and pretraining commands in ``root``; ``{origin: outcome}``."""
    old = os.getcwd()
    os.chdir(root)
    try:
        write_planted(root / "data/shapenet_cache_v0", "train", per_class=9, seed=0, G=GRID)
        write_planted(root / "data/shapenet_cache_v0", "test", per_class=4, seed=1, G=GRID,
                      first=9)  # a name is one shape: test shapes are not train shapes
        scans = root / "data/ScanObjectNN/h5_files/main_split"
        _write_scan_h5(scans / "training_objectdataset.h5", 6, 0)
        _write_scan_h5(scans / "test_objectdataset.h5", 4, 1)
        (root / "nepa3d/configs").mkdir(parents=True)
        shutil.copy(REPO / "nepa3d/configs/shapenet_unpaired_mix.yaml", root / "nepa3d/configs")
        outcome: dict[str, str] = {}

        def run(module, argv, origin):
            try:
                ret = _main(module)(argv)
                outcome[origin] = "ok" if _ok(ret) else f"returned {ret!r}"
            except SystemExit as e:  # argparse or a CLI error exit
                outcome[origin] = f"exit {e.code}"
            except Exception as e:  # noqa: BLE001 - reported per command by the tests below
                outcome[origin] = f"{type(e).__name__}: {e}"

        for c in (x for x in COMMANDS if x.module in DATA_MODULES):  # outputs feed later commands
            run(c.module, L.shrink(c, grid_res=GRID, out_json=c.flag("--out_json", "")), c.origin)
        # pretraining in dependency order: a command runs once its --resume/--teacher_ckpt exist
        pending = [c for c in COMMANDS if c.module == PRETRAIN]
        while pending:
            ready = [c for c in pending
                     if all(Path(p).exists() for p in (c.flag("--resume"), c.flag("--teacher_ckpt")) if p)]
            if not ready:  # a source the notes never train: make it, then go on
                need = next(p for c in pending for p in (c.flag("--resume"), c.flag("--teacher_ckpt"))
                            if p and not Path(p).exists())
                print(f"[lab] training stand-in for {need}")
                run(PRETRAIN, _pretrain_fallback(need), f"stand-in {need}")
                if not Path(need).exists():  # the stand-in failed: its dependents cannot run
                    for c in pending:
                        outcome[c.origin] = f"not run: {need} could not be made"
                    break
                continue
            for c in ready:
                run(c.module, L.shrink(c, grid_res=GRID, out_json=""), c.origin)
                pending.remove(c)
        for c in COMMANDS:
            if c.module in EVALUATORS and not Path(c.flag("--ckpt")).exists():
                print(f"[lab] training stand-in for {c.flag('--ckpt')}")
                run(PRETRAIN, _pretrain_fallback(c.flag("--ckpt")), f"stand-in {c.flag('--ckpt')}")
    finally:
        os.chdir(old)
    return outcome


def test_fixture_has_every_protocol_command():
    mods = {c.module for c in COMMANDS}
    assert set(DATA_MODULES) | {PRETRAIN} | set(EVALUATORS) <= mods
    # loops expanded: the B-1 lambda sweep (4 values) and the 3-seed full-size run
    lam = {c.flag("--ridge_lipschitz_lambda") for c in COMMANDS if "L=" in c.origin}
    assert lam == {"0", "1e-4", "3e-4", "1e-3"}
    seeds = [c.flag("--out_json") for c in COMMANDS if " S=" in c.origin]
    assert [s.rsplit("_", 1)[-1] for s in seeds] == ["v2.json", "seed1.json", "seed2.json"]


@pytest.mark.skipif(not NOTES_DIR.is_dir(), reason="lab notes folder not present")
def test_fixture_in_sync_with_lab_notes():
    assert L.FIXTURE.read_text() == L.fixture_text(NOTES_DIR), (
        f"{L.FIXTURE} is stale: run `python tests/lab_commands.py --sync {NOTES_DIR}`")


def test_shrink_changes_only_sizes_and_outputs():
    c = L.LabCommand("nepa3d.analysis.completion_cpac_udf", (
        "--cache_root", "data/x", "--n_context", "512", "--n_query", "256", "--max_len", "1538",
        "--max_shapes", "800", "--grid_res_schedule", "16,32,64", "--tau", "0.03",
        "--ridge_lipschitz_pairs", "16384", "--out_json", "results/a.json"), "t:1")
    got = L.shrink(c, grid_res=16, out_json="o.json")
    assert got == ["--cache_root", "data/x", "--n_context", "32", "--n_query", "16",
                   "--max_len", "98", "--max_shapes", "6", "--grid_res_schedule", "4,8,16",
                   "--tau", "0.03", "--ridge_lipschitz_pairs", "64", "--out_json", "o.json"]
    # 98 = 1 + 2 (32 + 16) + 1: the lab's max_len formula holds at test size
    assert int(got[7]) == 1 + 2 * (32 + 16) + 1


_SETUP = [c for c in COMMANDS if c.module in DATA_MODULES or c.module == PRETRAIN]


@pytest.mark.slow
@pytest.mark.parametrize("cmd", _SETUP, ids=[c.short for c in _SETUP])
def test_lab_setup_command_runs(lab_tree, cmd):
    root, outcome = lab_tree
    assert outcome[cmd.origin] == "ok", f"{cmd.origin}: {outcome[cmd.origin]}"
    if cmd.module == PRETRAIN:
        ep = int(cmd.flag("--epochs")) - 1
        assert (root / cmd.flag("--save_dir") / f"ckpt_ep{ep:03d}.pt").exists()


def _unique_evaluator_runs() -> list[L.LabCommand]:
    """Evaluator commands, one per distinct argv at test size (first occurrence kept)."""
    seen, out = set(), []
    for c in COMMANDS:
        if c.module in EVALUATORS:
            key = (c.module, tuple(L.shrink(c, grid_res=GRID, out_json="")))
            if key not in seen:
                seen.add(key)
                out.append(c)
    return out


_EVALS = _unique_evaluator_runs()


@pytest.mark.slow
@pytest.mark.parametrize("cmd", _EVALS, ids=[c.short for c in _EVALS])
def test_lab_evaluator_command_runs(lab_tree, cmd, monkeypatch, tmp_path):
    root, outcome = lab_tree
    monkeypatch.chdir(root)
    assert all(v == "ok" for k, v in outcome.items() if k.startswith("stand-in")), outcome
    out = tmp_path / "result.json"
    res = _main(cmd.module)(L.shrink(cmd, grid_res=GRID, out_json=str(out)))
    saved = json.loads(out.read_text())
    assert saved["task"] == res["task"] and saved["metrics"] == res["metrics"]
    # the flags as written reached the evaluator (sizes aside)
    for flag in ("--query_backend", "--gallery_backend", "--context_backend", "--pooling",
                 "--rep_source", "--query_source", "--grid_sample_mode", "--head_train_split",
                 "--head_train_backend", "--context_mode_test", "--target_transform"):
        if cmd.flag(flag) is not None:
            assert str(saved["args"][flag[2:]]) == cmd.flag(flag), flag
    for k, v in saved["metrics"].items():
        if isinstance(v, float):
            assert np.isfinite(v), (k, v)
