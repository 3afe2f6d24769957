"""Expansion: matrix x seeds -> jobs with stable ids and exact argv."""
from __future__ import annotations

import sys

import pytest

from benchutil import FAKE_JOB, write_suite  # noqa: E402

from benchmark.errors import SuiteError  # noqa: E402
from benchmark.expand import expand, job_id_for, render_args, select  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402

TABLES = [{"rows": ["ckpt", "q"], "metrics": ["score"]}]


def _suite(tmp_path, name="demo", **kw):
    kw.setdefault("args", {"cache": "c", "flag_on": True, "flag_off": False, "ratios": [0.34, 0.33]})
    kw.setdefault("matrix", {"ckpt": {"a": "ra.pt", "b": "rb.pt"},
                             "q": {"pool": {"src": "pool"}, "grid": {"src": "grid", "frac": 0.8},
                                   "near": {"src": "grid", "frac": 0.5}}})
    kw.setdefault("seeds", {"seed": [0, 1, 2]})
    kw.setdefault("tables", TABLES)
    return load_suite(write_suite(tmp_path, name, **kw), tmp_path / "params.yaml")


def test_count_order_tags_and_paths(tmp_path):
    jobs = expand(_suite(tmp_path), tmp_path / "res")
    assert len(jobs) == 2 * 3 * 3
    assert [j.tags for j in jobs[:4]] == [{"ckpt": "a", "q": "pool", "seed": 0}, {"ckpt": "a", "q": "pool", "seed": 1},
                                          {"ckpt": "a", "q": "pool", "seed": 2}, {"ckpt": "a", "q": "grid", "seed": 0}]
    j = jobs[3]
    assert j.out_json == tmp_path / "res" / "demo" / f"{j.job_id}.json"
    assert j.log == tmp_path / "res" / "demo" / "logs" / f"{j.job_id}.log"
    assert len(j.job_id) == 16 and int(j.job_id, 16) >= 0
    assert len({x.job_id for x in jobs}) == len(jobs)


def test_argv_rendering(tmp_path):
    j = expand(_suite(tmp_path), tmp_path / "res")[3]
    assert j.argv == [sys.executable, str(FAKE_JOB), "--cache", "c", "--flag_on", "--ratios", "0.34", "0.33",
                      "--ckpt", "ra.pt", "--src", "grid", "--frac", "0.8", "--seed", "0",
                      "--out_json", str(j.out_json)]
    assert render_args({"a": None, "b": [], "c": 1, "d": "x y", "-e": True}) == ["--c", "1", "--d", "x y", "-e"]


def test_ids_are_stable_and_pinned():
    # the id is a pure function of (module/program, resolved args): pin one value across releases
    assert job_id_for({"module": "m"}, {"b": 1, "a": [0.5, "x"], "c": False, "d": None}) == "e41a2af5ccb27fe3"
    assert job_id_for({"module": "m"}, {"a": [0.5, "x"], "b": 1}) == "e41a2af5ccb27fe3"  # order, False, None
    assert job_id_for({"module": "m2"}, {"a": [0.5, "x"], "b": 1}) != "e41a2af5ccb27fe3"


def test_same_suite_same_ids_independent_of_results_dir_and_name(tmp_path):
    a = expand(_suite(tmp_path), tmp_path / "r1")
    b = expand(_suite(tmp_path), tmp_path / "r1")
    c = expand(_suite(tmp_path), tmp_path / "elsewhere")
    d = expand(_suite(tmp_path, name="other_name"), tmp_path / "r1")
    ids = [j.job_id for j in a]
    assert ids == [j.job_id for j in b] == [j.job_id for j in c] == [j.job_id for j in d]
    assert a[0].out_json != c[0].out_json


def test_changing_an_arg_changes_the_id(tmp_path):
    base = expand(_suite(tmp_path), tmp_path / "r")
    changed = expand(_suite(tmp_path, args={"cache": "c2", "flag_on": True, "flag_off": False,
                                            "ratios": [0.34, 0.33]}), tmp_path / "r")
    assert not {j.job_id for j in base} & {j.job_id for j in changed}
    # a false flag is the same argv as no flag: same id
    same = expand(_suite(tmp_path, args={"cache": "c", "flag_on": True, "ratios": [0.34, 0.33]}), tmp_path / "r")
    assert [j.job_id for j in same] == [j.job_id for j in base]


def test_identical_matrix_points_are_rejected(tmp_path):
    suite = _suite(tmp_path, matrix={"ckpt": {"a": "x.pt", "b": "x.pt"}}, tables=[{"rows": ["ckpt"],
                                                                                    "metrics": ["score"]}])
    with pytest.raises(SuiteError, match=r"points \[ckpt=a seed=0\] and \[ckpt=b seed=0\]"):
        expand(suite)


def test_module_suite_custom_out_flag_and_no_seeds(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("name: m\ntask: cls\nmodule: pkg.mod\nargs: {k: 1}\nout_flag: --out\n")
    jobs = expand(load_suite(path, tmp_path / "p.yaml"), "results")
    assert len(jobs) == 1 and jobs[0].tags == {}
    assert jobs[0].argv == [sys.executable, "-m", "pkg.mod", "--k", "1", "--out", f"results/m/{jobs[0].job_id}.json"]


def test_select_filters_by_tags(tmp_path):
    jobs = expand(_suite(tmp_path), tmp_path / "r")
    assert len(select(jobs, {"ckpt": ["b"], "seed": ["0", "2"]})) == 3 * 2
