"""Code identity (benchmark/code_identity.py): a module's PROTOCOL_VERSION in its job ids, the
code digest every result records, and the report guards that compare it with the checkout.

Expectations are computed here by hand (sha256 of the canonical payload, of the closure's files)
on a planted package ``cid_lab``: ``a`` imports ``b``, ``b`` imports ``c``, ``d`` is unrelated.
"""
from __future__ import annotations

import hashlib
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchutil import write_suite  # noqa: E402
from planted_results import flags_by_row, plant  # noqa: E402

from benchmark.code_identity import (accept_code, code_identity, declared_version,  # noqa: E402
                                     file_changes, job_module)
from benchmark.errors import SuiteError  # noqa: E402
from benchmark.expand import expand, job_id_for  # noqa: E402
from benchmark.report import build_report  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PKG = {
    "cid_lab/__init__.py": "",
    "cid_lab/a.py": "from cid_lab import b\n\nPROTOCOL_VERSION = 1\n",
    "cid_lab/b.py": "import numpy as np\n\nfrom .c import f\n\n\ndef g():\n    return np.zeros(f())\n",
    "cid_lab/c.py": "def f():\n    return 1\n",
    "cid_lab/d.py": "X = 1\n",
}
JOB = '''"""Writes a result envelope through nepa3d.utils.results, like every nepa3d CLI (without
the rest of the provenance, whose package versions import torch, unless CID_FULL is set)."""
import os
import sys

from nepa3d.utils.results import ResultTimer, build_result, emit_result

from cid_lab import b


def main():
    timer = ResultTimer()
    prov = timer.provenance() if os.environ.get("CID_FULL") else \
        {"git_rev": None, "started": timer.started, "wall_s": 0.0, "code": timer.code}  # what the envelope requires
    emit_result(build_result("command", {}, {"score": 1.0}, prov), sys.argv[-1])


if __name__ == "__main__":
    main()
'''


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """The planted package in tmp_path, the working directory (where `python -m` finds it)."""
    _write(tmp_path, PKG)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for name in [m for m in sys.modules if m == "cid_lab" or m.startswith("cid_lab.")]:
        del sys.modules[name]


# --- (a) the protocol version in the job id -------------------------------------------------------

def test_version_enters_the_id_only_when_not_1():
    command, args = {"module": "cid_lab.a"}, {"seed": 0, "fast": True, "skip": None}
    v1 = '{"args":{"fast":true,"seed":0},"module":"cid_lab.a"}'
    v2 = '{"args":{"fast":true,"seed":0},"module":"cid_lab.a","protocol_version":2}'
    assert job_id_for(command, args) == job_id_for(command, args, 1) == _sha(v1.encode())[:16]
    assert job_id_for(command, args, 2) == _sha(v2.encode())[:16] != _sha(v1.encode())[:16]


def _module_suite(root: Path) -> Path:
    """A suite running cid_lab.a, one row running cid_lab.d (which declares no version)."""
    path = write_suite(root, matrix={"method": {"net": {"scale": 1}, "other": {"module": "cid_lab.d", "scale": 1}}},
                       seeds={"seed": [0, 1]}, tables=[{"rows": ["method"], "metrics": ["score"]}])
    doc = yaml.safe_load(path.read_text())
    doc.pop("program")
    doc["module"] = "cid_lab.a"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _ids(path: Path, root: Path) -> dict[tuple, str]:
    jobs = expand(load_suite(path, root / "params.yaml"), root / "results")
    return {(j.tags["method"], j.tags["seed"]): j.job_id for j in jobs}


def test_expand_reads_the_version_from_the_source_and_a_bump_reruns_that_module_only(lab):
    # the engine never imports the module: its import of a missing package does not matter
    (lab / "cid_lab/a.py").write_text("import not_installed_anywhere\n\nPROTOCOL_VERSION = 1\n")
    path = _module_suite(lab)
    jobs = expand(load_suite(path, lab / "params.yaml"), lab / "results")
    for job in jobs:  # version 1: the ids of before versions existed
        module = "cid_lab.d" if job.tags["method"] == "other" else "cid_lab.a"
        assert job.job_id == job_id_for({"module": module}, job.args)
    before = _ids(path, lab)
    (lab / "cid_lab/a.py").write_text("import not_installed_anywhere\n\nPROTOCOL_VERSION = 2  # numbers changed\n")
    assert declared_version("cid_lab.a") == 2 and declared_version("cid_lab.d") is None
    after = _ids(path, lab)
    for job in expand(load_suite(path, lab / "params.yaml"), lab / "results"):
        if job.tags["method"] == "net":
            assert job.job_id == job_id_for({"module": "cid_lab.a"}, job.args, 2)
    assert {k for k in before if before[k] != after[k]} == {("net", 0), ("net", 1)}
    (lab / "cid_lab/a.py").write_text("PROTOCOL_VERSION = ONE\n")
    with pytest.raises(SuiteError, match=r"cid_lab/a.py:1: PROTOCOL_VERSION must be assigned a positive int literal"):
        _ids(path, lab)


def test_every_suite_module_declares_its_version(tmp_path):
    modules = set()
    for path in sorted((REPO / "suites").glob("*.yaml")):
        suite = load_suite(path, REPO / "params.yaml")
        modules |= {job_module(job) for job in expand(suite, tmp_path)} - {"(program)"}
    assert len(modules) >= 6
    assert {m: declared_version(m, [REPO]) for m in modules} == {m: 1 for m in modules}


# --- (b) the code digest --------------------------------------------------------------------------

def test_digest_covers_the_import_closure_only(lab):
    code = code_identity("cid_lab.a", [lab])
    closure = ["cid_lab/__init__.py", "cid_lab/a.py", "cid_lab/b.py", "cid_lab/c.py"]  # not d, not numpy
    assert sorted(code["files"]) == closure
    expected = _sha("".join(f"{rel}\t{_sha((lab / rel).read_bytes())}\n" for rel in closure).encode())
    assert code == {"module": "cid_lab.a", "protocol_version": 1, "sha256": expected,
                    "files": {rel: _sha((lab / rel).read_bytes())[:16] for rel in closure}}
    (lab / "cid_lab/d.py").write_text("X = 2  # unrelated to a\n")
    assert code_identity("cid_lab.a", [lab]) == code
    (lab / "cid_lab/c.py").write_text("def f():\n    return 2  # a numerics change two imports away\n")
    changed = code_identity("cid_lab.a", [lab])
    assert changed["sha256"] != code["sha256"]
    assert file_changes(code["files"], changed["files"]) == "changed cid_lab/c.py"


def test_the_evaluators_closures_are_the_repository_code():
    code = code_identity("nepa3d.analysis.retrieval_ucpr", [REPO])
    files = set(code["files"])
    assert {"nepa3d/analysis/retrieval_ucpr.py", "nepa3d/analysis/metrics.py", "nepa3d/protocol_thresholds.py",
            "nepa3d/utils/results.py", "nepa3d/__init__.py"} <= files
    assert "nepa3d/analysis/completion_cpac_udf.py" not in files
    assert not any(f.startswith("benchmark/") for f in files)  # the digest's own machinery is left out


def test_a_job_records_its_code_as_a_subprocess_and_in_process(lab, monkeypatch):
    (lab / "cid_lab/job.py").write_text(JOB)
    expected = code_identity("cid_lab.job", [lab])
    assert "cid_lab/c.py" in expected["files"]
    out = lab / "sub.json"
    subprocess.run([sys.executable, "-m", "cid_lab.job", str(out)], cwd=lab, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    assert json.loads(out.read_text())["provenance"]["code"] == expected
    # in process, the way a persistent pool worker runs a `-m` job (runpy, alter_sys)
    monkeypatch.syspath_prepend(str(lab))
    monkeypatch.setenv("CID_FULL", "1")
    monkeypatch.setattr(sys, "argv", ["-m", str(lab / "pool.json")])
    runpy.run_module("cid_lab.job", run_name="__main__", alter_sys=True)
    assert json.loads((lab / "pool.json").read_text())["provenance"]["code"] == expected


# --- reports --------------------------------------------------------------------------------------

def _old_and_new(lab: Path) -> tuple[dict, dict]:
    old = code_identity("cid_lab.a")
    (lab / "cid_lab/c.py").write_text("def f():\n    return 2  # changed after the stale result ran\n")
    return old, code_identity("cid_lab.a")


def _plant(lab: Path, rows: dict):
    """Results written by hand for a suite running ``python -m cid_lab.a`` (one per row)."""
    return plant(lab, "cpac", rows, program=None, module="cid_lab.a")


def test_report_flags_results_of_other_code_and_notes_the_mix(lab):
    old, new = _old_and_new(lab)
    suite, jobs = _plant(lab, {"stale": {"provenance": {"code": old}}, "fresh": {"provenance": {"code": new}},
                               "legacy": {}})  # written before results recorded their code
    rows = flags_by_row(suite, jobs)
    assert {k: r.flags for k, r in rows.items()} == {"stale": ["code_changed"], "fresh": [], "legacy": []}
    assert rows["stale"].reasons["code_changed"] == (
        f"computed by code {old['sha256'][:12]}; the checkout's cid_lab.a is {new['sha256'][:12]}: "
        "changed cid_lab/c.py")
    md = build_report(suite, jobs).markdown
    versions = f"`cid_lab.a`: {new['sha256'][:12]} (current, 1), {old['sha256'][:12]} (1), unrecorded (1)"
    assert f"⚠ Code: this table mixes results computed by different code (guard `mixed_code`; digests of " \
           f"each module's import closure, results per digest): {versions}." in md
    assert f"- code digest: {versions}" in md  # provenance of the results
    assert f"- **mixed_code** (table guard; Table 1): {versions}" in md
    assert "- **code_changed** (benchmark guard; 1 job(s)): row=stale seed=0" in md
    assert (f"| code       | `cid_lab.a` protocol version 1, digest `{new['sha256'][:12]}` (4 files) "
            "in this checkout") in md


def test_results_of_the_current_code_are_not_flagged(lab):
    _, new = _old_and_new(lab)
    suite, jobs = _plant(lab, {"x": {"provenance": {"code": new}}, "y": {"provenance": {"code": new}}})
    assert {k: r.flags for k, r in flags_by_row(suite, jobs).items()} == {"x": [], "y": []}
    md = build_report(suite, jobs).markdown
    assert "⚠ Code" not in md and "mixed_code" not in md and "code_changed" not in md
    assert f"- code digest: `cid_lab.a`: {new['sha256'][:12]} (current, 2)" in md


def test_accepting_a_refactor_restamps_the_results_and_keeps_what_they_ran(lab):
    old, new = _old_and_new(lab)
    suite, jobs = _plant(lab, {"stale": {"provenance": {"code": old}}, "fresh": {"provenance": {"code": new}},
                               "legacy": {}})
    fresh = next(j for j in jobs if j.tags["row"] == "fresh")
    untouched = fresh.out_json.read_bytes()
    stale = next(j for j in jobs if j.tags["row"] == "stale")
    before = json.loads(stale.out_json.read_text())
    done = accept_code(jobs)
    after = json.loads(stale.out_json.read_text())
    # only the code stamps changed, and every key kept its place (a report's columns follow the
    # results' key order: sorting them on rewrite reordered the CSV)
    for doc in (before, after):
        doc["provenance"].pop("code"), doc["provenance"].pop("code_accepted", None)
    assert json.dumps(after) == json.dumps(before)
    assert [(job.tags["row"], what) for job, what in done] == [("stale", "changed cid_lab/c.py"),
                                                               ("legacy", "no code digest recorded")]
    assert fresh.out_json.read_bytes() == untouched
    assert {k: r.flags for k, r in flags_by_row(suite, jobs).items()} == {"stale": [], "fresh": [], "legacy": []}
    assert "mixed_code" not in build_report(suite, jobs).markdown
    prov = json.loads(done[0][0].out_json.read_text())["provenance"]
    assert prov["code"] == new
    [accepted] = prov["code_accepted"]
    assert (accepted["sha256"], accepted["files"], accepted["accepted_as"]) == (old["sha256"], old["files"],
                                                                               new["sha256"])
    assert accept_code(jobs) == []  # nothing left to accept


def test_gate_rejects_a_candidate_and_reference_of_different_code(lab):
    old, new = _old_and_new(lab)
    gate = {"reference": {"row": "ref"}, "promote": {"candidate": {"row": "cand"}, "require": {"mae": "<= ref"}}}
    rows = {"ref": {"metrics": {"mae": 0.2, "rmse": 0.3, "iou@0.03": 0.5}, "provenance": {"code": old}},
            "cand": {"metrics": {"mae": 0.1, "rmse": 0.2, "iou@0.03": 0.5}, "provenance": {"code": new}}}
    rep = build_report(*plant(lab, "cpac", rows, program=None, module="cid_lab.a", **gate))
    assert rep.gate.decision == "REJECT"
    assert rep.gate.reasons == ["candidate and reference come from different code: `cid_lab.a`: "
                                f"{new['sha256'][:12]} (current, 1), {old['sha256'][:12]} (1)"]
    rows["ref"]["provenance"] = {"code": new}
    (lab / "same").mkdir()
    rep = build_report(*plant(lab / "same", "cpac", rows, program=None, module="cid_lab.a", **gate))
    assert rep.gate.decision == "PROMOTE"
