"""Markdown page for a marching-cubes qualitative run (``qualitative_cpac_marching_cubes``).

Reads ``<run_dir>/summary.json``, copies each shape's ``preview.png`` next to the page and writes
a table of the per-shape grid metrics (MAE, RMSE, IoU at the marching-cubes level) with the
reason a mesh could not be extracted, the run's protocol and a mean row. Meshes and volumes stay
in ``run_dir`` (DVC output); only the page and the previews go to ``reports/``.

    python -m nepa3d.analysis.qualitative_report --run_dir results/qual_mc \
        --out reports/qualitative_cpac.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from nepa3d.cli.args import make_parser, fail
from nepa3d.cli.edge import RUN_FAILURE, out_file_problem, write_failure
from nepa3d.cli.config import CliConfig

PROG = "qualitative_report"
PROTOCOL_KEYS = ("ckpt", "cache_root", "split", "context_backend", "n_context", "head_train_split",
                 "head_train_backend", "n_head_train_shapes", "n_query_probe", "max_query_per_pass",
                 "ridge_lambda", "rep_source", "grid_res", "mc_level", "eval_seed")


def _portable(value, base: Path):
    """A path under ``base`` shown relative to it (the page must not depend on the checkout's
    location); anything else unchanged."""
    if isinstance(value, str) and Path(value).is_absolute():
        try:
            return str(Path(value).relative_to(base))
        except ValueError:
            return value
    return value


def _num(x) -> str:
    return "—" if x is None else f"{float(x):.4f}"


def _mesh_text(shape: dict) -> str:
    skipped = shape.get("mc_skipped") or {}
    return "; ".join(f"{k}: {v}" for k, v in sorted(skipped.items())) or "both meshed"


def render(summary: dict, image_dir: str, base: Path | None = None) -> str:
    """The page's Markdown. ``image_dir``: the previews' folder relative to the page; ``base``:
    paths under it are shown relative (default: the working directory)."""
    base = Path.cwd() if base is None else base
    level = summary["mc_level"]
    lines = ["# CPAC qualitatives: marching cubes on predicted UDF grids", "",
             f"Ridge probe on `h`, dense {summary['grid_res']}³ lattice, iso-shell at level {level}. "
             "Top row of each panel: context points, predicted mesh, ground-truth mesh; bottom row: "
             "mid-z slices of the predicted and true UDF and their absolute difference.", "",
             "## Protocol", ""]
    lines += [tabulate([[k, f"`{_portable(summary[k], base)}`"] for k in PROTOCOL_KEYS if k in summary],
                       headers=["setting", "value"], tablefmt="pipe", disable_numparse=True), ""]
    rows = []
    for si, s in enumerate(summary["per_shape"]):
        cls = Path(s["path"]).parent.name
        rows.append([str(si), cls, s["name"], _num(s["mae_grid"]), _num(s["rmse_grid"]),
                     _num(s["iou@level"]), _mesh_text(s)])
    if "mean_mae_grid" in summary:
        rows.append(["mean", "", "", _num(summary["mean_mae_grid"]), _num(summary["mean_rmse_grid"]),
                     _num(summary["mean_iou@level"]), ""])
    lines += ["## Shapes", "",
              tabulate(rows, headers=["#", "class", "shape", "mae (grid)", "rmse (grid)",
                                      f"iou@{level}", "meshes"],
                       tablefmt="pipe", disable_numparse=True), ""]
    if summary.get("skipped_shapes"):
        lines += [f"Skipped (no `udf_grid`): {', '.join(map(str, summary['skipped_shapes']))}", ""]
    for si, s in enumerate(summary["per_shape"]):
        lines += [f"### {si}: {s['name']}", "", f"![{s['name']}]({image_dir}/{si:03d}_{s['name']}.png)", ""]
    return "\n".join(lines).rstrip() + "\n"


class ReportError(ValueError):
    """A --run_dir whose summary cannot be read, or an --out that cannot be written: one line."""


def read_summary(run_dir: Path) -> dict:
    """``<run_dir>/summary.json``, checked by reading every field the page reads (ReportError
    naming the file otherwise)."""
    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text())
        render(summary, "")
        for s in summary["per_shape"]:
            Path(s["out_dir"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{path}: cannot read the qualitative summary ({e})") from e
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ReportError(f"{path}: not a qualitative summary ({type(e).__name__}: {e})") from e
    return summary


def images_dir(out: Path) -> Path:
    """The page's previews folder: ``<out stem>/`` next to it."""
    return out.parent / out.stem


def output_problem(out: Path) -> str | None:
    """Why the page ``out`` or its previews folder cannot be written, or None."""
    images = images_dir(out)
    if images.exists() and not images.is_dir():
        return f"--out {out}: its previews folder {images} is a file"
    return out_file_problem("--out", out)


def write(run_dir: Path, out: Path) -> Path:
    """Write ``out`` and its previews folder (``<out stem>/``); return the page's path."""
    summary = read_summary(run_dir)
    images = images_dir(out)
    if images.exists():
        shutil.rmtree(images)
    images.mkdir(parents=True)
    for si, s in enumerate(summary["per_shape"]):
        png = Path(s["out_dir"]) / "preview.png"
        if png.exists():
            shutil.copyfile(png, images / f"{si:03d}_{s['name']}.png")
    out.write_text(render(summary, images.name))
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = make_parser("nepa3d.analysis.qualitative_report", __doc__.split("\n")[0])
    ap.add_argument("--run_dir", type=Path, required=True, help="the qualitative tool's --out_dir")
    ap.add_argument("--out", type=Path, required=True, help="Markdown page to write")
    return ap


@dataclass(frozen=True, kw_only=True)
class QualitativeReportConfig(CliConfig):
    """Flags of ``python -m nepa3d.analysis.qualitative_report`` (one field per flag)."""

    run_dir: Path
    out: Path

    @classmethod
    def build_parser(cls) -> argparse.ArgumentParser:
        return build_parser()


def main(argv=None) -> int:
    """0; an unreadable --run_dir summary or a blocked --out: 2 and one line (nothing written);
    a refused write: 1 and one line naming the file."""
    args = QualitativeReportConfig.parse(argv)
    blocked = output_problem(args.out)
    if blocked:
        return fail(PROG, blocked)
    try:
        page = write(args.run_dir, args.out)
    except ReportError as e:
        return fail(PROG, e)
    except OSError as e:
        return fail(PROG, write_failure(e.filename or args.out, e), code=RUN_FAILURE)
    print(f"[qualitative_report] {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
