"""Suite YAML validation: every error names the file, the key path and what was expected."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchutil import write_suite  # noqa: E402

from benchmark.errors import SuiteError  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

BASE = """\
name: demo
task: cpac
module: some.module
args:
  cache_root: data/cache
matrix:
  ckpt: {scratch: runs/a.pt, nepa: runs/b.pt}
seeds: {eval_seed: [0, 1]}
"""


def _load_error(path: Path, params: Path | None = None) -> str:
    with pytest.raises(SuiteError) as info:
        load_suite(path, params or path.parent / "params.yaml")
    return str(info.value)


def _suite(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_suite_interpolates_params_keeping_types(tmp_path):
    (tmp_path / "params.yaml").write_text(
        "data: {cache: data/c}\ncpac: {max_shapes: 800, ratios: [0.5, 0.5], lam: 1.0e-2}\nexp: {name: x1}\n")
    path = _suite(tmp_path, """\
name: demo
task: cpac
module: m
args:
  cache_root: ${data.cache}
  max_shapes: ${cpac.max_shapes}
  ratios: ${cpac.ratios}
  lam: ${cpac.lam}
  ckpt: runs/${exp.name}/last.pt
  literal: $${not_a_ref}
matrix:
  head: {lin: {head: linear, max_shapes: 10}}
seeds: {eval_seed: [0, 1, 2]}
""")
    suite = load_suite(path, tmp_path / "params.yaml")
    assert suite.args == {"cache_root": "data/c", "max_shapes": 800, "ratios": [0.5, 0.5], "lam": 0.01,
                          "ckpt": "runs/x1/last.pt", "literal": "${not_a_ref}"}
    assert suite.params_used["cpac.max_shapes"] == 800
    assert suite.seed_arg == "eval_seed" and suite.seed_values == [0, 1, 2]
    # default table: every axis as rows, the task's default metrics
    assert suite.tables[0].rows == ["head"] and suite.tables[0].metrics == ["mae", "rmse", "iou@0.03"]


def test_no_params_file_needed_without_references(tmp_path):
    path = _suite(tmp_path, BASE)
    assert load_suite(path, tmp_path / "missing.yaml").name == "demo"


def test_unknown_task_names_file_key_and_choices(tmp_path):
    path = _suite(tmp_path, BASE.replace("task: cpac", "task: nope"))
    msg = _load_error(path)
    assert msg.startswith(f"{path}: task: unknown task 'nope'")
    assert "cls, command, cpac, pretrain, ucpr" in msg


def test_bad_matrix_value_type_names_key_path(tmp_path):
    path = _suite(tmp_path, BASE.replace("scratch: runs/a.pt", "scratch: [1, 2]"))
    msg = _load_error(path)
    assert msg.startswith(f"{path}: matrix.ckpt.scratch: expected a scalar")
    assert "mapping of args" in msg and "got list" in msg


def test_bad_arg_inside_matrix_row_mapping(tmp_path):
    path = _suite(tmp_path, BASE.replace("scratch: runs/a.pt", "scratch: {ckpt: {deep: 1}}"))
    assert _load_error(path).startswith(f"{path}: matrix.ckpt.scratch: arg 'ckpt': expected a scalar")


def test_missing_params_reference_names_key_and_params_path(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("cpac: {max_shapes: 800}\n")
    path = _suite(tmp_path, BASE.replace("cache_root: data/cache", "max_shapes: ${cpac.max_shape}"))
    msg = _load_error(path, params)
    assert msg.startswith(f"{path}: args.max_shapes: unknown params reference ${{cpac.max_shape}}")
    assert str(params) in msg and "max_shapes" in msg  # says what exists instead


def test_reference_without_params_file(tmp_path):
    path = _suite(tmp_path, BASE.replace("cache_root: data/cache", "cache_root: ${data.cache}"))
    msg = _load_error(path, tmp_path / "nowhere.yaml")
    assert msg.startswith(f"{path}: args.cache_root:") and "does not exist" in msg


def test_unknown_top_level_key(tmp_path):
    path = _suite(tmp_path, BASE + "colour: blue\n")
    msg = _load_error(path)
    assert msg.startswith(f"{path}: colour: unknown key; expected one of: name, task, module")


def test_missing_required_key(tmp_path):
    path = _suite(tmp_path, BASE.replace("name: demo\n", ""))
    assert _load_error(path).startswith(f"{path}: name: required key is missing")


def test_duplicate_yaml_key_is_an_error(tmp_path):
    path = _suite(tmp_path, BASE.replace("nepa: runs/b.pt", "scratch: runs/b.pt"))
    msg = _load_error(path)
    assert msg.startswith(f"{path}: invalid YAML") and "duplicate key 'scratch'" in msg


@pytest.mark.parametrize("extra, key, expected", [
    ("reference: {ckpt: zzz}\n", "reference.ckpt", "unknown row 'zzz'"),
    ("reference: {head: a}\n", "reference.head", "unknown axis"),
    ("tables: [{rows: [], metrics: [mae]}]\n", "tables[0]", "axis 'ckpt' is not placed"),
    ("tables: [{rows: [ckpt], cols: [ckpt]}]\n", "tables[0].cols", "placed twice"),
    ("tables: [{rows: [ckpt], colour: 1}]\n", "tables[0].colour", "unknown key"),
    ("promote: {candidate: {ckpt: nepa}, require: {mae: '<= ref'}}\n", "promote", "reference"),
    ("reference: {ckpt: scratch}\npromote: {candidate: {ckpt: nepa}, require: {mae: 'lower'}}\n",
     "promote.require.mae", "cannot parse 'lower'"),
    ("program: [python, x.py]\n", "module", "exactly one of"),
    ("out_flag: out\n", "out_flag", "expected a flag"),
])
def test_cross_field_errors_name_the_key(tmp_path, extra, key, expected):
    path = _suite(tmp_path, BASE + extra)
    msg = _load_error(path)
    assert msg.startswith(f"{path}: {key}: "), msg
    assert expected in msg


def test_bad_name_and_seed_shape(tmp_path):
    path = _suite(tmp_path, BASE.replace("name: demo", "name: Demo-1"))
    assert _load_error(path).startswith(f"{path}: name: string should match pattern")
    path = _suite(tmp_path, BASE.replace("seeds: {eval_seed: [0, 1]}", "seeds: {a: [0], b: [1]}"))
    assert _load_error(path).startswith(f"{path}: seeds: expected one seed arg")
    path = _suite(tmp_path, BASE.replace("seeds: {eval_seed: [0, 1]}", "seeds: {eval_seed: [0.5]}"))
    assert _load_error(path).startswith(f"{path}: seeds.eval_seed[0]: expected an integer or a string seed")


def test_command_task_needs_table_metrics(tmp_path):
    path = write_suite(tmp_path, matrix={"ckpt": {"a": 1}})
    assert _load_error(path).startswith(f"{path}: tables[0].metrics: expected a list of metric names")


def test_cli_exits_2_with_one_message_and_no_traceback(tmp_path):
    path = _suite(tmp_path, BASE.replace("task: cpac", "task: nope"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "benchmark", "validate", str(path)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {path}: task: unknown task 'nope'; expected one "
                                                "of: cls, command, cpac, pretrain, ucpr"]


def test_inputs_must_name_args(tmp_path):
    path = _suite(tmp_path, BASE + "inputs: [ckpt, cache_root]\n")
    assert load_suite(path).inputs == ["ckpt", "cache_root"]
    path = _suite(tmp_path, BASE + "inputs: [ckpt, weights]\n")
    assert _load_error(path).startswith(f"{path}: inputs[1]: unknown arg 'weights'")
