"""Root-seed derivation: seeds are a pure, stable function of root_seed and the job's identity."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchutil import FAKE_JOB, write_suite  # noqa: E402

from benchmark.errors import SuiteError  # noqa: E402
from benchmark.expand import expand  # noqa: E402
from benchmark.results import load_result  # noqa: E402
from benchmark.runner import run_jobs  # noqa: E402
from benchmark.seeds import derive_seed  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TABLES = [{"rows": ["ckpt"], "metrics": ["score"]}]


def _by_hand(root_seed: int, identity: dict) -> int:
    """The documented rule, written out independently: first 4 bytes of sha256 of the canonical
    JSON of {"root_seed", "identity"}, big-endian, shifted right by one bit."""
    text = json.dumps({"root_seed": root_seed, "identity": identity}, sort_keys=True, separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") >> 1


def test_derive_seed_matches_hand_computed_values():
    # computed once with a separate `python3 -c` hashlib call on the literal canonical JSON
    # b'{"identity":{"replicate":0,"row":"a"},"root_seed":1234}'
    assert derive_seed(1234, {"row": "a", "replicate": 0}) == 1894888590
    assert derive_seed(1234, {"replicate": 1, "row": "a"}) == 171808955  # key order is irrelevant
    text = b'{"identity":{"replicate":0,"row":"a"},"root_seed":1234}'
    assert derive_seed(1234, {"replicate": 0, "row": "a"}) == int.from_bytes(hashlib.sha256(text).digest()[:4], "big") >> 1


def test_derive_seed_is_stable_across_processes():
    code = "from benchmark.seeds import derive_seed; print(derive_seed(7, {'args': {'lr': 0.1}, 'replicate': 2}))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
                           env={**os.environ, "PYTHONHASHSEED": str(h), "PYTHONPATH": str(REPO)}).stdout.strip()
            for h in (0, 1, 12345)}
    assert outs == {str(derive_seed(7, {"args": {"lr": 0.1}, "replicate": 2}))}
    assert outs == {str(_by_hand(7, {"args": {"lr": 0.1}, "replicate": 2}))}


def test_derive_seed_range_and_distinctness():
    seeds = [derive_seed(0, {"row": r, "replicate": k}) for r in range(100) for k in range(10)]
    assert all(0 <= s < 2 ** 31 for s in seeds)
    assert len(set(seeds)) == len(seeds)  # 1000 distinct identities -> 1000 distinct seeds
    assert derive_seed(1, {"row": 0, "replicate": 0}) != derive_seed(0, {"row": 0, "replicate": 0})
    with pytest.raises(TypeError):
        derive_seed(True, {})


def _derived_suite(tmp_path, root_seed=1234, n=3, **kw):
    path = write_suite(tmp_path, matrix={"ckpt": {"a": {"scale": 1}, "b": {"scale": 2}}},
                       seeds={"seed": n}, root_seed=root_seed, tables=TABLES, **kw)
    suite = load_suite(path, tmp_path / "params.yaml")
    return suite, expand(suite, tmp_path / "results")


def test_suite_replicates_get_seeds_derived_from_root_seed_and_identity(tmp_path):
    suite, jobs = _derived_suite(tmp_path, args={"offset": 5})
    assert suite.seeds_derived and suite.seed_values == [0, 1, 2]
    assert [j.tags for j in jobs] == [{"ckpt": c, "seed": r} for c in ("a", "b") for r in range(3)]
    for job in jobs:
        identity = {"command": {"program": ["python", str(FAKE_JOB)]},
                    "args": {"offset": 5, "scale": {"a": 1, "b": 2}[job.tags["ckpt"]]},
                    "replicate": job.tags["seed"]}
        assert job.args["seed"] == _by_hand(1234, identity)
        assert job.argv[job.argv.index("--seed") + 1] == str(job.args["seed"])
    assert len({j.args["seed"] for j in jobs}) == 6  # distinct per row and replicate
    # the same suite expands to the same seeds; another root seed to other seeds (and job ids)
    assert [j.args["seed"] for j in expand(suite, tmp_path / "results")] == [j.args["seed"] for j in jobs]
    (tmp_path / "other").mkdir()
    _, other = _derived_suite(tmp_path / "other", root_seed=99)
    assert not {j.args["seed"] for j in other} & {j.args["seed"] for j in jobs}
    assert not {j.job_id for j in other} & {j.job_id for j in jobs}


def test_derived_seeds_reach_the_program_and_the_report_axis(tmp_path):
    suite, jobs = _derived_suite(tmp_path, n=2)
    summary = run_jobs(jobs, log=lambda s: None)
    assert summary.count("done") == 4
    for job in jobs:
        env = load_result(job.out_json, "command")
        assert env.provenance.seed == str(job.args["seed"])  # fake_job records the seed it got
        assert env.metrics["score"] == {"a": 1, "b": 2}[job.tags["ckpt"]] * job.args["seed"]


def test_fixed_seeds_are_passed_as_written(tmp_path):
    path = write_suite(tmp_path, matrix={"ckpt": {"a": {"scale": 1}}}, seeds={"seed": [0, 7, 42]}, tables=TABLES)
    suite = load_suite(path, tmp_path / "params.yaml")
    assert not suite.seeds_derived
    assert [j.args["seed"] for j in expand(suite, tmp_path / "results")] == [0, 7, 42]


@pytest.mark.parametrize("extra, message", [
    ({"seeds": {"seed": 3}}, "seeds.seed: a replicate count (3) derives each seed from `root_seed`"),
    ({"seeds": {"seed": [0, 1]}, "root_seed": 5}, "root_seed: no seed is derived from it"),
    ({"seeds": {"seed": 2}, "root_seed": 5, "args": {"seed": 1}}, "args.seed: fixes the seed arg"),
    ({"seeds": {"seed": 0}, "root_seed": 5}, "seeds.seed: expected a replicate count >= 1"),
    ({"seeds": {"seed": 2}, "root_seed": "5"}, "root_seed: expected an integer; got str '5'"),
    ({"seeds": {"seed": [0, 1.5]}}, "seeds.seed[1]: expected an integer or a string seed"),
])
def test_seed_spec_errors_name_the_key(tmp_path, extra, message):
    path = write_suite(tmp_path, matrix={"ckpt": {"a": {"scale": 1}}}, tables=TABLES, **extra)
    with pytest.raises(SuiteError) as err:
        load_suite(path, tmp_path / "params.yaml")
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_matrix_row_fixing_a_derived_seed_is_an_error(tmp_path):
    path = write_suite(tmp_path, matrix={"ckpt": {"a": {"scale": 1, "seed": 3}}}, seeds={"seed": 2},
                       root_seed=1, tables=TABLES)
    with pytest.raises(SuiteError, match=r"matrix\.ckpt\.a\.seed: fixes the seed arg"):
        load_suite(path, tmp_path / "params.yaml")
