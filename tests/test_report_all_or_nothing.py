"""`python -m benchmark report` writes all or nothing: every suite is rendered first and the files
are replaced only when all of them are ready. A missing results folder (one line naming it) or a
plot that fails to render leaves every existing report file byte-identical (the `report` DVC
stage's outputs are persisted, so DVC does not remove them first either)."""
from __future__ import annotations

import shutil
from pathlib import Path


from benchutil import write_suite  # noqa: E402

from benchmark import plots  # noqa: E402
from benchmark.cli import main  # noqa: E402


def _two_suites(tmp_path: Path) -> tuple[list[str], list[str]]:
    paths = []
    for name, scale in (("one", 1), ("two", 2)):
        paths.append(str(write_suite(
            tmp_path, name=name, matrix={"ckpt": {"a": {"scale": scale}, "b": {"scale": scale + 1}},
                                             "K": {"0": {"offset": 0}, "5": {"offset": 5}}},
            seeds={"seed": [1, 2]}, tables=[{"rows": ["ckpt"], "cols": ["K"], "metrics": ["score"]}],
            plots=[{"x": "K", "y": "score", "series": "ckpt"}] if name == "two" else [])))
    common = ["--results-dir", str(tmp_path / "results"), "--params", str(tmp_path / "params.yaml")]
    assert main(["run", *paths, "--no-mlflow", "--jobs", "2", *common]) == 0
    return paths, common


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_missing_results_folder_fails_and_replaces_nothing(tmp_path, capsys):
    paths, common = _two_suites(tmp_path)
    out = tmp_path / "reports"
    assert main(["report", *paths, "--out", str(out), *common]) == 0
    before = _snapshot(out)
    assert {"one.md", "two.md", "two_score_vs_K.png", "plots/two_score_vs_K.csv", "summary.json"} <= set(before)
    capsys.readouterr()
    # new results for suite one (its report would change), suite two's folder is gone
    shutil.rmtree(tmp_path / "results" / "one")
    assert main(["run", paths[0], "--no-mlflow", "--only", "ckpt=a", *common]) == 0
    shutil.rmtree(tmp_path / "results" / "two")
    capsys.readouterr()
    assert main(["report", *paths, "--out", str(out), *common]) == 1
    cap = capsys.readouterr()
    lines = cap.err.splitlines()
    assert len(lines) == 1, cap.err
    assert str(tmp_path / "results" / "two") in lines[0] and lines[0].startswith("two: no results folder ")
    assert "no report written" in lines[0] and cap.out == ""
    assert _snapshot(out) == before  # suite one's report is not replaced either
    assert not [p for p in out.rglob("*.tmp*")]


def test_a_plot_that_fails_to_render_replaces_nothing(tmp_path, capsys, monkeypatch):
    paths, common = _two_suites(tmp_path)
    out = tmp_path / "reports"
    assert main(["report", *paths, "--out", str(out), *common]) == 0
    before = _snapshot(out)
    shutil.rmtree(tmp_path / "results" / "one")
    assert main(["run", paths[0], "--no-mlflow", "--only", "ckpt=a", *common]) == 0  # one.md would change

    def boom(data, path):
        Path(path).write_bytes(b"half a png")
        raise OSError("no space left on device")

    monkeypatch.setattr(plots, "render_png", boom)
    capsys.readouterr()
    assert main(["report", *paths, "--out", str(out), *common]) == 1  # a failed run: one line, no traceback
    assert capsys.readouterr().err.strip().splitlines() == ["error: no space left on device"]
    assert _snapshot(out) == before
    assert not [p for p in out.rglob("*.tmp*")]  # the staged temp files are gone
    monkeypatch.undo()
    assert main(["report", *paths, "--out", str(out), *common]) == 0
    assert (out / "one.md").read_bytes() != before["one.md"]
