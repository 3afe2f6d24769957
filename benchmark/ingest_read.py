"""Read metrics a lab already writes: a CSV with one row per run, or a flat JSON file.

A source is parsed into :class:`Record` s (one per CSV data row; one per object of a JSON list, or
the whole object of a flat JSON file), each knowing where it sits (``runs/stage1.csv:4``, the line
of the row, the header being line 1; ``runs/m.json[2]``; ``runs/m.json``) so that every problem is
one line naming the file, the row and the column::

    src = read_source("runs/stage1.csv", "csv")
    rec = src.match({"run": "splat_v2", "seed": "0"})     # exactly one row, or IngestError
    values = metric_values(src, rec, ["PSNR", "SSIM"])   # finite floats, or IngestError

Only the cells a job reads are judged: a row no job selects may hold empty or non-numeric cells
(a crashed run, a note). Matching compares cell text (stripped) with the rendered ``select``
values exactly: ``0`` does not match ``0.0``. Standard library only.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

FORMATS: tuple[str, ...] = ("csv", "json")
Cell = Union[str, int, float, bool, None]

#: A decimal number as labs write them (no ``1_000``, no hex); NaN and inf are told apart below.
_NUMBER = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")
_NONFINITE = re.compile(r"^[-+]?(?:nan|inf|infinity)$", re.IGNORECASE)


class IngestError(ValueError):
    """A problem with a metrics source; ``str()`` is one line naming the file, row and column."""


@dataclass(frozen=True)
class Record:
    """One run's metrics: ``cells`` maps column (CSV) or key (JSON) to its value.

    ``row``: the CSV line (header = 1), the index in a JSON list, None for a flat JSON object.
    """

    where: str  # "runs/stage1.csv:4", "runs/all.json[2]", "runs/m.json"
    row: Optional[int]
    cells: Mapping[str, Cell]

    @property
    def sha256(self) -> str:
        """sha256 of the record's canonical JSON (keys sorted): changes when any of its cells
        changes, not when other rows do or when columns are reordered."""
        text = json.dumps(dict(self.cells), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Source:
    """A parsed metrics file: its path as given, format, sha256 of its bytes and records.

    ``columns``: the CSV header (None for JSON, whose records may differ in keys).
    """

    path: str
    format: str
    sha256: str
    records: tuple[Record, ...]
    columns: Optional[tuple[str, ...]] = None

    def check_columns(self, names: Sequence[str], what: str) -> None:
        """Every name is a column of the CSV header (``what``: the suite key naming them)."""
        if self.columns is None:
            return
        for name in names:
            if name not in self.columns:
                raise IngestError(f"{self.path}:1: no column {name!r} ({what}); the header has: "
                                  f"{', '.join(self.columns)}")

    def match(self, select: Mapping[str, str]) -> Record:
        """The one record whose ``select`` cells equal the given texts; IngestError otherwise."""
        self.check_columns(list(select), "ingest.select")
        hits = [r for r in self.records
                if all(col in r.cells and cell_text(r.cells[col]) == want for col, want in select.items())]
        wanted = ", ".join(f"{k}={v}" for k, v in select.items()) or "(no select)"
        if not hits:
            raise IngestError(f"{self.path}: no row with {wanted} ({len(self.records)} rows read)")
        if len(hits) > 1:
            rows = ", ".join(("line " if r.where[len(self.path):].startswith(":") else "")
                             + r.where[len(self.path):].lstrip(":") for r in hits)
            raise IngestError(f"{self.path}: {len(hits)} rows match {wanted} ({rows}); expected exactly one")
        return hits[0]


def cell_text(value: Cell) -> str:
    """A cell as ``select`` compares it: strings stripped, ints as digits, bools true/false."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def metric_values(record: Record, metrics: Sequence[str]) -> dict[str, float]:
    """``{metric: float}`` of the record's cells, in ``metrics`` order; IngestError naming the
    row and column of the first empty, missing, non-numeric, NaN or infinite cell."""
    out: dict[str, float] = {}
    for name in metrics:
        if name not in record.cells:
            raise IngestError(f"{record.where}: no key {name!r} (ingest.metrics)")
        out[name] = parse_number(record.cells[name], f"{record.where}: column {name!r}")
    return out


def parse_number(value: Cell, where: str) -> float:
    """A finite float from a CSV cell (text) or a JSON value (number); IngestError otherwise."""
    if isinstance(value, bool) or value is None:
        raise IngestError(f"{where}: expected a number; got {json.dumps(value)}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = value.strip()
        if not text:
            raise IngestError(f"{where}: empty cell (missing value)")
        if _NONFINITE.match(text):
            raise IngestError(f"{where}: {text!r} is not a finite number")
        if not _NUMBER.match(text):
            raise IngestError(f"{where}: {text!r} is not a number")
        number = float(text)
    if not math.isfinite(number):
        raise IngestError(f"{where}: {value!r} is not a finite number")
    return number


def read_source(path: Union[str, Path], fmt: str) -> Source:
    """Parse ``path`` as ``fmt`` (``csv`` or ``json``); IngestError naming the file otherwise."""
    path = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise IngestError(f"{path}: metrics file not found") from None
    except OSError as exc:
        raise IngestError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    digest = hashlib.sha256(data).hexdigest()
    if fmt == "csv":
        columns, records = _read_csv(path, text)
        return Source(path, fmt, digest, records, columns)
    if fmt == "json":
        return Source(path, fmt, digest, _read_json(path, text))
    raise IngestError(f"{path}: unknown format {fmt!r}; expected one of: {', '.join(FORMATS)}")


def _read_csv(path: str, text: str) -> tuple[tuple[str, ...], tuple[Record, ...]]:
    """Header (line 1) and data rows; blank lines skipped; a ragged row or a duplicate or empty
    column name is an error wherever it is."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise IngestError(f"{path}: empty file (expected a header row)")
        columns = tuple(c.strip() for c in header)
        first: dict[str, int] = {}
        for i, name in enumerate(columns, start=1):
            if not name:
                raise IngestError(f"{path}:1: column {i} has no name")
            if name in first:
                raise IngestError(f"{path}:1: duplicate column {name!r} (columns {first[name]} and {i})")
            first[name] = i
        records = []
        for cells in reader:
            if not cells or all(not c.strip() for c in cells):
                continue
            where = f"{path}:{reader.line_num}"
            if len(cells) != len(columns):
                raise IngestError(f"{where}: {len(cells)} cells; the header has {len(columns)} columns")
            records.append(Record(where, reader.line_num, dict(zip(columns, (c.strip() for c in cells)))))
    except csv.Error as exc:
        raise IngestError(f"{path}:{reader.line_num}: not valid CSV: {exc}") from None
    return columns, tuple(records)


def _read_json(path: str, text: str) -> tuple[Record, ...]:
    """A flat object (one record) or a list of flat objects; values are scalars; a key twice in
    one object is an error."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise IngestError(f"{path}: duplicate key {key!r} in one object")
            out[key] = value
        return out

    try:
        data = json.loads(text, object_pairs_hook=pairs, parse_constant=float)
    except json.JSONDecodeError as exc:
        raise IngestError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if isinstance(data, dict):
        items, wheres, rows = [data], [path], [None]
    elif isinstance(data, list):
        items, wheres, rows = data, [f"{path}[{i}]" for i in range(len(data))], list(range(len(data)))
    else:
        raise IngestError(f"{path}: expected a flat JSON object or a list of them; got {type(data).__name__}")
    records = []
    for item, where, row in zip(items, wheres, rows):
        if not isinstance(item, dict):
            raise IngestError(f"{where}: expected a flat JSON object; got {type(item).__name__}")
        for key, value in item.items():
            if isinstance(value, (dict, list)):
                raise IngestError(f"{where}: key {key!r}: expected a number or a string (a flat "
                                  f"object); got {type(value).__name__}")
        records.append(Record(where, row, item))
    return tuple(records)
