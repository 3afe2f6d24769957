"""dvc.yaml's suite and report stages are generated from dvc.suites.yaml and the suites
(`python -m benchmark dvc-stages`): the repository's section is current, every suite the pipeline
runs has one stage whose deps are what the suite file declares (read here from the raw YAML, not
through the engine), and the derivation on a hand-written tiny project gives the hand-written
stages."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "benchmark"))
from benchutil import write_suite  # noqa: E402

from benchmark.dvc_stages import covering_params, derive, load_spec, main  # noqa: E402
from benchmark.errors import SuiteError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REF = re.compile(r"\$\{([^}]*)\}")


# --- the repository ---------------------------------------------------------------------------

def test_repository_dvc_yaml_is_current(capsys):
    assert main(str(REPO / "dvc.suites.yaml"), str(REPO / "dvc.yaml"), check=True) == 0, capsys.readouterr().out


def _lookup(params: dict, dotted: str):
    node = params
    for part in dotted.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _resolve(value, params: dict):
    """${a.b} of params.yaml in a raw suite value (whole-string references keep their type)."""
    if isinstance(value, str):
        whole = REF.fullmatch(value)
        if whole:
            return _resolve(_lookup(params, whole.group(1)), params)
        return REF.sub(lambda m: str(_lookup(params, m.group(1))), value)
    if isinstance(value, dict):
        return {k: _resolve(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, params) for v in value]
    return value


def declared_files(suite_file: Path, params: dict) -> set[str]:
    """Files the suite file declares its jobs read: values of its `inputs:` args (in `args` or
    any matrix row) and its `depends_on:` files, minus those under a declared output of its own
    rows (the runner orders those). Written from the YAML, independently of benchmark.expand."""
    raw = yaml.safe_load(suite_file.read_text())
    inputs, outputs = raw.get("inputs", []), raw.get("outputs", [])
    rows = [_resolve(raw.get("args", {}), params)]
    for axis_name, axis in (raw.get("matrix") or {}).items():
        for row in _resolve(axis, params).values():
            # a mapping row sets its args; a bare value (`ckpt: {a: runs/x/last.pt}`) the axis's
            rows.append(row if isinstance(row, dict) else {axis_name: row})
    read = {str(r[n]) for r in rows for n in inputs if isinstance(r.get(n), str)}
    own = {str(r[n]) for r in rows for n in outputs if isinstance(r.get(n), str)}
    read = {p for p in read if not any(p == o or p.startswith(o.rstrip("/") + "/") for o in own)}
    return read | set(_resolve(raw.get("depends_on", []), params))


def test_each_pipeline_suite_has_one_stage_with_its_declared_deps():
    spec = yaml.safe_load((REPO / "dvc.suites.yaml").read_text())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    fingerprints = spec["fingerprints"]
    runs = {name: body["run"] for name, body in spec["stages"].items() if "run" in body}
    seen: dict[str, str] = {}
    for stage_name, suites in runs.items():
        stage = stages[stage_name]
        files = [f"suites/{s}.yaml" for s in suites]
        assert re.findall(r"suites/\w+\.yaml", stage["cmd"]) == files, stage_name
        expected = set(files) | set(spec["stages"][stage_name].get("deps", []))
        for s in suites:
            assert s not in seen, f"{s}: run by {seen[s]} and {stage_name}"
            seen[s] = stage_name
            text = (REPO / "suites" / f"{s}.yaml").read_text()
            expected |= declared_files(REPO / "suites" / f"{s}.yaml", params)
            expected |= {fp for key, fp in fingerprints.items() if "${" + key + "}" in text}
        assert set(stage["deps"]) == expected, f"{stage_name}: {sorted(set(stage['deps']) ^ expected)}"
        assert len(stage["deps"]) == len(set(stage["deps"])), stage_name
    # every suite of suites/ that a report covers is run by exactly one stage
    for name, body in spec["stages"].items():
        for r in body.get("report", []):
            assert r in runs, name
    assert len(seen) >= 20 and {"pretrain", "continuations", "cpac_main", "canary_ucpr"} <= set(seen)


# --- the rules on hand-checked cases ----------------------------------------------------------

def test_covering_params_names_a_mapping_whole_only_when_all_of_it_is_read():
    tree = {"a": {"x": 1, "y": 2}, "b": {"x": 1, "y": {"p": 1, "q": 2}}, "c": [1, 2], "d": 3}
    assert covering_params({"a.x", "a.y", "b.y.p", "c.0", "d"}, tree) == ["a", "b.y.p", "c.0", "d"]
    assert covering_params({"b.x", "b.y.p", "b.y.q"}, tree) == ["b"]
    assert covering_params({"b.x", "b.y"}, tree) == ["b"]
    assert covering_params({"a.x"}, tree) == ["a.x"]
    assert covering_params({"c"}, tree) == ["c"]
    assert covering_params(set(), tree) == []
    # every key read: still the mappings, never the whole file
    assert covering_params({"a", "b", "c", "d"}, tree) == ["a", "b", "c", "d"]


SPEC = """\
suites_dir: suites
metrics: metrics
run_args: --jobs ${bench.jobs}
fingerprints: {data.cache: fp/cache.txt}
stages:
  train: {run: [train]}
  evals: {run: [eval_a, eval_b], deps: [fp/code.txt], params: [extra]}
  rep: {report: [train, evals], out: reports, deps: [fp/code.txt]}
  rep_dir: {report: [evals], out: out/lab, folder: true}
"""

DVC_YAML = """\
stages:
  hand:
    cmd: echo hi
  # >>> generated by `python -m benchmark dvc-stages` from dvc.suites.yaml: do not edit here
  # <<< end of the generated stages
"""


def _project(root: Path) -> Path:
    (root / "suites").mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump({
        "data": {"cache": "data/c"}, "bench": {"jobs": 1}, "train": {"epochs": 2, "lr": 0.1},
        "probe": {"lam": 1.0, "k": 3}, "extra": {"z": 0}}))
    write_suite(root / "suites", name="train", args={"epochs": "${train.epochs}", "lr": "${train.lr}",
                                                     "config": "conf/base.yaml"},
                matrix={"variant": {"a": {"save_dir": "runs/train/a"},
                                    "b": {"save_dir": "runs/train/b", "init": "runs/train/a/last.pt"},
                                    "c": {"save_dir": "runs/train/c", "init": "runs/other/last.pt"}}},
                inputs=["init", "config"], outputs=["save_dir"], depends_on=["fp/train_code.txt"],
                tables=[{"rows": ["variant"], "metrics": ["score"]}])
    write_suite(root / "suites", name="eval_a", args={"cache_root": "${data.cache}", "lam": "${probe.lam}"},
                matrix={"ckpt": {"a": "runs/train/a/last.pt", "b": "runs/train/b/last.pt"}},
                seeds={"seed": [0, 1]}, inputs=["ckpt"],
                tables=[{"rows": ["ckpt"], "metrics": ["score"]}],
                plots=[{"x": "ckpt", "y": "score"}])
    write_suite(root / "suites", name="eval_b", args={"k": "${probe.k}", "lam": "${probe.lam}"},
                matrix={"ckpt": {"c": {"ckpt": "runs/train/c/last.pt"}, "none": {"other": 1}}},
                inputs=["ckpt"], tables=[{"rows": ["ckpt"], "metrics": ["score"]}])
    (root / "dvc.suites.yaml").write_text(SPEC)
    (root / "dvc.yaml").write_text(DVC_YAML)
    return root


NC, PER = {"cache": False}, {"cache": False, "persist": True}

EXPECTED = {
    "train": {
        "cmd": "python -m benchmark run suites/train.yaml --jobs ${bench.jobs} --metrics metrics",
        # init runs/train/a/last.pt is under row a's save_dir: ordered by the runner, not a dep
        "deps": ["suites/train.yaml", "conf/base.yaml", "runs/other/last.pt", "fp/train_code.txt"],
        "params": ["train"],
        "outs": [{"runs/train": PER}, {"results/train": PER}],
        "metrics": [{"metrics/train.json": NC}]},
    "evals": {
        "cmd": "python -m benchmark run suites/eval_a.yaml suites/eval_b.yaml --jobs ${bench.jobs} --metrics metrics",
        "deps": ["suites/eval_a.yaml", "suites/eval_b.yaml", "runs/train/a/last.pt", "runs/train/b/last.pt",
                 "runs/train/c/last.pt", "fp/cache.txt", "fp/code.txt"],
        "params": ["extra", "probe"],  # data.cache: its fingerprint instead
        "outs": [{"results/eval_a": PER}, {"results/eval_b": PER}],
        "metrics": [{"metrics/eval_a.json": NC}, {"metrics/eval_b.json": NC}]},
    "rep": {
        "cmd": "python -m benchmark report suites/train.yaml suites/eval_a.yaml suites/eval_b.yaml "
               "--out reports --summary summary.json",
        "deps": ["suites/train.yaml", "suites/eval_a.yaml", "suites/eval_b.yaml", "results/train",
                 "results/eval_a", "results/eval_b", "fp/code.txt"],
        "outs": [{f"reports/{f}": PER} for f in (
            "train.md", "train.csv", "train.tex", "eval_a.md", "eval_a.csv", "eval_a.tex",
            "eval_a_score_vs_ckpt.png", "plots/eval_a_score_vs_ckpt.csv", "eval_b.md", "eval_b.csv",
            "eval_b.tex", "summary.json")]},
    "rep_dir": {
        "cmd": "python -m benchmark report suites/eval_a.yaml suites/eval_b.yaml --out out/lab --summary summary.json",
        "deps": ["suites/eval_a.yaml", "suites/eval_b.yaml", "results/eval_a", "results/eval_b"],
        "outs": [{"out/lab": PER}]},
}


def test_derivation_on_a_tiny_project(tmp_path):
    root = _project(tmp_path)
    assert derive(load_spec(root / "dvc.suites.yaml"), root) == EXPECTED


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "benchmark", "dvc-stages", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_the_section_and_check_fails_when_a_suite_changes(tmp_path):
    root = _project(tmp_path)
    r = _cli(root, "--check")
    assert r.returncode == 1 and "the suites: evals, rep, rep_dir, train (run" in r.stdout, r.stdout
    r = _cli(root)
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load((root / "dvc.yaml").read_text())
    assert doc["stages"] == {"hand": {"cmd": "echo hi"}, **EXPECTED}
    assert "# >>> generated by" in (root / "dvc.yaml").read_text()
    assert _cli(root, "--check").returncode == 0
    # a suite evaluates another checkpoint: eval stage stale, named; the rest untouched
    path = root / "suites" / "eval_b.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["matrix"]["ckpt"]["d"] = {"ckpt": "runs/new/last.pt"}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    r = _cli(root, "--check")
    assert r.returncode == 1 and r.stdout.strip().endswith(
        "not current with dvc.suites.yaml and the suites: evals (run `python -m benchmark dvc-stages`)"), r.stdout
    assert _cli(root).returncode == 0
    assert "runs/new/last.pt" in yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["evals"]["deps"]
    # params.yaml gains a key under a mapping a stage reads whole: that stage names its keys
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["warmup"] = 5
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    assert _cli(root).returncode == 0
    assert yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["train"]["params"] == ["train.epochs", "train.lr"]


@pytest.mark.parametrize("spec, message", [
    ("stages: {s: {run: [a], report: [b]}}\n", "stages.s: give exactly one of run: [suites] or report: [stages]"),
    ("stages: {s: {run: [a], dep: [x]}}\n", "stages.s: unknown key(s) ['dep']"),
    ("stages: {r: {report: [s], out: o}}\n", "stages.r.report: ['s'] are not run stages of this spec"),
    ("stages: {r: {run: a}}\n", "stages.r.run: expected a list"),
    ("stage: {}\n", "unknown key(s) ['stage']"),
])
def test_bad_spec_is_one_line_naming_the_file_and_key(tmp_path, spec, message):
    path = tmp_path / "dvc.suites.yaml"
    path.write_text(spec)
    with pytest.raises(SuiteError) as err:
        load_spec(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value) and "\n" not in str(err.value)


def test_cli_rejects_a_dvc_yaml_without_the_markers(tmp_path):
    root = _project(tmp_path)
    (root / "dvc.yaml").write_text("stages:\n  hand:\n    cmd: echo hi\n")
    r = _cli(root)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "dvc.yaml: expected one generated section" in r.stderr
    (root / "dvc.yaml").write_text(DVC_YAML.replace("  hand:", "  train:"))
    r = _cli(root)
    assert r.returncode == 2 and "hand-written stage(s) ['train'] have the names of generated ones" in r.stderr
