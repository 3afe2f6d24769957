"""The result envelope: the one definition of the JSON every job writes and the engine reads.

    {"schema_version": 1, "task": str, "args": {...}, "metrics": {name: number | {...}},
     "baselines": {name: {metric: number}}, "flags": [str], "provenance": {...},
     "extra": {...}?, "history": [{"epoch": e, name: value}]?}

A leaf module (pydantic and the standard library only), so that the research code writes
through it without importing the engine:

* writers: :func:`build_envelope` (assemble in the canonical key order, make JSON-safe,
  validate) then :func:`write_envelope` or :func:`dump_json` (indent 2, strict JSON);
* the engine: :func:`read_envelope` (parse and validate; ``benchmark.results.load_result`` adds
  the suite's checks); test fixtures: :func:`envelope_dict` (assembled, not validated).

A metric must be a number. A producer's NaN or infinity becomes JSON ``null`` (strict JSON has
neither); the writer keeps such a result (it reports what was computed), the reader refuses it.
Invalid envelopes raise :class:`~benchmark.errors.ResultError` with one line naming the file
and every field at fault.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import IO, Any, Iterable, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from .atomic import atomic_write
from .errors import ResultError

SCHEMA_VERSION = 1
BASELINE_PREFIX = "baseline"
#: ``model_validate`` context of the writer side: a ``null`` metric (a non-finite value) is kept.
_WRITER = {"null_metrics": True}


def _check_numeric_tree(value: Any, where: str, nulls: bool = False) -> None:
    if isinstance(value, dict):
        if not value:
            raise ValueError(f"{where}: expected numbers or nested mappings of numbers; got an empty mapping")
        for key, sub in value.items():
            if "/" in str(key):
                raise ValueError(f"{where}: metric name {key!r} must not contain '/' (used for nesting)")
            _check_numeric_tree(sub, f"{where}/{key}" if where else str(key), nulls)
        return
    if value is None and nulls:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: expected a number; got {type(value).__name__} {value!r:.40}")


def _nulls(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("null_metrics"))


class Provenance(BaseModel):
    """Where a result came from. Extra keys are kept."""

    model_config = ConfigDict(extra="allow")
    git_rev: Optional[str]
    started: str
    wall_s: float
    dirty: Optional[bool] = None
    seed: Union[int, str, None] = None
    ckpt_sha256: Optional[str] = None
    versions: dict[str, Optional[str]] = {}
    device: Optional[str] = None


class Envelope(BaseModel):
    """Result JSON written by every job (``schema_version`` 1)."""

    model_config = ConfigDict(extra="allow")
    schema_version: Literal[1]
    task: str
    args: dict[str, Any]
    metrics: dict[str, Any]
    baselines: dict[str, dict[str, Any]] = {}
    flags: list[str] = []
    provenance: Provenance
    history: list[dict[str, Any]] = []   # per-epoch records {"epoch": e, name: value, ...}

    def history_series(self) -> dict[str, list[tuple[int, float]]]:
        """``{name: [(epoch, value), ...]}`` of the numeric, finite history entries."""
        out: dict[str, list[tuple[int, float]]] = {}
        for rec in self.history:
            step = rec.get("epoch")
            if not isinstance(step, int) or isinstance(step, bool):
                continue
            for k, v in rec.items():
                if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool) \
                        and math.isfinite(v):
                    out.setdefault(k, []).append((step, float(v)))
        return out

    @field_validator("metrics")
    @classmethod
    def _metrics_numeric(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if not value:
            raise ValueError("expected at least one metric")
        _check_numeric_tree(value, "", _nulls(info))
        return value

    @field_validator("baselines")
    @classmethod
    def _baselines_numeric(cls, value: dict[str, dict[str, Any]], info: ValidationInfo) -> dict[str, dict[str, Any]]:
        for name, metrics in value.items():
            _check_numeric_tree(metrics, str(name), _nulls(info))
        return value

    def flat(self) -> dict[str, float]:
        """Flattened metrics and baselines: ``{"mae": .., "near@0.05/mae": .., "baseline/nn/mae": ..}``."""
        out = flatten(self.metrics)
        for name, metrics in self.baselines.items():
            out.update(flatten(metrics, f"{BASELINE_PREFIX}/{name}"))
        return out


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested mapping of numbers -> ``{"a/b/c": float}``."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = float(value)
    return out


# --------------------------------------------------------------------------- validation


def _loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def check_envelope(data: Any, source: Path | str, *, writing: bool = False) -> Envelope:
    """``data`` (a parsed JSON value) as an :class:`Envelope`, else :class:`ResultError`:
    ``<source>: invalid result envelope: <field>: <cause>; ...``. ``writing``: the producer's
    side, where a ``null`` metric (a non-finite value) is allowed."""
    if not isinstance(data, dict):
        raise ResultError(f"{source}: expected a JSON object; got {type(data).__name__}")
    try:
        return Envelope.model_validate(data, context=_WRITER if writing else None)
    except ValidationError as exc:
        msgs = []
        for err in exc.errors(include_url=False):
            text = "required key is missing" if err["type"] == "missing" else err["msg"].removeprefix("Value error, ")
            msgs.append(f"{_loc(err['loc'])}: {text}")
        raise ResultError(f"{source}: invalid result envelope: " + "; ".join(msgs)) from None


def read_envelope(path: Path | str) -> Envelope:
    """Read and validate the result JSON at ``path``; :class:`ResultError` (one line) if it is
    missing, not JSON or not an envelope."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultError(f"{path}: result JSON not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultError(f"{path}: not valid JSON: {exc}") from None
    return check_envelope(data, path)


# --------------------------------------------------------------------------- writing


def clean(x: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None (strict JSON), paths to str, tuples
    to lists, keys to str."""
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        try:
            x = x.item()
        except (ValueError, AttributeError):
            return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def envelope_dict(task: str, args: dict, metrics: dict, provenance: dict, *,
                  baselines: Optional[dict] = None, flags: Optional[Iterable[str]] = None,
                  extra: Optional[dict] = None, history: Optional[list[dict]] = None) -> dict:
    """The envelope as a JSON-safe dict in the canonical key order (``schema_version, task, args,
    metrics, baselines, flags, provenance[, extra][, history]``; flags sorted, unique), not
    validated (test fixtures build invalid ones from it on purpose)."""
    out = {"schema_version": SCHEMA_VERSION, "task": task, "args": clean(dict(args)),
           "metrics": clean(metrics), "baselines": clean(baselines or {}),
           "flags": sorted(set(flags or [])), "provenance": clean(provenance)}
    if extra:
        out["extra"] = clean(extra)
    if history:
        out["history"] = [clean(dict(r)) for r in history]
    return out


def build_envelope(task: str, args: dict, metrics: dict, provenance: dict, **kw: Any) -> dict:
    """:func:`envelope_dict`, validated as a writer's (ResultError naming ``task`` and the field
    at fault). ``kw``: baselines, flags, extra, history (per-epoch records ``{"epoch": e, ...}``
    that trackers log as metric series with ``step = epoch``)."""
    env = envelope_dict(task, args, metrics, provenance, **kw)
    check_envelope(env, f"<{task} result>", writing=True)
    return env


def dump_json(obj: Any, fh: IO[str]) -> None:
    """The research side's JSON text of ``obj`` into ``fh``: indent 2, keys in insertion order,
    strict (NaN refused), a final newline. The bytes of every envelope written."""
    json.dump(obj, fh, indent=2, allow_nan=False)
    fh.write("\n")


def envelope_text(env: dict) -> str:
    """What :func:`dump_json` writes, as a string."""
    return json.dumps(env, indent=2, allow_nan=False) + "\n"


def write_envelope(env: dict, path: Path | str) -> Path:
    """Validate ``env`` (as a writer's) and write it to ``path`` atomically; returns ``path``."""
    check_envelope(env, path, writing=True)
    return atomic_write(path, lambda fh: dump_json(env, fh))
