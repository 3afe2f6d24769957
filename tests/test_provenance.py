"""Provenance: 'dirty' means changed code, not files the pipeline rewrites while it runs."""

import subprocess

from nepa3d.utils.results import git_state


def _git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_dirty_ignores_pipeline_owned_files(tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "metrics").mkdir()
    for f in ("dvc.lock", "reports/a.md", "metrics/s.json", "code.py"):
        (tmp_path / f).write_text("v1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "c")
    rev, dirty = git_state(tmp_path)
    assert len(rev) == 40 and dirty is False
    (tmp_path / "dvc.lock").write_text("v2\n")
    (tmp_path / "reports/a.md").write_text("v2\n")
    (tmp_path / "metrics/s.json").write_text("v2\n")  # the suite stages rewrite their metrics files
    (tmp_path / "untracked.txt").write_text("x\n")
    assert git_state(tmp_path)[1] is False
    (tmp_path / "code.py").write_text("v2\n")
    assert git_state(tmp_path)[1] is True


def test_outside_git(tmp_path):
    assert git_state(tmp_path) == (None, None)


def test_provenance_records_the_cache_corpus(tmp_path):
    """Every result envelope says which corpus produced it (None when the cache has no record),
    and the engine's envelope model keeps the field."""
    from benchmark.results import Envelope

    from nepa3d.data.corpus_meta import write_cache_corpus
    from nepa3d.utils.results import ResultTimer, build_result

    cache = tmp_path / "cache"
    (cache / "train").mkdir(parents=True)
    timer = ResultTimer()
    assert timer.provenance(cache_root=cache)["corpus"] is None
    assert timer.provenance()["corpus"] is None
    desc = {"synthetic": True, "name": "embedded procedural corpus (nepa3d.data.synthetic)",
            "generator": "nepa3d.data.synthetic", "args": {"seed": 0, "scan_bg_frac": [0.1, 0.25]},
            "variant": "main_split_nobg", "source": "/x/ScanObjectNN/h5_files/main_split_nobg"}
    write_cache_corpus(cache, desc)
    prov = timer.provenance(seed=0, cache_root=cache)
    assert prov["corpus"] == desc
    env = Envelope.model_validate(build_result("t", {}, {"acc": 1.0}, prov))
    assert env.provenance.model_dump()["corpus"] == desc
