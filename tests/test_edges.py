"""Bad input at the edge of the evaluator and analysis CLIs (issue 13: never a wrong number with
exit 0).

Every row of :data:`CASES` is a command line with one thing wrong (a flag out of range, a missing,
corrupt or misfit checkpoint, a corrupt cache file, an output location blocked by a file). It
must exit 2 with exactly one stderr line that names the flag or file and the cause, print no
traceback, and leave the output location as it was (files byte-identical, nothing added). A
write the disk refuses (ENOSPC) exits non-zero with one line naming the file, and leaves no
partial result.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from nepa3d.analysis import baseline_cls, baseline_ucpr
from nepa3d.analysis import completion_cpac_udf as cpac
from nepa3d.analysis import qualitative_cpac_marching_cubes as qmc
from nepa3d.analysis import qualitative_report as qr
from nepa3d.analysis import retrieval_ucpr as ucpr
from nepa3d.train import aux_losses, scratch_ckpt
from nepa3d.utils import results
from nepa3d.utils.ckpt import CheckpointError, load_checkpoint, save_checkpoint
from planted import corrupted_copy, tiny_checkpoint, write_planted

REPO = Path(__file__).resolve().parents[1]
#: the tensor the misfit checkpoint gets wrong (first in the model's order after pos_emb)
MISFIT_KEY = "token_mlp.0.weight"
#: what the output location holds before each case: a finished earlier run's files
EARLIER = {"out/result.json": b'{"task": "ucpr", "metrics": {"r@1": 0.25}}\n',
           "out/summary.json": b'{"per_shape": []}\n', "out/page.md": b"# earlier page\n",
           "out/last.pt": b"earlier checkpoint bytes", "blocker": b"a file where a folder goes\n"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """Planted caches and checkpoints shared by the cases (never written by them)."""
    d = tmp_path_factory.mktemp("inputs")
    write_planted(d / "shapes", "eval", 3, seed=0)
    write_planted(d / "shapes", "train_udf", 3, seed=1, first=3)
    write_planted(d / "scan", "train", 6, seed=2, scan=True)
    write_planted(d / "scan", "test", 3, seed=3, scan=True, first=6)
    bad_cache = corrupted_copy(d / "shapes", d / "corrupt", "eval/box/box_0001.npz")
    ckpt = tiny_checkpoint(d / "ckpt.pt")
    garbage = d / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint" * 8)
    misfit = load_checkpoint(ckpt)
    misfit["model"][MISFIT_KEY] = torch.zeros(32, 14)
    save_checkpoint(misfit, d / "misfit.pt")
    (d / "run_nosummary").mkdir()
    (d / "run_badsummary").mkdir()
    (d / "run_badsummary" / "summary.json").write_text(json.dumps({"grid_res": 8}))
    return {"shapes": str(d / "shapes"), "scan": str(d / "scan"), "ckpt": str(ckpt),
            "garbage": str(garbage), "misfit": str(d / "misfit.pt"), "corrupt": str(d / "corrupt"),
            "bad_file": str(bad_cache), "inputs": str(d)}


@pytest.fixture(autouse=True)
def quiet_progress(monkeypatch):
    """No progress bars on stderr: the error line is all a bad command prints there."""
    for mod in (ucpr, cpac):
        monkeypatch.setattr(mod, "tqdm", lambda it, **kw: it)


@pytest.fixture
def place(tmp_path, inputs) -> dict[str, str]:
    """The output location with an earlier run's files; the format fields of a case's argv."""
    for rel, data in EARLIER.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    return {**inputs, "out": str(tmp_path / "out"), "blocker": str(tmp_path / "blocker"),
            "tmp": str(tmp_path)}


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes)."""
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def exit_code(main, argv: list[str]) -> int:
    """What the process would exit with: main's int, 0 for a result dict, or SystemExit's code."""
    try:
        ret = main(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return 0 if isinstance(ret, dict) else int(ret or 0)


# --------------------------------------------------------------------------------------------
# The table: (id, CLI main, argv with {fields}, words the error line must hold)
# --------------------------------------------------------------------------------------------

UCPR = ["--cache_root", "{shapes}", "--ckpt", "{ckpt}", "--device", "cpu", "--query_backend",
        "mesh", "--gallery_backend", "udfgrid", "--out_json", "{out}/result.json"]
CPAC = ["--cache_root", "{shapes}", "--ckpt", "{ckpt}", "--device", "cpu", "--n_context", "16",
        "--n_query", "16", "--out_json", "{out}/result.json"]
BCLS = ["--cache_root", "{scan}", "--backend", "pointcloud_noray", "--n_point", "16",
        "--out_json", "{out}/result.json"]
BUCPR = ["--cache_root", "{shapes}", "--query_backend", "mesh", "--gallery_backend", "udfgrid",
         "--n_point", "16", "--out_json", "{out}/result.json"]
QMC = ["--cache_root", "{shapes}", "--ckpt", "{ckpt}", "--device", "cpu", "--grid_res", "8",
       "--n_context", "16", "--n_query_probe", "16", "--max_shapes", "1", "--save_png", "0",
       "--out_dir", "{out}"]
QR = ["--run_dir", "{inputs}/run_nosummary", "--out", "{out}/page.md"]
SCRATCH = ["--out", "{out}/last.pt", "--d_model", "32", "--layers", "1", "--heads", "2",
           "--n_point", "16", "--n_ray", "8"]


@dataclass(frozen=True)
class Case:
    id: str
    main: object
    argv: tuple[str, ...]
    needles: tuple[str, ...]


def case(id_: str, main, base: list[str], extra: list[str], *needles: str) -> Case:
    return Case(id_, main, tuple(base + extra), needles)


CASES = [
    # retrieval_ucpr
    case("ucpr-batch-0", ucpr.main, UCPR, ["--batch", "0"], "--batch", "integer >= 1", "'0'"),
    case("ucpr-max_files-neg", ucpr.main, UCPR, ["--max_files", "-1"], "--max_files", ">= 0"),
    case("ucpr-mc_k-0", ucpr.main, UCPR, ["--mc_k", "0"], "--mc_k", "integer >= 1"),
    case("ucpr-tie_eps-neg", ucpr.main, UCPR, ["--tie_break_eps=-1e-6"], "--tie_break_eps",
         "number >= 0"),
    case("ucpr-max_len-0", ucpr.main, UCPR, ["--max_len", "0"], "--max_len", "-1 (auto)"),
    case("ucpr-qa_tokens-2", ucpr.main, UCPR, ["--qa_tokens", "2"], "--qa_tokens",
         "invalid choice"),
    case("ucpr-voxel_grid-0", ucpr.main, UCPR, ["--voxel_grid", "0"], "voxel_grid", ">= 1"),
    case("ucpr-ckpt-missing", ucpr.main, UCPR, ["--ckpt", "{tmp}/nope.pt"], "nope.pt",
         "does not exist"),
    case("ucpr-ckpt-garbage", ucpr.main, UCPR, ["--ckpt", "{garbage}"], "garbage.pt",
         "cannot be loaded"),
    case("ucpr-ckpt-misfit", ucpr.main, UCPR, ["--ckpt", "{misfit}"], "misfit.pt", MISFIT_KEY,
         "checkpoint (32, 14) vs model (32, 15)"),
    case("ucpr-cache-corrupt", ucpr.main, UCPR, ["--cache_root", "{corrupt}"], "{bad_file}"),
    case("ucpr-out-under-file", ucpr.main, UCPR, ["--out_json", "{blocker}/r.json"], "--out_json",
         "{blocker} is a file, not a folder"),
    case("ucpr-out-is-folder", ucpr.main, UCPR, ["--out_json", "{out}"], "--out_json",
         "is a folder, not a file"),
    # completion_cpac_udf
    case("cpac-n_context-0", cpac.main, CPAC, ["--n_context", "0"], "--n_context", "integer >= 1"),
    case("cpac-n_query-neg", cpac.main, CPAC, ["--n_query", "-5"], "--n_query", "integer >= 1"),
    case("cpac-max_shapes-neg", cpac.main, CPAC, ["--max_shapes", "-3"], "--max_shapes", ">= 0"),
    case("cpac-head_max-neg", cpac.main, CPAC, ["--head_train_max_shapes", "-1"],
         "--head_train_max_shapes", ">= 0"),
    case("cpac-pool_frac-1.5", cpac.main, CPAC, ["--query_pool_frac", "1.5"], "--query_pool_frac",
         "number in [0, 1]"),
    case("cpac-near_frac-neg", cpac.main, CPAC, ["--grid_near_frac=-0.1"], "--grid_near_frac",
         "number in [0, 1]"),
    case("cpac-head_ratio-2", cpac.main, CPAC, ["--head_train_ratio", "2"], "--head_train_ratio",
         "number in [0, 1]"),
    case("cpac-ridge_lambda-neg", cpac.main, CPAC, ["--ridge_lambda=-1e-3"], "--ridge_lambda",
         "number >= 0"),
    case("cpac-lip_lambda-neg", cpac.main, CPAC, ["--ridge_lipschitz_lambda", "-1"],
         "--ridge_lipschitz_lambda", "number >= 0"),
    case("cpac-tau-0", cpac.main, CPAC, ["--tau", "0"], "--tau", "number > 0"),
    case("cpac-tau-nan", cpac.main, CPAC, ["--tau", "nan"], "--tau", "number > 0"),
    case("cpac-batch-0", cpac.main, CPAC, ["--batch", "0"], "--batch", "integer >= 1"),
    case("cpac-disjoint-2", cpac.main, CPAC, ["--disjoint_context_query", "2"],
         "--disjoint_context_query", "invalid choice"),
    case("cpac-schedule-typo", cpac.main, CPAC, ["--grid_res_schedule", "16,3x,64"],
         "--grid_res_schedule", "integers >= 2"),
    case("cpac-stage-weights-count", cpac.main, CPAC, ["--grid_c2f_stage_weights", "1,2"],
         "--grid_c2f_stage_weights", "2 weights", "3 stages"),
    case("cpac-baseline_only", cpac.main, CPAC, ["--baseline_only", "1"], "--baseline_only",
         "--baseline nn_copy"),
    case("cpac-ckpt-misfit", cpac.main, CPAC, ["--ckpt", "{misfit}"], "misfit.pt", MISFIT_KEY),
    case("cpac-cache-corrupt", cpac.main, CPAC, ["--cache_root", "{corrupt}"], "{bad_file}"),
    case("cpac-head-split-missing", cpac.main, CPAC, ["--head_train_split", "nope"],
         "no head-train cache files", "nope"),
    # baseline_cls
    case("bcls-val_ratio-1", baseline_cls.main, BCLS, ["--val_ratio", "1"], "--val_ratio",
         "number in [0, 1)"),
    case("bcls-fewshot_k-neg", baseline_cls.main, BCLS, ["--fewshot_k", "-1"], "--fewshot_k",
         ">= 0"),
    case("bcls-train_views-0", baseline_cls.main, BCLS, ["--train_views", "0"], "--train_views",
         "-1 (auto)"),
    case("bcls-n_ray-8", baseline_cls.main, BCLS, ["--n_ray", "8"], "--n_ray 8", "no rays"),
    case("bcls-out-under-file", baseline_cls.main, BCLS, ["--out_json", "{blocker}/x/r.json"],
         "--out_json", "is a file, not a folder"),
    # baseline_ucpr
    case("bucpr-n_point-1", baseline_ucpr.main, BUCPR, ["--n_point", "1"], "--n_point",
         "integer >= 2"),
    case("bucpr-chunk-0", baseline_ucpr.main, BUCPR, ["--chunk", "0"], "--chunk", "integer >= 1"),
    # qualitative_cpac_marching_cubes
    case("qmc-grid_res-1", qmc.main, QMC, ["--grid_res", "1"], "--grid_res", "integer >= 2"),
    case("qmc-mc_level-0", qmc.main, QMC, ["--mc_level", "0"], "--mc_level", "number > 0"),
    case("qmc-queries_per_pass", qmc.main, QMC, ["--queries_per_pass", "-2"], "--queries_per_pass",
         "integer >= -1"),
    case("qmc-save_png-2", qmc.main, QMC, ["--save_png", "2"], "--save_png", "invalid choice"),
    case("qmc-out_dir-is-file", qmc.main, QMC, ["--out_dir", "{blocker}"], "--out_dir",
         "is a file, not a folder"),
    case("qmc-ckpt-misfit", qmc.main, QMC, ["--ckpt", "{misfit}"], "misfit.pt", MISFIT_KEY),
    case("qmc-ckpt-missing", qmc.main, QMC, ["--ckpt", "{tmp}/nope.pt"], "nope.pt",
         "does not exist"),
    # qualitative_report
    case("qr-no-summary", qr.main, QR, [], "run_nosummary/summary.json", "cannot read"),
    case("qr-bad-summary", qr.main, QR, ["--run_dir", "{inputs}/run_badsummary"],
         "run_badsummary/summary.json", "not a qualitative summary"),
    case("qr-out-under-file", qr.main, QR, ["--out", "{blocker}/page.md"], "--out",
         "is a file, not a folder"),
    # scratch_ckpt
    case("scratch-heads", scratch_ckpt.main, SCRATCH, ["--heads", "5"], "--d_model 32",
         "--heads 5", "multiple"),
    case("scratch-n_point-0", scratch_ckpt.main, SCRATCH, ["--n_point", "0"], "--n_point",
         "integer >= 1"),
    case("scratch-out-under-file", scratch_ckpt.main, SCRATCH, ["--out", "{blocker}/last.pt"],
         "--out", "is a file, not a folder"),
]


def test_the_table_is_broad():
    assert len(CASES) >= 20 and len({c.id for c in CASES}) == len(CASES)
    assert {c.main for c in CASES} == {ucpr.main, cpac.main, baseline_cls.main, baseline_ucpr.main,
                                       qmc.main, qr.main, scratch_ckpt.main}


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(c, place, tmp_path, capsys):
    before = snapshot(tmp_path)
    code = exit_code(c.main, [a.format(**place) for a in c.argv])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert "error:" in lines[0] and "Traceback" not in err
    for needle in c.needles:
        assert needle.format(**place) in lines[0], (needle, lines[0])
    assert snapshot(tmp_path) == before  # earlier results byte-identical, nothing added
    assert not out.strip().startswith("{")  # no result printed either


def test_a_real_process_exits_2_with_one_line(place, tmp_path):
    """The same contract outside pytest: exit status and stderr of ``python -m``."""
    argv = [a.format(**place) for a in UCPR + ["--ckpt", "{misfit}"]]
    before = snapshot(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "nepa3d.analysis.retrieval_ucpr", *argv],
                          cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, TQDM_DISABLE="1", PYTHONPATH=str(REPO)))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("[retrieval_ucpr] error: ") and MISFIT_KEY in lines[0]
    assert snapshot(tmp_path) == before


def test_teacher_that_does_not_fit_names_file_and_key(inputs):
    """load_teacher checks shapes as load_backbone does (no bare RuntimeError from torch)."""
    with pytest.raises(CheckpointError) as e:
        aux_losses.load_teacher(inputs["misfit"], max_len=64, n_types=9, d_model=32, heads=2,
                                layers=1)
    assert e.value.path == inputs["misfit"]
    assert f"{MISFIT_KEY}: checkpoint (32, 14) vs model (32, 15)" in str(e.value)
    teacher = aux_losses.load_teacher(inputs["ckpt"], max_len=64, n_types=9, d_model=32, heads=2,
                                      layers=1)
    assert teacher.pos_emb.shape[1] == 64 and not any(p.requires_grad for p in teacher.parameters())


# --------------------------------------------------------------------------------------------
# A write the disk refuses
# --------------------------------------------------------------------------------------------

def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC)


def half_then_enospc(obj, fh, **kwargs):
    """json.dump that gets half the text onto the disk, then runs out of space."""
    text = json.dumps(obj, **kwargs)
    fh.write(text[:len(text) // 2])
    fh.flush()
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


FULL_DISK = [
    ("ucpr", ucpr.main, UCPR, "{out}/result.json"),
    ("cpac", cpac.main, CPAC + ["--max_shapes", "2", "--head_train_max_shapes", "2"],
     "{out}/result.json"),
    ("bcls", baseline_cls.main, BCLS, "{out}/result.json"),
    ("bucpr", baseline_ucpr.main, BUCPR, "{out}/result.json"),
]


@pytest.mark.parametrize("how", ["writer", "half-written"])
@pytest.mark.parametrize("name, main, argv, target", FULL_DISK, ids=[r[0] for r in FULL_DISK])
def test_disk_full_result_is_one_line_and_no_partial_file(name, main, argv, target, how, place,
                                                          tmp_path, monkeypatch, capsys):
    if how == "writer":  # the atomic writer itself refuses
        monkeypatch.setattr(results, "write_json_atomic", enospc)
    else:  # the real atomic writer: half a file on disk, then ENOSPC
        monkeypatch.setattr(results.json, "dump", half_then_enospc)
    before = snapshot(tmp_path)
    code = exit_code(main, [a.format(**place) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "error:" in ln]  # the run's own log lines aside
    assert code not in (0, None)
    assert len(lines) == 1 and "Traceback" not in err
    assert target.format(**place) in lines[0] and "no space left" in lines[0]
    assert snapshot(tmp_path) == before  # the earlier result intact, no temp file left


def test_disk_full_qualitative_and_scratch(place, tmp_path, monkeypatch, capsys):
    """The qualitative summary and a scratch checkpoint: one line naming the file, exit 1,
    no summary or checkpoint that parses."""
    monkeypatch.setattr(qmc, "write_json_atomic", enospc)
    assert exit_code(qmc.main, [a.format(**place) for a in QMC]) == 1
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert f"{place['out']}/summary.json: cannot write (no space left on device)" in line
    assert not (tmp_path / "out" / "summary.json").exists()  # the stale one is gone, no new one

    monkeypatch.setattr(scratch_ckpt, "save_checkpoint", enospc)
    assert exit_code(scratch_ckpt.main, [a.format(**place) for a in SCRATCH]) == 1
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert f"{place['out']}/last.pt: cannot write (no space left on device)" in line
    assert (tmp_path / "out" / "last.pt").read_bytes() == EARLIER["out/last.pt"]
