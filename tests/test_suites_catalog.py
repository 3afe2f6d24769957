"""The suite catalog: one suite per lab protocol, each expanding to the lab's table.

The expected layouts below are the lab's tables (each suite's section of docs/protocols.md says
what the table measures and at which size): for every table its row axes and row names, column axes, the
fixed (`where`) rows and the metrics, plus the job count. The checks also parse every job's argv
with the real CLI parser of its module, and check the DVC stage graph statically (every suite has
a stage whose deps name the checkpoints it evaluates and whose params are exactly what it reads;
the report stage covers every suite; every checkpoint is produced by a pretraining stage).
"""
from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import yaml
from dvc_render import render

from benchmark.expand import expand
from benchmark.suite import load_suite

REPO = Path(__file__).resolve().parents[1]
SUITES = REPO / "suites"
PARAMS = REPO / "params.yaml"

CONTINUATIONS = ["b2", "b3", "b23", "b2_long", "c0", "c1", "c2", "b2c2", "d", "e", "qa_nodual_long",
                 "qa_nodual_e_long", "scale", "scale_long", "scale_stab"]
M1_METHODS = ["scratch", "shapenet_nepa", "shapenet_mesh_udf_nepa", "shapenet_mix_nepa", "shapenet_mix_mae"]
ROOTS = ["shapenet_nepa", "shapenet_mesh_udf_nepa", "shapenet_mix_nepa", "shapenet_mix_mae", "qa_dualmask",
         "qa_nodual"]
BASELINE = "shape_features"  # the non-learned baseline row of the headline tables
M1_K = ["0", "1", "5", "10", "20"]
UCPR_PAIRS = ["mesh2udf", "udf2mesh", "mesh2pc", "pc2udf"]
QA = ["qa_nodual", "qa_dualmask"]
QUERY = ["pool", "grid_near08"]
A_PILOT = ["pool_uniform", "grid_uniform", "grid_near08", "hybrid50_uniform", "hybrid50_near08",
           "hybrid50_near08_trunc01"]
B1_SWEEP = ["lip0", "lip1e-4_pairs1024", "lip3e-4_pairs1024", "lip1e-3_pairs1024", "lip1e-3_pairs16384"]
CPAC3 = ["mae", "rmse", "iou@0.03"]
NEAR_IOU = "near@0.05/iou@0.03"
R4 = ["r@1", "r@5", "r@10", "mAP"]


def T(rows, cols=(), where=None, metrics=(), **axes):
    """An expected table: row/col axes with their row names (in order), fixed rows, metrics."""
    return {"rows": list(rows), "cols": list(cols), "where": dict(where or {}), "metrics": list(metrics),
            "axes": axes}


def cpac_pool_grid(ckpts):
    return [T(["ckpt"], where={"query": "pool"}, metrics=CPAC3, ckpt=ckpts),
            T(["ckpt"], where={"query": "grid_near08"}, metrics=CPAC3, ckpt=ckpts)]


# suite -> (job count, seeds, [tables]); a comment names the lab table(s) mirrored.
EXPECTED = {
    # the lab's M1 table: Method | K | n(seed) | test_acc
    # (+ the non-learned baseline row; `scratch` is the random-init row)
    "m1_fewshot": (90, [0, 1, 2], [
        T(["method", "K"], metrics=["test_acc"], method=M1_METHODS + [BASELINE], K=M1_K),
        T(["method", "K"], metrics=["best_val_acc", "test_majority_rate"], method=M1_METHODS + [BASELINE],
          K=M1_K)]),
    # pretrained vs scratch with a converged fine-tune (issue 4's acceptance table)
    "fewshot_converged": (12, [0, 1, 2], [
        T(["method", "K"], metrics=["test_acc", "best_val_acc", "test_majority_rate"],
          method=["scratch", "shapenet_mix_nepa"], K=["5", "10"])]),
    # the lab's UCPR main table: Pair | NoDual R@1/R@5/R@10/mAP | DualMask ...
    # (long form, + random-init and baseline rows, eval seeds 0-2, and the embeddings' spread)
    "ucpr_main": (48, [0, 1, 2], [
        T(["pair", "ckpt"], metrics=R4, pair=UCPR_PAIRS, ckpt=QA + ["random_init", BASELINE]),
        T(["pair", "ckpt"], metrics=["embed_spread_query", "embed_spread_gallery"], pair=UCPR_PAIRS,
          ckpt=QA + ["random_init", BASELINE])]),
    # the lab's UCPR ablation: Model | Base | ablate_point_xyz | ablate_point_dist (R@1/mAP)
    "ucpr_ablation": (6, [0], [T(["ckpt"], ["ablation"], metrics=["r@1", "mAP"], ckpt=QA,
                                 ablation=["base", "ablate_point_xyz", "ablate_point_dist"])]),
    # the lab's non-transductive post-fix CPAC rows + the Q/A CPAC table: Model | MAE | RMSE | IoU@0.03
    # (the lab's seed 0 plus 1 and 2: params.yaml cpac.main_eval_seeds)
    # (+ the random-init rows of both token layouts)
    "cpac_main": (18, [0, 1, 2], [T(["ckpt"], metrics=CPAC3,
                             ckpt=["shapenet_mix_nepa", "shapenet_mix_mae", "qa_nodual", "qa_dualmask",
                                   "random_init", "random_init_legacy"])]),
    # embedded-budget check (lab tier): the no-dual root trained on, with and without the E head
    "cpac_budget_check": (12, [0, 1, 2], [T(["ckpt"], metrics=CPAC3,
                                         ckpt=["qa_nodual", "qa_nodual_long", "qa_nodual_e_long",
                                               "random_init"])]),
    # the pretraining roots (an engine suite: runs/pretrain/<name>)
    "pretrain": (6, [0], [T(["variant"], metrics=["final_loss", "steps"], variant=ROOTS)]),
    # the completion ablations' continuations (+ the two embedded-budget checks of cpac_budget_check)
    "continuations": (15, [0], [T(["continuation"], metrics=["final_loss", "steps", "epochs"],
                                  continuation=CONTINUATIONS)]),
    # canary checks: each planted defect against the intact headline jobs
    "canary_cls": (6, [0, 1, 2], [T(["defect"], metrics=["test_acc"], defect=["intact", "shuffled_labels"])]),
    "canary_cpac": (6, [0, 1, 2], [T(["defect"], metrics=["mae"], defect=["intact", "random_weights"])]),
    "canary_ucpr": (6, [0, 1, 2], [T(["defect"], metrics=["r@1", "mAP"], defect=["intact", "zero_dist"])]),
    # A-Pilot full matrix: Setting | MAE | RMSE | IoU | Near-MAE | Near-IoU | NN-copy
    "cpac_a_pilot": (18, [0, 1, 2], [T(["setting"], metrics=CPAC3 + ["near@0.05/mae", NEAR_IOU],
                                       setting=A_PILOT)]),
    # B-1 quick sweep: Setting | MAE | RMSE | IoU@0.03
    "cpac_b1_lipschitz": (5, [0], [T(["lipschitz"], metrics=CPAC3, lipschitz=B1_SWEEP)]),
    # B-1 full size: Setting | MAE | RMSE | IoU | Near-IoU (mean ± std, eval seeds 0,1,2)
    "cpac_b1_lipschitz_full": (6, [0, 1, 2], [T(["setting"], metrics=CPAC3 + [NEAR_IOU],
                                                setting=["baseline", "lipschitz"])]),
    # B-2/B-3 fixed-256 quick pilot: Model | MAE | RMSE | IoU | Near-IoU
    "b23_quick": (4, [0], [T(["ckpt"], metrics=CPAC3 + [NEAR_IOU], ckpt=["qa_dualmask", "b2", "b3", "b23"])]),
    # B-2 longer confirm, CPAC: CKPT | MAE | RMSE | IoU | Near-IoU
    "b2_long": (2, [0], [T(["ckpt"], metrics=CPAC3 + [NEAR_IOU], ckpt=["qa_dualmask", "b2_long"])]),
    # C-0 quick compare: pool table and grid near08 table
    "c0_quick": (6, [0], cpac_pool_grid(["qa_dualmask", "b2_long", "c0"])),
    # C-1/C-2 quick compare: pool table and grid near08 table
    "c12_quick": (10, [0], cpac_pool_grid(["qa_dualmask", "b2_long", "c0", "c1", "c2"])),
    # B-2 + C-2 joint confirm: pool table and grid near08 table
    "b2c2_joint": (6, [0], cpac_pool_grid(["b2_long", "c2", "b2c2"])),
    # D/E quick compare: pool table and grid near08 table
    "de_quick": (8, [0], cpac_pool_grid(["qa_dualmask", "b2c2", "d", "e"])),
    # B-3 full-protocol fill: Model | Query | MAE | RMSE | IoU (query-major row order)
    "b3_full": (8, [0], [T(["query", "ckpt"], metrics=CPAC3, query=QUERY,
                           ckpt=["qa_dualmask", "b2", "b3", "b23"])]),
    # UCPR hard-pair tables of "B-2 Longer Confirm", "C-1/C-2" and "B-2 + C-2 Joint Confirm"
    "ucpr_hardpair_quick": (6, [0], [
        T(["pair"], where={"ckpt": "b2_long"}, metrics=R4, pair=["mesh2udf", "mesh2pc"]),
        T(["pair"], where={"ckpt": "c2"}, metrics=R4, pair=["mesh2udf", "mesh2pc"]),
        T(["pair", "ckpt"], metrics=["r@1", "mAP"], pair=["mesh2udf", "mesh2pc"],
          ckpt=["b2_long", "c2", "b2c2"])]),
    # 6 Scale Quick: pool table and grid near08 table (pre-scale vs scale)
    "scale6": (4, [0], cpac_pool_grid(["b2c2", "scale"])),
    # 6 scale longer attempt + stability retry: Model | Query | MAE | RMSE | IoU@0.03 at the
    # scaled context (512) and the doubled one (1024)
    "scale6_long": (12, [0], [
        T(["ckpt", "query"], where={"context": c}, metrics=CPAC3,
          ckpt=["scale", "scale_long", "scale_stab"], query=["pool", "grid_near08"])
        for c in ("c512", "c1024")]),
    # grid_sample_mode | MAE | RMSE | IoU | Near-IoU
    "a1_coarse_to_fine": (3, [0], [T(["grid_sample_mode"], metrics=CPAC3 + [NEAR_IOU],
                                     grid_sample_mode=["uniform", "near_surface", "coarse_to_fine"])]),
}

HEADLINE = ["pretrain", "m1_fewshot", "ucpr_main", "cpac_main", "canary_cls", "canary_cpac", "canary_ucpr"]
CANARIES = ["canary_cls", "canary_cpac", "canary_ucpr"]
TRAINING = ["pretrain", "continuations"]  # suites that train checkpoints (their own stages)
#: the lab tier's evaluation suites: one DVC stage (suites_lab) runs them all
LAB_EVAL = sorted(n for n in EXPECTED if n not in HEADLINE + TRAINING)


def _suite(name):
    return load_suite(SUITES / f"{name}.yaml", PARAMS)


def _params():
    return yaml.safe_load(PARAMS.read_text())


def _continuation_rows() -> dict:
    """Row name -> its args of suites/continuations.yaml (the lab's continuation catalog)."""
    return yaml.safe_load((SUITES / "continuations.yaml").read_text())["matrix"]["continuation"]


def _dvc():
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _dvc_vars():
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["vars"]


def _parse(module: str, argv: list[str]):
    import importlib

    mod = importlib.import_module(module)
    try:
        return mod.build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse reports the bad flag on stderr
        raise AssertionError(f"{module} rejects {argv}") from exc


# --- every suite file ---------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(SUITES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_suite_validates_and_expands(path, tmp_path):
    suite = load_suite(path, PARAMS)
    jobs = expand(suite, tmp_path)
    assert jobs and len({j.job_id for j in jobs}) == len(jobs)


def test_catalog_has_every_lab_notes_protocol():
    missing = sorted(n for n in EXPECTED if not (SUITES / f"{n}.yaml").is_file())
    assert not missing, f"suites missing from suites/: {missing}"


# --- layout vs the lab's tables -------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_suite_layout_matches_lab_notes(name, tmp_path):
    n_jobs, seeds, tables = EXPECTED[name]
    suite = _suite(name)
    assert suite.name == name
    assert len(expand(suite, tmp_path)) == n_jobs
    assert suite.seed_values == seeds
    assert len(suite.tables) == len(tables), [t.title for t in suite.tables]
    for i, (got, want) in enumerate(zip(suite.tables, tables)):
        where = f"{name}.tables[{i}]"
        assert got.rows == want["rows"], where
        assert got.cols == want["cols"], where
        assert dict(got.where) == want["where"], where
        assert got.metrics == want["metrics"], where
        for axis in got.rows + got.cols:
            assert suite.axis_rows(axis) == want["axes"][axis], f"{where}: rows of axis {axis}"
        # the rendered row labels, in order: the product of the row axes' rows
        labels = list(itertools.product(*(suite.axis_rows(a) for a in got.rows)))
        expected = list(itertools.product(*(want["axes"][a] for a in want["rows"])))
        assert labels == expected, where
        # every matrix axis is placed (rows, cols or a fixed where row): nothing silently averaged
        assert set(got.rows) | set(got.cols) | set(got.where) == set(suite.axes), where


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_job_parses_with_its_cli(name, tmp_path):
    suite = _suite(name)
    for job in expand(suite, tmp_path):
        assert job.argv[1] == "-m"
        _parse(job.argv[2], job.argv[3:])  # the suite's module, or the row's (a baseline)


def test_m1_fewshot_seed_rule(tmp_path):
    """K=0: fewshot_seed 0; K>0: the K-shot subset follows the seed (-1); val/eval seeds fixed."""
    from nepa3d.train.finetune_cls import fewshot_seed

    jobs = expand(_suite("m1_fewshot"), tmp_path)
    for job in jobs:
        args = _parse(job.argv[2], job.argv[3:])
        k = int(job.tags["K"])
        assert args.fewshot_k == k
        assert fewshot_seed(args) == (0 if k == 0 else job.tags["seed"])
        assert (args.val_seed, args.eval_seed, args.val_ratio) == (0, 0, 0.1)
        # the baseline answers the same split and K-shot protocol, without a network
        assert (job.argv[2] == "nepa3d.analysis.baseline_cls") == (job.tags["method"] == BASELINE)
    methods = {j.tags["method"]: j.args.get("ckpt") for j in jobs}
    assert methods["scratch"] == "runs/scratch/last.pt" and methods[BASELINE] is None
    for m in M1_METHODS[1:]:
        assert methods[m] == f"runs/pretrain/{m}/last.pt"


def test_ucpr_independent_sampling_and_ablation_flags(tmp_path):
    for name in ("ucpr_main", "ucpr_ablation", "ucpr_hardpair_quick"):
        for job in expand(_suite(name), tmp_path):
            args = _parse(job.argv[2], job.argv[3:])
            seed = job.tags["eval_seed"] if name == "ucpr_main" else 0  # ucpr_main: seeds 0-2
            assert (args.eval_seed, args.eval_seed_gallery, args.split) == (seed, 999, "eval")
            if job.argv[2] == "nepa3d.analysis.retrieval_ucpr":
                assert args.pooling == ("mean_a" if name == "ucpr_hardpair_quick" else "eos")
            else:
                assert job.tags.get("ckpt") == BASELINE
    pairs = {j.tags["pair"]: (j.args["query_backend"], j.args["gallery_backend"])
             for j in expand(_suite("ucpr_main"), tmp_path)}
    assert pairs == {"mesh2udf": ("mesh", "udfgrid"), "udf2mesh": ("udfgrid", "mesh"),
                     "mesh2pc": ("mesh", "pointcloud_noray"), "pc2udf": ("pointcloud_noray", "udfgrid")}
    for job in expand(_suite("ucpr_ablation"), tmp_path):
        args = _parse("nepa3d.analysis.retrieval_ucpr", job.argv[3:])
        assert (args.query_backend, args.gallery_backend) == ("pointcloud_noray", "udfgrid")
        assert (args.ablate_point_xyz, args.ablate_point_dist) == (
            job.tags["ablation"] == "ablate_point_xyz", job.tags["ablation"] == "ablate_point_dist")


def test_cpac_suites_are_non_transductive_with_lab_query_settings(tmp_path):
    cpac = [n for n in EXPECTED if _suite(n).task == "cpac"]
    for name in cpac:
        for job in expand(_suite(name), tmp_path):
            a = _parse("nepa3d.analysis.completion_cpac_udf", job.argv[3:])
            assert (a.split, a.head_train_split, a.head_train_backend, a.context_backend) == (
                "eval", "train_udf", "udfgrid", "pointcloud_noray"), name
            assert (a.disjoint_context_query, a.context_mode_train, a.context_mode_test, a.rep_source) == (
                1, "normal", "normal", "h"), name
            if a.query_source == "grid" and a.grid_sample_mode == "near_surface":
                assert (a.grid_near_tau, a.grid_near_frac) == (0.05, 0.8), name  # "near08"
            if any(NEAR_IOU in t.metrics for t in _suite(name).tables):
                assert a.report_near_tau == 0.05, name
    # nn_copy baselines exactly where the lab tables show them
    with_baseline = {n for n in cpac if all(j.args.get("baseline") == "nn_copy"
                                            for j in expand(_suite(n), tmp_path))}
    assert with_baseline == {"cpac_main", "cpac_a_pilot", "cpac_budget_check", "canary_cpac"}
    trunc = [j for j in expand(_suite("cpac_a_pilot"), tmp_path) if j.args.get("target_transform")]
    assert [j.tags["setting"] for j in trunc if j.tags["eval_seed"] == 0] == ["hybrid50_near08_trunc01"]
    lip = {j.tags["lipschitz"]: (j.args["ridge_lipschitz_lambda"], j.args["ridge_lipschitz_pairs"])
           for j in expand(_suite("cpac_b1_lipschitz"), tmp_path)}
    assert lip == {"lip0": (0.0, 1024), "lip1e-4_pairs1024": (1e-4, 1024), "lip3e-4_pairs1024": (3e-4, 1024),
                   "lip1e-3_pairs1024": (1e-3, 1024), "lip1e-3_pairs16384": (1e-3, 16384)}
    c2f = {j.tags["grid_sample_mode"]: j.args for j in expand(_suite("a1_coarse_to_fine"), tmp_path)}
    assert all(a["grid_res_schedule"] == "16,32,64" and a["grid_c2f_expand"] == 1 for a in c2f.values())


def test_scale_eval_resizes_positional_embedding():
    """6 scale: pre-scale and scaled checkpoints are evaluated at the scaled context with an
    explicit max_len = 1 + 2 (n_context + n_query) + 1 (the lab's 1538 for 512 + 256)."""
    p = _params()
    assert p["scale_eval"]["max_len"] == 2 * (p["scale_eval"]["n_context"] + p["cpac"]["n_query"]) + 2
    assert p["scale_eval"]["n_context"] == _continuation_rows()["scale"]["n_point"]
    assert p["scale_eval"]["n_context"] == 2 * p["pretrain"]["n_point"]


# --- pretraining variants ------------------------------------------------------------------

def test_pretrain_variant_commands_parse_and_chain(tmp_path):
    """Roots and continuations as the engine runs them: every argv parses with the pretraining
    CLI; a continuation resumes a root or another continuation, keeps its base's recipe and ends
    at the lab's epoch (root + 1 for the quick runs, ep054 / ep051 / ep053 for the long ones)."""
    from nepa3d.train.pretrain import build_parser

    params = _params()
    roots = params["pretrain_variants"]
    assert set(M1_METHODS[1:]) | set(QA) <= set(roots) == set(ROOTS)
    assert not set(roots) & set(CONTINUATIONS)
    ends = {f"runs/pretrain/{name}": 0 for name in roots}  # epochs past the root's last epoch
    parsed = {}  # checkpoint folder -> its parsed pretrain command line
    for job in expand(_suite("pretrain"), tmp_path):  # the roots: jobs of suites/pretrain.yaml
        name = job.tags["variant"]
        args = parsed[f"runs/pretrain/{name}"] = build_parser().parse_args(job.argv[3:])
        assert args.save_dir == f"runs/pretrain/{name}" and not args.resume
        assert args.epochs == params["pretrain"]["epochs"] and args.out_json == str(job.out_json)
        assert (args.d_model, args.layers, args.heads) == tuple(params["model"][k] for k in ("d_model", "layers", "heads"))
        assert (REPO / args.mix_config).is_file()
    m1 = {n: parsed[f"runs/pretrain/{n}"] for n in M1_METHODS[1:]}
    assert [a.objective for a in m1.values()] == ["nepa", "nepa", "nepa", "mae"]
    assert m1["shapenet_mix_nepa"].mix_config == m1["shapenet_mix_mae"].mix_config
    assert len({a.mix_config for a in m1.values()}) == 3
    qa = {n: parsed[f"runs/pretrain/{n}"] for n in QA}
    assert (qa["qa_dualmask"].qa_tokens, qa["qa_dualmask"].dual_mask_near, qa["qa_dualmask"].dual_mask_far) == (1, 0.4, 0.1)
    assert (qa["qa_nodual"].qa_tokens, qa["qa_nodual"].dual_mask_near, qa["qa_nodual"].dual_mask_far) == (1, 0.0, 0.0)
    pending = {j.tags["continuation"]: build_parser().parse_args(j.argv[3:])
               for j in expand(_suite("continuations"), tmp_path)}
    assert sorted(pending) == sorted(CONTINUATIONS)
    while pending:  # continuations of continuations: a base must be resolved first
        ready = [n for n, a in pending.items() if str(Path(a.resume).parent) in ends]
        assert ready, f"continuations with an unknown or cyclic base: {sorted(pending)}"
        for name in ready:
            args = pending.pop(name)
            folder, base = f"runs/continue/{name}", str(Path(args.resume).parent)
            assert args.resume == f"{base}/last.pt" and args.save_dir == folder, name
            assert args.epochs_after_resume >= 1 and args.auto_resume == 0, name
            assert (args.d_model, args.layers, args.heads) == tuple(params["model"][k] for k in ("d_model", "layers", "heads"))
            recipe = (args.objective, args.qa_tokens, args.dual_mask_near, args.dual_mask_far)
            b = parsed[base]  # resolved before its continuations
            assert recipe == (b.objective, b.qa_tokens, b.dual_mask_near, b.dual_mask_far), name
            assert recipe[:2] == ("nepa", 1), name
            assert (REPO / args.mix_config).is_file()
            parsed[folder] = args
            ends[folder] = ends[base] + args.epochs_after_resume
    lab_epoch = {name: ends[f"runs/continue/{name}"] + 49 for name in CONTINUATIONS}  # lab roots end at ep049
    assert lab_epoch == {**{n: 50 for n in ("b2", "b3", "b23", "c0", "c1", "c2", "b2c2", "d", "e")},
                         "b2_long": 54, "scale": 51, "scale_long": 54, "scale_stab": 53,
                         "qa_nodual_long": 101, "qa_nodual_e_long": 101}
    assert parsed["runs/continue/scale"].resume == "runs/continue/b2c2/last.pt"
    assert {parsed[f"runs/continue/{n}"].resume for n in ("scale_long", "scale_stab")} == {"runs/continue/scale/last.pt"}
    assert {parsed[f"runs/continue/{n}"].teacher_ckpt for n in ("c0", "c1")} == {"runs/pretrain/qa_dualmask/last.pt"}


# --- the DVC graph ---------------------------------------------------------------------------

def _produced_dirs(params: dict) -> set[str]:
    return ({f"runs/pretrain/{k}" for k in params["pretrain_variants"]}
            | {row["save_dir"] for row in _continuation_rows().values()}
            | {f"runs/{k}" for k in params["scratch"]})


def _covers(entry: str, key: str) -> bool:
    return key == entry or key.startswith(entry + ".")


def _stage_of(name: str) -> str:
    if name in CANARIES:
        return "suite_canary"
    return "suites_lab" if name in LAB_EVAL else f"suite_{name}"


def _checkpoints(name: str, tmp_path) -> set[str]:
    return {j.args["ckpt"] for j in expand(_suite(name), tmp_path) if j.args.get("ckpt")}


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if n not in TRAINING))
def test_suite_stage_deps_and_params(name, tmp_path):
    params, stages = _params(), _dvc()
    stage = stages.get(_stage_of(name))
    assert stage, f"dvc.yaml has no stage {_stage_of(name)}"
    cmd = stage["cmd"].split()
    assert cmd[:4] == ["python", "-m", "benchmark", "run"] and f"suites/{name}.yaml" in cmd
    assert "--executor" in cmd  # persistent workers (params bench.executor)
    suite = _suite(name)
    ckpts = _checkpoints(name, tmp_path)
    assert {str(Path(c).parent) for c in ckpts} <= _produced_dirs(params), name
    deps = set(stage["deps"])
    assert f"suites/{name}.yaml" in deps
    run_deps = {d for d in deps if d.startswith("runs/")}
    # the checkpoint files themselves (what the engine fingerprints), not their folders: a
    # retrained sibling folder with byte-identical weights does not re-run the stage
    if name in CANARIES or name in LAB_EVAL:  # a stage of several suites: their checkpoints
        assert ckpts <= run_deps, name
    else:
        assert run_deps == ckpts, f"{name}: deps {sorted(run_deps)} vs checkpoints {sorted(ckpts)}"
    used = {k for k in suite.params_used if not k.startswith("data.")}
    listed = stage["params"]
    uncovered = sorted(k for k in used if not any(_covers(p, k) for p in listed))
    assert not uncovered, f"{name}: params read by the suite but not listed in its stage: {uncovered}"
    if name not in CANARIES and name not in LAB_EVAL:
        extra = sorted(p for p in listed if not any(_covers(p, k) for k in used))
        assert not extra, f"{name}: stage params the suite does not read (needless re-runs): {extra}"
    # data caches and code through their content fingerprints (see benchmark/fingerprint.py)
    fingerprint = {"data.unpaired_cache": "results/fingerprints/unpaired_cache.txt",
                   "data.scan_cache": "results/fingerprints/scan_cache.txt"}
    for key in suite.params_used:
        if key.startswith("data."):
            assert fingerprint[key] in deps, f"{name}: data path {key} is not a dep"
    assert "results/fingerprints/code.txt" in deps and not {"nepa3d", "benchmark"} & deps


def test_lab_stage_depends_on_exactly_what_its_suites_read(tmp_path):
    """suites_lab runs every lab evaluation suite: its checkpoint deps are the union of theirs
    (no more: a needless dep re-runs the stage) and its params cover what they read, no more."""
    stage = _dvc()["suites_lab"]
    assert re.findall(r"suites/(\w+)\.yaml", stage["cmd"]) == re.findall(
        r"suites/(\w+)\.yaml", " ".join(d for d in stage["deps"] if d.startswith("suites/")))
    assert sorted(re.findall(r"suites/(\w+)\.yaml", stage["cmd"])) == LAB_EVAL
    ckpts = set().union(*(_checkpoints(n, tmp_path) for n in LAB_EVAL))
    assert {d for d in stage["deps"] if d.startswith("runs/")} == ckpts
    used = set().union(*({k for k in _suite(n).params_used if not k.startswith("data.")} for n in LAB_EVAL))
    extra = sorted(p for p in stage["params"] if not any(_covers(p, k) for k in used))
    assert not extra, f"suites_lab params no lab suite reads (needless re-runs): {extra}"
    outs = stage["outs"]  # metrics/: test_pipeline_dvc
    assert [next(iter(o)) for o in outs] == [f"results/{n}" for n in re.findall(r"suites/(\w+)\.yaml", stage["cmd"])]
    assert all(o[next(iter(o))] == {"cache": False, "persist": True} for o in outs)


def test_report_stages_cover_every_suite_in_two_tiers():
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    stages = doc["stages"]
    named = {stage: re.findall(r"suites/(\w+)\.yaml", stages[stage]["cmd"]) for stage in ("report", "report_lab")}
    assert "--out reports --summary summary.json" in stages["report"]["cmd"]
    assert "--out reports/lab --summary summary.json" in stages["report_lab"]["cmd"]
    assert sorted(named["report"]) == sorted(HEADLINE)  # make repro's tier
    assert sorted(named["report"] + named["report_lab"]) == sorted(EXPECTED)
    for stage in ("report", "report_lab"):
        assert {f"results/{n}" for n in named[stage]} <= set(stages[stage]["deps"])
    # the headline tier's tables and plots one by one; the lab tier's reports as one folder
    outs = {next(iter(o)) for o in stages["report"]["outs"]}
    assert [next(iter(o)) for o in stages["report_lab"]["outs"]] == ["reports/lab"]
    tables = {f"reports/{n}.{ext}" for n in HEADLINE for ext in ("md", "csv", "tex")}
    plots, declared_plots = set(), set()
    for n in EXPECTED:  # every declared plot: its PNG and its dvc-plots CSV
        folder = "reports" if n in HEADLINE else "reports/lab"
        for p in _suite(n).plots:
            stem = f"{n}_{p.y}_vs_{p.x}"
            declared_plots |= {f"{folder}/{stem}.png", f"{folder}/plots/{stem}.csv"}
            if n in HEADLINE:
                plots |= {f"{folder}/{stem}.png", f"{folder}/plots/{stem}.csv"}
    assert outs == tables | plots | {"reports/summary.json"}
    assert plots, "at least the M1 seed sweep is plotted"
    declared = {next(iter(p)) if isinstance(p, dict) else p for p in doc["plots"]}
    assert declared == declared_plots, "dvc plots show every plot the reports draw"
    # the dvc metrics are the suite stages' metrics/<suite>.json (test_pipeline_dvc.py), not summary.json
    assert "metrics" not in stages["report"] and "metrics" not in doc
    # every suite stage is upstream of a report
    suite_stages = {s for s in stages if s.startswith("suite")}
    assert suite_stages == {_stage_of(n) for n in EXPECTED if n not in TRAINING}


def test_fingerprint_stages_cover_what_the_stages_depend_on():
    """No stage downstream of the caches walks a source tree or a data cache itself: they depend
    on the fingerprint files, which only the stages that build the folders compute from them."""
    stages = _dvc()
    assert [n for n in stages if n.startswith("fingerprint")] == ["fingerprint_code"]
    code = stages["fingerprint_code"]
    assert code["deps"] == ["nepa3d", "benchmark"]
    assert [next(iter(o)) for o in code["outs"]] == ["results/fingerprints/code.txt",
                                                     "results/fingerprints/train_code.txt"]
    train_paths = code["cmd"][1].split()[4:-2]  # python -m benchmark fingerprint <paths> --out F
    assert all((REPO / t).exists() and (t.startswith("nepa3d/")) for t in train_paths), train_paths
    for name, cache, fp in (("unpaired_split", "${data.unpaired_cache}", "unpaired_cache.txt"),
                            ("preprocess_scanobjectnn", "${data.scan_cache}", "scan_cache.txt")):
        outs = [next(iter(o)) for o in stages[name]["outs"]]
        assert cache in outs and f"results/fingerprints/{fp}" in outs, name
        assert f"python -m benchmark fingerprint {cache} --out results/fingerprints/{fp}" in stages[name]["cmd"]
    folders = {"nepa3d", "benchmark", "${data.unpaired_cache}", "${data.scan_cache}", *train_paths}
    builders = ("fingerprint_code", "preprocess_shapenet", "unpaired_split", "preprocess_scanobjectnn")
    for name, stage in stages.items():
        deps = set(stage.get("deps", []))
        if name not in builders:
            assert not deps & folders, f"{name} depends on {sorted(deps & folders)} directly"


def test_fingerprint_changes_with_contents_only(tmp_path):
    from benchmark.fingerprint import tree_digest

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.py").write_text("print(1)\n")
    (tmp_path / "a" / "__pycache__").mkdir()
    before = tree_digest([tmp_path / "a"])
    (tmp_path / "a" / "__pycache__" / "x.pyc").write_bytes(b"bytecode")  # not contents
    (tmp_path / "a" / "x.py").write_text("print(1)\n")  # rewritten, same bytes
    assert tree_digest([tmp_path / "a"]) == before
    (tmp_path / "a" / "x.py").write_text("print(2)\n")
    assert tree_digest([tmp_path / "a"]) != before


def test_make_targets_are_the_two_tiers():
    make = (REPO / "Makefile").read_text()
    assert re.search(r"^HEADLINE_TARGETS := report qualitative_cpac$", make, re.M)
    assert "dvc repro $(HEADLINE_TARGETS)" in make and re.search(r"^repro-lab: install$", make, re.M)


def test_pretrain_stages_track_their_variant_params(tmp_path):
    stages = _dvc()
    root = stages["pretrain"]
    assert root["cmd"].split()[:5] == ["python", "-m", "benchmark", "run", "suites/pretrain.yaml"]
    assert {"pretrain", "pretrain_variants", "model"} <= set(root["params"])
    assert root["outs"] == [{"runs/pretrain": {"cache": False, "persist": True}},
                            {"results/pretrain": {"cache": False, "persist": True}}]
    roots = _suite("pretrain")  # an interrupted stage resumes; a changed corpus or code retrains
    assert roots.args["auto_resume"] == 1 and roots.outputs == ["save_dir"]
    assert set(roots.depends_on) == {"results/fingerprints/unpaired_cache.txt",
                                     "results/fingerprints/train_code.txt"} <= set(root["deps"])
    configs = {item["mix_config"] for item in _params()["pretrain_variants"].values()}
    assert {d for d in root["deps"] if d.startswith("nepa3d/")} == configs
    assert all(item["save_dir"] == f"runs/pretrain/{name}" for name, item in _params()["pretrain_variants"].items())
    cont = stages["pretrain_cont"]
    assert cont["cmd"].split()[:5] == ["python", "-m", "benchmark", "run", "suites/continuations.yaml"]
    assert {"pretrain", "model"} <= set(cont["params"]) and "suites/continuations.yaml" in cont["deps"]
    assert _dvc_vars() == ["params.yaml"]
    assert cont["outs"] == [{"runs/continue": {"cache": False, "persist": True}},
                            {"results/continuations": {"cache": False, "persist": True}}]
    # deps: every file a row reads that another stage produces or git holds (its base roots, the
    # teachers, the mix configs); rows resuming another row's checkpoint are ordered by the engine
    jobs = expand(_suite("continuations"), tmp_path)
    read = {j.args[k] for j in jobs for k in ("resume", "teacher_ckpt", "mix_config") if j.args.get(k)}
    own = {j.args["save_dir"] for j in jobs}
    external = {r for r in read if str(Path(r).parent) not in own}
    assert external <= set(cont["deps"]), sorted(external - set(cont["deps"]))
    assert {d for d in cont["deps"] if d.startswith(("runs/", "nepa3d/"))} == external
    assert "results/fingerprints/train_code.txt" in cont["deps"]
