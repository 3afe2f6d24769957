"""Text pieces of a report: numbers (``mean ± std``, signed deltas), the dash of an empty cell,
Markdown tables, tag lists, a portable command line and the link to a suite's protocol section.

Pure functions of their arguments, except :func:`_protocol_link`, which checks that the protocol
document has the suite's heading (no dead links).
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, Optional

from tabulate import tabulate

from . import numfmt
from .aggregate import Cell

DASH = "—"
MARKS = "†‡§¶"  # footnote marks of segregated (non-default) classes in a mixed table


# --- number formatting ----------------------------------------------------------------------

def fmt_num(x: Optional[float]) -> str:
    """4 decimals (``2.0000``); tiny non-zero values in scientific notation."""
    if x is None:
        return DASH
    if x != 0 and abs(x) < 1e-3:
        return f"{x:.3e}"
    return f"{x:.4f}"


def fmt_cell(cell: Cell, usual_n: Optional[int] = None) -> str:
    """``mean ± std`` (sample std); the value alone for a single seed (not a mean); ``—`` if
    empty. The seed count is said once per table (:meth:`TableData.usual_n`, in the caption), so
    a cell adds `` (n=k)`` only when its n differs from ``usual_n`` (always, if None)."""
    if cell.n == 0:
        return DASH
    text = fmt_num(cell.mean) if cell.n == 1 else f"{fmt_num(cell.mean)} ± {fmt_num(cell.std)}"
    return text if cell.n == usual_n else f"{text} (n={cell.n})"


def fmt_delta(x: Optional[float], *like: Optional[float]) -> str:
    """A signed difference at the precision its operands ``like`` are printed with (the finer
    of their last printed digits, :func:`benchmark.numfmt.quantum`); float noise below half that
    digit prints as zero. Without operands, at :func:`fmt_num`'s 4 decimals."""
    qs = [q for q in (numfmt.quantum(v) for v in like) if q is not None]
    return numfmt.fmt_delta(x, min(qs) if qs else 10.0 ** -numfmt.DECIMALS)


#: where each suite's protocol is written down: one ``## <suite-name>`` heading per suite
PROTOCOLS_DOC = "docs/protocols.md"
#: the link's target as written into the Markdown: relative to ``reports/`` (see write_report)
_PROTOCOLS_HREF = "../" + PROTOCOLS_DOC
def _protocol_link(suite_name: str) -> list[str]:
    """A link to the suite's section of :data:`PROTOCOLS_DOC` when that file (in the working
    directory) has a ``## <suite-name>`` heading; nothing otherwise (no dead links)."""
    doc = Path(PROTOCOLS_DOC)
    try:
        headings = {ln[3:].strip() for ln in doc.read_text(encoding="utf-8").splitlines()
                    if ln.startswith("## ")}
    except OSError:
        return []
    if suite_name not in headings:
        return []
    return [f"Protocol: [{PROTOCOLS_DOC}#{suite_name}]({_PROTOCOLS_HREF}#{suite_name})", ""]


def _md(rows: list[list[str]], headers: list[str]) -> str:
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True)


def _portable_argv(argv: list[str]) -> str:
    return shlex.join(["python" if a == sys.executable else a for a in argv])


def _tags(tags: dict[str, Any]) -> str:
    return " ".join(f"{a}={v}" for a, v in tags.items())

