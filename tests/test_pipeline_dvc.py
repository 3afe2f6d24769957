"""The DVC chain on a tiny profile: the headline tier as `make repro` runs it (`dvc repro report
qualitative_cpac`), a no-op repro, ablations by `dvc exp run -S` that re-run only the stages
depending on the changed parameter, and the lab tier's continuations (one engine run of
suites/continuations.yaml: chains qa_dualmask -> b2c2 -> scale -> scale_long run in order, and a
changed row re-runs that row and the rows that resume it). The lab tier's full graph is checked
statically in test_suites_catalog.py."""

import json
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
    "ucpr": {"max_files": 8, "main_eval_seeds": [0, 1]},
    "cpac": {"max_shapes": 6, "head_train_max_shapes": 8, "n_context": 16, "n_query": 16,
             "main_eval_seeds": [0, 1]},  # two seeds: the canaries' noise level
    "cpac_quick": {"max_shapes": 4, "head_train_max_shapes": 6},
    "cpac_b1": {"max_shapes": 4, "head_train_max_shapes": 6},
    # scaled context: 2 x pretrain.n_point; max_len = 1 + 2 (n_context + n_query) + 1
    "scale_eval": {"n_context": 32, "max_len": 98},
    "qualitative": {"grid_res": 8, "max_shapes": 2, "png_dpi": 30},
}
TINY["synthetic"]["scan_variants"] = ["main_split_nobg"]  # the default tier reads the object-only scans


def tiny_continuations(doc: dict) -> dict:
    """suites/continuations.yaml at a tiny size: every row at 16 samples an epoch (derived, so a
    new row cannot run full size here), the 52-epoch rows at 2, scale at 2x the tiny n_point."""
    doc["args"]["mix_num_samples"] = 16
    for name, row in doc["matrix"]["continuation"].items():
        row.pop("mix_num_samples", None)
        if row.get("epochs_after_resume", 0) > 5:
            row["epochs_after_resume"] = 2
        if "n_point" in row:
            row["n_point"] = 2 * TINY["pretrain"]["n_point"]
    return doc

TARGETS = ["report", "qualitative_cpac"]  # make repro
HEADLINE_STAGES = {"synthesize", "preprocess_shapenet", "unpaired_split", "preprocess_scanobjectnn",
                   "fingerprint_code", "pretrain", "scratch", "suite_m1_fewshot", "suite_ucpr_main",
                   "suite_cpac_main", "suite_canary", "qualitative_cpac", "report"}


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


def results(work: Path, suite: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((work / "results" / suite).glob("*.json"))
            if not p.name.endswith(".job.json")]


@pytest.mark.slow
def test_dvc_repro_noop_and_exp_run(tmp_path):
    work = tmp_path / "proj"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (REPO / f).is_file():
            (work / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, work / f)
    doc = yaml.safe_load((work / "params.yaml").read_text())
    doc = deep_update(doc, {k: v for k, v in TINY.items() if k in doc})
    (work / "params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    conts = work / "suites" / "continuations.yaml"
    conts.write_text(yaml.safe_dump(tiny_continuations(yaml.safe_load(conts.read_text())), sort_keys=False))
    bindir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ["PATH"], TQDM_DISABLE="1",
               PYTHONPATH=str(work), BENCH_NO_MLFLOW="1",  # MLflow: tests/test_benchmark_tracking*
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    sh(["git", "init", "-q"], work, env)
    sh(["git", "add", "-A"], work, env)
    sh(["git", "commit", "-qm", "tiny"], work, env)
    dvc = bindir + "/dvc"

    out = sh([dvc, "repro", *TARGETS], work, env)
    assert ran_stages(out) == HEADLINE_STAGES, out  # the headline tier and nothing of the lab tier
    # the pretraining roots ran as one engine suite, two at a time
    assert "pretrain: done=6 skipped=0 failed=0 total=6" in out
    for root in ("shapenet_mix_nepa", "qa_nodual"):
        assert [json.loads(line)["epoch"] for line in
                (work / "runs" / "pretrain" / root / "train_log.jsonl").read_text().splitlines()] == [0]
    cpac = results(work, "cpac_main")
    assert len(cpac) == 12 and all("nn_copy" in r["baselines"] for r in cpac)
    assert len(results(work, "ucpr_main")) == 32 and len(results(work, "m1_fewshot")) == 90
    # the canaries' intact rows are the headline jobs: each distinct job ran once (whichever
    # stage came first) and the other suite adopted it by id
    counts = {m.group(1): (int(m.group(2)), int(m.group(3) or 0)) for m in re.finditer(
        r"^(\w+): done=(\d+) skipped=\d+ (?:reused=(\d+) )?failed=0", out, re.M)}
    assert counts["cpac_main"][0] + counts["canary_cpac"][0] == 12  # 6 rows x 2 seeds, run once
    assert counts["cpac_main"][1] + counts["canary_cpac"][1] == 4  # the canary's 2 rows x 2 seeds
    assert counts["m1_fewshot"][0] + counts["canary_cls"][0] == 90 + 3  # + 3 shuffled-label runs
    for name in ("m1_fewshot", "ucpr_main", "cpac_main", "canary_cls", "canary_cpac", "canary_ucpr", "pretrain"):
        assert (work / "reports" / f"{name}.md").is_file(), name
    assert "## Sensitivity check" in (work / "reports" / "canary_cls.md").read_text()
    assert "Corpus: embedded procedural corpus" in (work / "reports" / "m1_fewshot.md").read_text()
    # each suite stage wrote its own dvc metrics (seed mean, std, n per row) and seed values
    for name in ("pretrain", "m1_fewshot", "ucpr_main", "cpac_main", "canary_cls", "canary_cpac", "canary_ucpr"):
        assert json.loads((work / "metrics" / f"{name}.seeds.json").read_text())["suite"] == name
    cpac_metrics = json.loads((work / "metrics" / "cpac_main.json").read_text())
    assert len(cpac_metrics) == 6 and cpac_metrics["ckpt=qa_nodual"]["mae"]["n"] == 2
    qual = json.loads((work / "results" / "qual_mc" / "summary.json").read_text())
    page = (work / "reports" / "qualitative_cpac.md").read_text()
    assert qual["n_eval_shapes"] == 2 and qual["grid_res"] == 8
    assert page.count("](qualitative_cpac/") == 2 and qual["ckpt"].endswith("pretrain/qa_nodual/last.pt")

    t0 = time.time()
    out = sh([dvc, "repro", *TARGETS], work, env)
    assert ran_stages(out) == set(), out
    assert time.time() - t0 < 60

    sh(["git", "add", "-A"], work, env)
    sh(["git", "commit", "-qm", "results"], work, env)
    # two settings in one experiment: a probe setting (read by the CPAC suites only) and one root's
    # setting (the roots retrain in their one stage; the other roots' checkpoints are
    # byte-identical, so M1, which reads no Q/A root, stays as it was and only qa_nodual's jobs run)
    out = sh([dvc, "exp", "run", "-S", "cpac.ridge_lambda=1000",
              "-S", "pretrain_variants.qa_nodual.dual_mask_far=0.05", *TARGETS], work, env)
    assert ran_stages(out) == {"pretrain", "suite_ucpr_main", "suite_cpac_main", "suite_canary",
                               "qualitative_cpac", "report"}, out
    assert "ucpr_main: done=8 skipped=24" in out, out  # qa_nodual's 4 pairs x 2 seeds
    lams = sorted(r["args"]["ridge_lambda"] for r in results(work, "cpac_main"))
    assert lams == [0.001] * 12 + [1000.0] * 12  # earlier results persist; new jobs were added
    # the experiment's metrics are the new ones: `dvc metrics diff` names the moved CPAC means
    # (stdout only: stderr says the lab tier's metrics files, not built here, could not be read)
    diff = subprocess.run([dvc, "metrics", "diff", "--json"], cwd=work, env=env, capture_output=True, text=True)
    assert diff.returncode == 0, diff.stderr
    moved = json.loads(diff.stdout)
    assert any(k.endswith(".mae.mean") for k in moved.get("metrics/cpac_main.json", {})), moved
    assert "metrics/m1_fewshot.json" not in moved  # M1 did not re-run

    # the lab tier's continuations: one stage, one engine run; a row that resumes another row's
    # checkpoint runs after it (epochs continue from the base: root ends at epoch 0)
    out = sh([dvc, "repro", "pretrain_cont"], work, env)
    assert ran_stages(out) == {"pretrain_cont"}, out
    assert "continuations: done=15 skipped=0 failed=0 total=15" in out, out

    def epochs(row):
        return [json.loads(line)["epoch"] for line in
                (work / "runs" / "continue" / row / "train_log.jsonl").read_text().splitlines()]

    assert {v: epochs(v) for v in ("b2", "b2c2", "scale", "scale_long", "scale_stab", "qa_nodual_long")} == {
        "b2": [1], "b2c2": [1], "scale": [2], "scale_long": [3, 4, 5], "scale_stab": [3, 4],
        "qa_nodual_long": [1, 2]}
    before = {v: (work / "runs" / "continue" / v / "last.pt").read_bytes() for v in ("b2", "scale_long")}
    # a changed row of the catalog (an experiment on the edited suite file) re-runs that row and
    # the rows that resume it, nothing else
    sh(["git", "add", "-A"], work, env)
    sh(["git", "commit", "-qm", "continuations"], work, env)
    doc = yaml.safe_load(conts.read_text())
    doc["matrix"]["continuation"]["scale"]["n_point"] = 48
    conts.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = sh([dvc, "exp", "run", "pretrain_cont"], work, env)
    assert ran_stages(out) == {"pretrain_cont"}, out
    assert "continuations: done=3 skipped=12 failed=0 total=15" in out, out
    assert epochs("scale") == [2] and epochs("scale_long") == [3, 4, 5]  # new runs: logs start over
    assert [json.loads(line)["n_point"] for line in
            (work / "runs" / "continue" / "scale" / "train_log.jsonl").read_text().splitlines()] == [48]
    assert (work / "runs" / "continue" / "b2" / "last.pt").read_bytes() == before["b2"]
    assert (work / "runs" / "continue" / "scale_long" / "last.pt").read_bytes() != before["scale_long"]


# --- static checks of dvc.yaml (fast) ----------------------------------------------------------

def _stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def test_every_suite_stage_declares_its_suites_metrics():
    """Each stage that runs suites (`python -m benchmark run ... --metrics metrics`) writes, per
    suite it runs, metrics/<suite>.json (declared: its dvc metrics, so an experiment shows the
    numbers of the stages it re-ran) and metrics/<suite>.seeds.json (git-tracked, not declared: a
    declared file costs every no-op `dvc repro` a status check and nothing reads it through DVC);
    no other stage or top-level entry declares metrics (summary.json's table means would only
    move with the report stage and drown the per-suite files)."""
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert "metrics" not in doc
    runners = {name: st for name, st in doc["stages"].items()
               if " ".join(st["cmd"] if isinstance(st["cmd"], list) else [st["cmd"]]).startswith("python -m benchmark run ")}
    assert {"pretrain", "pretrain_cont", "suite_m1_fewshot", "suite_ucpr_main", "suite_cpac_main",
            "suite_canary", "suites_lab"} == set(runners)
    for name, stage in doc["stages"].items():
        if name not in runners:
            assert "metrics" not in stage, name
            continue
        assert stage["cmd"].split()[-2:] == ["--metrics", "metrics"], name
        suites = re.findall(r"suites/(\w+)\.yaml", stage["cmd"])
        assert stage["metrics"] == [{f"metrics/{s}.json": {"cache": False}} for s in suites], name
        assert not [o for o in stage["outs"] if next(iter(o)).startswith("metrics/")], name


def test_report_outputs_persist():
    """DVC deletes a stage's non-persisted outputs before running it: the reports persist, so a
    failed report stage leaves the last good ones (benchmark report writes all or nothing)."""
    stages = _stages()
    for name in ("report", "report_lab"):
        outs = stages[name]["outs"]
        assert outs and all(o[next(iter(o))] == {"cache": False, "persist": True} for o in outs), name
    assert "- reports/summary.json:" in (REPO / "dvc.yaml").read_text()  # still written, an output


def test_checkpoint_and_page_outputs_persist():
    """DVC deletes a stage's non-persisted outputs before its command runs, so a value the command
    refuses (`dvc exp run -S model.heads=0`, `-S cpac.ridge_lambda=abc`) used to delete the last
    good checkpoints / qualitative page with it. Every output under runs/ and reports/ persists
    (the commands overwrite them atomically or all at once)."""
    for name, stage in _stages().items():
        for out in stage.get("outs", []):
            path, flags = (out, {}) if isinstance(out, str) else next(iter(out.items()))
            if path.startswith(("runs/", "reports/")) or path == "results/qual_mc":
                assert (flags or {}).get("persist") is True, (name, path)
