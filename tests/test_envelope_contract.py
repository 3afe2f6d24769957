"""The result envelope has one definition (:mod:`benchmark.envelope`): the research side writes
through it, the engine reads through it, the test fixtures build through it.

The expected texts and values below are written by hand (the JSON the writer produced before the
envelope module existed: ``json.dump(result, indent=2)`` of the dict ``build_result`` assembled,
then a newline), not computed with the code under test.
"""
from __future__ import annotations

import ast
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmark.envelope import (SCHEMA_VERSION, build_envelope, envelope_dict, envelope_text, read_envelope,
                                write_envelope)
from benchmark.errors import ResultError
from benchmark.results import load_result
from nepa3d.utils.results import build_result, emit_result
from benchutil import FAKE_JOB, envelope

REPO = Path(__file__).resolve().parents[1]

PROV = {"git_rev": "0123abcd", "dirty": False, "ckpt": "/abs/runs/ref/ckpt_ep049.pt",
        "seed": 0, "versions": {"python": "3.11.9", "numpy": "1.26.4"}, "device": "cpu",
        "started": "2026-01-02T03:04:05+00:00", "wall_s": 1.5, "code": None}

# A UCPR-like and a CPAC-like tiny case: the original 3D-NEPA names (r@1, mAP, mae, iou@0.03,
# near@0.05) and the absolute ckpt path stay as they are.
UCPR_TEXT = """{
  "schema_version": 1,
  "task": "ucpr",
  "args": {
    "ckpt": "/abs/runs/ref/ckpt_ep049.pt",
    "max_files": 8,
    "query_backend": "mesh",
    "sizes": [
      256,
      128
    ],
    "out": "results/ucpr.json"
  },
  "metrics": {
    "r@1": 0.25,
    "r@5": 0.75,
    "mAP": 0.4375,
    "mean_rank": 3
  },
  "baselines": {},
  "flags": [
    "easy_pair_saturated",
    "sanity_constant_embed"
  ],
  "provenance": {
    "git_rev": "0123abcd",
    "dirty": false,
    "ckpt": "/abs/runs/ref/ckpt_ep049.pt",
    "seed": 0,
    "versions": {
      "python": "3.11.9",
      "numpy": "1.26.4"
    },
    "device": "cpu",
    "started": "2026-01-02T03:04:05+00:00",
    "wall_s": 1.5,
    "code": null
  },
  "extra": {
    "pooling": "mean_a",
    "tie_break_eps": 1e-06
  }
}
"""

CPAC_TEXT = """{
  "schema_version": 1,
  "task": "cpac",
  "args": {
    "ckpt": "/abs/runs/ref/ckpt_ep049.pt"
  },
  "metrics": {
    "mae": 0.125,
    "rmse": 0.5,
    "iou@0.03": 0.1,
    "near@0.05": {
      "mae": null,
      "n": 0
    }
  },
  "baselines": {
    "nn_copy": {
      "mae": 0.75
    }
  },
  "flags": [],
  "provenance": {
    "git_rev": "0123abcd",
    "dirty": false,
    "ckpt": "/abs/runs/ref/ckpt_ep049.pt",
    "seed": 0,
    "versions": {
      "python": "3.11.9",
      "numpy": "1.26.4"
    },
    "device": "cpu",
    "started": "2026-01-02T03:04:05+00:00",
    "wall_s": 1.5,
    "code": null
  },
  "history": [
    {
      "epoch": 0,
      "loss": 2.5
    }
  ]
}
"""


def _ucpr() -> dict:
    args = {"ckpt": "/abs/runs/ref/ckpt_ep049.pt", "max_files": np.int64(8), "query_backend": "mesh",
            "sizes": (256, 128), "out": Path("results/ucpr.json")}
    metrics = {"r@1": np.float32(0.25), "r@5": 0.75, "mAP": 0.4375, "mean_rank": 3}
    return build_result("ucpr", args, metrics, PROV,
                        flags=["sanity_constant_embed", "easy_pair_saturated", "sanity_constant_embed"],
                        extra={"pooling": "mean_a", "tie_break_eps": 1e-6})


def _cpac() -> dict:
    metrics = {"mae": 0.125, "rmse": 0.5, "iou@0.03": 0.1, "near@0.05": {"mae": float("nan"), "n": 0}}
    return build_result("cpac", {"ckpt": "/abs/runs/ref/ckpt_ep049.pt"}, metrics, PROV,
                        baselines={"nn_copy": {"mae": 0.75}}, history=[{"epoch": 0, "loss": 2.5}])


@pytest.mark.parametrize("make, text", [(_ucpr, UCPR_TEXT), (_cpac, CPAC_TEXT)], ids=["ucpr", "cpac"])
def test_written_bytes_are_the_old_json(make, text, tmp_path, capsys):
    """build_result + emit_result write exactly the bytes of the hand-written old JSON (key
    order, float formatting, indentation, NaN as null, numpy scalars and paths as plain JSON);
    the printed result is the same text without the final newline."""
    out = tmp_path / "sub" / "result.json"
    emit_result(make(), out)
    assert out.read_bytes() == text.encode("utf-8")
    assert capsys.readouterr().out == text.rstrip("\n") + "\n" + f"[saved] {out}\n"
    assert envelope_text(make()) == text
    assert write_envelope(make(), tmp_path / "w.json").read_text(encoding="utf-8") == text


def test_round_trip_writer_to_reader(tmp_path):
    """What the writer writes, the engine reads back: fields as given, metrics flattened with '/'
    and baselines under baseline/<name>/ (expected values by hand)."""
    env = build_envelope("cpac", {"ckpt": "/abs/c.pt", "n": 2}, {"mae": 0.25, "near@0.05": {"mae": 0.5, "n": 3}},
                         PROV, baselines={"nn_copy": {"mae": 0.75}}, flags=["b", "a"],
                         history=[{"epoch": 0, "loss": 2.0}, {"epoch": 1, "loss": 1.0, "note": "x"}])
    path = write_envelope(env, tmp_path / "r.json")
    got = load_result(path, "cpac")
    assert got.schema_version == SCHEMA_VERSION == 1
    assert got.task == "cpac" and got.args == {"ckpt": "/abs/c.pt", "n": 2} and got.flags == ["a", "b"]
    assert got.flat() == {"mae": 0.25, "near@0.05/mae": 0.5, "near@0.05/n": 3.0, "baseline/nn_copy/mae": 0.75}
    assert got.provenance.git_rev == "0123abcd" and got.provenance.wall_s == 1.5
    assert got.provenance.model_extra["ckpt"] == "/abs/runs/ref/ckpt_ep049.pt"  # extra keys are kept
    assert got.history_series() == {"loss": [(0, 2.0), (1, 1.0)]}


def test_fixture_envelopes_are_read_by_the_engine(tmp_path):
    """benchutil.envelope builds through the definition; fake_job.py (standard library only, an
    external program's stand-in) writes exactly envelope_dict's layout of its inputs. Both are read
    back with the values given."""
    p = tmp_path / "hand.json"
    p.write_text(json.dumps(envelope("command", {"score": 2.0})))
    assert load_result(p, "command").flat() == {"score": 2.0}

    out = tmp_path / "fake.json"
    subprocess.run([sys.executable, str(FAKE_JOB), "--seed", "3", "--scale", "2", "--offset", "1",
                    "--baseline", "--flag", "f", "--epochs", "2", "--out_json", str(out)], check=True)
    raw = json.loads(out.read_text())
    laid_out = envelope_dict(raw["task"], raw["args"], raw["metrics"], raw["provenance"], baselines=raw["baselines"],
                             flags=raw["flags"], history=raw["history"])
    assert list(raw.items()) == list(laid_out.items())  # same keys, same order, same values
    assert raw["args"] == {"seed": "3", "scale": "2", "offset": "1", "baseline": True, "flag": "f", "epochs": "2"}
    env = load_result(out, "command")
    v = 2 * 3 + 1  # scale * seed + offset, from fake_job's docstring
    assert env.flat() == {"score": v, "loss": 10 - v, "hit@1": v / 100, "near/score": v / 2,
                          "baseline/nn/score": v / 2}
    assert env.flags == ["f"] and env.history_series() == {"loss": [(0, v + 1.0), (1, v + 0.5)]}


@pytest.mark.parametrize("mutate, fault", [
    (lambda e: e["provenance"].pop("started"), "provenance.started: required key is missing"),
    (lambda e: e.update(schema_version=2), "schema_version: Input should be 1"),
    (lambda e: e["metrics"].update(mae="0.1"), "metrics: mae: expected a number; got str '0.1'"),
    (lambda e: e["metrics"].update(mae=None), "metrics: mae: expected a number; got NoneType None"),
    (lambda e: e.pop("task"), "task: required key is missing"),
], ids=["no-started", "version-2", "string-metric", "null-metric", "no-task"])
def test_malformed_envelope_is_one_line_naming_file_and_field(mutate, fault, tmp_path):
    doc = envelope("command", {"mae": 0.5})
    mutate(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ResultError) as info:
        read_envelope(path)
    assert str(info.value) == f"{path}: invalid result envelope: {fault}"
    with pytest.raises(ResultError, match="^" + re.escape(f"{path}: invalid result envelope: {fault}") + "$"):
        load_result(path)


def test_writer_keeps_a_null_metric_the_reader_refuses(tmp_path):
    """A producer's NaN is written as null (the result reports what was computed); the engine
    refuses that file, naming the metric."""
    env = build_result("cpac", {}, {"mae": float("nan"), "rmse": 0.5}, PROV)
    assert env["metrics"] == {"mae": None, "rmse": 0.5}
    path = write_envelope(env, tmp_path / "nan.json")
    with pytest.raises(ResultError, match=re.escape(f"{path}: invalid result envelope: metrics: mae: expected a number")):
        load_result(path)


@pytest.mark.parametrize("metrics, fault", [
    ({}, "metrics: expected at least one metric"),
    ({"near/mae": 1.0}, "metrics: : metric name 'near/mae' must not contain '/' (used for nesting)"),
    ({"mae": "x"}, "metrics: mae: expected a number; got str 'x'"),
])
def test_writer_refuses_what_no_reader_could_use(metrics, fault):
    with pytest.raises(ResultError) as info:
        build_result("cpac", {}, metrics, PROV)
    assert str(info.value) == f"<cpac result>: invalid result envelope: {fault}"


def test_nan_reads_as_nonfinite_not_as_malformed(tmp_path):
    """An external program's JSON NaN literal parses as a float: the reader's finiteness rule
    (not the schema) speaks for it."""
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(envelope("command", {"score": float("nan")})))
    assert math.isnan(read_envelope(path).metrics["score"])


# --------------------------------------------------------------------------- one definition

def _py_files(*dirs: str) -> list[Path]:
    return sorted(p for d in dirs for p in (REPO / d).rglob("*.py"))


def _envelope_literals(path: Path) -> list[int]:
    """Lines of dict displays that lay out an envelope by hand (keys schema_version and metrics)."""
    return [node.lineno for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Dict)
            and {"schema_version", "metrics"} <= {k.value for k in node.keys if isinstance(k, ast.Constant)}]


#: The one fixture that lays the envelope out itself, and why (its layout is checked above).
STANDALONE = {"tests/fixtures/benchmark/fake_job.py": "an external program's stand-in, standard library only"}


def test_envelope_is_spelled_out_only_in_its_module():
    """No producer, engine module, script or fixture lays out the envelope by hand."""
    hits = {str(p.relative_to(REPO)): lines for p in _py_files("nepa3d", "benchmark", "scripts", "tests/fixtures")
            if p.name != "envelope.py" and str(p.relative_to(REPO)) not in STANDALONE
            and (lines := _envelope_literals(p))}
    assert hits == {}, f"envelope written by hand (use benchmark.envelope): {hits}"
    assert _envelope_literals(REPO / "benchmark" / "envelope.py")  # the check sees the one that exists
    assert all(_envelope_literals(REPO / path) for path in STANDALONE)  # and the standalone one


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


def test_envelope_and_atomic_are_leaves():
    """benchmark/envelope.py needs pydantic, the standard library, the atomic writer and the
    error class only; benchmark/atomic.py the standard library only."""
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    env = {n for n in _imports(REPO / "benchmark" / "envelope.py") if n.split(".")[0] not in stdlib}
    assert env == {"pydantic", ".atomic", ".errors"}
    assert {n for n in _imports(REPO / "benchmark" / "atomic.py") if n.split(".")[0] not in stdlib} == set()


def test_research_data_layer_does_not_import_results():
    """nepa3d/data writes through benchmark.atomic, not through nepa3d/utils/results."""
    offenders = [str(p.relative_to(REPO)) for p in _py_files("nepa3d/data")
                 if any(n.startswith("nepa3d.utils.results") for n in _imports(p))]
    assert offenders == []


def test_importing_the_envelope_pulls_no_engine():
    code = ("import sys, benchmark.envelope; "
            "print(sorted(m for m in ('pandas', 'pandera', 'mlflow', 'benchmark.runner', 'benchmark.report',"
            " 'nepa3d.utils.results') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("module", ["nepa3d.analysis.retrieval_ucpr", "nepa3d.train.pretrain"])
def test_writing_through_the_envelope_leaves_the_code_digest_alone(module):
    """A result's code digest covers the code that computes its numbers: the envelope and the
    atomic writer are left out (as benchmark.code_identity itself is), so an engine edit does
    not mark every nepa3d result as computed by other code."""
    from benchmark.code_identity import import_closure

    _, files = import_closure(module, (REPO,))
    assert "nepa3d/utils/results.py" in files
    assert [f for f in files if f.startswith("benchmark/")] == []
