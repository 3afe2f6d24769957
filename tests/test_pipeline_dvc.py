"""The whole DVC chain on a tiny profile: repro, no-op repro, and an ablation by `dvc exp run -S`
that re-runs only the stages depending on the changed parameter and changes the report."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "synthetic": {"n_per_class": 6, "scan_train_per_class": 5, "scan_test_per_class": 2,
                  "scan_points": 512},
    "preprocess": {"shapenet": {"pt_pool": 600, "ray_pool": 128, "n_views": 4, "rays_per_view": 32,
                                "pc_grid": 16, "df_grid": 16, "dist_ref_points": 2048},
                   "scanobjectnn": {"pt_pool": 400, "ray_pool": 16}},
    "model": {"d_model": 32, "layers": 1, "heads": 2},
    "pretrain": {"mix_num_samples": 32, "epochs": 1, "batch": 16, "n_point": 16, "n_ray": 8},
    "finetune": {"epochs": 2, "mc_eval_k_test": 1},
    "ucpr": {"max_files": 8},
    "cpac": {"max_shapes": 6, "head_train_max_shapes": 8, "n_context": 16, "n_query": 16},
}


def deep_update(d: dict, u: dict) -> dict:
    for k, v in u.items():
        d[k] = deep_update(d.get(k, {}), v) if isinstance(v, dict) else v
    return d


def sh(cmd, cwd, env, timeout=900):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-4000:]}"
    return out


def ran_stages(out: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", out))


@pytest.mark.slow
def test_dvc_repro_noop_and_exp_run(tmp_path):
    work = tmp_path / "proj"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (REPO / f).is_file():
            (work / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, work / f)
    params = deep_update(yaml.safe_load((work / "params.yaml").read_text()), TINY)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    bindir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ["PATH"], TQDM_DISABLE="1",
               PYTHONPATH=str(work), MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    sh(["git", "init", "-q"], work, env)
    sh(["git", "add", "-A"], work, env)
    sh(["git", "commit", "-qm", "tiny"], work, env)

    out = sh([bindir + "/dvc", "repro"], work, env)
    assert {"synthesize", "preprocess_shapenet", "pretrain", "suite_cpac", "report"} <= ran_stages(out)
    cpac_md = (work / "reports" / "cpac_smoke.md").read_text()
    assert "nn_copy" in cpac_md and "12/12" in cpac_md

    t0 = time.time()
    out = sh([bindir + "/dvc", "repro"], work, env)
    assert ran_stages(out) == set(), out
    assert time.time() - t0 < 30

    sh(["git", "add", "-A"], work, env)
    sh(["git", "commit", "-qm", "results"], work, env)
    out = sh([bindir + "/dvc", "exp", "run", "-S", "cpac.ridge_lambda=1000"], work, env)
    assert ran_stages(out) == {"suite_cpac", "report"}, out
    new_md = (work / "reports" / "cpac_smoke.md").read_text()
    assert new_md != cpac_md
    assert "ridge_lambda" in new_md and "1000" in new_md
