"""Writing rendered reports: each suite's Markdown, CSV, LaTeX and plots, and the merged
``summary.json``, all or nothing (temp files renamed over the targets only once every file is written).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .atomic import StagedWrites
from .errors import SuiteError
from .report import SuiteReport
from .report_format import PROTOCOLS_DOC, _PROTOCOLS_HREF


def write_report(rep: SuiteReport, out_dir: Path | str, summary_name: str = "summary.json") -> list[Path]:
    """Write ``<suite>.md``, ``<suite>.csv``, ``<suite>.tex`` (LaTeX, booktabs), the plots (PNG +
    ``plots/*.csv``) and merge the suite into ``<out_dir>/<summary_name>``. Returns the paths
    written (Markdown first, then the CSV). All or nothing: see :func:`write_reports`."""
    return write_reports([rep], out_dir, summary_name)[0]


def write_reports(reps: list[SuiteReport], out_dir: Path | str,
                  summary_name: str = "summary.json") -> list[list[Path]]:
    """:func:`write_report` of several suites at once, all or nothing: every file (each suite's
    Markdown, CSV, LaTeX, plot PNGs and CSVs, and the merged summary) is first written in full to
    a temp file beside its target; only when all of them are written are they renamed over the
    targets. If anything fails before that (a plot that does not render, a full disk), the temp
    files are removed and no existing report file is touched. Returns each suite's paths."""
    from .plots import plot_csv, render_png

    out_dir = Path(out_dir)
    summary_path = out_dir / summary_name
    summary = read_summary(summary_path)
    written: list[list[Path]] = []
    with StagedWrites() as stage:
        for rep in reps:
            name = rep.suite.name
            paths = [stage.text(out_dir / f"{name}.md", _relink(rep.markdown, out_dir)),
                     stage.text(out_dir / f"{name}.csv", rep.csv_text),
                     stage.text(out_dir / f"{name}.tex", rep.latex)]
            for data in rep.plots:
                paths.append(stage.file(out_dir / f"{data.stem}.png", lambda tmp, d=data: render_png(d, tmp)))
                paths.append(stage.text(out_dir / "plots" / f"{data.stem}.csv", plot_csv(data)))
            summary[name] = rep.summary
            written.append(paths + [summary_path])
        stage.text(summary_path, json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    return written


def read_summary(path: Path) -> dict:
    """The merged summary the suites' entries go into: ``{}`` when ``path`` does not exist yet.

    Raises:
        SuiteError: ``path`` exists but does not hold a JSON object (other suites' entries would
        be lost by starting it anew, so the caller is told to move it aside).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise SuiteError(f"{path}: cannot read the report summary ({e}); move it aside to start a "
                         "new one") from e
    try:
        summary = json.loads(text)
    except ValueError as e:
        raise SuiteError(f"{path}: the report summary is not valid JSON ({e}); move it aside to "
                         "start a new one (its other suites' entries would be lost)") from e
    if not isinstance(summary, dict):
        raise SuiteError(f"{path}: the report summary holds a JSON {type(summary).__name__}, not "
                         "an object of suites; move it aside to start a new one")
    return summary


def _relink(markdown: str, out_dir: Path) -> str:
    """The protocol links rendered for ``reports/`` pointed from ``out_dir`` instead (relative to
    the working directory, the repository root when DVC runs the report)."""
    href = Path(os.path.relpath(Path.cwd() / PROTOCOLS_DOC, Path(out_dir).resolve())).as_posix()
    return markdown if href == _PROTOCOLS_HREF else markdown.replace(f"]({_PROTOCOLS_HREF}#", f"]({href}#")
