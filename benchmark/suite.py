"""Suite YAML: schema (pydantic v2), params interpolation and cross-field checks.

``load_suite(path)`` returns a validated :class:`Suite` or raises :class:`SuiteError` whose message
names the file, the key path (``matrix.ckpt.ref``) and what was expected.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import (AfterValidator, BaseModel, ConfigDict, PrivateAttr, StringConstraints,
                      ValidationError, field_validator)

from .errors import SuiteError
from .params import Params, interpolate
from .promote import Requirement, parse_requirement
from .tasks import TaskKind, get_task
from .yamlio import load_yaml

_SCALARS = (str, int, float, bool)


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _is_scalar(value: Any) -> bool:
    return isinstance(value, _SCALARS)


def _arg_value(value: Any) -> Any:
    if value is None or _is_scalar(value):
        return value
    if isinstance(value, list) and all(_is_scalar(v) for v in value):
        return value
    raise ValueError("expected a scalar (string, number, bool), a list of scalars, or null; "
                     f"got {_describe(value)}")


def _matrix_row(value: Any) -> Any:
    if value is None or _is_scalar(value):
        return value
    if isinstance(value, dict):
        for key, arg in value.items():
            if not isinstance(key, str):
                raise ValueError(f"arg names must be strings; got {_describe(key)}")
            try:
                _arg_value(arg)
            except ValueError as exc:
                raise ValueError(f"arg {key!r}: {exc}") from None
        return value
    raise ValueError("expected a scalar (assigned to the arg named like the axis) or a mapping of "
                     f"args; got {_describe(value)}")


def _seed_value(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected an integer or a string seed; got {_describe(value)}")
    return value


ArgValue = Annotated[Any, AfterValidator(_arg_value)]
MatrixRow = Annotated[Any, AfterValidator(_matrix_row)]
SeedValue = Annotated[Any, AfterValidator(_seed_value)]
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]+$")]


class TableSpec(BaseModel):
    """One rendered table: rows/cols are matrix axes (or the seed arg); cells are seed means."""

    model_config = ConfigDict(extra="forbid")
    title: Optional[str] = None
    rows: list[str] = []
    cols: list[str] = []
    metrics: Optional[list[str]] = None
    where: dict[str, str] = {}


class PromoteSpec(BaseModel):
    """Promotion gate: the candidate row must satisfy every requirement against the reference."""

    model_config = ConfigDict(extra="forbid")
    candidate: dict[str, str]
    require: dict[str, str]


class Suite(BaseModel):
    """A validated suite. Values are already interpolated from params.yaml."""

    model_config = ConfigDict(extra="forbid")
    name: Name
    task: str
    module: Optional[str] = None
    program: Optional[list[str]] = None
    description: str = ""
    args: dict[str, ArgValue] = {}
    matrix: dict[str, dict[str, MatrixRow]] = {}
    seeds: dict[str, list[SeedValue]] = {}
    reference: dict[str, str] = {}
    tables: list[TableSpec] = []
    out_flag: str = "--out_json"
    promote: Optional[PromoteSpec] = None
    inputs: list[str] = []

    _source: Path = PrivateAttr(default=Path("<memory>"))
    _source_sha256: str = PrivateAttr(default="")
    _params: Optional[Params] = PrivateAttr(default=None)
    _requirements: list[Requirement] = PrivateAttr(default_factory=list)

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        try:
            get_task(value)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        return value

    # --- convenience ----------------------------------------------------------------------
    @property
    def source(self) -> Path:
        """The YAML file this suite was loaded from."""
        return self._source

    @property
    def source_sha256(self) -> str:
        return self._source_sha256

    @property
    def params_used(self) -> dict[str, Any]:
        """params.yaml entries this suite referenced, dotted path -> value."""
        return dict(self._params.used) if self._params else {}

    @property
    def params_path(self) -> Optional[Path]:
        return self._params.path if self._params else None

    @property
    def kind(self) -> TaskKind:
        return get_task(self.task)

    @property
    def axes(self) -> list[str]:
        return list(self.matrix)

    @property
    def seed_arg(self) -> Optional[str]:
        return next(iter(self.seeds), None)

    @property
    def seed_values(self) -> list[Any]:
        return list(self.seeds[self.seed_arg]) if self.seed_arg else []

    @property
    def requirements(self) -> list[Requirement]:
        return list(self._requirements)

    def axis_rows(self, axis: str) -> list[Any]:
        """Row names of a matrix axis, or the seed values for the seed arg."""
        if axis == self.seed_arg:
            return self.seed_values
        return list(self.matrix[axis])


# --- loading ------------------------------------------------------------------------------

def load_suite(path: Path | str, params_path: Path | str = "params.yaml") -> Suite:
    """Read, interpolate and validate a suite YAML; raise :class:`SuiteError` on any problem."""
    path = Path(path)
    raw = load_yaml(path, what="suite file")
    if not isinstance(raw, dict):
        raise SuiteError(f"{path}: expected a mapping of suite keys at the top level; got "
                         f"{type(raw).__name__}")
    params = Params(Path(params_path))
    raw = dict(raw)
    for key in ("args", "matrix", "seeds"):
        if key in raw:
            raw[key] = interpolate(raw[key], params, file=path, keypath=key)
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as exc:
        raise SuiteError(_format_validation_error(path, exc)) from None
    suite._source = path
    suite._source_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    suite._params = params
    _cross_check(suite, path)
    return suite


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if part == "[key]":
            out += " (as a key)"
        elif isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _allowed_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = Suite
    if loc and loc[0] == "tables":
        model = TableSpec
    elif loc and loc[0] == "promote":
        model = PromoteSpec
    return list(model.model_fields)


def _format_validation_error(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        loc, kind, msg = err["loc"], err["type"], err["msg"]
        if kind == "extra_forbidden":
            text = f"unknown key; expected one of: {', '.join(_allowed_keys(loc))}"
        elif kind == "missing":
            text = "required key is missing"
        elif kind == "value_error":
            text = msg.removeprefix("Value error, ")
        else:
            text = f"{msg[0].lower()}{msg[1:]}; got {_describe(err.get('input'))}"
        lines.append(f"{path}: {_loc(loc)}: {text}")
    if len(lines) > 1:
        lines[1:] = ["  " + line for line in lines[1:]]
    return "\n".join(lines)


def _cross_check(suite: Suite, path: Path) -> None:
    """Checks that span several keys; fills table defaults. Raises SuiteError naming the key."""

    def fail(key: str, text: str) -> None:
        raise SuiteError(f"{path}: {key}: {text}")

    if (suite.module is None) == (suite.program is None):
        fail("module", "expected exactly one of `module` (python -m MODULE) or `program` (argv list)")
    if suite.program is not None and not suite.program:
        fail("program", "expected a non-empty argv list, e.g. [python, path/to/scorer.py]")
    if not suite.out_flag.startswith("-"):
        fail("out_flag", f"expected a flag such as --out_json; got {suite.out_flag!r}")
    out_arg = suite.out_flag.lstrip("-")
    for key in suite.args:
        if key.lstrip("-") == out_arg:
            fail(f"args.{key}", f"conflicts with out_flag {suite.out_flag} (the runner sets it)")
    for axis, rows in suite.matrix.items():
        if not rows:
            fail(f"matrix.{axis}", "expected at least one row")
    if len(suite.seeds) > 1:
        fail("seeds", f"expected one seed arg -> list of values; got {len(suite.seeds)} keys "
                      f"({', '.join(suite.seeds)})")
    if suite.seed_arg is not None:
        values = suite.seeds[suite.seed_arg]
        if not values:
            fail(f"seeds.{suite.seed_arg}", "expected a non-empty list of seeds")
        if len(set(map(str, values))) != len(values):
            fail(f"seeds.{suite.seed_arg}", f"duplicate seed values in {values}")
        if suite.seed_arg in suite.matrix:
            fail(f"seeds.{suite.seed_arg}", "the seed arg must not also be a matrix axis")

    known_args = set(suite.args) | {a for a, rows in suite.matrix.items()
                                     if any(not isinstance(v, dict) for v in rows.values())}
    known_args |= {k for rows in suite.matrix.values() for v in rows.values() if isinstance(v, dict) for k in v}
    for i, name in enumerate(suite.inputs):
        if name not in known_args:
            fail(f"inputs[{i}]", f"unknown arg {name!r}; expected an arg naming an input file "
                                 f"({', '.join(sorted(known_args)) or 'no args'})")

    axes = suite.axes
    placeable = axes + ([suite.seed_arg] if suite.seed_arg else [])

    def check_rows_ref(key: str, mapping: dict[str, str]) -> None:
        for axis, row in mapping.items():
            if axis not in suite.matrix:
                fail(f"{key}.{axis}", f"unknown axis; expected one of: {', '.join(axes) or '(no matrix)'}")
            if row not in suite.matrix[axis]:
                fail(f"{key}.{axis}", f"unknown row {row!r}; expected one of: {', '.join(suite.matrix[axis])}")

    check_rows_ref("reference", suite.reference)

    kind = suite.kind
    if not suite.tables:
        suite.tables = [TableSpec(rows=list(axes))]
    for i, table in enumerate(suite.tables):
        key = f"tables[{i}]"
        seen: set[str] = set()
        for field in ("rows", "cols"):
            for axis in getattr(table, field):
                if axis not in placeable:
                    fail(f"{key}.{field}", f"unknown axis {axis!r}; expected one of: {', '.join(placeable)}")
                if axis in seen:
                    fail(f"{key}.{field}", f"axis {axis!r} is placed twice")
                seen.add(axis)
        check_rows_ref(f"{key}.where", table.where)
        for axis in table.where:
            if axis in seen:
                fail(f"{key}.where.{axis}", "axis is already a table row or column")
            seen.add(axis)
        for axis in axes:
            if axis not in seen:
                fail(key, f"matrix axis {axis!r} is not placed: add it to rows, cols or where "
                          "(only the seed axis is averaged over)")
        if table.metrics is None:
            table.metrics = list(kind.default_metrics)
        if not table.metrics:
            fail(f"{key}.metrics", f"expected a list of metric names (task {kind.name!r} has no defaults)")

    if suite.promote is not None:
        if not suite.reference:
            fail("promote", "needs a `reference` row to compare the candidate with")
        check_rows_ref("promote.candidate", suite.promote.candidate)
        if not suite.promote.candidate:
            fail("promote.candidate", "expected a mapping axis -> row")
        if not suite.promote.require:
            fail("promote.require", "expected at least one metric requirement")
        reqs = []
        for metric, text in suite.promote.require.items():
            try:
                reqs.append(parse_requirement(metric, text))
            except ValueError as exc:
                fail(f"promote.require.{metric}", str(exc))
        suite._requirements = reqs
