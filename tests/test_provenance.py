"""Provenance: 'dirty' means changed code, not files the pipeline rewrites while it runs."""

import subprocess

from nepa3d.utils.results import git_state


def _git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_dirty_ignores_pipeline_owned_files(tmp_path):
    (tmp_path / "reports").mkdir()
    for f in ("dvc.lock", "reports/a.md", "code.py"):
        (tmp_path / f).write_text("v1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "c")
    rev, dirty = git_state(tmp_path)
    assert len(rev) == 40 and dirty is False
    (tmp_path / "dvc.lock").write_text("v2\n")
    (tmp_path / "reports/a.md").write_text("v2\n")
    (tmp_path / "untracked.txt").write_text("x\n")
    assert git_state(tmp_path)[1] is False
    (tmp_path / "code.py").write_text("v2\n")
    assert git_state(tmp_path)[1] is True


def test_outside_git(tmp_path):
    assert git_state(tmp_path) == (None, None)
