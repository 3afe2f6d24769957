"""Another lab's scoring protocol, hosted as a benchmark ``command`` task (standard library only).

    python examples/external_scorer/score.py --predictions FILE.csv --split dev --seed 0 \
        --out_json result.json

FILE.csv holds one model's predictions from several training seeds: columns
``seed,split,id,label,pred`` with binary labels (1 = positive). The protocol scores the rows of
one ``split`` and ``seed``:

* ``accuracy`` = correct predictions / rows;
* ``recall`` = true positives / positive labels (the lab reports recall of the positive class).

It writes the benchmark's result envelope (``schema_version`` 1, ``task: command``) atomically
to ``--out_json``; a missing file, an unknown split/seed or a malformed row exits 2 with a
message naming the file and line. The suite ``suites/external_scorer_example.yaml`` runs it over
models x splits x seeds and gates the candidate model against the reference with ``promote:``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from datetime import datetime, timezone

COLUMNS = ("seed", "split", "id", "label", "pred")


def fail(msg: str) -> None:
    print(f"score.py: error: {msg}", file=sys.stderr)
    sys.exit(2)


def read_rows(path: str, split: str, seed: str) -> list[tuple[int, int]]:
    """``(label, pred)`` of the rows of ``split`` and ``seed``."""
    try:
        fh = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        fail(f"{path}: cannot read predictions: {exc}")
    rows = []
    with fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            fail(f"{path}: expected columns {','.join(COLUMNS)}; got {','.join(reader.fieldnames or [])}")
        for line, row in enumerate(reader, start=2):
            if row["split"] != split or row["seed"] != seed:
                continue
            try:
                label, pred = int(row["label"]), int(row["pred"])
            except ValueError:
                fail(f"{path}:{line}: label and pred must be 0 or 1; got {row['label']!r}, {row['pred']!r}")
            if label not in (0, 1) or pred not in (0, 1):
                fail(f"{path}:{line}: label and pred must be 0 or 1; got {label}, {pred}")
            rows.append((label, pred))
    if not rows:
        fail(f"{path}: no rows with split={split!r} and seed={seed!r}")
    return rows


def score(rows: list[tuple[int, int]]) -> dict[str, float]:
    """The lab's metrics of ``(label, pred)`` pairs."""
    correct = sum(label == pred for label, pred in rows)
    positives = [pred for label, pred in rows if label == 1]
    if not positives:
        fail("no positive labels: recall is undefined")
    return {"accuracy": correct / len(rows), "recall": sum(positives) / len(positives)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--predictions", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--seed", required=True)
    ap.add_argument("--out_json", required=True)
    a = ap.parse_args()
    t0 = time.time()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    metrics = score(read_rows(a.predictions, a.split, a.seed))
    envelope = {
        "schema_version": 1,
        "task": "command",
        "args": {"predictions": a.predictions, "split": a.split, "seed": a.seed},
        "metrics": metrics,
        "flags": [],
        "provenance": {"git_rev": None, "started": started, "wall_s": time.time() - t0, "seed": a.seed,
                       "scorer": "external_scorer/score.py v1", "device": "cpu",
                       "versions": {"python": sys.version.split()[0]}},
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out_json)), exist_ok=True)
    tmp = f"{a.out_json}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(envelope, fh, indent=1)
    os.replace(tmp, a.out_json)


if __name__ == "__main__":
    main()
