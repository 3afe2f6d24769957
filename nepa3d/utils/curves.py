"""Training curves: per-epoch records -> one PNG (matplotlib, headless).

A record is a flat dict with an integer ``epoch`` and numeric values (the lines of
``train_log.jsonl`` in pretraining, the ``history`` of a fine-tuning result JSON).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from benchmark.atomic import atomic_write_file


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Records of a JSON-lines log; a torn last line (a run killed mid-write) is skipped."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def curve_keys(records: list[dict], exclude=("epoch", "step", "seconds", "n_point", "n_ray")) -> list[str]:
    """Numeric keys present in the records, in first-seen order, minus bookkeeping ones."""
    keys: list[str] = []
    for r in records:
        for k, v in r.items():
            if k not in exclude and k not in keys and isinstance(v, (int, float)) \
                    and not isinstance(v, bool):
                keys.append(k)
    return keys


def plot_curves(records: list[dict], out_png: str | os.PathLike, title: str = "",
                keys: list[str] | None = None) -> Path | None:
    """One panel per key (value vs epoch); losses on a log axis when all values are > 0.

    Returns the PNG path, or None when there is nothing to plot. Written atomically.
    """
    keys = keys if keys is not None else curve_keys(records)
    keys = [k for k in keys if any(isinstance(r.get(k), (int, float)) for r in records)]
    if not records or not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [(r["epoch"], r[key]) for r in records
               if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        if not pts:
            continue
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", ms=2.5, lw=1.2)
        if "loss" in key and min(ys) > 0:
            ax.set_yscale("log")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write_file(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"), suffix=".png")
    finally:
        plt.close(fig)
    return out
